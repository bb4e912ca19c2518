//! Arbitrary bytes, taken as a layer, are unpacked into a root inside a scratch
//! directory; whatever they hold, nothing beside the root may appear, disappear or
//! change: a sentinel directory with a file, a symlink and a subdirectory next to it
//! must stay exactly as it was (names, kinds, sizes, modes, link counts).

#![no_main]

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use executors::oci::{unpack_layer, UnpackOptions};
use libfuzzer_sys::fuzz_target;

/// Everything under `dir` but `skip`, recursively: path, kind, size, mode, links.
fn listing(dir: &Path, skip: &Path) -> Vec<(String, u32, u64, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("the scratch directory is readable") {
            let path = e.expect("a readable entry").path();
            if path == skip {
                continue;
            }
            let m = fs::symlink_metadata(&path).expect("an entry just listed exists");
            out.push((path.display().to_string(), m.mode(), m.len(), m.nlink()));
            if m.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let work = tempfile::tempdir().expect("a scratch directory");
    let root = work.path().join("root");
    let sentinel = work.path().join("sentinel");
    fs::create_dir(&root).expect("mkdir root");
    fs::create_dir_all(sentinel.join("d")).expect("mkdir sentinel");
    fs::write(sentinel.join("secret"), "do not touch").expect("write sentinel");
    fs::set_permissions(sentinel.join("d"), fs::Permissions::from_mode(0o700))
        .expect("chmod sentinel");
    symlink("secret", sentinel.join("link")).expect("symlink sentinel");
    let before = listing(work.path(), &root);

    // Errors are expected for most inputs; only escapes matter.
    let _ = unpack_layer(data, &root, &UnpackOptions { chown: false });

    assert!(root.is_dir(), "the root itself is gone");
    assert_eq!(
        listing(work.path(), &root),
        before,
        "something changed outside the root"
    );
    assert_eq!(
        fs::read_to_string(sentinel.join("secret")).expect("sentinel readable"),
        "do not touch"
    );
});
