//! Applying layers to a root filesystem: gzip or plain tar, OCI whiteouts, hard links
//! and symlinks. Every entry is placed by walking its path inside the target, so no
//! entry — nor any symlink it goes through — writes outside it.
//!
//! Symlinks are data: they are created as given, and followed only while placing
//! later entries, with the target as `/` (as in a chroot). A symlink whose relative
//! target climbs above the root, or that does not lead to a directory already in the
//! image, stops the unpack with an error naming the entry.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use imageref::ImageRef;

use super::blob::blocking_reader;
use super::{Image, ImageStore, OciError};

/// How many symlinks one path may go through before it is taken for a loop.
const MAX_SYMLINK_HOPS: usize = 40;

/// How layers are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Give files the uid/gid recorded in the layer. Only root can; the default is
    /// true exactly when running as root.
    pub chown: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        UnpackOptions { chown: root }
    }
}

/// Applies every layer of the image `r` names, in order, to `target` (made when
/// missing). Layers stream from the store; none is held whole in memory or on disk.
pub async fn unpack_image(
    store: &ImageStore,
    r: &ImageRef,
    target: &Path,
    options: &UnpackOptions,
) -> Result<Image, OciError> {
    let image = store.image(r).await?;
    fs::create_dir_all(target).map_err(|e| OciError::io(target, e))?;
    for layer in &image.manifest.layers {
        let reader = blocking_reader(store.open_blob(r, layer).await?);
        let (target, options) = (target.to_path_buf(), options.clone());
        tokio::task::spawn_blocking(move || unpack_layer(reader, &target, &options))
            .await
            .expect("unpacking a layer does not panic")?;
        tracing::debug!(image = %r, layer = %layer.digest, "layer applied");
    }
    Ok(image)
}

/// Applies one layer (gzip-compressed or plain tar) to `target`. Blocking. The reader
/// is read to its end, so a digest-checking stream gets to check.
pub fn unpack_layer(
    reader: impl Read,
    target: &Path,
    options: &UnpackOptions,
) -> Result<(), OciError> {
    let read_err = |e| OciError::io(target, e);
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf().map_err(read_err)?;
    let mut rest: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        let mut archive = tar::Archive::new(flate2::bufread::MultiGzDecoder::new(buffered));
        Unpacker::new(target, options)?.apply(&mut archive)?;
        Box::new(archive.into_inner().into_inner())
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(OciError::Unsupported(
            "zstd-compressed layers are not supported".into(),
        ));
    } else {
        let mut archive = tar::Archive::new(buffered);
        Unpacker::new(target, options)?.apply(&mut archive)?;
        Box::new(archive.into_inner())
    };
    io::copy(&mut rest, &mut io::sink()).map_err(read_err)?;
    Ok(())
}

struct Unpacker<'o> {
    root: PathBuf,
    options: &'o UnpackOptions,
    /// Paths this layer wrote: an opaque whiteout spares them.
    written: HashSet<PathBuf>,
    /// Directory modes, applied last so that a read-only directory can still be filled.
    dir_modes: Vec<(PathBuf, u32)>,
}

impl<'o> Unpacker<'o> {
    fn new(root: &Path, options: &'o UnpackOptions) -> Result<Self, OciError> {
        let root = root.canonicalize().map_err(|e| OciError::io(root, e))?;
        Ok(Unpacker {
            root,
            options,
            written: HashSet::new(),
            dir_modes: Vec::new(),
        })
    }

    fn apply<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), OciError> {
        let entries = archive.entries().map_err(|e| OciError::io(&self.root, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| OciError::io(&self.root, e))?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            self.entry(&mut entry, &name).map_err(|e| match e {
                EntryError::Unsafe(reason) => OciError::UnsafeEntry {
                    entry: name.clone(),
                    reason,
                },
                EntryError::Io(e) => OciError::UnsafeEntry {
                    entry: name.clone(),
                    reason: e.to_string(),
                },
            })?;
        }
        for (path, mode) in self.dir_modes.drain(..) {
            // Only if still a directory: a later entry may have put a symlink there.
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(|e| OciError::io(&path, e))?;
            }
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>, name: &str) -> Result<(), EntryError> {
        let parts = components(name)?;
        let Some((file_name, parent)) = parts.split_last() else {
            return Ok(()); // the root itself
        };
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            return self.whiteout(parent, hidden);
        }
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
        ) {
            tracing::debug!(entry = name, "device node or fifo skipped");
            return Ok(());
        }
        let dir = self
            .resolve_dir(parent, true)?
            .expect("resolving with create either finds, makes or fails");
        let dest = dir.join(file_name);
        let existing = fs::symlink_metadata(&dest).ok();
        let keep_dir =
            kind == tar::EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir());
        if let Some(m) = existing.filter(|_| !keep_dir) {
            remove(&dest, &m)?;
        }
        let header = entry.header();
        let mode = header.mode().map_err(EntryError::Io)? & 0o7777;
        let (uid, gid) = (
            header.uid().map_err(EntryError::Io)?,
            header.gid().map_err(EntryError::Io)?,
        );
        match kind {
            tar::EntryType::Directory => {
                if !keep_dir {
                    fs::create_dir(&dest)?;
                }
                self.dir_modes.push((dest.clone(), mode));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut file = File::create_new(&dest)?;
                io::copy(entry, &mut file)?;
                self.chown(&dest, uid, gid)?;
                // After chown, which clears set-id bits.
                file.set_permissions(fs::Permissions::from_mode(mode))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()?
                    .ok_or_else(|| EntryError::Unsafe("a symlink without a target".into()))?;
                std::os::unix::fs::symlink(&link, &dest)?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| EntryError::Unsafe("a hard link without a target".into()))?;
                let source = self.resolve_existing(&String::from_utf8_lossy(&link))?;
                fs::hard_link(&source, &dest)?;
            }
            other => {
                tracing::debug!(entry = name, kind = ?other, "entry type skipped");
                return Ok(());
            }
        }
        if kind != tar::EntryType::Regular && kind != tar::EntryType::Continuous {
            self.chown(&dest, uid, gid)?;
        }
        self.written.insert(dest);
        Ok(())
    }

    fn chown(&self, path: &Path, uid: u64, gid: u64) -> io::Result<()> {
        if !self.options.chown {
            return Ok(());
        }
        let id = |n: u64| u32::try_from(n).map_err(|_| io::Error::other("uid or gid out of range"));
        std::os::unix::fs::lchown(path, Some(id(uid)?), Some(id(gid)?))
    }

    /// `.wh.<name>` removes `<name>` from lower layers; `.wh..wh..opq` empties its
    /// directory of everything lower layers put there.
    fn whiteout(&mut self, parent: &[&str], hidden: &str) -> Result<(), EntryError> {
        let Some(dir) = self.resolve_dir(parent, false)? else {
            return Ok(());
        };
        if hidden == ".wh..opq" {
            for child in fs::read_dir(&dir)? {
                let path = child?.path();
                if !self.written.contains(&path) {
                    remove(&path, &fs::symlink_metadata(&path)?)?;
                }
            }
            return Ok(());
        }
        if hidden.is_empty() || hidden.contains('/') {
            return Err(EntryError::Unsafe("a malformed whiteout".into()));
        }
        let path = dir.join(hidden);
        if let Ok(m) = fs::symlink_metadata(&path) {
            remove(&path, &m)?;
        }
        Ok(())
    }

    /// The file a hard link points at: it must already be in the image (inside the
    /// root) and not be a directory.
    fn resolve_existing(&self, link: &str) -> Result<PathBuf, EntryError> {
        let parts = components(link)?;
        let (file_name, parent) = parts
            .split_last()
            .ok_or_else(|| EntryError::Unsafe("a hard link to the root".into()))?;
        let missing =
            || EntryError::Unsafe(format!("hard link to `{link}`, which is not in the image"));
        let dir = self.resolve_dir(parent, false)?.ok_or_else(missing)?;
        let source = dir.join(file_name);
        match fs::symlink_metadata(&source) {
            Ok(m) if m.is_dir() => Err(EntryError::Unsafe(format!(
                "hard link to `{link}`, which is a directory"
            ))),
            Ok(_) => Ok(source),
            Err(_) => Err(missing()),
        }
    }

    /// Walks `parts` from the root, following symlinks with the root as `/`, and
    /// returns the real directory they name — made when missing if `create` and no
    /// symlink was followed; `None` when missing and not `create`.
    fn resolve_dir(&self, parts: &[&str], create: bool) -> Result<Option<PathBuf>, EntryError> {
        let mut pending: VecDeque<String> = parts.iter().map(|s| s.to_string()).collect();
        let mut current = self.root.clone();
        let mut followed: Option<String> = None;
        let mut hops = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                if current == self.root {
                    return Err(EntryError::Unsafe(format!(
                        "goes through symlink `{}`, which points outside the root",
                        followed.unwrap_or_default()
                    )));
                }
                current.pop();
                continue;
            }
            let next = current.join(&part);
            match fs::symlink_metadata(&next) {
                Ok(m) if m.is_dir() => current = next,
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(EntryError::Unsafe("too many levels of symlinks".into()));
                    }
                    let target = fs::read_link(&next)?;
                    let target = target.to_string_lossy().into_owned();
                    let shown = next
                        .strip_prefix(&self.root)
                        .unwrap_or(&next)
                        .display()
                        .to_string();
                    if target.starts_with('/') {
                        current = self.root.clone();
                    }
                    for p in target
                        .split('/')
                        .rev()
                        .filter(|p| !p.is_empty() && *p != ".")
                    {
                        pending.push_front(p.to_string());
                    }
                    followed = Some(shown);
                }
                Ok(_) => {
                    return Err(EntryError::Unsafe(format!(
                        "`{}` is not a directory",
                        next.strip_prefix(&self.root).unwrap_or(&next).display()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if let Some(link) = &followed {
                        if create {
                            return Err(EntryError::Unsafe(format!(
                                "goes through symlink `{link}`, which does not lead to a \
                                 directory in the image"
                            )));
                        }
                    }
                    if !create {
                        return Ok(None);
                    }
                    fs::create_dir(&next)?;
                    current = next;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Some(current))
    }
}

enum EntryError {
    Unsafe(String),
    Io(io::Error),
}

impl From<io::Error> for EntryError {
    fn from(e: io::Error) -> Self {
        EntryError::Io(e)
    }
}

/// The normal components of an entry name; a leading `/` or `./` is dropped, `..`
/// refused.
fn components(name: &str) -> Result<Vec<&str>, EntryError> {
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(EntryError::Unsafe("the path climbs out with `..`".into())),
            p => parts.push(p),
        }
    }
    Ok(parts)
}

fn remove(path: &Path, meta: &fs::Metadata) -> io::Result<()> {
    if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}
