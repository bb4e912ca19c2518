#!/usr/bin/env python3
"""Serves the app's static site on $PORT.

A client that accepts gzip gets the copy the static-site buildpack precompressed at build
time (the gzip/ directory beside this script's bin/), so nothing is compressed per request.
"""
import functools
import http.server
import os
from pathlib import Path

GZIP_DIR = Path(__file__).resolve().parent.parent / "gzip"


class Handler(http.server.SimpleHTTPRequestHandler):
    def send_head(self):
        path = self.translate_path(self.path)
        if os.path.isdir(path) and self.path.split("?", 1)[0].endswith("/"):
            path = os.path.join(path, "index.html")
        compressed = GZIP_DIR / (os.path.relpath(path, self.directory) + ".gz")
        accepts_gzip = "gzip" in self.headers.get("Accept-Encoding", "")
        if not (accepts_gzip and os.path.isfile(path) and compressed.is_file()):
            return super().send_head()
        f = open(compressed, "rb")
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(os.fstat(f.fileno()).st_size))
        self.send_header("Vary", "Accept-Encoding")
        self.end_headers()
        return f


def main():
    root = os.path.abspath(os.environ.get("STATIC_SITE_ROOT", "public"))
    port = int(os.environ.get("PORT", "8080"))
    handler = functools.partial(Handler, directory=root)
    server = http.server.ThreadingHTTPServer(("", port), handler)
    print(f"serving {root} on port {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
