//! The state store: what was built, from what, and how it went, in one SQLite file
//! (`state.db`, WAL) in the state directory. Every change is one transaction that also
//! moves the serial, so a saved plan can tell whether the state moved since it was made.

mod build;
mod lock;
mod migrations;
mod publish;

use std::collections::BTreeMap;
use std::fs::{DirBuilder, OpenOptions};
use std::num::NonZeroU32;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imageref::Digest;
use planner::diff::{
    BuildOutcome, Recorded, RecordedBuild, RecordedFailure, RecordedImage, RETRY_LIMIT,
};
use planner::plan::Action;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

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
    #[error("read the recorded {what} of build {image} #{number}")]
    Corrupt {
        what: &'static str,
        image: String,
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

    /// What the rebuild rules need: per image, its last completed build and its
    /// pending triggers.
    pub fn recorded(&self) -> Result<Recorded, StateError> {
        self.recorded_with(false)
    }

    /// [`recorded`](Self::recorded) as a reader sees it: when no writer is alive, builds
    /// that never ended belong to a process that died, and the triggers they claimed
    /// count as pending, as they will once the next writer marks them `interrupted`.
    /// So `plan` after a `kill -9` shows what the next `apply` will do.
    pub fn recorded_for_reader(&self) -> Result<Recorded, StateError> {
        self.recorded_with(!writer_alive(&self.dir))
    }

    fn recorded_with(&self, orphans_released: bool) -> Result<Recorded, StateError> {
        let mut images: BTreeMap<String, RecordedImage> = BTreeMap::new();
        let mut names = self.conn.prepare("SELECT name FROM images")?;
        for name in names.query_map([], |row| row.get::<_, String>(0))? {
            images.insert(name?, RecordedImage::default());
        }
        let mut last = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM builds b
             WHERE status IN ('succeeded', 'failed')
               AND number = (SELECT max(number) FROM builds
                             WHERE image = b.image AND status IN ('succeeded', 'failed'))"
        ))?;
        for build in last.query_map([], read_build)? {
            let build = build??;
            let outcome = match build.status {
                BuildStatus::Succeeded => BuildOutcome::Succeeded,
                _ => BuildOutcome::Failed,
            };
            let failure = match &build.failure {
                Some(failure) if outcome == BuildOutcome::Failed => Some(RecordedFailure {
                    step: failure.step.to_string(),
                    message: failure.message.clone(),
                    kind: failure.kind,
                    infrastructure_failures: self.infrastructure_streak(&build.image)?,
                    finished_at: build.finished_at.map_or(0, |t| {
                        t.duration_since(UNIX_EPOCH)
                            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    }),
                }),
                _ => None,
            };
            let image = images.entry(build.image.clone()).or_default();
            image.last_build = Some(RecordedBuild {
                failure,
                number: build.number,
                action: build.action,
                outcome,
                inputs: build.inputs,
                buildpacks_used: build.buildpacks_used,
                rebasable: build.rebasable.unwrap_or(false),
                output: build.output,
            });
        }
        let pending = if orphans_released {
            format!("claimed_by IS NULL OR claimed_by IN (SELECT id FROM builds WHERE {RUNNING})")
        } else {
            "claimed_by IS NULL".to_string()
        };
        let mut triggers = self.conn.prepare(&format!(
            "SELECT image, count(*) FROM triggers WHERE {pending} GROUP BY image"
        ))?;
        for row in triggers.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))? {
            let (image, count) = row?;
            images.entry(image).or_default().pending_triggers = count;
        }
        Ok(Recorded {
            lineage: self.lineage.clone(),
            serial: self.serial()?,
            images,
            builders: self.recorded_publishes()?,
        })
    }

    /// How many of `image`'s last completed builds in a row failed outside the build
    /// (counted up to one past [`RETRY_LIMIT`], which is all the rules need).
    fn infrastructure_streak(&self, image: &str) -> Result<u32, StateError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT failure_kind FROM builds
             WHERE image = ?1 AND status IN ('succeeded', 'failed')
             ORDER BY number DESC LIMIT ?2",
        )?;
        let kinds = stmt.query_map(params![image, RETRY_LIMIT + 1], |row| {
            row.get::<_, Option<String>>(0)
        })?;
        let mut streak = 0;
        for kind in kinds {
            if kind?.as_deref() != Some(FailureKind::Infrastructure.as_str()) {
                break;
            }
            streak += 1;
        }
        Ok(streak)
    }

    /// Queues a build or rebase: gives it the image's next number and a log file, and,
    /// for a build, claims the image's pending triggers (consumed if it completes,
    /// released if it is canceled or interrupted).
    pub fn begin_build(&mut self, new: &NewBuild<'_>) -> Result<Build, StateError> {
        if !matches!(new.action, Action::Build | Action::Rebase) {
            return Err(StateError::NotABuild(new.action));
        }
        let tx = write(&mut self.conn, &self.dir)?;
        tx.execute(
            "INSERT INTO images (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
            [new.image],
        )?;
        let number: i64 = tx.query_row(
            "UPDATE images SET next_number = next_number + 1 WHERE name = ?1
             RETURNING next_number - 1",
            [new.image],
            |row| row.get(0),
        )?;
        let log = StateLayout::relative_log(new.image, number);
        tx.execute(
            "INSERT INTO builds (image, number, action, status, reasons, details, inputs, tag,
                                 queued_at, log)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                new.image,
                number,
                new.action.as_str(),
                BuildStatus::Queued.as_str(),
                json(new.reasons),
                json(new.details),
                json(new.inputs),
                new.tag,
                millis(SystemTime::now()),
                log.to_string_lossy(),
            ],
        )?;
        let id = BuildId(tx.last_insert_rowid());
        if new.action == Action::Build {
            tx.execute(
                "UPDATE triggers SET claimed_by = ?1 WHERE image = ?2 AND claimed_by IS NULL",
                params![id.0, new.image],
            )?;
        }
        let build = find(&tx, &self.dir, id)?;
        commit(tx, &self.dir)?;
        tracing::info!(image = new.image, number = build.number, action = %new.action, "build queued");
        Ok(build)
    }

    /// Moves a running build to its next step; refused unless the state machine allows
    /// it (see [`BuildStatus::can_transition_to`]). Ends go through [`State::finish`].
    pub fn transition(&mut self, id: BuildId, to: BuildStatus) -> Result<Build, StateError> {
        if to.is_end() {
            let build = find(&self.conn, &self.dir, id)?;
            return Err(refused(&build, to));
        }
        let tx = write(&mut self.conn, &self.dir)?;
        let build = find(&tx, &self.dir, id)?;
        if !build.status.can_transition_to(to, build.action) {
            return Err(refused(&build, to));
        }
        tx.execute(
            "UPDATE builds SET status = ?1, started_at = coalesce(started_at, ?2) WHERE id = ?3",
            params![to.as_str(), millis(SystemTime::now()), id.0],
        )?;
        let build = find(&tx, &self.dir, id)?;
        commit(tx, &self.dir)?;
        tracing::info!(image = %build.image, number = build.number, status = %to, "build moved");
        Ok(build)
    }

    /// Ends a build: its output after a success, the step it failed in and why after
    /// a failure.
    pub fn finish(&mut self, id: BuildId, outcome: Outcome) -> Result<Build, StateError> {
        let tx = write(&mut self.conn, &self.dir)?;
        let build = find(&tx, &self.dir, id)?;
        let to = outcome.status();
        if !build.status.can_transition_to(to, build.action) {
            return Err(refused(&build, to));
        }
        let now = millis(SystemTime::now());
        match &outcome {
            Outcome::Succeeded {
                output,
                buildpacks_used,
                rebasable,
            } => tx.execute(
                "UPDATE builds SET status = ?1, finished_at = ?2, output = ?3,
                                   buildpacks_used = ?4, rebasable = ?5
                 WHERE id = ?6",
                params![
                    to.as_str(),
                    now,
                    output.to_string(),
                    json(buildpacks_used),
                    rebasable,
                    id.0
                ],
            )?,
            Outcome::Failed { message, kind } => tx.execute(
                "UPDATE builds SET status = ?1, finished_at = ?2, failure_step = ?3,
                                   failure_message = ?4, failure_kind = ?5
                 WHERE id = ?6",
                params![
                    to.as_str(),
                    now,
                    build.status.as_str(),
                    message,
                    kind.as_str(),
                    id.0
                ],
            )?,
            Outcome::Canceled => tx.execute(
                "UPDATE builds SET status = ?1, finished_at = ?2 WHERE id = ?3",
                params![to.as_str(), now, id.0],
            )?,
        };
        settle_triggers(&tx, id, to)?;
        let build = find(&tx, &self.dir, id)?;
        commit(tx, &self.dir)?;
        tracing::info!(image = %build.image, number = build.number, status = %to, "build ended");
        Ok(build)
    }

    /// Marks `interrupted` every build that has not ended: run at start-up by the
    /// writer (holding [`StateLock`]), when no build of this process is running, so any
    /// such build belonged to a process that died. Returns them.
    pub fn mark_interrupted(&mut self) -> Result<Vec<Build>, StateError> {
        self.mark_publishes_interrupted()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let running: Vec<BuildId> = {
            let mut stmt = tx.prepare(&format!("SELECT id FROM builds WHERE {RUNNING}"))?;
            let ids = stmt.query_map([], |row| row.get(0).map(BuildId))?;
            ids.collect::<Result<_, _>>()?
        };
        if running.is_empty() {
            return Ok(Vec::new());
        }
        bump_serial(&tx)?;
        let now = millis(SystemTime::now());
        let mut interrupted = Vec::new();
        for id in running {
            tx.execute(
                "UPDATE builds SET status = 'interrupted', finished_at = ?1 WHERE id = ?2",
                params![now, id.0],
            )?;
            settle_triggers(&tx, id, BuildStatus::Interrupted)?;
            let build = find(&tx, &self.dir, id)?;
            tracing::warn!(image = %build.image, number = build.number, "build interrupted");
            interrupted.push(build);
        }
        commit(tx, &self.dir)?;
        Ok(interrupted)
    }

    /// Records `kpackd trigger IMAGE`: the image's next plan builds it (TRIGGER).
    pub fn add_trigger(&mut self, image: &str) -> Result<(), StateError> {
        let tx = write(&mut self.conn, &self.dir)?;
        tx.execute(
            "INSERT INTO images (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
            [image],
        )?;
        tx.execute(
            "INSERT INTO triggers (image, requested_at) VALUES (?1, ?2)",
            params![image, millis(SystemTime::now())],
        )?;
        commit(tx, &self.dir)?;
        tracing::info!(image, "trigger recorded");
        Ok(())
    }

    /// Tells a `kpackd watch` running on this state, if any, that triggers were recorded
    /// from outside it (`kpackd trigger`): it watches [`DOORBELL_FILE`] and reconciles at
    /// once rather than at its next wake. Best effort: the triggers are recorded either
    /// way. Watch's own triggers (`POST /images/<name>/trigger`) do not ring: it wakes
    /// itself.
    pub fn ring_doorbell(&self) {
        let doorbell = self.layout().doorbell();
        if let Err(e) = std::fs::write(&doorbell, b"") {
            tracing::debug!(path = %doorbell.display(), error = %e, "cannot ring the doorbell");
        }
    }

    /// The images the state knows of, by name.
    pub fn images(&self) -> Result<Vec<String>, StateError> {
        let mut stmt = self.conn.prepare("SELECT name FROM images ORDER BY name")?;
        let names = stmt.query_map([], |row| row.get(0))?;
        Ok(names.collect::<Result<_, _>>()?)
    }

    /// The history of one image, or of all, by image and number.
    pub fn builds(&self, image: Option<&str>) -> Result<Vec<Build>, StateError> {
        // Two statements rather than `?1 IS NULL OR image = ?1`, which SQLite answers
        // with a scan of every build: one image's history is a search of its index.
        let mut stmt = match image {
            Some(_) => self.conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM builds WHERE image = ?1 ORDER BY number"
            ))?,
            None => self.conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM builds ORDER BY image, number"
            ))?,
        };
        let rows = match image {
            Some(image) => stmt.query([image])?,
            None => stmt.query([])?,
        };
        let builds = rows.mapped(|row| read_build(row).map(|b| b.map(|b| with_dir(b, &self.dir))));
        let mut all = Vec::new();
        for build in builds {
            all.push(build??);
        }
        Ok(all)
    }

    /// One build, by its id.
    pub fn build(&self, id: BuildId) -> Result<Build, StateError> {
        find(&self.conn, &self.dir, id)
    }

    /// The newest successful build of `image`, if any.
    pub fn last_succeeded(&self, image: &str) -> Result<Option<Build>, StateError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM builds WHERE image = ?1 AND status = 'succeeded'
             ORDER BY number DESC LIMIT 1"
        ))?;
        let build = stmt.query_row([image], read_build).optional()?;
        build.transpose().map(|b| b.map(|b| with_dir(b, &self.dir)))
    }

    /// Drops everything recorded about an image (registry tags are left alone).
    /// Returns the log files of its builds, for the caller to delete.
    pub fn forget(&mut self, image: &str) -> Result<Vec<PathBuf>, StateError> {
        let tx = write(&mut self.conn, &self.dir)?;
        let logs = logs_of(&tx, &self.dir, "image = ?1", params![image])?;
        tx.execute("DELETE FROM triggers WHERE image = ?1", [image])?;
        tx.execute("DELETE FROM builds WHERE image = ?1", [image])?;
        tx.execute("DELETE FROM images WHERE name = ?1", [image])?;
        commit(tx, &self.dir)?;
        tracing::info!(image, "image forgotten");
        Ok(logs)
    }

    /// Keeps the newest `keep_success` successful and `keep_failed` other ended builds
    /// of an image, and drops the rest. Running builds are kept. Returns the log files
    /// of the dropped builds, for the caller to delete.
    pub fn prune_history(
        &mut self,
        image: &str,
        keep_success: NonZeroU32,
        keep_failed: NonZeroU32,
    ) -> Result<Vec<PathBuf>, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Triggers claimed by a dropped build are already consumed; the reference goes.
        const OLD: &str = "image = ?1 AND (
            (status = 'succeeded' AND number NOT IN (
                SELECT number FROM builds WHERE image = ?1 AND status = 'succeeded'
                ORDER BY number DESC LIMIT ?2))
            OR (status IN ('failed', 'canceled', 'interrupted') AND number NOT IN (
                SELECT number FROM builds
                WHERE image = ?1 AND status IN ('failed', 'canceled', 'interrupted')
                ORDER BY number DESC LIMIT ?3)))";
        let args = params![image, keep_success.get(), keep_failed.get()];
        let logs = logs_of(&tx, &self.dir, OLD, args)?;
        if logs.is_empty() {
            return Ok(logs);
        }
        bump_serial(&tx)?;
        tx.execute(
            &format!(
                "DELETE FROM triggers WHERE claimed_by IN (SELECT id FROM builds WHERE {OLD})"
            ),
            args,
        )?;
        tx.execute(&format!("DELETE FROM builds WHERE {OLD}"), args)?;
        commit(tx, &self.dir)?;
        tracing::debug!(image, dropped = logs.len(), "history pruned");
        Ok(logs)
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
    tx.execute("UPDATE state SET serial = serial + 1", [])?;
    Ok(())
}

/// A completed build consumes the triggers it claimed; one that did not complete
/// leaves them for the next build.
fn settle_triggers(
    tx: &Transaction<'_>,
    id: BuildId,
    ended: BuildStatus,
) -> Result<(), StateError> {
    let sql = if ended.is_completed() {
        "DELETE FROM triggers WHERE claimed_by = ?1"
    } else {
        "UPDATE triggers SET claimed_by = NULL WHERE claimed_by = ?1"
    };
    tx.execute(sql, [id.0])?;
    Ok(())
}

fn refused(build: &Build, to: BuildStatus) -> StateError {
    StateError::Transition {
        image: build.image.clone(),
        number: build.number,
        from: build.status,
        to,
    }
}

fn logs_of(
    conn: &Connection,
    dir: &Path,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<PathBuf>, StateError> {
    let mut stmt = conn.prepare(&format!("SELECT log FROM builds WHERE {filter}"))?;
    let logs = stmt.query_map(args, |row| row.get::<_, String>(0))?;
    let mut paths = Vec::new();
    for log in logs {
        paths.push(dir.join(log?));
    }
    Ok(paths)
}

const COLUMNS: &str = "id, image, number, action, status, reasons, details, inputs, tag,
    buildpacks_used, rebasable, output, failure_step, failure_message, failure_kind,
    queued_at, started_at, finished_at, log";

fn find(conn: &Connection, dir: &Path, id: BuildId) -> Result<Build, StateError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM builds WHERE id = ?1"))?
        .query_row([id.0], read_build)
        .optional()?
        .ok_or(StateError::NoSuchBuild(id))?
        .map(|build| with_dir(build, dir))
}

fn with_dir(mut build: Build, dir: &Path) -> Build {
    build.log = dir.join(&build.log);
    build
}

/// A row of [`COLUMNS`]; the outer error is SQLite's, the inner one a value that does
/// not decode.
fn read_build(row: &Row<'_>) -> rusqlite::Result<Result<Build, StateError>> {
    let image: String = row.get("image")?;
    let number: u64 = row.get::<_, i64>("number")?.unsigned_abs();
    let corrupt = |what: &'static str| {
        let image = image.clone();
        move |source: Box<dyn std::error::Error + Send + Sync>| StateError::Corrupt {
            what,
            image,
            number,
            source,
        }
    };
    let text = |column: &str| row.get::<_, String>(column);
    let time = |column: &str| {
        row.get::<_, Option<i64>>(column)
            .map(|ms| ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())))
    };
    let action = match text("action")?.as_str() {
        "rebase" => Action::Rebase,
        _ => Action::Build,
    };
    let failure_step: Option<String> = row.get("failure_step")?;
    let failure_message: Option<String> = row.get("failure_message")?;
    let failure_kind = match row.get::<_, Option<String>>("failure_kind")?.as_deref() {
        Some("infrastructure") => FailureKind::Infrastructure,
        _ => FailureKind::Build,
    };
    let buildpacks_used: Option<String> = row.get("buildpacks_used")?;
    let (id, tag, rebasable, output, log) = (
        BuildId(row.get("id")?),
        text("tag")?,
        row.get("rebasable")?,
        row.get::<_, Option<String>>("output")?,
        PathBuf::from(text("log")?),
    );
    let (queued_at, started_at, finished_at) = (
        time("queued_at")?,
        time("started_at")?,
        time("finished_at")?,
    );
    let (status, reasons, details, inputs) = (
        text("status")?,
        text("reasons")?,
        text("details")?,
        text("inputs")?,
    );
    let decoded = (|| {
        let failure = match (failure_step, failure_message) {
            (Some(step), Some(message)) => Some(Failure {
                step: step
                    .parse()
                    .map_err(|e| corrupt("failure step")(Box::new(e)))?,
                message,
                kind: failure_kind,
            }),
            _ => None,
        };
        Ok(Build {
            id,
            number,
            action,
            status: status.parse().map_err(|e| corrupt("status")(Box::new(e)))?,
            reasons: from_json(&reasons).map_err(corrupt("reasons"))?,
            details: from_json(&details).map_err(corrupt("details"))?,
            inputs: from_json(&inputs).map_err(corrupt("inputs"))?,
            tag,
            buildpacks_used: buildpacks_used
                .as_deref()
                .map(from_json)
                .transpose()
                .map_err(corrupt("buildpacks"))?,
            rebasable,
            output: output
                .as_deref()
                .map(Digest::parse)
                .transpose()
                .map_err(|e| corrupt("output")(Box::new(e)))?,
            failure,
            queued_at: queued_at.unwrap_or(UNIX_EPOCH),
            started_at,
            finished_at,
            log,
            image: image.clone(),
        })
    })();
    Ok(decoded)
}

fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    Ok(serde_json::from_str(text)?)
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plan values are plain data and always serialise")
}

fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
