//! Applying layers to a root filesystem: gzip, zstd or plain tar, OCI whiteouts, hard links
//! and symlinks. Every write goes through a handle on a directory inside the target,
//! opened one name at a time without following links ([`super::beneath`]), so no
//! entry — nor any symlink it goes through, nor a later fix-up of directory modes —
//! writes outside it.
//!
//! Symlinks are data: they are created as given, and followed only while placing
//! later entries, with the target as `/` (as in a chroot), one hop at a time by this
//! module. A symlink whose relative target climbs above the root, or that does not
//! lead to a directory already in the image, stops the unpack with an error naming
//! the entry.
//!
//! Set-user-ID and set-group-ID bits are dropped (and the sticky bit on files): the
//! unpacked tree belongs to whoever runs kpackd, and must not hand out its identity.
//!
//! [`unpack_image`] stages each layer's blob in a file beside the target and checks
//! its digest before the first entry is applied: a blob that does not match leaves
//! the target as it was.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use imageref::ImageRef;
use rustix::fs::FileType;
use tokio::io::AsyncWriteExt;

use super::beneath::{self, Name};
use super::{Image, ImageStore, OciError};

/// How many symlinks one path may go through before it is taken for a loop.
const MAX_SYMLINK_HOPS: usize = 40;

/// The permission bits kept on files: set-id and sticky bits are dropped.
const FILE_MODE_BITS: u32 = 0o777;
/// The bits kept on directories: set-id bits are dropped, the sticky bit (`/tmp`) kept.
const DIR_MODE_BITS: u32 = 0o1777;

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
/// missing).
///
/// Each layer's blob is first streamed into an unnamed staging file beside `target`
/// (same filesystem, bounded memory), its digest checked as the bytes pass; only a
/// blob that matches is then applied from that file. A mismatch fails before the
/// target changes.
pub async fn unpack_image(
    store: &ImageStore,
    r: &ImageRef,
    target: &Path,
    options: &UnpackOptions,
) -> Result<Image, OciError> {
    let image = store.image(r).await?;
    fs::create_dir_all(target).map_err(|e| OciError::io(target, e))?;
    let staging_dir = target.parent().unwrap_or(target);
    for layer in &image.manifest.layers {
        let staged = stage_blob(store.open_blob(r, layer).await?, staging_dir)
            .await
            .map_err(|e| OciError::Invalid {
                what: format!("layer {} of {r}", layer.digest),
                reason: e.to_string(),
            })?;
        let (target, options) = (target.to_path_buf(), options.clone());
        tokio::task::spawn_blocking(move || {
            unpack_layer(BufReader::new(staged), &target, &options)
        })
        .await
        .expect("unpacking a layer does not panic")
        .map_err(|e| match e {
            OciError::UnsafeEntry { entry, reason } => OciError::UnsafeEntry {
                entry,
                reason: format!("{reason} (in layer {})", layer.digest),
            },
            other => other,
        })?;
        tracing::debug!(image = %r, layer = %layer.digest, "layer applied");
    }
    Ok(image)
}

/// Copies a (digest-checking) blob stream to an unnamed file in `dir`, read back from
/// its start. Fails when the stream does, a digest mismatch included.
async fn stage_blob(mut blob: super::blob::BlobStream, dir: &Path) -> io::Result<fs::File> {
    let file = tempfile::tempfile_in(dir)?;
    let mut writer =
        tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::from_std(file));
    while let Some(chunk) = blob.next().await {
        writer.write_all(&chunk?).await?;
    }
    writer.flush().await?;
    let mut file = writer.into_inner().into_std().await;
    file.rewind()?;
    Ok(file)
}

/// Applies one layer (gzip- or zstd-compressed, or plain tar) to `target`. Blocking. The reader
/// is read to its end, so a digest-checking stream gets to check — but by then the
/// entries are applied: callers that need the check first stage the blob, as
/// [`unpack_image`] does, or unpack into a scratch directory.
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
        let decoder = zstd::stream::read::Decoder::with_buffer(buffered).map_err(read_err)?;
        let mut archive = tar::Archive::new(decoder);
        Unpacker::new(target, options)?.apply(&mut archive)?;
        Box::new(archive.into_inner().finish())
    } else {
        let mut archive = tar::Archive::new(buffered);
        Unpacker::new(target, options)?.apply(&mut archive)?;
        Box::new(archive.into_inner())
    };
    io::copy(&mut rest, &mut io::sink()).map_err(read_err)?;
    Ok(())
}

struct Unpacker<'o> {
    /// The target, for error messages only: every call goes through `root`.
    root_path: PathBuf,
    root: OwnedFd,
    options: &'o UnpackOptions,
    /// Paths (relative to the root) this layer wrote: an opaque whiteout spares them.
    written: HashSet<PathBuf>,
    /// Directory modes, applied last so that a read-only directory can still be filled.
    dir_modes: Vec<(PathBuf, u32)>,
}

/// A directory inside the root: a handle on it, and its real path from the root.
struct Placed {
    dir: OwnedFd,
    rel: PathBuf,
}

impl<'o> Unpacker<'o> {
    fn new(root: &Path, options: &'o UnpackOptions) -> Result<Self, OciError> {
        Ok(Unpacker {
            root_path: root.to_path_buf(),
            root: beneath::open_root(root).map_err(|e| OciError::io(root, e))?,
            options,
            written: HashSet::new(),
            dir_modes: Vec::new(),
        })
    }

    fn apply<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<(), OciError> {
        let entries = archive
            .entries()
            .map_err(|e| OciError::io(&self.root_path, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| OciError::io(&self.root_path, e))?;
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
        for (rel, mode) in std::mem::take(&mut self.dir_modes) {
            self.set_dir_mode(&rel, mode)
                .map_err(|e| OciError::io(self.root_path.join(&rel), e))?;
        }
        Ok(())
    }

    /// Sets the mode of the directory at `rel`, if it still is one reached without
    /// symlinks: a later entry may have replaced it or a parent with a symlink.
    fn set_dir_mode(&self, rel: &Path, mode: u32) -> io::Result<()> {
        let names: Vec<&[u8]> = rel.iter().map(OsStr::as_bytes).collect();
        let Some((leaf, parents)) = names.split_last() else {
            return Ok(()); // the root's own mode is the caller's
        };
        let mut dir = self.root.try_clone()?;
        for part in parents {
            let name = Name::from_bytes(part).ok_or_else(|| io::Error::other("bad name"))?;
            dir = match beneath::open_dir(dir.as_fd(), name) {
                Ok(d) => d,
                Err(e) if beneath::is_not_a_dir(&e) || e.kind() == io::ErrorKind::NotFound => {
                    return Ok(())
                }
                Err(e) => return Err(e),
            };
        }
        let leaf = Name::from_bytes(leaf).ok_or_else(|| io::Error::other("bad name"))?;
        match beneath::chmod_dir(dir.as_fd(), leaf, mode) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
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
        let leaf = Name::new(file_name)
            .ok_or_else(|| EntryError::Unsafe(format!("`{file_name}` is not a file name")))?;
        let Placed { dir, rel } = self
            .resolve_dir(parent, true)?
            .expect("resolving with create either finds, makes or fails");
        let dir = dir.as_fd();
        let dest = rel.join(file_name);
        let existing = beneath::kind(dir, leaf)?;
        let keep_dir = kind == tar::EntryType::Directory && existing == Some(FileType::Directory);
        if existing.is_some() && !keep_dir {
            beneath::remove_all(dir, leaf)?;
        }
        let header = entry.header();
        let mode = header.mode().map_err(EntryError::Io)? & 0o7777;
        let (uid, gid) = (
            header.uid().map_err(EntryError::Io)?,
            header.gid().map_err(EntryError::Io)?,
        );
        let ids = || -> io::Result<(u32, u32)> {
            let id =
                |n: u64| u32::try_from(n).map_err(|_| io::Error::other("uid or gid out of range"));
            Ok((id(uid)?, id(gid)?))
        };
        match kind {
            tar::EntryType::Directory => {
                if !keep_dir {
                    beneath::make_dir(dir, leaf)?;
                }
                self.dir_modes.push((dest.clone(), mode & DIR_MODE_BITS));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut file = beneath::create_file(dir, leaf)?;
                io::copy(entry, &mut file)?;
                if self.options.chown {
                    let (uid, gid) = ids()?;
                    beneath::chown_fd(file.as_fd(), uid, gid)?;
                }
                beneath::chmod_fd(file.as_fd(), mode & FILE_MODE_BITS)?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()?
                    .ok_or_else(|| EntryError::Unsafe("a symlink without a target".into()))?;
                beneath::symlink(&link, dir, leaf)?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| EntryError::Unsafe("a hard link without a target".into()))?;
                let link = String::from_utf8_lossy(&link).into_owned();
                let (source, source_name) = self.resolve_existing(&link)?;
                beneath::hard_link(source.dir.as_fd(), source_name, dir, leaf)?;
            }
            other => {
                tracing::debug!(entry = name, kind = ?other, "entry type skipped");
                return Ok(());
            }
        }
        if self.options.chown
            && kind != tar::EntryType::Regular
            && kind != tar::EntryType::Continuous
        {
            let (uid, gid) = ids()?;
            beneath::chown(dir, leaf, uid, gid)?;
        }
        self.written.insert(dest);
        Ok(())
    }

    /// `.wh.<name>` removes `<name>` from lower layers; `.wh..wh..opq` empties its
    /// directory of everything lower layers put there. `<name>` must be one name in
    /// that directory: not empty, `.` or `..`.
    fn whiteout(&mut self, parent: &[&str], hidden: &str) -> Result<(), EntryError> {
        if hidden == ".wh..opq" {
            let Some(Placed { dir, rel }) = self.resolve_dir(parent, false)? else {
                return Ok(());
            };
            for child in beneath::list(dir.as_fd())? {
                let Some(name) = Name::from_bytes(&child) else {
                    continue;
                };
                if !self.written.contains(&rel.join(OsStr::from_bytes(&child))) {
                    beneath::remove_all(dir.as_fd(), name)?;
                }
            }
            return Ok(());
        }
        let hidden = Name::new(hidden).ok_or_else(|| {
            EntryError::Unsafe(format!(
                "a malformed whiteout: `{hidden}` is not a name in its directory"
            ))
        })?;
        let Some(Placed { dir, .. }) = self.resolve_dir(parent, false)? else {
            return Ok(());
        };
        if beneath::kind(dir.as_fd(), hidden)?.is_some() {
            beneath::remove_all(dir.as_fd(), hidden)?;
        }
        Ok(())
    }

    /// The file a hard link points at: it must already be in the image (inside the
    /// root) and not be a directory. Its directory, and its name there.
    fn resolve_existing<'l>(&self, link: &'l str) -> Result<(Placed, Name<'l>), EntryError> {
        let parts = components(link)?;
        let (file_name, parent) = parts
            .split_last()
            .ok_or_else(|| EntryError::Unsafe("a hard link to the root".into()))?;
        let missing =
            || EntryError::Unsafe(format!("hard link to `{link}`, which is not in the image"));
        let name = Name::new(file_name).ok_or_else(missing)?;
        let placed = self.resolve_dir(parent, false)?.ok_or_else(missing)?;
        match beneath::kind(placed.dir.as_fd(), name)? {
            Some(FileType::Directory) => Err(EntryError::Unsafe(format!(
                "hard link to `{link}`, which is a directory"
            ))),
            Some(_) => Ok((placed, name)),
            None => Err(missing()),
        }
    }

    /// Walks `parts` from the root, following symlinks with the root as `/`, and
    /// returns the real directory they name — made when missing if `create` and no
    /// symlink was followed; `None` when missing and not `create`. Every step opens
    /// one name under the directory before it, without following it.
    fn resolve_dir(&self, parts: &[&str], create: bool) -> Result<Option<Placed>, EntryError> {
        let mut pending: VecDeque<Vec<u8>> = parts.iter().map(|s| s.as_bytes().to_vec()).collect();
        // The directories walked into, below the root, and their names.
        let mut walked: Vec<(OwnedFd, Vec<u8>)> = Vec::new();
        let mut followed: Option<String> = None;
        let mut hops = 0;
        let rel_of = |walked: &[(OwnedFd, Vec<u8>)]| -> PathBuf {
            walked.iter().map(|(_, n)| OsStr::from_bytes(n)).collect()
        };
        while let Some(part) = pending.pop_front() {
            if part == b".." {
                if walked.pop().is_none() {
                    return Err(EntryError::Unsafe(format!(
                        "goes through symlink `{}`, which points outside the root",
                        followed.unwrap_or_default()
                    )));
                }
                continue;
            }
            let name = Name::from_bytes(&part).ok_or_else(|| {
                EntryError::Unsafe(format!(
                    "`{}` is not a name",
                    String::from_utf8_lossy(&part)
                ))
            })?;
            let current = walked.last().map_or(self.root.as_fd(), |(d, _)| d.as_fd());
            match beneath::kind(current, name)? {
                Some(FileType::Directory) => {
                    let dir = beneath::open_dir(current, name)?;
                    walked.push((dir, part));
                }
                Some(FileType::Symlink) => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(EntryError::Unsafe("too many levels of symlinks".into()));
                    }
                    let target = beneath::read_link(current, name)?;
                    followed = Some(
                        rel_of(&walked)
                            .join(OsStr::from_bytes(&part))
                            .display()
                            .to_string(),
                    );
                    if target.starts_with(b"/") {
                        walked.clear();
                    }
                    for p in target
                        .split(|b| *b == b'/')
                        .rev()
                        .filter(|p| !p.is_empty() && *p != b".")
                    {
                        pending.push_front(p.to_vec());
                    }
                }
                Some(_) => {
                    return Err(EntryError::Unsafe(format!(
                        "`{}` is not a directory",
                        rel_of(&walked).join(OsStr::from_bytes(&part)).display()
                    )))
                }
                None => {
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
                    beneath::make_dir(current, name)?;
                    let dir = beneath::open_dir(current, name)?;
                    walked.push((dir, part));
                }
            }
        }
        let rel = rel_of(&walked);
        let dir = match walked.pop() {
            Some((dir, _)) => dir,
            None => self.root.try_clone()?,
        };
        Ok(Some(Placed { dir, rel }))
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
