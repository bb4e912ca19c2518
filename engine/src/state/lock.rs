//! One writer at a time: `apply` and `watch` hold an exclusive lock on a file in the
//! state directory for as long as they run. The file names its holder, so a second
//! writer can say who is in the way.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::layout::StateLayout;

/// How often a waiting writer tries again.
const RETRY_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("state is locked by {holder}")]
    Locked { holder: String },
    #[error(transparent)]
    NotWritable(#[from] super::NotWritable),
    #[error("lock {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The writer lock, held until dropped (the operating system releases it with the
/// file, also when the process dies).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock of the state directory `dir`, waiting up to `wait` for another
    /// writer to finish; without `wait`, refuses at once.
    pub fn acquire(dir: &Path, wait: Option<Duration>) -> Result<StateLock, LockError> {
        let path = StateLayout::new(dir).lock_file();
        let io = |source: std::io::Error| {
            if super::is_not_writable(&source) {
                LockError::NotWritable(super::NotWritable {
                    dir: dir.to_path_buf(),
                    source,
                })
            } else {
                LockError::Io {
                    path: path.clone(),
                    source,
                }
            }
        };
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(io)?;
        // Not truncated on open: until the lock is ours, the holder's name is not ours to erase.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let deadline = wait.map(|wait| Instant::now() + wait);
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    if deadline.is_some_and(|deadline| Instant::now() < deadline) {
                        thread::sleep(RETRY_EVERY);
                        continue;
                    }
                    return Err(LockError::Locked {
                        holder: holder(&mut file),
                    });
                }
                Err(TryLockError::Error(source)) => return Err(io(source)),
            }
        }
        let since = humantime::format_rfc3339_seconds(SystemTime::now());
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "pid {} since {since}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        tracing::debug!(path = %path.display(), "state lock taken");
        Ok(StateLock { _file: file })
    }
}

/// Whether a writer (`apply`, `watch`) is running on the state in `dir`: the process its
/// lock file names is alive and is a kpackd. Readers ask this without touching the lock,
/// so that they never stand in a writer's way.
pub fn writer_alive(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(StateLayout::new(dir).lock_file()) else {
        return false;
    };
    let Some(pid) = text
        .strip_prefix("pid ")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|pid| pid.parse::<u32>().ok())
    else {
        return false;
    };
    // A pid the kernel gave to another program since does not count.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0)
            .next()
            .and_then(|argv0| Path::new(std::ffi::OsStr::from_bytes(argv0)).file_name())
            .is_some_and(|name| name.as_bytes().starts_with(b"kpackd"))
    })
}

/// Who holds the lock, as its lock file says.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let read = file.rewind().and_then(|()| file.read_to_string(&mut text));
    match read {
        Ok(_) if !text.trim().is_empty() => text.trim().to_string(),
        // The holder has the lock but has not written its name yet.
        _ => "another process".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let held = StateLock::acquire(dir.path(), None).unwrap();
        let err = StateLock::acquire(dir.path(), None).unwrap_err();
        let message = err.to_string();
        let expected = format!("state is locked by pid {} since ", std::process::id());
        assert!(message.starts_with(&expected), "{message}");
        drop(held);
        StateLock::acquire(dir.path(), None).expect("free once the holder is gone");
    }

    #[test]
    fn a_waiting_writer_still_fails_while_the_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let _held = StateLock::acquire(dir.path(), None).unwrap();
        let err = StateLock::acquire(dir.path(), Some(Duration::from_millis(300))).unwrap_err();
        assert!(matches!(err, LockError::Locked { .. }), "{err}");
    }

    #[test]
    fn a_waiting_writer_gets_the_lock_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = StateLock::acquire(dir.path(), None).unwrap();
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let path = dir.path().to_path_buf();
        let waiter = thread::spawn(move || {
            taken_tx.send(()).unwrap();
            StateLock::acquire(&path, Some(Duration::from_secs(600)))
        });
        taken_rx.recv().unwrap();
        drop(held);
        waiter.join().unwrap().expect("the lock once released");
    }
}
