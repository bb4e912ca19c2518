//! The mirror of a path source, on real files: builds link its files instead of copying
//! them, and a file that a build's programs changed through a link — even with its size
//! and mtime put back — is never linked again, nor is a source file edited that way
//! missed.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use executors::source::mirror::{intact, mirror_dir};
use executors::source::path::{copy_mirrored, hash};

/// A source directory and the state a build of it uses.
struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    state: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("data")).unwrap();
        fs::write(src.join("app.sh"), "echo version 1\n").unwrap();
        fs::set_permissions(src.join("app.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(src.join("data/blob.bin"), "aaaaaaaa").unwrap();
        std::os::unix::fs::symlink("data/blob.bin", src.join("blob")).unwrap();
        let state = dir.path().join("state");
        let fixture = Fixture {
            _dir: dir,
            src,
            state,
        };
        fixture.tick_past_sources();
        fixture
    }

    fn mirror(&self) -> PathBuf {
        mirror_dir(&self.state.join("sources"), "app", &self.src, None)
    }

    /// Makes the app directory of build `number` as a build does; returns it and the
    /// version.
    fn materialise(&self, number: u32) -> (PathBuf, String) {
        let app = self.state.join(format!("work/app-{number}/app"));
        let stat_cache = self.state.join("sources/paths/src.json");
        let version = copy_mirrored(&self.src, None, &app, &stat_cache, &self.mirror()).unwrap();
        (app, version)
    }

    /// Ends a build whose programs all ended: keeps what it left intact, then removes its
    /// work directory.
    fn end(&self, app: &Path) {
        let kept = intact(app, &self.mirror());
        fs::remove_dir_all(app.parent().unwrap()).unwrap();
        kept.save();
    }

    /// Waits until the file system clock is past every timestamp of the source's files,
    /// as it is in practice when a file was not edited in the instant it is read: by
    /// writing a probe until its mtime is strictly newer (no fixed delay).
    fn tick_past_sources(&self) {
        let newest = walk_files(&self.src)
            .iter()
            .map(|p| {
                let m = fs::symlink_metadata(p).unwrap();
                (m.mtime(), m.mtime_nsec()).max((m.ctime(), m.ctime_nsec()))
            })
            .max()
            .unwrap();
        let probe = self.src.parent().unwrap().join("probe");
        loop {
            fs::write(&probe, "tick").unwrap();
            let m = fs::metadata(&probe).unwrap();
            if (m.mtime(), m.mtime_nsec()) > newest {
                return;
            }
            std::thread::yield_now();
        }
    }
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn ino(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

/// Rewrites `path` in place with `contents` of the same size and puts its mtime back, as
/// `touch -d` would: only the ctime tells.
fn rewrite_keeping_size_and_mtime(path: &Path, contents: &[u8]) {
    let before = fs::metadata(path).unwrap();
    assert_eq!(before.len(), contents.len() as u64);
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, contents))
        .unwrap();
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    let after = fs::metadata(path).unwrap();
    assert_eq!(
        (after.len(), after.modified().unwrap(), after.ino()),
        (before.len(), before.modified().unwrap(), before.ino())
    );
}

#[test]
fn an_unchanged_source_is_linked_from_the_mirror_without_a_copy() {
    let f = Fixture::new();
    let (app, version) = f.materialise(1);
    assert_eq!(version, hash(&f.src, None).unwrap());
    let first = (ino(&app.join("app.sh")), ino(&app.join("data/blob.bin")));
    assert_eq!(fs::read(app.join("data/blob.bin")).unwrap(), b"aaaaaaaa");
    assert_eq!(
        fs::read_link(app.join("blob")).unwrap(),
        Path::new("data/blob.bin")
    );
    assert_eq!(
        fs::metadata(app.join("app.sh")).unwrap().mode() & 0o7777,
        0o755
    );
    // The user's files are never linked.
    assert_ne!(first.0, ino(&f.src.join("app.sh")));
    f.end(&app);

    let (app, again) = f.materialise(2);
    assert_eq!(again, version);
    assert_eq!(
        (ino(&app.join("app.sh")), ino(&app.join("data/blob.bin"))),
        first,
        "the same mirror files, linked again"
    );
    assert_eq!(fs::read(app.join("app.sh")).unwrap(), b"echo version 1\n");
}

#[test]
fn a_file_a_build_rewrote_through_its_link_is_copied_again() {
    let f = Fixture::new();
    let (app, _) = f.materialise(1);
    let kept = ino(&app.join("app.sh"));
    // A buildpack rewrites a file of /workspace in place and hides it as best it can.
    rewrite_keeping_size_and_mtime(&app.join("data/blob.bin"), b"bbbbbbbb");
    f.end(&app);

    let (app, version) = f.materialise(2);
    assert_eq!(version, hash(&f.src, None).unwrap());
    assert_eq!(fs::read(app.join("data/blob.bin")).unwrap(), b"aaaaaaaa");
    assert_eq!(fs::read(f.src.join("data/blob.bin")).unwrap(), b"aaaaaaaa");
    assert_eq!(
        ino(&app.join("app.sh")),
        kept,
        "the untouched file is linked again"
    );
}

#[test]
fn a_mode_a_build_changed_through_its_link_is_not_kept() {
    let f = Fixture::new();
    let (app, _) = f.materialise(1);
    fs::set_permissions(app.join("data/blob.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(app.join("data/blob.bin"), fs::Permissions::from_mode(0o644)).unwrap();
    f.end(&app);

    let (app, _) = f.materialise(2);
    let meta = fs::metadata(app.join("data/blob.bin")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o644);
    assert_eq!(fs::read(app.join("data/blob.bin")).unwrap(), b"aaaaaaaa");
}

#[test]
fn a_source_edit_with_size_and_mtime_put_back_reaches_the_app_dir() {
    let f = Fixture::new();
    let (app, first) = f.materialise(1);
    f.end(&app);

    rewrite_keeping_size_and_mtime(&f.src.join("data/blob.bin"), b"cccccccc");
    f.tick_past_sources();
    let (app, edited) = f.materialise(2);
    assert_ne!(edited, first);
    assert_eq!(edited, hash(&f.src, None).unwrap());
    assert_eq!(fs::read(app.join("data/blob.bin")).unwrap(), b"cccccccc");
    f.end(&app);

    // And the edit is what the mirror holds from then on.
    let (app, again) = f.materialise(3);
    assert_eq!(again, edited);
    assert_eq!(fs::read(app.join("data/blob.bin")).unwrap(), b"cccccccc");
}

#[test]
fn a_build_that_did_not_end_leaves_nothing_to_link() {
    let f = Fixture::new();
    let (app, _) = f.materialise(1);
    let first = ino(&app.join("data/blob.bin"));
    // Canceled: its programs were killed, not waited for; the mirror is not judged.
    fs::remove_dir_all(app.parent().unwrap()).unwrap();

    let (app, version) = f.materialise(2);
    assert_eq!(version, hash(&f.src, None).unwrap());
    assert_ne!(ino(&app.join("data/blob.bin")), first);
    assert_eq!(fs::read(app.join("data/blob.bin")).unwrap(), b"aaaaaaaa");
    f.end(&app);
    // Only the files of the source are left in the mirror.
    assert_eq!(fs::read_dir(f.mirror()).unwrap().count(), 2);
}

#[test]
fn files_that_leave_the_source_leave_the_mirror() {
    let f = Fixture::new();
    let (app, _) = f.materialise(1);
    f.end(&app);
    fs::remove_file(f.src.join("app.sh")).unwrap();
    fs::write(f.src.join("new.txt"), "new").unwrap();
    f.tick_past_sources();
    let (app, version) = f.materialise(2);
    assert_eq!(version, hash(&f.src, None).unwrap());
    assert!(!app.join("app.sh").exists());
    assert_eq!(fs::read(app.join("new.txt")).unwrap(), b"new");
    f.end(&app);
    let names: Vec<_> = fs::read_dir(f.mirror()).unwrap().collect();
    assert_eq!(names.len(), 2, "blob.bin and new.txt");
}
