//! Filesystem calls made through directory handles, one validated name at a time, so
//! that nothing they do can land outside the directory the handle was opened on.
//!
//! Every lookup is `openat2` of a single [`Name`] with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`: the kernel refuses to leave the
//! directory or to follow any link while opening. Creating, linking, removing and
//! changing modes all take a parent handle and a `Name`, never a path. Callers that
//! follow symlinks (with the image root as `/`) do it themselves, one hop at a time,
//! by reading the link and walking its target with these calls.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// One directory entry name: never empty, `.` or `..`, and without `/` or NUL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Name<'a>(&'a [u8]);

impl<'a> Name<'a> {
    /// `None` when `s` could name anything but one entry of a directory.
    pub(crate) fn new(s: &'a str) -> Option<Name<'a>> {
        Name::from_bytes(s.as_bytes())
    }

    pub(crate) fn from_bytes(s: &'a [u8]) -> Option<Name<'a>> {
        let ok = !s.is_empty() && s != b"." && s != b".." && !s.contains(&b'/') && !s.contains(&0);
        ok.then_some(Name(s))
    }

    pub(crate) fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// Opens `name` in `dir` without following it, and without leaving `dir`.
fn open_in(dir: BorrowedFd<'_>, name: Name<'_>, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rfs::openat2(dir, name.as_bytes(), flags, mode, RESOLVE) {
        // Kernels before 5.6, or a seccomp filter that hides openat2: a single name
        // opened with O_NOFOLLOW cannot leave `dir` either.
        Err(rustix::io::Errno::NOSYS) => Ok(rfs::openat(dir, name.as_bytes(), flags, mode)?),
        other => Ok(other?),
    }
}

/// Opens a directory the caller already holds by path (the unpack root itself).
pub(crate) fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// A handle on the directory `name` in `dir`, good for further lookups (not for
/// reading or changing it). Fails with `ENOTDIR`/`ELOOP` when `name` is a symlink.
pub(crate) fn open_dir(dir: BorrowedFd<'_>, name: Name<'_>) -> io::Result<OwnedFd> {
    open_in(dir, name, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
}

/// What `name` in `dir` is, without following it; `None` when it does not exist.
pub(crate) fn kind(dir: BorrowedFd<'_>, name: Name<'_>) -> io::Result<Option<FileType>> {
    match rfs::statat(dir, name.as_bytes(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(FileType::from_raw_mode(stat.st_mode))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The target of the symlink `name` in `dir`, as bytes.
pub(crate) fn read_link(dir: BorrowedFd<'_>, name: Name<'_>) -> io::Result<Vec<u8>> {
    Ok(rfs::readlinkat(dir, name.as_bytes(), Vec::new())?.into_bytes())
}

pub(crate) fn make_dir(dir: BorrowedFd<'_>, name: Name<'_>) -> io::Result<()> {
    Ok(rfs::mkdirat(
        dir,
        name.as_bytes(),
        Mode::from_raw_mode(0o777),
    )?)
}

/// Creates the regular file `name` in `dir`; it must not exist yet.
pub(crate) fn create_file(dir: BorrowedFd<'_>, name: Name<'_>) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL;
    Ok(File::from(open_in(
        dir,
        name,
        flags,
        Mode::from_raw_mode(0o600),
    )?))
}

pub(crate) fn symlink(
    target: &std::path::Path,
    dir: BorrowedFd<'_>,
    name: Name<'_>,
) -> io::Result<()> {
    Ok(rfs::symlinkat(target, dir, name.as_bytes())?)
}

/// A second name for `from_name` in `from`; a symlink is linked as itself.
pub(crate) fn hard_link(
    from: BorrowedFd<'_>,
    from_name: Name<'_>,
    dir: BorrowedFd<'_>,
    name: Name<'_>,
) -> io::Result<()> {
    Ok(rfs::linkat(
        from,
        from_name.as_bytes(),
        dir,
        name.as_bytes(),
        AtFlags::empty(),
    )?)
}

/// Sets the owner of `name` in `dir` itself (a symlink is not followed).
pub(crate) fn chown(dir: BorrowedFd<'_>, name: Name<'_>, uid: u32, gid: u32) -> io::Result<()> {
    let (uid, gid) = ids(uid, gid)?;
    Ok(rfs::chownat(
        dir,
        name.as_bytes(),
        Some(uid),
        Some(gid),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

pub(crate) fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    let (uid, gid) = ids(uid, gid)?;
    Ok(rfs::fchown(fd, Some(uid), Some(gid))?)
}

fn ids(uid: u32, gid: u32) -> io::Result<(rfs::Uid, rfs::Gid)> {
    // -1 means "leave unchanged" to the kernel, and rustix refuses it.
    if uid == u32::MAX || gid == u32::MAX {
        return Err(io::Error::other("uid or gid out of range"));
    }
    Ok((rfs::Uid::from_raw(uid), rfs::Gid::from_raw(gid)))
}

pub(crate) fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rfs::fchmod(fd, Mode::from_raw_mode(mode))?)
}

/// Sets the mode of the directory `name` in `dir`, if it still is a directory (not a
/// symlink put there since). Works on directories the caller cannot read.
pub(crate) fn chmod_dir(dir: BorrowedFd<'_>, name: Name<'_>, mode: u32) -> io::Result<()> {
    let fd = match open_in(dir, name, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) if is_not_a_dir(&e) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            // Unreadable to a non-root owner: chmod the inode a handle holds, through
            // the handle's own /proc entry (it names exactly that inode).
            let held = open_dir(dir, name)?;
            let proc = format!("/proc/self/fd/{}", held.as_raw_fd());
            return Ok(rfs::chmod(proc.as_str(), Mode::from_raw_mode(mode))?);
        }
        Err(e) => return Err(e),
    };
    chmod_fd(fd.as_fd(), mode)
}

/// Whether an open failed because the name is a symlink or not a directory.
pub(crate) fn is_not_a_dir(e: &io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP | rustix::io::Errno::XDEV)
    )
}

/// The names in the directory `dir`, but `.` and `..`.
pub(crate) fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let fd = rfs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(&fd)? {
        let entry = entry?;
        let name: &CStr = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_bytes().to_vec());
        }
    }
    Ok(names)
}

/// Removes `name` from `dir`, whole trees included, without following any symlink.
pub(crate) fn remove_all(dir: BorrowedFd<'_>, name: Name<'_>) -> io::Result<()> {
    if kind(dir, name)? != Some(FileType::Directory) {
        return Ok(rfs::unlinkat(dir, name.as_bytes(), AtFlags::empty())?);
    }
    let sub = open_dir(dir, name)?;
    for child in list(sub.as_fd())? {
        if let Some(child) = Name::from_bytes(&child) {
            remove_all(sub.as_fd(), child)?;
        }
    }
    Ok(rfs::unlinkat(dir, name.as_bytes(), AtFlags::REMOVEDIR)?)
}
