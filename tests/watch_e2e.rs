//! `kpackd watch` end to end on the binary: a fleet of a git image (a real bare repo,
//! polled every second) and a path image on a real stack with a shell buildpack. The
//! startup builds both; then a config edit, a path edit, a commit, a webhook (with polling
//! off, so only the webhook can explain the build), a trigger and an invalid edit each lead
//! to the right action, in order; SIGTERM ends watch with 0.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{http, spawn_kpackd, wait_for, write_buildpack, write_stack, Background};
use testkit::git::BareRepo;

/// Generous: the machine running the tests is shared and loaded.
const LONG: Duration = Duration::from_secs(180);

fn config(repo_url: &str, poll: &str, local_env: &str) -> String {
    format!(
        r#"[kpackd]
state-dir = "state"
poll-interval = "{poll}"

[stacks.test]
build-image = "oci:stacks:build"
run-image = "oci:stacks:run"

[stores.test]
buildpacks = ["buildpacks/hello"]

[builders.test]
stack = "test"
store = "test"
order = [{{ group = [{{ id = "test/hello" }}] }}]

[images.local]
tag = "oci:out:local"
builder = "test"
source = {{ path = "apps/local" }}
{local_env}

[images.remote]
tag = "oci:out:remote"
builder = "test"
source = {{ git = "{repo_url}", revision = "main" }}
"#
    )
}

/// Writes kpack.toml the way editors save: a temp file renamed over it.
fn save_atomically(root: &Path, text: &str) {
    let temp = root.join(".kpack.toml.swp");
    std::fs::write(&temp, text).expect("writing the temp file");
    std::fs::rename(&temp, root.join("kpack.toml")).expect("renaming over kpack.toml");
}

struct Watched {
    dir: tempfile::TempDir,
    repo: BareRepo,
    addr: String,
    watch: Background,
}

/// One image's last build as `GET /status` shows it.
#[derive(Debug, Clone, PartialEq)]
struct Last {
    number: u64,
    status: String,
    reasons: Vec<String>,
}

impl Watched {
    /// Starts watch in the fleet's directory, on `./kpack.toml` (the default) when
    /// `relative_config`, else on its absolute path.
    fn start(relative_config: bool) -> Watched {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path();
        write_stack(&root.join("work"), &root.join("stacks"));
        write_buildpack(
            &root.join("buildpacks"),
            "hello",
            "test/hello",
            "test -f greeting.txt",
            r#"layer="$CNB_LAYERS_DIR/greeter"
mkdir -p "$layer/bin"
printf '#!/bin/sh\necho "$(cat /workspace/greeting.txt)"\n' > "$layer/bin/greet"
chmod +x "$layer/bin/greet"
printf '[types]\nlaunch = true\n' > "$layer.toml"
cat > "$CNB_LAYERS_DIR/launch.toml" <<EOT
[[processes]]
type = "web"
command = ["greet"]
default = true
EOT
echo "built $(cat greeting.txt)""#,
        );
        let app = root.join("apps/local");
        std::fs::create_dir_all(&app).expect("an app dir");
        std::fs::write(app.join("greeting.txt"), "hello").expect("an app file");
        let mut repo = BareRepo::new();
        repo.commit(&[("greeting.txt", "hi from git")], "first");
        save_atomically(root, &config(&repo.url(), "1s", ""));

        let addr = format!("127.0.0.1:{}", testkit::free_port());
        let config = root.join("kpack.toml");
        let config = config.to_str().expect("a UTF-8 path");
        let args: &[&str] = if relative_config {
            &["-v", "watch", "--listen", &addr]
        } else {
            &["-v", "watch", config, "--listen", &addr]
        };
        let watch = spawn_kpackd(root, "watch", args);
        let mut watched = Watched {
            dir,
            repo,
            addr,
            watch,
        };
        wait_for("GET /healthz", LONG, || {
            watched.alive();
            http(&watched.addr, "GET", "/healthz", &[], "").filter(|(code, _)| *code == 200)
        });
        watched
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Panics with watch's output when it has ended.
    fn alive(&mut self) {
        if let Ok(Some(status)) = self.watch.child.try_wait() {
            panic!("watch ended ({status}):\n{}", self.watch.output());
        }
    }

    fn status(&mut self) -> serde_json::Value {
        self.alive();
        let (code, body) = http(&self.addr, "GET", "/status", &[], "").expect("GET /status");
        assert_eq!(code, 200, "GET /status: {body}");
        serde_json::from_str(&body).expect("GET /status is JSON")
    }

    fn last(&mut self, image: &str) -> Option<Last> {
        let status = self.status();
        let last = &status["images"][image]["last_build"];
        Some(Last {
            number: last["number"].as_u64()?,
            status: last["status"].as_str()?.to_string(),
            reasons: last["reasons"]
                .as_array()?
                .iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect(),
        })
    }

    /// Waits until `image` has a build after `after` that started (any status) and
    /// returns how long that took; then waits until it succeeded and returns it.
    fn next_build(&mut self, image: &str, after: u64, what: &str) -> (Duration, Last) {
        let started = Instant::now();
        wait_for(
            &format!("{what}: a build of {image} to start"),
            LONG,
            || self.last(image).filter(|l| l.number > after),
        );
        let latency = started.elapsed();
        let last = wait_for(
            &format!("{what}: the build of {image} to end"),
            LONG,
            || {
                self.last(image)
                    .filter(|l| l.number > after && l.status != "queued" && is_end(&l.status))
            },
        );
        assert_eq!(
            last.status,
            "succeeded",
            "{what}: {image} #{}:\n{}",
            last.number,
            self.watch.output()
        );
        assert_eq!(
            last.number,
            after + 1,
            "{what}: exactly one build of {image}"
        );
        eprintln!(
            "{what}: {image} #{} {:?} started after {latency:?}",
            last.number, last.reasons
        );
        (latency, last)
    }

    /// Waits until watch runs nothing and has nothing pending.
    fn settle(&mut self) {
        wait_for("watch to be idle", LONG, || {
            let status = self.status();
            (status["watch"]["running"].is_null() && status["watch"]["pending"].is_null())
                .then_some(())
        });
    }

    /// Checks that no build of `image` after `number` starts for `quiet`.
    fn no_build(&mut self, image: &str, number: u64, quiet: Duration, why: &str) {
        let until = Instant::now() + quiet;
        while Instant::now() < until {
            let last = self.last(image).expect("a last build");
            assert_eq!(last.number, number, "{why}: no build of {image}: {last:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn git_upstream_next_poll(&mut self) -> f64 {
        let status = self.status();
        status["watch"]["upstreams"]
            .as_array()
            .expect("upstreams")
            .iter()
            .find(|u| {
                u["upstream"]
                    .as_str()
                    .is_some_and(|s| s.contains("repo.git"))
            })
            .and_then(|u| u["next_poll_in_seconds"].as_f64())
            .expect("the git upstream is polled")
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("watch's output:\n{}", self.watch.output());
        }
    }
}

fn is_end(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "canceled" | "interrupted")
}

#[test]
fn watch_builds_on_startup_edit_commit_webhook_trigger_and_survives_a_bad_edit() {
    let mut w = Watched::start(false);

    // Startup: both images are built.
    let built = wait_for("the startup builds to succeed", LONG, || {
        let local = w.last("local")?;
        let remote = w.last("remote")?;
        (local.status == "succeeded" && remote.status == "succeeded").then_some((local, remote))
    });
    assert_eq!(built.0.number, 1);
    assert_eq!(built.1.number, 1);
    assert_eq!(built.0.reasons, ["CONFIG"]);
    w.settle();

    // A config edit (env added to `local`, saved atomically) rebuilds `local` only.
    save_atomically(
        w.root(),
        &config(&w.repo.url(), "1s", "env = { GREETING = \"howdy\" }"),
    );
    let (_, local) = w.next_build("local", 1, "config edit");
    assert_eq!(local.reasons, ["CONFIG"]);
    w.settle();
    assert_eq!(
        w.last("remote").map(|l| l.number),
        Some(1),
        "remote untouched"
    );

    // A change under the path source rebuilds `local` (COMMIT).
    std::fs::write(w.root().join("apps/local/greeting.txt"), "hello again").expect("editing");
    let (_, local) = w.next_build("local", 2, "path edit");
    assert_eq!(local.reasons, ["COMMIT"]);
    w.settle();

    // A commit is found by polling (every 1 s): a COMMIT build of `remote`.
    w.repo.commit(&[("greeting.txt", "second")], "second");
    let (latency, remote) = w.next_build("remote", 1, "commit (poll 1s)");
    assert_eq!(remote.reasons, ["COMMIT"]);
    assert!(
        latency < Duration::from_secs(60),
        "the poll found the commit in {latency:?}"
    );
    w.settle();
    assert_eq!(
        w.last("local").map(|l| l.number),
        Some(3),
        "local untouched"
    );

    // Polling off (1h): a commit goes unseen until a webhook names the repository.
    save_atomically(
        w.root(),
        &config(&w.repo.url(), "1h", "env = { GREETING = \"howdy\" }"),
    );
    wait_for("the 1h poll interval to be in force", LONG, || {
        (w.status()["watch"]["poll_interval_seconds"].as_f64() == Some(3600.0)).then_some(())
    });
    // Any poll scheduled with the old interval happens first.
    wait_for("the git upstream's next poll to be far", LONG, || {
        (w.git_upstream_next_poll() > 600.0).then_some(())
    });
    w.settle();
    assert_eq!(
        w.last("remote").map(|l| l.number),
        Some(2),
        "a poll setting is no config change"
    );
    w.repo.commit(&[("greeting.txt", "third")], "third");
    w.no_build("remote", 2, Duration::from_secs(4), "polling is off");
    let other = http(
        &w.addr,
        "POST",
        "/hooks/git",
        &[("X-GitHub-Event", "push"), ("Content-Type", "application/json")],
        r#"{"ref":"refs/heads/main","repository":{"clone_url":"https://example.com/someone/else.git"}}"#,
    )
    .expect("POST /hooks/git");
    assert_eq!(other.0, 202, "{other:?}");
    let polled: serde_json::Value = serde_json::from_str(&other.1).expect("JSON");
    assert_eq!(
        polled["polled"],
        serde_json::json!([]),
        "another repository polls nothing"
    );
    w.no_build(
        "remote",
        2,
        Duration::from_secs(2),
        "a webhook for another repository",
    );
    let payload = serde_json::json!({
        "ref": "refs/heads/main",
        "repository": {"full_name": "test/repo", "clone_url": w.repo.url()},
    })
    .to_string();
    let hook_sent = Instant::now();
    let hook = http(
        &w.addr,
        "POST",
        "/hooks/git",
        &[
            ("X-GitHub-Event", "push"),
            ("Content-Type", "application/json"),
        ],
        &payload,
    )
    .expect("POST /hooks/git");
    assert_eq!(hook.0, 202, "{hook:?}");
    let polled: serde_json::Value = serde_json::from_str(&hook.1).expect("JSON");
    assert_eq!(
        polled["polled"].as_array().map(Vec::len),
        Some(1),
        "{polled}"
    );
    let (_, remote) = w.next_build("remote", 2, "webhook");
    eprintln!(
        "webhook → build of remote #{}: {:?}",
        remote.number,
        hook_sent.elapsed()
    );
    assert_eq!(remote.reasons, ["COMMIT"]);
    w.settle();

    // A trigger over HTTP: a TRIGGER build; an unknown image is a 404.
    let missing = http(&w.addr, "POST", "/images/nope/trigger", &[], "").expect("POST");
    assert_eq!(missing.0, 404, "{missing:?}");
    let trigger = http(&w.addr, "POST", "/images/local/trigger", &[], "").expect("POST");
    assert_eq!(trigger.0, 202, "{trigger:?}");
    let (_, local) = w.next_build("local", 3, "trigger");
    assert_eq!(local.reasons, ["TRIGGER"]);
    w.settle();

    // `kpackd trigger` from another shell: recorded in the state, and watch (its poll
    // interval an hour) answers it at once.
    let cli = support::kpackd(w.root(), &["trigger", "local"]);
    assert!(cli.status.success(), "{cli:?}");
    let (latency, local) = w.next_build("local", 4, "kpackd trigger");
    assert_eq!(local.reasons, ["TRIGGER"]);
    assert!(
        latency < Duration::from_secs(10),
        "watch noticed `kpackd trigger` after {latency:?}"
    );
    w.settle();

    // An invalid edit: reported, the last good configuration keeps running.
    save_atomically(w.root(), "[images.local]\ntag = 5\n");
    let error = wait_for("the invalid edit to be reported", LONG, || {
        let status = w.status();
        status["watch"]["config_error"].as_str().map(str::to_string)
    });
    eprintln!("config_error: {error}");
    assert_eq!(
        w.status()["watch"]["poll_interval_seconds"].as_f64(),
        Some(3600.0)
    );
    let trigger = http(&w.addr, "POST", "/images/remote/trigger", &[], "").expect("POST");
    assert_eq!(
        trigger.0, 202,
        "the last good configuration still knows `remote`: {trigger:?}"
    );
    let (_, remote) = w.next_build("remote", 3, "trigger after an invalid edit");
    assert_eq!(remote.reasons, ["TRIGGER"]);
    w.settle();
    assert_eq!(w.last("local").map(|l| l.number), Some(5));

    // A good edit again clears the error (and changes nothing else).
    save_atomically(
        w.root(),
        &config(&w.repo.url(), "1h", "env = { GREETING = \"howdy\" }"),
    );
    wait_for("the error to clear", LONG, || {
        w.status()["watch"]["config_error"].is_null().then_some(())
    });
    w.settle();
    assert_eq!(w.last("local").map(|l| l.number), Some(5));
    assert_eq!(w.last("remote").map(|l| l.number), Some(4));

    // SIGTERM: watch exits 0.
    w.watch.signal("TERM");
    let status = w
        .watch
        .wait_timeout(Duration::from_secs(60))
        .expect("watch ends after SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", w.watch.output());
}

/// `kpackd watch` with no CONFIG argument watches `./kpack.toml`: an edit of it must be
/// noticed like an edit of a file named by an absolute path.
#[test]
fn watch_notices_edits_of_the_default_kpack_toml_in_the_working_directory() {
    let mut w = Watched::start(true);
    wait_for("the startup builds to succeed", LONG, || {
        let local = w.last("local")?;
        let remote = w.last("remote")?;
        (is_end(&local.status) && is_end(&remote.status)).then_some(())
    });
    w.settle();
    save_atomically(
        w.root(),
        &config(&w.repo.url(), "1s", "env = { GREETING = \"howdy\" }"),
    );
    let (_, local) = w.next_build("local", 1, "config edit of ./kpack.toml");
    assert_eq!(local.reasons, ["CONFIG"]);
}
