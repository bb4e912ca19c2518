//! What publishing builder images adds to a resolution: each published builder's
//! `lifecycle` image pinned by digest, and the content digest of kpackd's build
//! entrypoint the builder images carry.

use std::path::PathBuf;

use imageref::{Digest, ImageRef};
use planner::plan::{Upstream, UpstreamFailure};
use planner::Builder;
use serde::{Deserialize, Serialize};

use super::assemble::facts_of;
use super::jobs::Done;
use super::Resolution;

/// A published builder's lifecycle image, pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecyclePin {
    /// `repo@digest` (a layout reference as written).
    pub reference: ImageRef,
    pub digest: Digest,
}

/// kpackd's build entrypoint, as found when planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrypointPin {
    pub path: PathBuf,
    /// The sha256 of the file.
    pub digest: Digest,
}

/// Pins the lifecycle image of every builder in `published` that names one, or
/// records its failure.
pub(super) fn lifecycles(resolution: &mut Resolution, published: &[&Builder], done: &Done) {
    for builder in published {
        let Some(lifecycle) = &builder.lifecycle else {
            continue;
        };
        match facts_of(done, lifecycle) {
            Ok(facts) => {
                resolution.lifecycles.insert(
                    builder.name.clone(),
                    LifecyclePin {
                        reference: facts.pinned.clone(),
                        digest: facts.digest.clone(),
                    },
                );
            }
            Err(error) => resolution.observed.failures.push(UpstreamFailure {
                upstream: Upstream::LifecycleImage {
                    builder: builder.name.clone(),
                },
                error: error.message(),
            }),
        }
    }
    resolution.observed.failures.sort();
    resolution.observed.failures.dedup();
}

/// The entrypoint `executors::builder::entrypoint::locate` finds, with its digest;
/// None when there is none. An entrypoint that cannot be read is an error.
pub(super) async fn entrypoint() -> Result<Option<EntrypointPin>, String> {
    let Some(path) = executors::builder::entrypoint::locate() else {
        return Ok(None);
    };
    let hashed = path.clone();
    let digest = tokio::task::spawn_blocking(move || Digest::sha256_of_file(&hashed))
        .await
        .map_err(|e| format!("hash {}: {e}", path.display()))?
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(Some(EntrypointPin { path, digest }))
}
