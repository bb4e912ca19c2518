//! The schema of the state database and how an older one is brought up to date: the
//! `user_version` pragma counts the migrations applied; each runs in its own transaction.

use rusqlite::{Connection, TransactionBehavior};

use super::StateError;

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only: a
/// released migration never changes.
const MIGRATIONS: &[&str] = &[
    // 1: builds, triggers, and the state's identity.
    "
    CREATE TABLE state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        lineage TEXT NOT NULL,
        serial INTEGER NOT NULL
    );
    INSERT INTO state (id, lineage, serial)
    SELECT 1,
           substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4) || '-' ||
           substr(h, 17, 4) || '-' || substr(h, 21),
           0
    FROM (SELECT lower(hex(randomblob(16))) AS h);

    CREATE TABLE images (
        name TEXT PRIMARY KEY,
        next_number INTEGER NOT NULL DEFAULT 1
    );

    CREATE TABLE builds (
        id INTEGER PRIMARY KEY,
        image TEXT NOT NULL REFERENCES images (name),
        number INTEGER NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('build', 'rebase')),
        status TEXT NOT NULL,
        reasons TEXT NOT NULL,
        details TEXT NOT NULL,
        inputs TEXT NOT NULL,
        tag TEXT NOT NULL,
        buildpacks_used TEXT,
        rebasable INTEGER,
        output TEXT,
        failure_step TEXT,
        failure_message TEXT,
        queued_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        log TEXT NOT NULL,
        UNIQUE (image, number)
    );

    CREATE TABLE triggers (
        id INTEGER PRIMARY KEY,
        image TEXT NOT NULL REFERENCES images (name),
        requested_at INTEGER NOT NULL,
        claimed_by INTEGER REFERENCES builds (id)
    );
    CREATE INDEX triggers_by_image ON triggers (image);
    ",
    // 2: whose fault a failure was (`build` or `infrastructure`), so that failures
    // outside the build are retried. Older failures read as the build's own.
    "ALTER TABLE builds ADD COLUMN failure_kind TEXT;",
    // 3: publishes of builder images, numbered per builder.
    "
    CREATE TABLE publishes (
        id INTEGER PRIMARY KEY,
        builder TEXT NOT NULL,
        number INTEGER NOT NULL,
        status TEXT NOT NULL,
        reasons TEXT NOT NULL,
        details TEXT NOT NULL,
        inputs TEXT NOT NULL,
        tag TEXT NOT NULL,
        digest TEXT,
        failure_message TEXT,
        queued_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        log TEXT NOT NULL,
        UNIQUE (builder, number)
    );
    ",
];

/// Brings the database to the newest schema.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StateError> {
    loop {
        // Immediate: two processes opening a new state at once migrate one after the other.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        let Some(migration) = MIGRATIONS.get(version) else {
            if version > MIGRATIONS.len() {
                return Err(StateError::TooNew {
                    found: version,
                    known: MIGRATIONS.len(),
                });
            }
            return Ok(());
        };
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = version + 1, "state schema migrated");
    }
}

/// The schema version this kpackd writes.
#[cfg(test)]
pub(super) fn latest() -> usize {
    MIGRATIONS.len()
}
