//! Shared by the lifecycle tests: a minimal stack root, an app, a platform dir, and the
//! test buildpacks of this directory (copied, with their programs made executable).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use executors::lifecycle::descriptor::{OrderEntry, OrderGroup};
use executors::lifecycle::phase::{BuildpackDir, Isolation, PhaseContext, Target};
use executors::lifecycle::{LogSink, Phase};
use testkit::rootfs::{minimal_rootfs, CNB_GID, CNB_UID};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub ctx: PhaseContext,
}

/// A build of an app with `package.json`, `server.js` and `static/index.html`, a user env
/// var and a user PATH entry, and the test buildpacks named (directory names here).
pub fn fixture(buildpacks: &[&str]) -> Fixture {
    testkit::require("bwrap", "bubblewrap");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    minimal_rootfs(&root, &[]).expect("minimal rootfs");

    let app = dir.path().join("app");
    fs::create_dir_all(app.join("static")).expect("mkdir");
    fs::write(app.join("package.json"), "{}\n").expect("write");
    fs::write(app.join("server.js"), "// server\n").expect("write");
    fs::write(app.join("static/index.html"), "<p>hi</p>\n").expect("write");

    let platform = dir.path().join("platform");
    fs::create_dir_all(platform.join("env")).expect("mkdir");
    fs::write(platform.join("env/USER_VAR"), "from the user").expect("write");
    fs::write(platform.join("env/PATH"), "/user/bin").expect("write");

    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/buildpacks");
    let buildpacks = buildpacks
        .iter()
        .map(|name| {
            let to = dir.path().join("buildpacks").join(name);
            copy_dir(&source.join(name), &to);
            BuildpackDir::read(&to).expect("read buildpack.toml")
        })
        .collect();

    let ctx = PhaseContext {
        isolation: Isolation::Bubblewrap,
        sandbox_root: root,
        uid: CNB_UID,
        gid: CNB_GID,
        app_dir: app,
        layers_dir: dir.path().join("layers"),
        platform_dir: platform,
        buildpacks,
        network: false,
        target: Target {
            os: "linux".into(),
            arch: "amd64".into(),
            arch_variant: None,
            distro_name: Some("ubuntu".into()),
            distro_version: Some("24.04".into()),
        },
        image_env: BTreeMap::from([
            ("PATH".to_owned(), "/usr/bin:/bin".to_owned()),
            ("HOME".to_owned(), "/home/cnb".to_owned()),
            ("NOT_ALLOWED".to_owned(), "dropped".to_owned()),
        ]),
    };
    Fixture { dir, ctx }
}

/// Writes a buildpack made by a test: `buildpack.toml` and the programs given as
/// `(name, shell script)` (`bin/detect`, `bin/build`), under `name` in the fixture's
/// directory; returns its directory, not yet read (see [`BuildpackDir::read`]).
pub fn write_buildpack(
    f: &Fixture,
    name: &str,
    buildpack_toml: &str,
    programs: &[(&str, &str)],
) -> PathBuf {
    let dir = f.dir.path().join("test-buildpacks").join(name);
    fs::create_dir_all(dir.join("bin")).expect("mkdir");
    fs::write(dir.join("buildpack.toml"), buildpack_toml).expect("write buildpack.toml");
    for (program, script) in programs {
        let path = dir.join("bin").join(program);
        fs::write(&path, script).expect("write a program");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// [`write_buildpack`], read and added to the buildpacks of the build.
pub fn add_buildpack(f: &mut Fixture, name: &str, buildpack_toml: &str, programs: &[(&str, &str)]) {
    let dir = write_buildpack(f, name, buildpack_toml, programs);
    let bp = BuildpackDir::read(&dir).expect("read buildpack.toml");
    f.ctx.buildpacks.push(bp);
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read buildpack dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
            if from.ends_with("bin") {
                fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).expect("chmod");
            }
        }
    }
}

/// An order of groups of `(buildpack id, optional)`.
pub fn order(groups: &[&[(&str, bool)]]) -> Vec<OrderGroup> {
    groups
        .iter()
        .map(|group| OrderGroup {
            group: group
                .iter()
                .map(|(id, optional)| OrderEntry {
                    id: (*id).to_owned(),
                    version: "1.0.0".to_owned(),
                    optional: *optional,
                })
                .collect(),
        })
        .collect()
}

/// A [`LogSink`] that keeps every line.
#[derive(Default)]
pub struct Logs(pub Mutex<Vec<(Phase, Option<String>, String)>>);

impl LogSink for Logs {
    fn line(&self, phase: Phase, buildpack: Option<&str>, line: &str) {
        self.0
            .lock()
            .expect("lock")
            .push((phase, buildpack.map(str::to_owned), line.to_owned()));
    }
}

impl Logs {
    /// Whether `buildpack` printed `line` during `phase`.
    pub fn has(&self, phase: Phase, buildpack: &str, line: &str) -> bool {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .any(|(p, b, l)| *p == phase && b.as_deref() == Some(buildpack) && l == line)
    }
}

pub fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The `NAME=value` lines of an `env | sort` dump, as a map.
pub fn env_dump(path: PathBuf) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
