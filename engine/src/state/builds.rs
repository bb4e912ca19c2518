//! The builds table: queuing a build or rebase, moving it along, ending it, and reading
//! the history back; triggers, forgetting and pruning.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use imageref::Digest;
use planner::plan::Action;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use super::row::{self, find_record, json, millis, RecordRow};
use super::{
    bump_serial, commit, write, Build, BuildId, BuildStatus, Failure, FailureKind, NewBuild,
    Outcome, State, StateError, StateLayout, RUNNING,
};

impl State {
    /// Queues a build or rebase: gives it the image's next number and a log file, and,
    /// for a build, claims the image's pending triggers (consumed if it completes,
    /// released if it is canceled or interrupted).
    pub fn begin_build(&mut self, new: &NewBuild<'_>) -> Result<Build, StateError> {
        if !matches!(new.action, Action::Build | Action::Rebase) {
            return Err(StateError::NotABuild(new.action));
        }
        let tx = write(&mut self.conn, &self.dir)?;
        row::execute(
            &tx,
            "INSERT INTO images (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
            [new.image],
        )?;
        let number: i64 = row::query_one(
            &tx,
            "UPDATE images SET next_number = next_number + 1 WHERE name = ?1
             RETURNING next_number - 1",
            [new.image],
            |row| row.get(0),
        )?;
        let log = StateLayout::relative_log(new.image, number);
        row::execute(
            &tx,
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
            row::execute(
                &tx,
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
        row::execute(
            &tx,
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
            } => row::execute(
                &tx,
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
            Outcome::Failed { message, kind } => row::execute(
                &tx,
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
            Outcome::Canceled => row::execute(
                &tx,
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
            let mut stmt = tx.prepare_cached(&format!("SELECT id FROM builds WHERE {RUNNING}"))?;
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
            row::execute(
                &tx,
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
        row::execute(
            &tx,
            "INSERT INTO images (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
            [image],
        )?;
        row::execute(
            &tx,
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
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM images ORDER BY name")?;
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
        row::execute(&tx, "DELETE FROM triggers WHERE image = ?1", [image])?;
        row::execute(&tx, "DELETE FROM builds WHERE image = ?1", [image])?;
        row::execute(&tx, "DELETE FROM images WHERE name = ?1", [image])?;
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
        row::execute(
            &tx,
            &format!(
                "DELETE FROM triggers WHERE claimed_by IN (SELECT id FROM builds WHERE {OLD})"
            ),
            args,
        )?;
        row::execute(&tx, &format!("DELETE FROM builds WHERE {OLD}"), args)?;
        commit(tx, &self.dir)?;
        tracing::debug!(image, dropped = logs.len(), "history pruned");
        Ok(logs)
    }
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
    row::execute(tx, sql, [id.0])?;
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
    let mut stmt = conn.prepare_cached(&format!("SELECT log FROM builds WHERE {filter}"))?;
    let logs = stmt.query_map(args, |row| row.get::<_, String>(0))?;
    let mut paths = Vec::new();
    for log in logs {
        paths.push(dir.join(log?));
    }
    Ok(paths)
}

pub(super) const COLUMNS: &str = "id, image, number, action, status, reasons, details, inputs, tag,
    buildpacks_used, rebasable, output, failure_step, failure_message, failure_kind,
    queued_at, started_at, finished_at, log";

fn find(conn: &Connection, dir: &Path, id: BuildId) -> Result<Build, StateError> {
    let select = format!("SELECT {COLUMNS} FROM builds WHERE id = ?1");
    find_record(conn, &select, id.0, read_build, StateError::NoSuchBuild(id))
        .map(|build| with_dir(build, dir))
}

fn with_dir(mut build: Build, dir: &Path) -> Build {
    build.log = dir.join(&build.log);
    build
}

/// A row of [`COLUMNS`]; the outer error is SQLite's, the inner one a value that does
/// not decode.
pub(super) fn read_build(row: &Row<'_>) -> rusqlite::Result<Result<Build, StateError>> {
    let image: String = row.get("image")?;
    let row = RecordRow::new(row, format!("build {image}"))?;
    let action = match row.text("action")?.as_str() {
        "rebase" => Action::Rebase,
        _ => Action::Build,
    };
    let failure_step: Option<String> = row.get("failure_step")?;
    let failure_message: Option<String> = row.get("failure_message")?;
    let failure_kind = match row.get::<Option<String>>("failure_kind")?.as_deref() {
        Some("infrastructure") => FailureKind::Infrastructure,
        _ => FailureKind::Build,
    };
    let buildpacks_used: Option<String> = row.get("buildpacks_used")?;
    let (id, tag, rebasable, output, log) = (
        BuildId(row.get("id")?),
        row.text("tag")?,
        row.get("rebasable")?,
        row.get::<Option<String>>("output")?,
        row.log()?,
    );
    let (queued_at, started_at, finished_at) = (
        row.time("queued_at")?,
        row.time("started_at")?,
        row.time("finished_at")?,
    );
    let (status, reasons, details, inputs) = (
        row.text("status")?,
        row.text("reasons")?,
        row.text("details")?,
        row.text("inputs")?,
    );
    let decoded = (|| {
        let failure = match (failure_step, failure_message) {
            (Some(step), Some(message)) => Some(Failure {
                step: row.parse("failure step", &step)?,
                message,
                kind: failure_kind,
            }),
            _ => None,
        };
        Ok(Build {
            id,
            number: row.number(),
            action,
            status: row.parse("status", &status)?,
            reasons: row.json("reasons", &reasons)?,
            details: row.json("details", &details)?,
            inputs: row.json("inputs", &inputs)?,
            tag,
            buildpacks_used: buildpacks_used
                .as_deref()
                .map(|used| row.json("buildpacks", used))
                .transpose()?,
            rebasable,
            output: output
                .as_deref()
                .map(|output| row.parse::<Digest>("output", output))
                .transpose()?,
            failure,
            queued_at: queued_at.unwrap_or(UNIX_EPOCH),
            started_at,
            finished_at,
            log,
            image,
        })
    })();
    Ok(decoded)
}
