//! Layers whose bytes depend on their contents only: every entry gets a fixed mtime,
//! no user or group names, an owner the caller chose (root unless said otherwise) and a
//! normalised mode (directories `0755`, files `0755` when any execute bit is set on disk
//! and `0644` otherwise, symlinks as they are); entries are written in name order;
//! hard links are written as the files they are. Nothing of the host (inode numbers,
//! owners, timestamps, umask) reaches the tar, so a directory written here on any
//! machine gives the same diffID and, through the deterministic compressor, the same
//! digest.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::oci::compress::{default_threads, LayerCompression};
use crate::oci::layer::{write_layer_file, Hashing, WrittenLayer, NORMALISED_MTIME};
use crate::oci::OciError;

/// The mode of directories, and of files with an execute bit.
const EXEC_MODE: u32 = 0o755;
/// The mode of other files.
const FILE_MODE: u32 = 0o644;

/// Who owns an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
}

impl Owner {
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Contents {
    Disk { path: PathBuf, len: u64 },
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir { owner: Owner, mode: u32 },
    File { contents: Contents, mode: u32 },
    Symlink { target: PathBuf },
}

/// The entries of one normalised layer, by path in the image (relative, `/`-separated).
/// Parents not added explicitly are root-owned `0755` directories.
#[derive(Debug, Clone, Default)]
pub struct NormalisedLayer {
    entries: BTreeMap<String, Entry>,
}

impl NormalisedLayer {
    pub fn new() -> NormalisedLayer {
        NormalisedLayer::default()
    }

    /// A directory owned by `owner`, mode `0755`.
    pub fn dir(&mut self, path: &str, owner: Owner) -> &mut Self {
        let path = self.with_parents(path);
        self.entries.insert(
            path,
            Entry::Dir {
                owner,
                mode: EXEC_MODE,
            },
        );
        self
    }

    /// A root-owned file holding `bytes`; `0755` when `executable`, else `0644`.
    pub fn file(&mut self, path: &str, bytes: Vec<u8>, executable: bool) -> &mut Self {
        let path = self.with_parents(path);
        self.entries.insert(
            path,
            Entry::File {
                contents: Contents::Bytes(bytes),
                mode: if executable { EXEC_MODE } else { FILE_MODE },
            },
        );
        self
    }

    /// A root-owned file with the contents of `on_disk` (a regular file, followed if a
    /// symlink), mode `0755`: an executable.
    pub fn executable(&mut self, path: &str, on_disk: &Path) -> Result<&mut Self, OciError> {
        let meta = fs::metadata(on_disk).map_err(|e| OciError::io(on_disk, e))?;
        if !meta.is_file() {
            return Err(OciError::io(
                on_disk,
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            ));
        }
        let path = self.with_parents(path);
        self.entries.insert(
            path,
            Entry::File {
                contents: Contents::Disk {
                    path: on_disk.to_path_buf(),
                    len: meta.len(),
                },
                mode: EXEC_MODE,
            },
        );
        Ok(self)
    }

    /// The directory `on_disk` and everything below it as `path`, root-owned, modes
    /// normalised. Symlinks are kept as symlinks (never followed); sockets, fifos and
    /// device nodes are left out. Names must be UTF-8. Blocking.
    pub fn tree(&mut self, path: &str, on_disk: &Path) -> Result<&mut Self, OciError> {
        let meta = fs::symlink_metadata(on_disk).map_err(|e| OciError::io(on_disk, e))?;
        if !meta.is_dir() {
            return Err(OciError::io(
                on_disk,
                io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
            ));
        }
        self.dir(path, Owner::ROOT);
        let path = normalise(path);
        self.children(&path, on_disk)?;
        Ok(self)
    }

    fn children(&mut self, name: &str, dir: &Path) -> Result<(), OciError> {
        for child in fs::read_dir(dir).map_err(|e| OciError::io(dir, e))? {
            let child = child.map_err(|e| OciError::io(dir, e))?;
            let on_disk = child.path();
            let Some(file_name) = child.file_name().to_str().map(str::to_string) else {
                return Err(OciError::Unsupported(format!(
                    "{}: file names must be UTF-8",
                    on_disk.display()
                )));
            };
            let child_name = format!("{name}/{file_name}");
            let meta = fs::symlink_metadata(&on_disk).map_err(|e| OciError::io(&on_disk, e))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                self.entries.insert(
                    child_name.clone(),
                    Entry::Dir {
                        owner: Owner::ROOT,
                        mode: EXEC_MODE,
                    },
                );
                self.children(&child_name, &on_disk)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&on_disk).map_err(|e| OciError::io(&on_disk, e))?;
                self.entries.insert(child_name, Entry::Symlink { target });
            } else if kind.is_file() {
                let executable = meta.permissions().mode() & 0o111 != 0;
                self.entries.insert(
                    child_name,
                    Entry::File {
                        contents: Contents::Disk {
                            path: on_disk,
                            len: meta.len(),
                        },
                        mode: if executable { EXEC_MODE } else { FILE_MODE },
                    },
                );
            } else {
                tracing::debug!(path = %on_disk.display(), "left out of the layer: not a file, directory or symlink");
            }
        }
        Ok(())
    }

    /// `path` without leading or repeated slashes, its parents added as root-owned
    /// directories unless already there.
    fn with_parents(&mut self, path: &str) -> String {
        let path = normalise(path);
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            self.entries
                .entry(path[..end].to_string())
                .or_insert(Entry::Dir {
                    owner: Owner::ROOT,
                    mode: EXEC_MODE,
                });
            end += 1;
        }
        path
    }

    /// The layer's diffID (the sha256 of its tar) without compressing or writing it:
    /// how a publish finds out cheaply that the destination has the layer. Blocking.
    pub fn diff_id(&self) -> Result<imageref::Digest, OciError> {
        let mut tar = tar::Builder::new(Hashing::new(io::sink()));
        for (name, entry) in &self.entries {
            append(&mut tar, name, entry).map_err(|e| OciError::io(Path::new(name), e))?;
        }
        let hashing = tar
            .into_inner()
            .map_err(|e| OciError::io(Path::new("layer"), e))?;
        Ok(hashing.digest())
    }

    /// Writes the layer into `out_dir`, gzipped by the deterministic compressor.
    /// Blocking.
    pub fn write(&self, out_dir: &Path) -> Result<WrittenLayer, OciError> {
        write_layer_file(out_dir, LayerCompression::Gzip, default_threads(), |tar| {
            for (name, entry) in &self.entries {
                append(tar, name, entry).map_err(|e| OciError::io(Path::new(name), e))?;
            }
            Ok(())
        })
    }
}

/// `/a//b/` → `a/b`.
fn normalise(path: &str) -> String {
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, entry: &Entry) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_mtime(NORMALISED_MTIME);
    header.set_username("")?;
    header.set_groupname("")?;
    header.set_size(0);
    header.set_uid(0);
    header.set_gid(0);
    match entry {
        Entry::Dir { owner, mode } => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(*mode);
            header.set_uid(owner.uid);
            header.set_gid(owner.gid);
            tar.append_data(&mut header, name, io::empty())
        }
        Entry::Symlink { target } => {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            tar.append_link(&mut header, name, target)
        }
        Entry::File { contents, mode } => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(*mode);
            match contents {
                Contents::Bytes(bytes) => {
                    header.set_size(bytes.len() as u64);
                    tar.append_data(&mut header, name, &bytes[..])
                }
                Contents::Disk { path, len } => {
                    header.set_size(*len);
                    let file = File::open(path).map_err(|e| with_path(path, e))?;
                    // Exactly `len` bytes: a file that changed size since it was listed
                    // fails rather than spilling into the next header.
                    let mut reader = ExactLen {
                        inner: file.take(*len),
                        left: *len,
                    };
                    tar.append_data(&mut header, name, &mut reader)
                        .map_err(|e| with_path(path, e))
                }
            }
        }
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// A reader that fails when its source ends before `left` bytes.
struct ExactLen<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactLen<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was written into a layer",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries(layer: &WrittenLayer) -> Vec<(String, u32, u64, u64, u64)> {
        let file = File::open(&layer.path).unwrap();
        let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.mtime().unwrap(),
                    h.size().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn host_metadata_does_not_reach_the_layer() {
        let work = tempfile::tempdir().unwrap();
        let write_tree = |root: &Path, file_mode: u32| {
            fs::create_dir_all(root.join("bin")).unwrap();
            fs::write(root.join("bin/build"), "#!/bin/sh\n").unwrap();
            fs::write(root.join("buildpack.toml"), "api = \"0.10\"\n").unwrap();
            fs::set_permissions(
                root.join("bin/build"),
                fs::Permissions::from_mode(file_mode | 0o100),
            )
            .unwrap();
            fs::set_permissions(
                root.join("buildpack.toml"),
                fs::Permissions::from_mode(file_mode),
            )
            .unwrap();
            std::os::unix::fs::symlink("build", root.join("bin/detect")).unwrap();
        };
        let (a, b) = (work.path().join("a"), work.path().join("b"));
        write_tree(&a, 0o600);
        write_tree(&b, 0o664);
        fs::set_permissions(&b, fs::Permissions::from_mode(0o700)).unwrap();
        let out = work.path().join("out");
        fs::create_dir(&out).unwrap();
        let one = NormalisedLayer::new()
            .tree("/cnb/x", &a)
            .unwrap()
            .write(&out)
            .unwrap();
        assert_eq!(
            NormalisedLayer::new()
                .tree("/cnb/x", &a)
                .unwrap()
                .diff_id()
                .unwrap(),
            one.diff_id
        );
        let two = NormalisedLayer::new()
            .tree("cnb/x/", &b)
            .unwrap()
            .write(&out)
            .unwrap();
        assert_eq!(one.diff_id, two.diff_id);
        assert_eq!(one.digest, two.digest);
        let names: Vec<_> = entries(&one)
            .into_iter()
            .map(|(n, mode, uid, mtime, _)| {
                assert_eq!((uid, mtime), (0, NORMALISED_MTIME));
                (n, mode)
            })
            .collect();
        assert_eq!(
            names,
            [
                ("cnb".to_string(), 0o755),
                ("cnb/x".into(), 0o755),
                ("cnb/x/bin".into(), 0o755),
                ("cnb/x/bin/build".into(), 0o755),
                ("cnb/x/bin/detect".into(), 0o777),
                ("cnb/x/buildpack.toml".into(), 0o644),
            ]
        );
    }

    #[test]
    fn directories_get_their_owner_and_parents_root() {
        let work = tempfile::tempdir().unwrap();
        let layer = NormalisedLayer::new()
            .dir(
                "/workspace",
                Owner {
                    uid: 1000,
                    gid: 1001,
                },
            )
            .file("/cnb/order.toml", b"[[order]]\n".to_vec(), false)
            .write(work.path())
            .unwrap();
        let all = entries(&layer);
        assert_eq!(all[0].0, "cnb");
        assert_eq!(
            all[1],
            ("cnb/order.toml".into(), 0o644, 0, NORMALISED_MTIME, 10)
        );
        assert_eq!(all[2].0, "workspace");
        assert_eq!(all[2].2, 1000);
    }
}
