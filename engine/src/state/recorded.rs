//! What the rebuild rules compare with: each image's last completed build, its failure
//! streak and its pending triggers.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use planner::diff::{
    BuildOutcome, Recorded, RecordedBuild, RecordedFailure, RecordedImage, RETRY_LIMIT,
};
use rusqlite::params;

use super::builds::{read_build, COLUMNS};
use super::{writer_alive, BuildStatus, FailureKind, State, StateError, RUNNING};

impl State {
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
        let mut names = self.conn.prepare_cached("SELECT name FROM images")?;
        for name in names.query_map([], |row| row.get::<_, String>(0))? {
            images.insert(name?, RecordedImage::default());
        }
        let mut last = self.conn.prepare_cached(&format!(
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
        let mut triggers = self.conn.prepare_cached(&format!(
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
}
