//! The state store: what was built, from what, and how it went, in one SQLite file
//! (`state.db`, WAL) in the state directory. Every change is one transaction that also
//! moves the serial, so a saved plan can tell whether the state moved since it was made.

mod build;
mod builds;
mod lock;
mod migrations;
mod publish;
mod recorded;
mod row;

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use planner::plan::Action;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::layout::StateLayout;
pub use crate::layout::{DATABASE_FILE, DOORBELL_FILE, LOCK_FILE};
pub use build::{
    Build, BuildId, BuildStatus, Failure, FailureKind, NewBuild, Outcome, UnknownStatus,
};
pub use lock::{writer_alive, LockError, StateLock};
pub use publish::{
    NewPublish, Publish, PublishId, PublishOutcome, PublishStatus, UnknownPublishStatus,
    PUBLISH_LOGS,
};

/// The SQL condition on `builds` of a build that has not ended (see
/// [`BuildStatus::is_end`]).
const RUNNING: &str = "status NOT IN ('succeeded', 'failed', 'canceled', 'interrupted')";

/// Prepared statements kept per connection: more than the distinct statements kpackd runs.
const STATEMENT_CACHE: usize = 64;

/// How long a write waits for another process's transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A state directory kpackd may not write (read-only, or not its own): said as such by
/// every command, whether it failed taking the lock or opening the database.
#[derive(Debug, thiserror::Error)]
#[error(
    "the state directory {dir} is not writable: kpackd records every build there; \
     make it writable or choose another with --state-dir"
)]
pub struct NotWritable {
    pub dir: PathBuf,
    #[source]
    pub source: std::io::Error,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("create the state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    NotWritable(#[from] NotWritable),
    #[error(
        "{path} is empty (0 bytes) although it holds the state: it was truncated, and the \
         recorded builds are gone. Restore it from a backup, or delete it to start a new \
         state (every image is then built afresh)"
    )]
    EmptyDatabase { path: PathBuf },
    #[error("write the state in {dir}: the disk is full")]
    DiskFull {
        dir: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("use the state database")]
    Database(#[from] rusqlite::Error),
    #[error(
        "read the state: its schema version is {found}, this kpackd knows up to {known}; \
         use a newer kpackd"
    )]
    TooNew { found: usize, known: usize },
    #[error("read the recorded {what} of {record} #{number}")]
    Corrupt {
        what: &'static str,
        /// `build <image>` or `publish of builder <name>`.
        record: String,
        number: u64,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("record build {image} #{number}: {from} cannot become {to}")]
    Transition {
        image: String,
        number: u64,
        from: BuildStatus,
        to: BuildStatus,
    },
    #[error("record a build: `{0}` is not a build or a rebase")]
    NotABuild(Action),
    #[error("find build {0:?}: no such build")]
    NoSuchBuild(BuildId),
    #[error("record publish {builder} #{number}: {from} cannot become {to}")]
    PublishTransition {
        builder: String,
        number: u64,
        from: PublishStatus,
        to: PublishStatus,
    },
    #[error("find publish {0:?}: no such publish")]
    NoSuchPublish(PublishId),
}

/// An open state store.
#[derive(Debug)]
pub struct State {
    conn: Connection,
    dir: PathBuf,
    lineage: String,
}

impl State {
    /// Opens the state in `dir`, creating the directory and the database (readable by
    /// its owner only) when missing and bringing an older schema up to date.
    pub fn open(dir: &Path) -> Result<State, StateError> {
        let create_err = |source: std::io::Error| {
            if is_not_writable(&source) {
                StateError::NotWritable(NotWritable {
                    dir: dir.to_path_buf(),
                    source,
                })
            } else {
                StateError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                }
            }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(create_err)?;
        let path = StateLayout::new(dir).database();
        // SQLite gives its -wal and -shm files the database's mode.
        let created = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(create_err(e)),
        };
        if !created {
            refuse_truncated(&path)?;
        }
        // SQLite says only "unable to open database file", "attempt to write a readonly
        // database" or "disk I/O error" when the directory cannot be written or its disk is
        // full (it makes the -wal and -shm files): say which.
        let not_writable =
            |e: rusqlite::Error| match rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
                Err(errno) => StateError::NotWritable(NotWritable {
                    dir: dir.to_path_buf(),
                    source: errno.into(),
                }),
                Ok(()) => explain_write_error(dir, e),
            };
        let mut conn = Connection::open(&path).map_err(not_writable)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Switching a new database to WAL, and the first reads of a WAL database another
        // process is setting up, answer SQLITE_BUSY at once, without the busy handler:
        // two kpackd commands started together (an apply and a `builds`) retry here.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        let lineage = loop {
            match Self::prepare(&mut conn) {
                Err(StateError::Database(rusqlite::Error::SqliteFailure(e, _)))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(StateError::Database(e)) => return Err(not_writable(e)),
                result => break result?,
            }
        };
        Ok(State {
            conn,
            dir: dir.to_path_buf(),
            lineage,
        })
    }

    /// Settings, migrations, and the lineage: what opening runs on the connection.
    fn prepare(conn: &mut Connection) -> Result<String, StateError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Every statement kpackd runs, kept prepared: a fleet's thousand builds reuse them.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrations::migrate(conn)?;
        Ok(conn.query_row("SELECT lineage FROM state", [], |row| row.get(0))?)
    }

    /// The identity of this state, made once when it was created: a plan made against
    /// another state is refused.
    pub fn lineage(&self) -> &str {
        &self.lineage
    }

    /// The state directory: the database, build logs, caches.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the state directory holds, and where.
    pub fn layout(&self) -> StateLayout {
        StateLayout::new(&self.dir)
    }

    /// Moves with every change to the state.
    pub fn serial(&self) -> Result<u64, StateError> {
        let serial: i64 = self
            .conn
            .query_row("SELECT serial FROM state", [], |row| row.get(0))?;
        Ok(serial.unsigned_abs())
    }
}

/// Opens a write transaction and moves the serial in it.
fn write<'c>(conn: &'c mut Connection, dir: &Path) -> Result<Transaction<'c>, StateError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| explain_write_error(dir, e))?;
    bump_serial(&tx).map_err(|e| match e {
        StateError::Database(e) => explain_write_error(dir, e),
        other => other,
    })?;
    Ok(tx)
}

/// Commits a write transaction.
fn commit(tx: Transaction<'_>, dir: &Path) -> Result<(), StateError> {
    tx.commit().map_err(|e| explain_write_error(dir, e))
}

/// A failed write, told apart when the cause is a full disk: SQLite reports that as
/// "database or disk is full" at best and as "disk I/O error" when the WAL cannot grow.
fn explain_write_error(dir: &Path, source: rusqlite::Error) -> StateError {
    let disk_error = matches!(
        source.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
    );
    if disk_error && disk_is_full(dir) {
        StateError::DiskFull {
            dir: dir.to_path_buf(),
            source,
        }
    } else {
        StateError::Database(source)
    }
}

/// Whether the file system holding `dir` has (next to) no room left for a write.
fn disk_is_full(dir: &Path) -> bool {
    /// Less room than this is full for SQLite, which grows the WAL by pages.
    const ROOM: u64 = 64 * 1024;
    rustix::fs::statvfs(dir)
        .map(|fs| fs.f_bavail.saturating_mul(fs.f_frsize) < ROOM)
        .unwrap_or(false)
}

/// Whether an I/O error says the state directory cannot be written at all.
fn is_not_writable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
    )
}

/// Refuses an existing database file that is empty: SQLite would take it for a new
/// database and the recorded history would be lost without a word. A database that
/// another kpackd is creating at this moment is empty only for as long as that takes.
fn refuse_truncated(path: &Path) -> Result<(), StateError> {
    const CREATING: Duration = Duration::from_secs(2);
    let deadline = std::time::Instant::now() + CREATING;
    loop {
        let empty = std::fs::metadata(path)
            .map(|m| m.len() == 0)
            .unwrap_or(false);
        let wal = path.with_extension("db-wal");
        let wal_empty = std::fs::metadata(&wal)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
        if !(empty && wal_empty) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(StateError::EmptyDatabase {
                path: path.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn bump_serial(tx: &Transaction<'_>) -> Result<(), StateError> {
    row::execute(tx, "UPDATE state SET serial = serial + 1", [])?;
    Ok(())
}

#[cfg(test)]
mod tests;
