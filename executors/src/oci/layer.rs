//! Writing layers the way the CNB lifecycle does: a tar of files from disk, normalised
//! (sorted entries, mtime 1980-01-01T00:00:01Z, no user or group names, a given
//! uid/gid), hashed (diffID), compressed and hashed again (digest) in one pass to a file.
//! Compression runs on every core in fixed-size chunks (see [`super::compress`]), so a
//! layer's bytes do not depend on the machine that wrote it.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use std::num::NonZeroUsize;

use imageref::Digest;
use sha2::{Digest as _, Sha256};

use super::compress::{compress_into, default_threads, LayerCompression};
use super::manifest::Descriptor;
use super::OciError;

/// The mtime of every entry: 1980-01-01T00:00:01Z, as CNB tooling writes it.
pub const NORMALISED_MTIME: u64 = 315_532_801;

/// A layer written to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenLayer {
    /// sha256 of the uncompressed tar: what the image config and CNB labels record.
    pub diff_id: Digest,
    /// sha256 of the compressed blob: what the manifest records.
    pub digest: Digest,
    /// Size of the compressed blob.
    pub size: u64,
    /// The compressed blob, `layer-<hex>.tar.gz` (or `.tar.zst` when zstd-compressed) in
    /// the directory given to `write`: the extension says how it is compressed.
    pub path: PathBuf,
}

impl WrittenLayer {
    /// How the blob is compressed, as its file name says.
    pub fn compression(&self) -> LayerCompression {
        LayerCompression::of_file_name(&self.path.to_string_lossy())
    }

    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.compression().media_type(),
            self.digest.clone(),
            self.size,
        )
    }
}

/// Collects (path in image, path on disk) entries, then writes them as one layer.
/// Directories on disk are added with everything below them; symlinks are stored as
/// symlinks; sockets and device nodes are left out.
///
/// Entries get the builder's uid/gid and keep their mode bits. Parent directories the
/// caller did not add are written as root-owned `0755` directories, so that the
/// layer unpacks the same on any base.
#[derive(Debug, Clone)]
pub struct LayerBuilder {
    uid: u64,
    gid: u64,
    entries: BTreeMap<String, Option<PathBuf>>,
    /// The sha256 of the contents of files on disk, where the caller knows it.
    known: HashMap<PathBuf, [u8; 32]>,
}

impl LayerBuilder {
    pub fn new(uid: u64, gid: u64) -> LayerBuilder {
        LayerBuilder {
            uid,
            gid,
            entries: BTreeMap::new(),
            known: HashMap::new(),
        }
    }

    /// Tells the builder the sha256 of the contents of the file `on_disk`, for
    /// [`fingerprint`](Self::fingerprint). The caller vouches that the file holds them.
    pub fn know(&mut self, on_disk: PathBuf, sha256: [u8; 32]) {
        self.known.insert(on_disk, sha256);
    }

    /// A sha256 over everything the layer's tar is made of, with the sha256 of each
    /// file's contents in place of the contents: equal fingerprints mean equal tars (by
    /// this version of kpackd). `None` when a file's contents are not known (see
    /// [`know`](Self::know)). Reads only metadata. Blocking.
    pub fn fingerprint(&self) -> Result<Option<Digest>, OciError> {
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        field(concat!("kpackd layer fingerprint ", env!("CARGO_PKG_VERSION")).as_bytes());
        field(format!("{} {}", self.uid, self.gid).as_bytes());
        let mut first_path_of_inode: HashMap<(u64, u64), &str> = HashMap::new();
        for (name, source) in &self.entries {
            field(name.as_bytes());
            let Some(source) = source else {
                field(b"parent");
                continue;
            };
            let meta = fs::symlink_metadata(source).map_err(|e| OciError::io(source, e))?;
            field(format!("mode {:o}", meta.mode() & 0o7777).as_bytes());
            let kind = meta.file_type();
            if kind.is_dir() {
                field(b"dir");
            } else if kind.is_symlink() {
                let target = fs::read_link(source).map_err(|e| OciError::io(source, e))?;
                field(b"symlink");
                field(target.as_os_str().as_encoded_bytes());
            } else {
                let first = (meta.nlink() > 1)
                    .then(|| first_path_of_inode.get(&(meta.dev(), meta.ino())).copied())
                    .flatten();
                if let Some(first) = first {
                    field(b"link");
                    field(first.as_bytes());
                    continue;
                }
                if meta.nlink() > 1 {
                    first_path_of_inode.insert((meta.dev(), meta.ino()), name);
                }
                let Some(contents) = self.known.get(source) else {
                    return Ok(None);
                };
                field(format!("file {}", meta.len()).as_bytes());
                field(contents);
            }
        }
        Ok(Some(Digest::from_sha256(hasher)))
    }

    /// Adds `on_disk` as `in_image` (absolute or relative; `..` is refused).
    pub fn add(&mut self, in_image: &Path, on_disk: &Path) -> Result<&mut Self, OciError> {
        let name = image_path(in_image)?;
        let meta = fs::symlink_metadata(on_disk).map_err(|e| OciError::io(on_disk, e))?;
        self.add_parents(&name);
        self.entries
            .insert(name.clone(), Some(on_disk.to_path_buf()));
        if meta.is_dir() {
            self.add_children(&name, on_disk)?;
        }
        Ok(self)
    }

    /// Adds `on_disk` as `in_image` alone: a directory without what is below it. Like
    /// [`add`](Self::add), it leaves sockets, fifos and devices out.
    pub fn add_entry(&mut self, in_image: &Path, on_disk: &Path) -> Result<&mut Self, OciError> {
        let name = image_path(in_image)?;
        let kind = fs::symlink_metadata(on_disk)
            .map_err(|e| OciError::io(on_disk, e))?
            .file_type();
        if kind.is_socket() || kind.is_block_device() || kind.is_char_device() || kind.is_fifo() {
            return Ok(self);
        }
        self.add_parents(&name);
        self.entries.insert(name, Some(on_disk.to_path_buf()));
        Ok(self)
    }

    fn add_children(&mut self, name: &str, dir: &Path) -> Result<(), OciError> {
        for child in fs::read_dir(dir).map_err(|e| OciError::io(dir, e))? {
            let child = child.map_err(|e| OciError::io(dir, e))?;
            let file_name = child.file_name();
            let Some(file_name) = file_name.to_str() else {
                return Err(OciError::Unsupported(format!(
                    "{}: file names must be UTF-8",
                    child.path().display()
                )));
            };
            let child_name = if name.is_empty() {
                file_name.to_string()
            } else {
                format!("{name}/{file_name}")
            };
            let kind = child
                .file_type()
                .map_err(|e| OciError::io(child.path(), e))?;
            if kind.is_socket() || kind.is_block_device() || kind.is_char_device() || kind.is_fifo()
            {
                tracing::debug!(path = %child.path().display(), "left out of the layer: not a file, directory or symlink");
                continue;
            }
            self.entries.insert(child_name.clone(), Some(child.path()));
            if kind.is_dir() {
                self.add_children(&child_name, &child.path())?;
            }
        }
        Ok(())
    }

    fn add_parents(&mut self, name: &str) {
        let mut end = 0;
        while let Some(i) = name[end..].find('/') {
            end += i;
            self.entries.entry(name[..end].to_string()).or_insert(None);
            end += 1;
        }
    }

    /// Writes the layer into `out_dir`, gzipped on one thread per core. Blocking: run
    /// it on a blocking thread.
    pub fn write(&self, out_dir: &Path) -> Result<WrittenLayer, OciError> {
        self.write_compressed(out_dir, LayerCompression::Gzip, default_threads())
    }

    /// Writes the layer into `out_dir`, compressed as `compression` on up to `threads`
    /// threads; the bytes are the same whatever `threads` is. Blocking.
    pub fn write_compressed(
        &self,
        out_dir: &Path,
        compression: LayerCompression,
        threads: NonZeroUsize,
    ) -> Result<WrittenLayer, OciError> {
        write_layer_file(out_dir, compression, threads, |tar| self.append_all(tar))
    }

    /// The layer's diffID (the sha256 of its tar) without compressing or writing it:
    /// how a rebuild finds out cheaply that a layer is unchanged. Blocking.
    pub fn diff_id(&self) -> Result<Digest, OciError> {
        let mut tar = tar::Builder::new(Hashing::new(io::sink()));
        self.append_all(&mut tar)?;
        let hashing = tar
            .into_inner()
            .map_err(|e| OciError::io(Path::new("layer"), e))?;
        Ok(hashing.digest())
    }

    fn append_all<W: Write>(&self, tar: &mut tar::Builder<W>) -> Result<(), OciError> {
        let mut first_path_of_inode: HashMap<(u64, u64), String> = HashMap::new();
        for (name, source) in &self.entries {
            self.append(tar, name, source.as_deref(), &mut first_path_of_inode)
                .map_err(|e| OciError::io(source.as_deref().unwrap_or(Path::new(name)), e))?;
        }
        Ok(())
    }

    fn append<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        name: &str,
        source: Option<&Path>,
        first_path_of_inode: &mut HashMap<(u64, u64), String>,
    ) -> io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(NORMALISED_MTIME);
        header.set_username("")?;
        header.set_groupname("")?;
        let Some(source) = source else {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_uid(0);
            header.set_gid(0);
            header.set_size(0);
            return tar.append_data(&mut header, name, io::empty());
        };
        let meta = fs::symlink_metadata(source)?;
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(self.uid);
        header.set_gid(self.gid);
        header.set_size(0);
        let kind = meta.file_type();
        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut header, name, io::empty())
        } else if kind.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut header, name, fs::read_link(source)?)
        } else if meta.nlink() > 1 {
            match first_path_of_inode.get(&(meta.dev(), meta.ino())) {
                Some(first) => {
                    header.set_entry_type(tar::EntryType::Link);
                    tar.append_link(&mut header, name, first)
                }
                None => {
                    first_path_of_inode.insert((meta.dev(), meta.ino()), name.to_string());
                    append_file(tar, &mut header, name, source, meta.len())
                }
            }
        } else {
            append_file(tar, &mut header, name, source, meta.len())
        }
    }
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    header: &mut tar::Header,
    name: &str,
    source: &Path,
    len: u64,
) -> io::Result<()> {
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(len);
    let file = File::open(source)?;
    // A file that grows while being read must not spill into the next header.
    tar.append_data(header, name, io::Read::take(file, len))
}

/// Writes the tar that `write_tar` makes into `out_dir/layer-<digest>.<ext>`, compressed
/// as `compression` on up to `threads` threads (the same bytes whatever `threads` is),
/// through a temporary file that only becomes the layer once it is complete and synced.
/// Blocking. Every layer kpackd writes goes through here.
pub(crate) fn write_layer_file(
    out_dir: &Path,
    compression: LayerCompression,
    threads: NonZeroUsize,
    write_tar: impl FnOnce(&mut tar::Builder<Hashing<&mut dyn Write>>) -> Result<(), OciError>,
) -> Result<WrittenLayer, OciError> {
    let temp = tempfile::Builder::new()
        .prefix(".layer-")
        .tempfile_in(out_dir)
        .map_err(|e| OciError::io(out_dir, e))?;
    let blob = Hashing::new(BufWriter::with_capacity(
        1 << 20,
        temp.reopen().map_err(|e| OciError::io(temp.path(), e))?,
    ));
    let io_err = |e| OciError::io(temp.path(), e);
    let (diff_id, blob) = compress_into(blob, compression, threads, |compressed| {
        let compressed: &mut dyn Write = compressed;
        let mut tar = tar::Builder::new(Hashing::new(compressed));
        write_tar(&mut tar).map_err(|e| io::Error::other(TarFailed(e)))?;
        Ok(tar.into_inner()?.digest())
    })
    .map_err(|e| match e.downcast::<TarFailed>() {
        Ok(TarFailed(e)) => e,
        Err(e) => io_err(e),
    })?;
    let (digest, size) = (blob.digest(), blob.size);
    blob.inner
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?
        .sync_all()
        .map_err(io_err)?;
    let path = out_dir.join(format!(
        "layer-{}.{}",
        digest.hex(),
        compression.extension()
    ));
    temp.persist(&path)
        .map_err(|e| OciError::io(&path, e.error))?;
    Ok(WrittenLayer {
        diff_id,
        digest,
        size,
        path,
    })
}

/// An error of reading the files of a layer, carried through the compressing writer's
/// `io::Error` and taken out again, so it keeps the path it names.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct TarFailed(OciError);

/// `/layers/x/./y` → `layers/x/y`; `..` is refused.
fn image_path(p: &Path) -> Result<String, OciError> {
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str().ok_or_else(|| {
                OciError::Unsupported(format!("{}: paths must be UTF-8", p.display()))
            })?),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(OciError::Unsupported(format!(
                    "{}: a path in an image cannot contain `..`",
                    p.display()
                )))
            }
        }
    }
    Ok(parts.join("/"))
}

/// A writer that hashes and counts what passes through it.
pub(crate) struct Hashing<W> {
    pub(crate) inner: W,
    hasher: Sha256,
    pub(crate) size: u64,
}

impl<W> Hashing<W> {
    pub(crate) fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    pub(crate) fn digest(&self) -> Digest {
        Digest::from_sha256(self.hasher.clone())
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_are_relative_and_never_climb() {
        assert_eq!(
            image_path(Path::new("/layers/./a/b")).unwrap(),
            "layers/a/b"
        );
        assert!(image_path(Path::new("a/../b")).is_err());
    }

    #[test]
    fn parents_are_added_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let mut b = LayerBuilder::new(1000, 1000);
        b.add(Path::new("/cnb/process/web"), &dir.path().join("f"))
            .unwrap();
        let names: Vec<_> = b.entries.keys().cloned().collect();
        assert_eq!(names, ["cnb", "cnb/process", "cnb/process/web"]);
    }

    #[test]
    fn diff_id_alone_matches_the_written_layer() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/a"), "alpha").unwrap();
        std::fs::hard_link(tree.join("sub/a"), tree.join("b")).unwrap();
        std::os::unix::fs::symlink("sub/a", tree.join("c")).unwrap();
        let mut b = LayerBuilder::new(1000, 1000);
        b.add(Path::new("/workspace"), &tree).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let written = b.write(&out).unwrap();
        assert_eq!(b.diff_id().unwrap(), written.diff_id);
        std::fs::write(tree.join("sub/a"), "beta!").unwrap();
        assert_ne!(b.diff_id().unwrap(), written.diff_id);
    }
}
