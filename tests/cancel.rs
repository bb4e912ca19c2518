//! Stopping `kpackd apply` from outside, end to end on the binary: SIGTERM and SIGINT
//! cancel a running build (recorded `canceled`, its sandboxed processes gone, no tag
//! written, planned again next time); two applies at once (one refused, or waiting with
//! `--lock-timeout`); and `kill -9` at random moments, after which the next apply always
//! converges and no tag points at a missing blob (`CRASH_ROUNDS=100` runs more rounds).

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{
    broken_refs, builds_json, kpackd, layout_refs, processes_with_cmdline, spawn_kpackd, stdout,
    wait_for, write_buildpack, write_stack, Background,
};
use testkit::git::BareRepo;

/// Generous: the machine running the tests is shared and loaded.
const LONG: Duration = Duration::from_secs(180);

const STACK_TOML: &str = r#"[stacks.test]
build-image = "oci:stacks:build"
run-image = "oci:stacks:run"
"#;

/// A fleet of one image, `sleepy`, built from `apps/sleepy` by a buildpack that prints
/// "build started" and then, when the app has a file `slow`, runs `sleep $(cat slow)`.
struct Sleepy {
    dir: tempfile::TempDir,
}

impl Sleepy {
    fn new() -> Sleepy {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path();
        write_stack(&root.join("work"), &root.join("stacks"));
        write_buildpack(
            &root.join("buildpacks"),
            "sleepy",
            "test/sleepy",
            "true",
            r#"echo "build started"
if [ -f slow ]; then sleep "$(cat slow)"; fi
layer="$CNB_LAYERS_DIR/hello"
mkdir -p "$layer/bin"
printf '#!/bin/sh\necho hello\n' > "$layer/bin/hello"
chmod +x "$layer/bin/hello"
printf '[types]\nlaunch = true\n' > "$layer.toml"
cat > "$CNB_LAYERS_DIR/launch.toml" <<EOT
[[processes]]
type = "web"
command = ["hello"]
default = true
EOT
echo "build done""#,
        );
        let app = root.join("apps/sleepy");
        std::fs::create_dir_all(&app).expect("an app dir");
        std::fs::write(app.join("app.txt"), "sleepy").expect("an app file");
        std::fs::write(
            root.join("kpack.toml"),
            format!(
                r#"[kpackd]
state-dir = "state"

{STACK_TOML}
[stores.test]
buildpacks = ["buildpacks/sleepy"]

[builders.test]
stack = "test"
store = "test"
order = [{{ group = [{{ id = "test/sleepy" }}] }}]

[images.sleepy]
tag = "oci:out:sleepy"
builder = "test"
source = {{ path = "apps/sleepy" }}
"#
            ),
        )
        .expect("writing kpack.toml");
        Sleepy { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn slow(&self, seconds: &str) {
        std::fs::write(self.root().join("apps/sleepy/slow"), seconds).expect("writing slow");
    }

    fn fast(&self) {
        std::fs::remove_file(self.root().join("apps/sleepy/slow")).expect("removing slow");
    }

    /// `sleepy`'s builds as (number, status).
    fn builds(&self) -> Vec<(u64, String)> {
        builds_json(self.root())
            .expect("kpackd builds --json works while apply runs")
            .iter()
            .filter(|b| b["image"] == "sleepy")
            .map(|b| {
                (
                    b["number"].as_u64().expect("a build number"),
                    b["status"].as_str().expect("a status").to_string(),
                )
            })
            .collect()
    }

    /// Waits until build `number` of `sleepy` is `building` and its log shows the
    /// buildpack started.
    fn wait_building(&self, apply: &mut Background, number: u64) {
        wait_for("the build to be `building`", LONG, || {
            if let Ok(Some(status)) = apply.child.try_wait() {
                panic!(
                    "apply ended ({status}) before the build ran:\n{}",
                    apply.output()
                );
            }
            self.builds()
                .contains(&(number, "building".to_string()))
                .then_some(())
        });
        wait_for("the buildpack's first line in the log", LONG, || {
            let log = kpackd(self.root(), &["logs", "sleepy"]);
            stdout(&log).contains("build started").then_some(())
        });
    }
}

/// A `sleep` duration no other process on the machine uses, so that its process can be
/// found from outside the sandbox's pid namespace.
fn unique_sleep() -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "3600.{}{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

fn cancel_with(signal: &str) {
    let fleet = Sleepy::new();
    let marker = unique_sleep();
    fleet.slow(&marker);

    let mut apply = spawn_kpackd(fleet.root(), "apply", &["apply"]);
    fleet.wait_building(&mut apply, 1);
    let sleeping = wait_for("the buildpack's sleep to run", LONG, || {
        let pids = processes_with_cmdline(&["sleep", &marker]);
        (!pids.is_empty()).then_some(pids)
    });

    let signaled = Instant::now();
    apply.signal(signal);
    let status = apply
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("apply still runs 30 s after SIG{signal}"));
    let took = signaled.elapsed();
    eprintln!("apply exited {status} {took:?} after SIG{signal}");
    assert_eq!(status.code(), Some(1), "{}", apply.output());
    assert!(
        took < Duration::from_secs(10),
        "apply took {took:?} to stop after SIG{signal}"
    );
    assert!(
        apply.stdout().contains("canceled"),
        "the summary says the run was canceled:\n{}",
        apply.output()
    );

    assert_eq!(fleet.builds(), vec![(1, "canceled".to_string())]);
    // The sandbox's processes die with the build: give the kernel a moment to reap them.
    let left = wait_for(
        "the sandboxed sleep to be gone",
        Duration::from_secs(5),
        || {
            let left: Vec<u32> = sleeping
                .iter()
                .copied()
                .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|stat| !stat.contains(") Z "))
                })
                .collect();
            left.is_empty().then_some(left)
        },
    );
    assert!(left.is_empty());
    assert!(processes_with_cmdline(&["sleep", &marker]).is_empty());
    let refs = layout_refs(&fleet.root().join("out"));
    assert!(
        refs.iter().all(|r| !r.starts_with("sleepy")),
        "a canceled build writes no tag: {refs:?}"
    );

    // A canceled build does not count: the next plan builds the image again, still as
    // its first build (CONFIG).
    let plan = kpackd(fleet.root(), &["plan", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
    assert_eq!(plan["changes"][0]["image"], "sleepy");
    assert_eq!(plan["changes"][0]["action"], "build");
    assert_eq!(plan["changes"][0]["reasons"], serde_json::json!(["CONFIG"]));

    fleet.fast();
    let again = kpackd(fleet.root(), &["apply"]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        fleet.builds(),
        vec![(1, "canceled".to_string()), (2, "succeeded".to_string())]
    );
    assert!(layout_refs(&fleet.root().join("out")).contains(&"sleepy".to_string()));
}

#[test]
fn sigterm_cancels_the_running_build_and_the_next_apply_builds_it() {
    cancel_with("TERM");
}

#[test]
fn sigint_cancels_the_running_build_and_the_next_apply_builds_it() {
    cancel_with("INT");
}

/// A second Ctrl-C exits at once, without waiting for the canceled build to be recorded;
/// the sandbox dies with kpackd all the same, and the next apply repairs the state.
#[test]
fn a_second_sigint_exits_at_once_and_the_next_apply_repairs_the_state() {
    let fleet = Sleepy::new();
    let marker = unique_sleep();
    fleet.slow(&marker);
    let mut apply = spawn_kpackd(fleet.root(), "apply", &["apply"]);
    fleet.wait_building(&mut apply, 1);
    wait_for("the buildpack's sleep to run", LONG, || {
        (!processes_with_cmdline(&["sleep", &marker]).is_empty()).then_some(())
    });

    apply.signal("INT");
    apply.signal("INT");
    let status = apply
        .wait_timeout(Duration::from_secs(10))
        .expect("apply exits at once on a second SIGINT");
    assert_eq!(status.code(), Some(1), "{}", apply.output());
    wait_for(
        "the sandboxed sleep to be gone",
        Duration::from_secs(5),
        || {
            processes_with_cmdline(&["sleep", &marker])
                .is_empty()
                .then_some(())
        },
    );
    let recorded = fleet.builds();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(
        ["building", "canceled"].contains(&recorded[0].1.as_str()),
        "the build is left running or recorded canceled: {recorded:?}"
    );

    fleet.fast();
    let again = kpackd(fleet.root(), &["apply"]);
    assert_eq!(again.status.code(), Some(0));
    let builds = fleet.builds();
    assert!(
        ["interrupted", "canceled"].contains(&builds[0].1.as_str()),
        "{builds:?}"
    );
    assert_eq!(builds[1], (2, "succeeded".to_string()));
}

/// `plan` while an apply builds a triggered image does not plan it twice; once that
/// apply is killed, `plan` shows the rebuild the next apply will make.
#[test]
fn plan_after_kill_9_shows_the_interrupted_rebuild() {
    let fleet = Sleepy::new();
    assert_eq!(kpackd(fleet.root(), &["apply"]).status.code(), Some(0));
    assert!(kpackd(fleet.root(), &["trigger", "sleepy"])
        .status
        .success());
    fleet.slow(&unique_sleep());
    let planned = |why: &str| -> (String, serde_json::Value) {
        let plan = kpackd(fleet.root(), &["plan", "--json"]);
        assert_eq!(plan.status.code(), Some(0), "{why}");
        let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
        let change = &plan["changes"][0];
        (
            change["action"].as_str().unwrap_or_default().to_string(),
            change["reasons"].clone(),
        )
    };
    // The slow file is part of the source: the pending rebuild is COMMIT and TRIGGER.
    let (action, reasons) = planned("before the apply");
    assert_eq!(action, "build");
    assert_eq!(reasons, serde_json::json!(["COMMIT", "TRIGGER"]));

    let mut apply = spawn_kpackd(fleet.root(), "apply", &["apply"]);
    fleet.wait_building(&mut apply, 2);
    // The running build claimed the trigger; its source is the one being built. Only
    // COMMIT remains, as seen against the last completed build.
    let (action, reasons) = planned("while the apply runs");
    assert_eq!(action, "build");
    assert_eq!(
        reasons,
        serde_json::json!(["COMMIT"]),
        "the trigger is claimed"
    );

    apply.signal("KILL");
    apply.wait_timeout(LONG).expect("a killed apply ends");
    let (action, reasons) = planned("after kill -9");
    assert_eq!(action, "build");
    assert_eq!(
        reasons,
        serde_json::json!(["COMMIT", "TRIGGER"]),
        "the dead build's trigger is pending again"
    );
}

#[test]
fn two_applies_at_once_the_second_is_refused_or_waits_with_lock_timeout() {
    let fleet = Sleepy::new();
    fleet.slow("8");
    let mut first = spawn_kpackd(fleet.root(), "first", &["apply"]);
    fleet.wait_building(&mut first, 1);

    let started = Instant::now();
    let refused = kpackd(fleet.root(), &["apply"]);
    let took = started.elapsed();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("state is locked by pid {} since ", first.pid())),
        "names the holder: {stderr}"
    );
    assert!(
        took < Duration::from_secs(10),
        "refused at once, not after {took:?}"
    );

    let mut waiting = spawn_kpackd(
        fleet.root(),
        "waiting",
        &["apply", "--lock-timeout", "120s"],
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        matches!(waiting.child.try_wait(), Ok(None)),
        "with --lock-timeout the second apply waits:\n{}",
        waiting.output()
    );
    let first_status = first.wait_timeout(LONG).expect("the first apply ends");
    assert_eq!(first_status.code(), Some(0), "{}", first.output());
    assert!(
        first.stdout().contains("1 built"),
        "the first apply built:\n{}",
        first.output()
    );
    let waited = waiting.wait_timeout(LONG).expect("the waiting apply ends");
    assert_eq!(waited.code(), Some(0), "{}", waiting.output());
    // It planned after the first apply's build was recorded: nothing left to do.
    assert_eq!(fleet.builds(), vec![(1, "succeeded".to_string())]);
}

/// While apply runs a build, `kpackd logs --follow` prints the log as it grows and ends
/// when the build does; `kpackd status` and `kpackd builds` show the running build.
#[test]
fn logs_follow_status_and_builds_show_a_running_build_live() {
    let fleet = Sleepy::new();
    fleet.slow("4");
    let mut apply = spawn_kpackd(fleet.root(), "apply", &["apply"]);
    fleet.wait_building(&mut apply, 1);

    let status = kpackd(fleet.root(), &["status"]);
    assert_eq!(status.status.code(), Some(0));
    let status = stdout(&status);
    assert!(
        status.contains("sleepy") && status.contains("building"),
        "status shows the running build:\n{status}"
    );
    let builds = kpackd(fleet.root(), &["builds", "sleepy"]);
    let builds = stdout(&builds);
    assert!(builds.contains("building"), "builds shows it:\n{builds}");

    let mut follow = spawn_kpackd(fleet.root(), "logs-follow", &["logs", "sleepy", "--follow"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        matches!(follow.child.try_wait(), Ok(None)),
        "logs --follow waits while the build runs:\n{}",
        follow.output()
    );
    assert!(
        follow.stdout().contains("build started"),
        "logs --follow printed what the log had so far:\n{}",
        follow.output()
    );
    assert!(!follow.stdout().contains("build done"));

    let ended = follow
        .wait_timeout(LONG)
        .expect("logs --follow ends with the build");
    assert_eq!(ended.code(), Some(0), "{}", follow.output());
    let applied = apply.wait_timeout(LONG).expect("apply ends");
    assert_eq!(applied.code(), Some(0), "{}", apply.output());
    assert_eq!(fleet.builds(), vec![(1, "succeeded".to_string())]);
    let followed = follow.stdout();
    assert!(
        followed.contains("build done"),
        "logs --follow printed the build to its end:\n{followed}"
    );
    // What --follow printed is the whole log, once.
    let whole = stdout(&kpackd(fleet.root(), &["logs", "sleepy"]));
    assert_eq!(followed, whole);
}

/// On a terminal, apply shows a line per build with its step and the build's latest
/// output, updated in place.
#[test]
fn on_a_terminal_apply_shows_each_build_with_its_step_and_latest_output() {
    testkit::require("script", "bsdutils");
    let fleet = Sleepy::new();
    fleet.slow("2");
    let typescript = fleet.root().join("typescript");
    let command = format!("{} apply", env!("CARGO_BIN_EXE_kpackd"));
    let status = std::process::Command::new("script")
        .args(["-qfec", &command])
        .arg(&typescript)
        .current_dir(fleet.root())
        .env_remove("NO_COLOR")
        .env("COLUMNS", "120")
        .stdin(std::process::Stdio::null())
        .status()
        .expect("running script");
    let screen =
        String::from_utf8_lossy(&std::fs::read(&typescript).expect("the typescript")).into_owned();
    assert!(status.success(), "{screen}");
    assert!(
        screen.contains("sleepy #1") && screen.contains("building · [test/sleepy] build started"),
        "the build's line shows its step and its latest output:\n{screen}"
    );
    assert!(screen.contains("Apply complete: 1 built"), "{screen}");
}

/// A fleet of three images (two from paths, one from git) whose buildpack writes a few
/// MB of layers, so that a kill lands in any step: planning, building, exporting, tagging.
struct Crashable {
    dir: tempfile::TempDir,
    repo: BareRepo,
}

const CRASH_IMAGES: [&str; 3] = ["one", "two", "remote"];

impl Crashable {
    fn new() -> Crashable {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path();
        write_stack(&root.join("work"), &root.join("stacks"));
        write_buildpack(
            &root.join("buildpacks"),
            "bulky",
            "test/bulky",
            "true",
            r#"echo "build started"
layer="$CNB_LAYERS_DIR/bulk"
mkdir -p "$layer/bin"
head -c 3000000 /dev/urandom > "$layer/data"
printf '#!/bin/sh\ncat /workspace/app.txt\n' > "$layer/bin/show"
chmod +x "$layer/bin/show"
printf '[types]\nlaunch = true\n' > "$layer.toml"
other="$CNB_LAYERS_DIR/other"
mkdir -p "$other"
head -c 2000000 /dev/urandom > "$other/data"
printf '[types]\nlaunch = true\n' > "$other.toml"
cat > "$CNB_LAYERS_DIR/launch.toml" <<EOT
[[processes]]
type = "web"
command = ["show"]
default = true
EOT
echo "build done""#,
        );
        for name in ["one", "two"] {
            let app = root.join("apps").join(name);
            std::fs::create_dir_all(&app).expect("an app dir");
            std::fs::write(app.join("app.txt"), name).expect("an app file");
        }
        let mut repo = BareRepo::new();
        repo.commit(&[("app.txt", "remote")], "first");
        std::fs::write(
            root.join("kpack.toml"),
            format!(
                r#"[kpackd]
state-dir = "state"
concurrency = 2

{STACK_TOML}
[stores.test]
buildpacks = ["buildpacks/bulky"]

[builders.test]
stack = "test"
store = "test"
order = [{{ group = [{{ id = "test/bulky" }}] }}]

[images.one]
tag = "oci:out:one"
builder = "test"
source = {{ path = "apps/one" }}

[images.two]
tag = "oci:out:two"
builder = "test"
source = {{ path = "apps/two" }}

[images.remote]
tag = "oci:out:remote"
builder = "test"
source = {{ git = "{}", revision = "main" }}
"#,
                repo.url()
            ),
        )
        .expect("writing kpack.toml");
        Crashable { dir, repo }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn out(&self) -> PathBuf {
        self.root().join("out")
    }
}

/// xorshift64*: enough randomness for kill delays, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound.max(1)
    }
}

/// Whether a build status is one a build ends in.
fn ended(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "canceled" | "interrupted")
}

/// `kill -9` of apply at random moments between 0 and a typical apply's time, for
/// CRASH_ROUNDS rounds (default 10; CRASH_SEED repeats a run). After each kill the state
/// opens, the output layout has no ref to a missing blob, and the next apply converges:
/// exit 0, every build found running is `interrupted`, every image built again, and a
/// plan afterwards has no changes.
#[test]
fn kill_9_at_random_moments_then_the_next_apply_converges() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("crash test: {rounds} rounds, CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let mut fleet = Crashable::new();

    let started = Instant::now();
    let first = kpackd(fleet.root(), &["apply"]);
    let typical = started.elapsed();
    assert_eq!(first.status.code(), Some(0), "the first apply builds all");
    eprintln!("a full apply takes {typical:?}");

    let mut summary = Vec::new();
    for round in 1..=rounds {
        // Work for this round: a rebase of everything (a patched run image), or a
        // rebuild of everything (a commit and triggers).
        let work = if round % 3 == 0 {
            support::patch_run_image(
                &fleet.root().join("work"),
                &fleet.root().join("stacks"),
                &round.to_string(),
            );
            "rebase"
        } else {
            fleet
                .repo
                .commit(&[("app.txt", &format!("remote {round}"))], "change");
            assert!(kpackd(fleet.root(), &["trigger", "one", "two"])
                .status
                .success());
            "rebuild"
        };
        let delay = Duration::from_millis(rng.below(typical.as_millis() as u64));
        let mut apply = spawn_kpackd(fleet.root(), &format!("apply-{round}"), &["apply"]);
        std::thread::sleep(delay);
        apply.signal("KILL");
        let status = apply.wait_timeout(LONG).expect("a killed apply ends");
        let killed = status.code().is_none();

        let builds = builds_json(fleet.root()).expect("the state opens after kill -9");
        let running: Vec<(String, u64, String)> = builds
            .iter()
            .filter(|b| !ended(b["status"].as_str().unwrap_or("")))
            .map(|b| {
                (
                    b["image"].as_str().unwrap_or("").to_string(),
                    b["number"].as_u64().unwrap_or(0),
                    b["status"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let (refs, broken) = broken_refs(&fleet.out());
        assert!(
            broken.is_empty(),
            "round {round}: after kill -9 at {delay:?}, refs point at missing blobs: {broken:#?}"
        );

        let converge_started = Instant::now();
        let next = kpackd(fleet.root(), &["apply"]);
        let converge = converge_started.elapsed();
        assert_eq!(
            next.status.code(),
            Some(0),
            "round {round}: the apply after kill -9 at {delay:?} converges"
        );
        let stderr = String::from_utf8_lossy(&next.stderr);
        let after = builds_json(fleet.root()).expect("the state opens");
        for (image, number, was) in &running {
            let now = after
                .iter()
                .find(|b| b["image"] == image.as_str() && b["number"] == *number)
                .and_then(|b| b["status"].as_str())
                .unwrap_or("(pruned)");
            assert_eq!(
                now, "interrupted",
                "round {round}: {image} #{number}, found {was}, is marked interrupted"
            );
            assert!(
                stderr.contains(&format!("build {image} #{number} was interrupted")),
                "round {round}: the next apply says {image} #{number} was interrupted: {stderr}"
            );
        }
        for image in CRASH_IMAGES {
            let last = after
                .iter()
                .filter(|b| b["image"] == image)
                .max_by_key(|b| b["number"].as_u64())
                .expect("the image has builds");
            assert_eq!(
                last["status"], "succeeded",
                "round {round}: {image}'s last build succeeded"
            );
            assert!(
                layout_refs(&fleet.out()).contains(&image.to_string()),
                "round {round}: {image} is tagged"
            );
        }
        let (refs_after, broken) = broken_refs(&fleet.out());
        assert!(
            broken.is_empty(),
            "round {round}: refs point at missing blobs after the converging apply: {broken:#?}"
        );
        let plan = kpackd(fleet.root(), &["plan", "--detailed-exitcode"]);
        assert_eq!(
            plan.status.code(),
            Some(0),
            "round {round}: nothing left to do after converging"
        );
        let line = format!(
            "round {round:>2}: {work:<7} kill -9 at {:>5} ms ({}), found running: {:<40} converged in {:>5} ms, refs checked {refs}/{refs_after}",
            delay.as_millis(),
            if killed { "killed" } else { "had ended" },
            if running.is_empty() {
                "-".to_string()
            } else {
                running
                    .iter()
                    .map(|(i, n, s)| format!("{i}#{n} {s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            converge.as_millis(),
        );
        eprintln!("{line}");
        summary.push((line, !running.is_empty()));
    }
    println!("crash test summary (CRASH_SEED={seed}, full apply {typical:?}):");
    for (line, _) in &summary {
        println!("{line}");
    }
    println!(
        "{} rounds, {} with builds interrupted, all converged, no ref to a missing blob",
        summary.len(),
        summary
            .iter()
            .filter(|(_, interrupted)| *interrupted)
            .count()
    );
}
