//! Values as the state's tables store them (JSON text, milliseconds since the epoch), and
//! reading a record's row back: the columns every record has, and the error of a value
//! that does not decode.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::FromSql;
use rusqlite::{Connection, OptionalExtension, Params, Row};

use super::StateError;

/// Why a stored value does not decode.
type DecodeError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `sql` as a statement prepared once per connection: the statements a build or a
/// publish records are parsed once per process, not once per record.
pub(super) fn execute(
    conn: &Connection,
    sql: &str,
    params: impl Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// The one row `sql` returns, read by `read`, with `sql` prepared once per connection.
pub(super) fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    read: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, read)
}

/// The record with `id` in the table `select` (a `SELECT … WHERE id = ?1`) reads from,
/// decoded by `read`; `missing` when there is none.
pub(super) fn find_record<T>(
    conn: &Connection,
    select: &str,
    id: i64,
    read: impl FnOnce(&Row<'_>) -> rusqlite::Result<Result<T, StateError>>,
    missing: StateError,
) -> Result<T, StateError> {
    conn.prepare_cached(select)?
        .query_row([id], read)
        .optional()?
        .ok_or(missing)?
}

/// One row of a table of numbered records (builds, publishes). Reading a column fails
/// with SQLite's error; decoding a value that was read fails with
/// [`StateError::Corrupt`] naming the record.
pub(super) struct RecordRow<'r, 's> {
    row: &'r Row<'s>,
    /// The record as errors name it: `build <image>` or `publish of builder <name>`.
    record: String,
    number: u64,
}

impl<'r, 's> RecordRow<'r, 's> {
    /// The row of `record`, numbered by its `number` column.
    pub(super) fn new(row: &'r Row<'s>, record: String) -> rusqlite::Result<Self> {
        let number = row.get::<_, i64>("number")?.unsigned_abs();
        Ok(RecordRow {
            row,
            record,
            number,
        })
    }

    pub(super) fn number(&self) -> u64 {
        self.number
    }

    pub(super) fn get<T: FromSql>(&self, column: &str) -> rusqlite::Result<T> {
        self.row.get(column)
    }

    pub(super) fn text(&self, column: &str) -> rusqlite::Result<String> {
        self.row.get(column)
    }

    /// A time column, stored in milliseconds since the epoch.
    pub(super) fn time(&self, column: &str) -> rusqlite::Result<Option<SystemTime>> {
        self.row
            .get::<_, Option<i64>>(column)
            .map(|ms| ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())))
    }

    /// The log file, relative to the state directory.
    pub(super) fn log(&self) -> rusqlite::Result<PathBuf> {
        self.text("log").map(PathBuf::from)
    }

    /// The error of the value `what` of this record.
    pub(super) fn corrupt(&self, what: &'static str, source: DecodeError) -> StateError {
        StateError::Corrupt {
            what,
            record: self.record.clone(),
            number: self.number,
            source,
        }
    }

    /// `text` parsed as a `T`: the value `what`.
    pub(super) fn parse<T>(&self, what: &'static str, text: &str) -> Result<T, StateError>
    where
        T: FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        text.parse().map_err(|e| self.corrupt(what, Box::new(e)))
    }

    /// `text` read as JSON: the value `what`.
    pub(super) fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        text: &str,
    ) -> Result<T, StateError> {
        serde_json::from_str(text).map_err(|e| self.corrupt(what, Box::new(e)))
    }
}

/// A value as a JSON column holds it.
pub(super) fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plan values are plain data and always serialise")
}

/// A time as a time column holds it.
pub(super) fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
