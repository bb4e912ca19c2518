//! Layers on disk: the writer's output is the same bytes for the same tree whenever and
//! wherever it is built, and unpacking applies whiteouts and links but refuses every
//! entry that would write outside the target — each malicious tar names the entry, and
//! nothing appears outside.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

mod oci_support;

use std::num::NonZeroUsize;

use executors::oci::compress::CHUNK;
use executors::oci::layer::{LayerBuilder, NORMALISED_MTIME};
use executors::oci::unpack::unpack_layer;
use executors::oci::{media_type, unpack_image, LayerCompression, OciError, UnpackOptions};
use sha2::{Digest as _, Sha256};

/// Builds the same tree in `dir`, creating files in the given order, with `mtime` on
/// every file.
fn same_tree(dir: &Path, reversed: bool, mtime: SystemTime) {
    let mut files = vec![
        ("bin/run", "#!/bin/sh\necho hi\n", 0o755),
        ("etc/app.conf", "port = 8080\n", 0o640),
        ("data/a.txt", "alpha\n", 0o644),
        ("data/b.txt", "bravo\n", 0o600),
    ];
    if reversed {
        files.reverse();
    }
    for (path, content, mode) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    symlink("../bin/run", dir.join("data/run-link")).unwrap();
    fs::hard_link(dir.join("data/a.txt"), dir.join("data/a-again.txt")).unwrap();
}

#[test]
fn the_same_tree_gives_the_same_bytes() {
    let work = tempfile::tempdir().unwrap();
    let (one, two) = (work.path().join("one"), work.path().join("two"));
    same_tree(
        &one,
        false,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
    );
    same_tree(&two, true, SystemTime::now());
    let (out_one, out_two) = (work.path().join("out1"), work.path().join("out2"));
    fs::create_dir_all(&out_one).unwrap();
    fs::create_dir_all(&out_two).unwrap();

    let a = LayerBuilder::new(1000, 1001)
        .add(Path::new("/workspace"), &one)
        .unwrap()
        .write(&out_one)
        .unwrap();
    let b = LayerBuilder::new(1000, 1001)
        .add(Path::new("/workspace"), &two)
        .unwrap()
        .write(&out_two)
        .unwrap();
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.diff_id, b.diff_id);
    assert_eq!(fs::read(&a.path).unwrap(), fs::read(&b.path).unwrap());

    // And what the bytes hold is CNB-normalised.
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(
        fs::File::open(&a.path).unwrap(),
    ));
    let mut names = Vec::new();
    for entry in tar.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        let name = entry.path().unwrap().display().to_string();
        assert_eq!(h.mtime().unwrap(), NORMALISED_MTIME, "{name}");
        assert_eq!(h.username().unwrap(), Some(""), "{name}");
        assert_eq!(h.groupname().unwrap(), Some(""), "{name}");
        match name.as_str() {
            "workspace/bin/run" => {
                assert_eq!(h.mode().unwrap(), 0o755);
                assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (1000, 1001));
            }
            "workspace/data/b.txt" => assert_eq!(h.mode().unwrap(), 0o600),
            "workspace/data/run-link" => {
                assert_eq!(h.entry_type(), tar::EntryType::Symlink);
                assert_eq!(
                    entry.link_name().unwrap().unwrap().to_str(),
                    Some("../bin/run")
                );
            }
            "workspace/data/a.txt" => {
                assert_eq!(h.entry_type(), tar::EntryType::Link);
                assert_eq!(
                    entry.link_name().unwrap().unwrap().to_str(),
                    Some("workspace/data/a-again.txt"),
                    "the second name of a file is a hard link to the first"
                );
            }
            _ => {}
        }
        names.push(name);
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are sorted");
    assert!(names.contains(&"workspace/data/a-again.txt".to_string()));
}

/// A tree whose tar spans several compression chunks: incompressible files (each bigger
/// than a chunk, and one exactly a chunk) and many small ones.
fn big_tree(dir: &Path) {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    fs::create_dir_all(dir.join("small")).unwrap();
    fs::write(dir.join("a.bin"), noise(2 * CHUNK + 4321)).unwrap();
    fs::write(dir.join("b.bin"), noise(CHUNK)).unwrap();
    for i in 0..200 {
        fs::write(
            dir.join(format!("small/{i:03}.txt")),
            format!("line {i}\n").repeat(i),
        )
        .unwrap();
    }
}

/// The uncompressed tar of a layer: what its diffID is the sha256 of.
fn tar_of(builder: &LayerBuilder, work: &Path) -> Vec<u8> {
    let out = work.join("plain");
    fs::create_dir_all(&out).unwrap();
    let one = NonZeroUsize::MIN;
    let written = builder
        .write_compressed(&out, LayerCompression::Gzip, one)
        .unwrap();
    let mut tar = Vec::new();
    flate2::read::MultiGzDecoder::new(fs::File::open(&written.path).unwrap())
        .read_to_end(&mut tar)
        .unwrap();
    tar
}

#[test]
fn a_layer_is_the_same_bytes_on_1_2_and_8_threads() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    big_tree(&tree);
    let mut builder = LayerBuilder::new(1000, 1000);
    builder.add(Path::new("/workspace"), &tree).unwrap();
    let tar = tar_of(&builder, work.path());
    assert!(tar.len() > 3 * CHUNK, "the tar spans several chunks");
    let tar_sha = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));

    for compression in [LayerCompression::Gzip, LayerCompression::Zstd] {
        let mut blobs = Vec::new();
        for threads in [1, 2, 8] {
            let out = work.path().join(format!("{compression:?}-{threads}"));
            fs::create_dir_all(&out).unwrap();
            let threads = NonZeroUsize::new(threads).unwrap();
            let written = builder
                .write_compressed(&out, compression, threads)
                .unwrap();
            let bytes = fs::read(&written.path).unwrap();
            assert_eq!(written.diff_id.to_string(), tar_sha, "{compression:?}");
            assert_eq!(
                written.digest.to_string(),
                format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
            );
            assert_eq!(written.size, bytes.len() as u64);
            assert_eq!(written.compression(), compression);
            assert_eq!(written.descriptor().media_type, compression.media_type());
            blobs.push(bytes);
        }
        assert!(
            blobs[0] == blobs[1],
            "{compression:?}: 1 and 2 threads differ"
        );
        assert!(
            blobs[0] == blobs[2],
            "{compression:?}: 1 and 8 threads differ"
        );

        // Decompressed, the blob is the tar, byte for byte (every member or frame of it).
        let mut back = Vec::new();
        match compression {
            LayerCompression::Gzip => {
                flate2::read::MultiGzDecoder::new(&blobs[0][..])
                    .read_to_end(&mut back)
                    .unwrap();
            }
            LayerCompression::Zstd => back = zstd::stream::decode_all(&blobs[0][..]).unwrap(),
        }
        assert!(back == tar, "{compression:?}: decompressed blob is the tar");
    }
    assert_eq!(
        LayerCompression::Zstd.media_type(),
        media_type::OCI_LAYER_ZSTD
    );
}

#[test]
fn a_zstd_layer_unpacks() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    big_tree(&tree);
    let out = work.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let written = LayerBuilder::new(0, 0)
        .add(Path::new("/app"), &tree)
        .unwrap()
        .write_compressed(&out, LayerCompression::Zstd, NonZeroUsize::new(2).unwrap())
        .unwrap();
    let target = work.path().join("root");
    fs::create_dir_all(&target).unwrap();
    unpack_layer(
        fs::File::open(&written.path).unwrap(),
        &target,
        &UnpackOptions::default(),
    )
    .unwrap();
    assert_eq!(
        fs::read(target.join("app/a.bin")).unwrap(),
        fs::read(tree.join("a.bin")).unwrap()
    );
    assert_eq!(
        fs::read_to_string(target.join("app/small/199.txt")).unwrap(),
        "line 199\n".repeat(199)
    );
}

/// A tar entry written byte by byte, so that names the `tar` crate would refuse
/// (`../x`) can be made.
struct RawEntry<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
    /// The mode in the header; `None` for 0755 on directories, 0644 on the rest.
    mode: Option<u32>,
}

impl RawEntry<'_> {
    fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> RawEntry<'a> {
    RawEntry {
        name,
        kind: tar::EntryType::Regular,
        link: "",
        data,
        mode: None,
    }
}

fn dir(name: &str) -> RawEntry<'_> {
    RawEntry {
        name,
        kind: tar::EntryType::Directory,
        link: "",
        data: b"",
        mode: None,
    }
}

fn link<'a>(name: &'a str, kind: tar::EntryType, target: &'a str) -> RawEntry<'a> {
    RawEntry {
        name,
        kind,
        link: target,
        data: b"",
        mode: None,
    }
}

fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut header = tar::Header::new_old();
        {
            let old = header.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        header.set_entry_type(e.kind);
        header.set_mode(e.mode.unwrap_or(if e.kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        }));
        header.set_size(e.data.len() as u64);
        header.set_mtime(NORMALISED_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(e.data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// A target directory inside `work`, and beside it an `outside` directory holding a
/// `secret` file, whose listing (names, sizes, link counts) can be compared before
/// and after.
struct Scene {
    work: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let work = tempfile::tempdir().unwrap();
        fs::create_dir_all(work.path().join("root")).unwrap();
        fs::create_dir_all(work.path().join("outside")).unwrap();
        fs::write(work.path().join("outside/secret"), "do not touch").unwrap();
        Scene { work }
    }

    fn root(&self) -> std::path::PathBuf {
        self.work.path().join("root")
    }

    fn outside(&self) -> std::path::PathBuf {
        self.work.path().join("outside")
    }

    /// Everything outside the target: the work dir's other entries, recursively.
    fn outside_listing(&self) -> Vec<(String, u64, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![self.work.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let path = e.path();
                if path == self.root() {
                    continue;
                }
                let m = fs::symlink_metadata(&path).unwrap();
                out.push((path.display().to_string(), m.len(), m.nlink()));
                if m.is_dir() {
                    stack.push(path);
                }
            }
        }
        out.sort();
        out
    }

    /// Unpacks `tar`; the unpack must fail naming `entry`, and nothing outside the
    /// target may change.
    fn refuses(&self, tar: Vec<u8>, entry: &str) -> String {
        let before = self.outside_listing();
        let err = unpack_layer(
            tar.as_slice(),
            &self.root(),
            &UnpackOptions { chown: false },
        )
        .unwrap_err();
        let OciError::UnsafeEntry { entry: named, .. } = &err else {
            panic!("expected an unsafe entry error, got {err:?}");
        };
        assert_eq!(named, entry, "{err}");
        assert!(err.to_string().contains(entry));
        assert_eq!(self.outside_listing(), before, "something changed outside");
        assert_eq!(
            fs::read_to_string(self.outside().join("secret")).unwrap(),
            "do not touch"
        );
        err.to_string()
    }
}

#[test]
fn a_dot_dot_escape_is_refused() {
    let scene = Scene::new();
    let err = scene.refuses(
        raw_tar(&[dir("app/"), file("app/../../escaped.txt", b"pwned")]),
        "app/../../escaped.txt",
    );
    assert!(err.contains(".."), "{err}");
    assert!(!scene.work.path().join("escaped.txt").exists());
}

#[test]
fn an_absolute_symlink_escape_is_refused() {
    let scene = Scene::new();
    let outside = scene.outside().display().to_string();
    scene.refuses(
        raw_tar(&[
            link("evil", tar::EntryType::Symlink, &outside),
            file("evil/pwned.txt", b"pwned"),
        ]),
        "evil/pwned.txt",
    );
    assert!(!scene.outside().join("pwned.txt").exists());
    // The link itself is data, kept as written.
    assert_eq!(
        fs::read_link(scene.root().join("evil")).unwrap(),
        scene.outside()
    );
}

#[test]
fn a_file_through_a_climbing_symlink_is_refused() {
    let scene = Scene::new();
    let err = scene.refuses(
        raw_tar(&[
            dir("app/"),
            link("app/up", tar::EntryType::Symlink, "../../outside"),
            file("app/up/secret", b"overwritten"),
        ]),
        "app/up/secret",
    );
    assert!(err.contains("app/up"), "{err}");
}

#[test]
fn a_hard_link_to_outside_is_refused() {
    let scene = Scene::new();
    let outside_secret = scene.outside().join("secret").display().to_string();
    scene.refuses(
        raw_tar(&[link("stolen", tar::EntryType::Link, &outside_secret)]),
        "stolen",
    );
    let scene = Scene::new();
    scene.refuses(
        raw_tar(&[link("stolen", tar::EntryType::Link, "../outside/secret")]),
        "stolen",
    );
    assert!(!scene.root().join("stolen").exists());
}

#[test]
fn a_hard_link_through_a_symlink_to_outside_is_refused() {
    let scene = Scene::new();
    let outside = scene.outside().display().to_string();
    scene.refuses(
        raw_tar(&[
            link("out", tar::EntryType::Symlink, &outside),
            link("stolen", tar::EntryType::Link, "out/secret"),
        ]),
        "stolen",
    );
}

#[test]
fn links_inside_the_image_work() {
    let scene = Scene::new();
    let tar = raw_tar(&[
        dir("usr/"),
        dir("usr/bin/"),
        link("bin", tar::EntryType::Symlink, "/usr/bin"),
        file("bin/tool", b"#!/bin/sh\n"),
        link("usr/bin/tool-again", tar::EntryType::Link, "usr/bin/tool"),
        link("lib", tar::EntryType::Symlink, "usr/bin/../bin"),
        file("lib/other", b"x"),
    ]);
    unpack_layer(
        tar.as_slice(),
        &scene.root(),
        &UnpackOptions { chown: false },
    )
    .unwrap();
    let root = scene.root();
    assert_eq!(fs::read(root.join("usr/bin/tool")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(fs::read(root.join("usr/bin/other")).unwrap(), b"x");
    let a = fs::metadata(root.join("usr/bin/tool")).unwrap();
    let b = fs::metadata(root.join("usr/bin/tool-again")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn whiteouts_remove_what_lower_layers_put() {
    let scene = Scene::new();
    let options = UnpackOptions { chown: false };
    let lower = raw_tar(&[
        dir("a/"),
        file("a/x", b"x"),
        file("a/y", b"y"),
        file("b", b"b"),
        file("c", b"c"),
    ]);
    unpack_layer(lower.as_slice(), &scene.root(), &options).unwrap();
    let upper = raw_tar(&[
        dir("a/"),
        file("a/.wh..wh..opq", b""),
        file("a/z", b"z"),
        file(".wh.b", b""),
    ]);
    // Gzipped, as registries serve layers.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &upper).unwrap();
    let upper = gz.finish().unwrap();
    unpack_layer(upper.as_slice(), &scene.root(), &options).unwrap();
    let root = scene.root();
    let mut in_a: Vec<String> = fs::read_dir(root.join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    in_a.sort();
    assert_eq!(in_a, ["z"]);
    assert!(!root.join("b").exists());
    assert!(root.join("c").exists());
    assert!(!root.join(".wh.b").exists());
}

#[test]
fn a_layer_is_read_to_its_end() {
    // A reader that checks a digest at its end must get there even when the tar's
    // end-of-archive blocks come before the end of the stream.
    struct Counting<'a>(&'a [u8], usize);
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1 += n;
            Ok(n)
        }
    }
    let scene = Scene::new();
    let mut tar = raw_tar(&[file("f", b"data")]);
    tar.extend_from_slice(&[0u8; 4096]);
    let mut reader = Counting(&tar, 0);
    unpack_layer(&mut reader, &scene.root(), &UnpackOptions { chown: false }).unwrap();
    assert_eq!(reader.1, tar.len());
}

/// The mode bits of `path`, not following a symlink.
fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn directory_modes_are_not_set_through_a_later_symlink() {
    // `x/d` is made, then `x` becomes a symlink to a directory outside that also has a
    // `d`: the directory modes applied at the end must not reach it.
    let scene = Scene::new();
    let target_d = scene.outside().join("d");
    fs::create_dir(&target_d).unwrap();
    fs::set_permissions(&target_d, fs::Permissions::from_mode(0o700)).unwrap();
    let outside = scene.outside().display().to_string();
    let before = scene.outside_listing();
    let tar = raw_tar(&[
        dir("x/"),
        dir("x/d/").mode(0o777),
        link("x", tar::EntryType::Symlink, &outside),
    ]);
    unpack_layer(
        tar.as_slice(),
        &scene.root(),
        &UnpackOptions { chown: false },
    )
    .unwrap();
    assert_eq!(
        mode_of(&target_d),
        0o700,
        "the outside directory's mode changed"
    );
    assert_eq!(scene.outside_listing(), before);
    assert_eq!(
        fs::read_link(scene.root().join("x")).unwrap(),
        scene.outside()
    );
}

#[test]
fn a_whiteout_of_dot_dot_is_refused() {
    let scene = Scene::new();
    let err = scene.refuses(raw_tar(&[file(".wh...", b"")]), ".wh...");
    assert!(err.contains("whiteout"), "{err}");
    assert!(scene.root().is_dir(), "the root survives");

    // One level down, `..` is the root itself.
    let scene = Scene::new();
    fs::write(scene.root().join("kept"), "k").unwrap();
    scene.refuses(raw_tar(&[dir("a/"), file("a/.wh...", b"")]), "a/.wh...");
    assert!(scene.root().join("kept").exists());

    for bad in [".wh..", ".wh."] {
        let scene = Scene::new();
        fs::write(scene.root().join("kept"), "k").unwrap();
        scene.refuses(raw_tar(&[file(bad, b"")]), bad);
        assert!(scene.root().join("kept").exists(), "{bad}");
    }
}

#[test]
fn a_whiteout_through_a_symlink_stays_inside() {
    let scene = Scene::new();
    let outside = scene.outside().display().to_string();
    let tar = raw_tar(&[
        link("out", tar::EntryType::Symlink, &outside),
        file("out/.wh.secret", b""),
        file("out/.wh..wh..opq", b""),
    ]);
    let before = scene.outside_listing();
    unpack_layer(
        tar.as_slice(),
        &scene.root(),
        &UnpackOptions { chown: false },
    )
    .unwrap();
    assert_eq!(scene.outside_listing(), before);
    scene.refuses(
        raw_tar(&[
            link("up", tar::EntryType::Symlink, "../outside"),
            file("up/.wh.secret", b""),
        ]),
        "up/.wh.secret",
    );
}

#[test]
fn set_id_bits_are_dropped() {
    let scene = Scene::new();
    let tar = raw_tar(&[
        dir("bin/").mode(0o2755),
        file("bin/suid", b"#!/bin/sh\n").mode(0o4755),
        file("bin/sgid", b"#!/bin/sh\n").mode(0o2711),
        file("bin/sticky", b"x").mode(0o1644),
        dir("tmp/").mode(0o1777),
    ]);
    unpack_layer(
        tar.as_slice(),
        &scene.root(),
        &UnpackOptions { chown: false },
    )
    .unwrap();
    let root = scene.root();
    assert_eq!(mode_of(&root.join("bin/suid")), 0o755);
    assert_eq!(mode_of(&root.join("bin/sgid")), 0o711);
    assert_eq!(mode_of(&root.join("bin/sticky")), 0o644);
    assert_eq!(mode_of(&root.join("bin")), 0o755);
    assert_eq!(
        mode_of(&root.join("tmp")),
        0o1777,
        "sticky directories stay"
    );
}

#[test]
fn a_hard_link_through_a_climbing_symlink_is_refused() {
    let scene = Scene::new();
    scene.refuses(
        raw_tar(&[
            link("up", tar::EntryType::Symlink, "../outside"),
            link("stolen", tar::EntryType::Link, "up/secret"),
        ]),
        "stolen",
    );
    let scene = Scene::new();
    scene.refuses(
        raw_tar(&[link(
            "stolen",
            tar::EntryType::Link,
            "a/../../outside/secret",
        )]),
        "stolen",
    );
    assert!(!scene.root().join("stolen").exists());
}

#[test]
fn a_symlink_escape_cannot_be_written_through() {
    // Absolute and climbing symlinks are kept as data, but nothing goes through them:
    // not a directory, a file, nor a hard link.
    let scene = Scene::new();
    let outside = scene.outside().display().to_string();
    scene.refuses(
        raw_tar(&[
            link("abs", tar::EntryType::Symlink, &outside),
            dir("abs/made/"),
        ]),
        "abs/made/",
    );
    assert!(!scene.outside().join("made").exists());
    let scene = Scene::new();
    scene.refuses(
        raw_tar(&[
            dir("a/"),
            link("a/b", tar::EntryType::Symlink, "../../outside/"),
            link("a/b/secret-link", tar::EntryType::Link, "a/b/secret"),
        ]),
        "a/b/secret-link",
    );
}

/// Writes `blob` into `layout` as a blob of the given digest.
fn put_blob(layout: &Path, digest: &str, blob: &[u8]) {
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(digest), blob).unwrap();
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn a_layer_whose_digest_does_not_match_changes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let honest = raw_tar(&[file("good.txt", b"honest")]);
    let evil = raw_tar(&[file("evil.txt", b"pwned!")]);
    assert_eq!(honest.len(), evil.len());
    let layer = sha256(&honest);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer}")]},
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", sha256(config.as_bytes())),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer}"),
            "size": honest.len(),
        }],
    })
    .to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256(manifest.as_bytes())),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "app"},
        }],
    })
    .to_string();
    fs::create_dir_all(&layout).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    fs::write(layout.join("index.json"), index).unwrap();
    put_blob(&layout, &sha256(config.as_bytes()), config.as_bytes());
    put_blob(&layout, &sha256(manifest.as_bytes()), manifest.as_bytes());
    put_blob(&layout, &layer, &evil); // swapped under the honest digest

    let store = oci_support::store();
    let r = oci_support::parse(&format!("oci:{}:app", layout.display()));
    let root = work.path().join("root");
    fs::create_dir(&root).unwrap();
    let err = unpack_image(&store, &r, &root, &UnpackOptions { chown: false })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("digest"), "{err}");
    assert_eq!(
        fs::read_dir(&root).unwrap().count(),
        0,
        "the target changed"
    );

    // The honest blob unpacks.
    put_blob(&layout, &layer, &honest);
    unpack_image(&store, &r, &root, &UnpackOptions { chown: false })
        .await
        .unwrap();
    assert_eq!(fs::read(root.join("good.txt")).unwrap(), b"honest");
}
