"""hello-python: a small HTTP service using only the standard library.

GET / greets, naming the Python it runs on and the buildpacks that built the image (their
launch environment appends each name to BP_BUILT_BY); GET /healthz answers "ok".
`python3 -m app` serves on $PORT (default 8080); `python3 -m app --selftest` starts the
server on a free loopback port, checks both routes and exits 0 when they answer as expected.
"""
import http.server
import os
import platform
import sys
import threading
import urllib.request


def greeting():
    built_by = os.environ.get("BP_BUILT_BY", "unknown buildpacks")
    return f"Hello from hello-python on Python {platform.python_version()}, built by {built_by}\n"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/":
            self.reply(200, greeting())
        elif self.path == "/healthz":
            self.reply(200, "ok\n")
        else:
            self.reply(404, "not found\n")

    def reply(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        print(f"{self.address_string()} {format % args}", flush=True)


def selftest():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    checks = {"/": greeting(), "/healthz": "ok\n"}
    failed = 0
    for path, expected in checks.items():
        with urllib.request.urlopen(base + path, timeout=5) as response:
            body = response.read().decode()
        ok = body == expected
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} GET {path} -> {body.strip()}")
    server.shutdown()
    return 1 if failed else 0


def main():
    if "--selftest" in sys.argv[1:]:
        sys.exit(selftest())
    port = int(os.environ.get("PORT", "8080"))
    server = http.server.ThreadingHTTPServer(("", port), Handler)
    print(f"hello-python listening on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
