//! Publishes of builder images: each one a numbered record per builder, with the
//! inputs it was made from, its status and the digest it pushed. A publish goes
//! `queued → publishing → succeeded`, or ends `failed`, `canceled` or `interrupted`.
//! The publishing rules compare with the last publish that succeeded.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use imageref::Digest;
use planner::diff::RecordedPublish;
use planner::plan::{Detail, PublishInputs};
use planner::Reason;
use rusqlite::{params, Connection, Row, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::row::{self, find_record, json, millis, RecordRow};
use super::{commit, write, State, StateError};

/// Where a publish is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublishStatus {
    Queued,
    /// Writing the builder image and pushing it.
    Publishing,
    Succeeded,
    Failed,
    /// Stopped by SIGINT or SIGTERM.
    Canceled,
    /// Found running at start-up: the process that ran it died.
    Interrupted,
}

impl PublishStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PublishStatus::Queued => "queued",
            PublishStatus::Publishing => "publishing",
            PublishStatus::Succeeded => "succeeded",
            PublishStatus::Failed => "failed",
            PublishStatus::Canceled => "canceled",
            PublishStatus::Interrupted => "interrupted",
        }
    }

    /// Whether the publish is over.
    pub fn is_end(self) -> bool {
        !matches!(self, PublishStatus::Queued | PublishStatus::Publishing)
    }
}

impl fmt::Display for PublishStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status the state does not know.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a publish status")]
pub struct UnknownPublishStatus(String);

impl FromStr for PublishStatus {
    type Err = UnknownPublishStatus;

    fn from_str(s: &str) -> Result<PublishStatus, UnknownPublishStatus> {
        [
            PublishStatus::Queued,
            PublishStatus::Publishing,
            PublishStatus::Succeeded,
            PublishStatus::Failed,
            PublishStatus::Canceled,
            PublishStatus::Interrupted,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| UnknownPublishStatus(s.to_string()))
    }
}

/// A publish's row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublishId(pub i64);

/// One publish of a builder image, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub id: PublishId,
    pub builder: String,
    /// Counts the builder's publishes from 1.
    pub number: u64,
    pub status: PublishStatus,
    pub reasons: Vec<Reason>,
    pub details: Vec<Detail>,
    pub inputs: PublishInputs,
    pub tag: String,
    /// The builder image's manifest digest, after a success.
    pub digest: Option<Digest>,
    /// Why it failed.
    pub failure: Option<String>,
    pub queued_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// The log file (absolute).
    pub log: PathBuf,
}

/// A publish to record.
#[derive(Debug, Clone, Copy)]
pub struct NewPublish<'a> {
    pub builder: &'a str,
    pub reasons: &'a [Reason],
    pub details: &'a [Detail],
    pub inputs: &'a PublishInputs,
    pub tag: &'a str,
}

/// How a publish ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    Succeeded { digest: Digest },
    Failed { message: String },
    Canceled,
}

/// Where publish logs live under the state directory: `publish-logs/<builder>/<n>.log`.
pub const PUBLISH_LOGS: &str = "publish-logs";

const COLUMNS: &str = "id, builder, number, status, reasons, details, inputs, tag, digest,
    failure_message, queued_at, started_at, finished_at, log";

impl State {
    /// Queues a publish of `new.builder`, numbered after its last one.
    pub fn begin_publish(&mut self, new: &NewPublish<'_>) -> Result<Publish, StateError> {
        let tx = write(&mut self.conn, &self.dir)?;
        let number: i64 = row::query_one(
            &tx,
            "SELECT coalesce(max(number), 0) + 1 FROM publishes WHERE builder = ?1",
            [new.builder],
            |row| row.get(0),
        )?;
        let log = Path::new(PUBLISH_LOGS)
            .join(new.builder)
            .join(format!("{number}.log"));
        row::execute(
            &tx,
            "INSERT INTO publishes (builder, number, status, reasons, details, inputs, tag,
                                    queued_at, log)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                new.builder,
                number,
                PublishStatus::Queued.as_str(),
                json(new.reasons),
                json(new.details),
                json(new.inputs),
                new.tag,
                millis(SystemTime::now()),
                log.to_string_lossy(),
            ],
        )?;
        let publish = find(&tx, &self.dir, PublishId(tx.last_insert_rowid()))?;
        commit(tx, &self.dir)?;
        tracing::info!(
            builder = new.builder,
            number = publish.number,
            "publish queued"
        );
        Ok(publish)
    }

    /// Moves a queued publish to `publishing`.
    pub fn start_publish(&mut self, id: PublishId) -> Result<Publish, StateError> {
        let tx = write(&mut self.conn, &self.dir)?;
        let publish = find(&tx, &self.dir, id)?;
        if publish.status != PublishStatus::Queued {
            return Err(refused(&publish, PublishStatus::Publishing));
        }
        row::execute(
            &tx,
            "UPDATE publishes SET status = 'publishing', started_at = ?1 WHERE id = ?2",
            params![millis(SystemTime::now()), id.0],
        )?;
        let publish = find(&tx, &self.dir, id)?;
        commit(tx, &self.dir)?;
        Ok(publish)
    }

    /// Ends a publish that has not ended.
    pub fn finish_publish(
        &mut self,
        id: PublishId,
        outcome: PublishOutcome,
    ) -> Result<Publish, StateError> {
        let tx = write(&mut self.conn, &self.dir)?;
        let publish = find(&tx, &self.dir, id)?;
        let (status, digest, message) = match outcome {
            PublishOutcome::Succeeded { digest } => (PublishStatus::Succeeded, Some(digest), None),
            PublishOutcome::Failed { message } => (PublishStatus::Failed, None, Some(message)),
            PublishOutcome::Canceled => (PublishStatus::Canceled, None, None),
        };
        if publish.status.is_end()
            || (status == PublishStatus::Succeeded && publish.status != PublishStatus::Publishing)
        {
            return Err(refused(&publish, status));
        }
        row::execute(
            &tx,
            "UPDATE publishes SET status = ?1, finished_at = ?2, digest = ?3,
                                  failure_message = ?4
             WHERE id = ?5",
            params![
                status.as_str(),
                millis(SystemTime::now()),
                digest.map(|d| d.to_string()),
                message,
                id.0
            ],
        )?;
        let publish = find(&tx, &self.dir, id)?;
        commit(tx, &self.dir)?;
        tracing::info!(builder = %publish.builder, number = publish.number, %status, "publish ended");
        Ok(publish)
    }

    /// Marks `interrupted` every publish that has not ended (see
    /// [`State::mark_interrupted`]). Returns them.
    pub(super) fn mark_publishes_interrupted(&mut self) -> Result<Vec<Publish>, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let running: Vec<PublishId> = {
            let mut stmt = tx.prepare_cached(
                "SELECT id FROM publishes WHERE status IN ('queued', 'publishing')",
            )?;
            let ids = stmt.query_map([], |row| row.get(0).map(PublishId))?;
            ids.collect::<Result<_, _>>()?
        };
        if running.is_empty() {
            return Ok(Vec::new());
        }
        super::bump_serial(&tx)?;
        let now = millis(SystemTime::now());
        let mut interrupted = Vec::new();
        for id in running {
            row::execute(
                &tx,
                "UPDATE publishes SET status = 'interrupted', finished_at = ?1 WHERE id = ?2",
                params![now, id.0],
            )?;
            let publish = find(&tx, &self.dir, id)?;
            tracing::warn!(builder = %publish.builder, number = publish.number, "publish interrupted");
            interrupted.push(publish);
        }
        commit(tx, &self.dir)?;
        Ok(interrupted)
    }

    /// Every publish, of one builder or of all, by builder and number.
    pub fn publishes(&self, builder: Option<&str>) -> Result<Vec<Publish>, StateError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM publishes WHERE ?1 IS NULL OR builder = ?1
             ORDER BY builder, number"
        ))?;
        let rows = stmt.query_map([builder], read_publish)?;
        let mut publishes = Vec::new();
        for publish in rows {
            publishes.push(with_dir(publish??, &self.dir));
        }
        Ok(publishes)
    }

    /// What the publishing rules compare with: each builder's last successful publish.
    pub(super) fn recorded_publishes(
        &self,
    ) -> Result<BTreeMap<String, RecordedPublish>, StateError> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM publishes p
             WHERE status = 'succeeded'
               AND number = (SELECT max(number) FROM publishes
                             WHERE builder = p.builder AND status = 'succeeded')"
        ))?;
        let rows = stmt.query_map([], read_publish)?;
        let mut recorded = BTreeMap::new();
        for publish in rows {
            let publish = publish??;
            let digest = publish.digest.ok_or_else(|| StateError::Corrupt {
                what: "digest",
                record: format!("publish of builder {}", publish.builder),
                number: publish.number,
                source: "a succeeded publish without a digest".into(),
            })?;
            recorded.insert(
                publish.builder.clone(),
                RecordedPublish {
                    number: publish.number,
                    inputs: publish.inputs,
                    digest,
                },
            );
        }
        Ok(recorded)
    }
}

fn refused(publish: &Publish, to: PublishStatus) -> StateError {
    StateError::PublishTransition {
        builder: publish.builder.clone(),
        number: publish.number,
        from: publish.status,
        to,
    }
}

fn find(conn: &Connection, dir: &Path, id: PublishId) -> Result<Publish, StateError> {
    let select = format!("SELECT {COLUMNS} FROM publishes WHERE id = ?1");
    find_record(
        conn,
        &select,
        id.0,
        read_publish,
        StateError::NoSuchPublish(id),
    )
    .map(|publish| with_dir(publish, dir))
}

fn with_dir(mut publish: Publish, dir: &Path) -> Publish {
    publish.log = dir.join(&publish.log);
    publish
}

/// A row of [`COLUMNS`]; the outer error is SQLite's, the inner one a value that does
/// not decode.
fn read_publish(row: &Row<'_>) -> rusqlite::Result<Result<Publish, StateError>> {
    let builder: String = row.get("builder")?;
    let row = RecordRow::new(row, format!("publish of builder {builder}"))?;
    let (status, reasons, details, inputs) = (
        row.text("status")?,
        row.text("reasons")?,
        row.text("details")?,
        row.text("inputs")?,
    );
    let (id, tag, digest, failure, log) = (
        PublishId(row.get("id")?),
        row.text("tag")?,
        row.get::<Option<String>>("digest")?,
        row.get("failure_message")?,
        row.log()?,
    );
    let (queued_at, started_at, finished_at) = (
        row.time("queued_at")?,
        row.time("started_at")?,
        row.time("finished_at")?,
    );
    let decoded = (|| {
        Ok(Publish {
            id,
            number: row.number(),
            status: row.parse("status", &status)?,
            reasons: row.json("reasons", &reasons)?,
            details: row.json("details", &details)?,
            inputs: row.json("inputs", &inputs)?,
            tag,
            digest: digest
                .as_deref()
                .map(|digest| row.parse::<Digest>("digest", digest))
                .transpose()?,
            failure,
            queued_at: queued_at.unwrap_or(UNIX_EPOCH),
            started_at,
            finished_at,
            log,
            builder,
        })
    })();
    Ok(decoded)
}

#[cfg(test)]
mod tests;
