//! What the state directory holds, and where: the one place that knows its layout.
//!
//! | path | what |
//! |---|---|
//! | `state.db` | the SQLite state ([`crate::state`]) |
//! | `lock` | the writer's lock, naming the process that holds it |
//! | `triggered` | the doorbell `kpackd trigger` rings for `kpackd watch` |
//! | `logs/<image>/<number>.log` | one log per build |
//! | `work/<image>-<number>/` | a build's work directory, removed when it ends |
//! | `stacks/<digest hex>/` | build images, unpacked once, shared by builds |
//! | `cache/<image>/` | an image's build cache (`cache = true` layers) |
//! | `sources/` | upstream caches: `git/`, `blobs/`, `oci/`, path sources' stat caches, and `mirrors/` of path sources that builds link their app directories to |
//! | `buildpacks/<diffID hex>/` | buildpacks extracted from buildpackage and builder images |

use std::path::{Path, PathBuf};

use executors::lifecycle::cache::CacheDir;

/// The state database, in the state directory.
pub const DATABASE_FILE: &str = "state.db";

/// The writer's lock file, in the state directory.
pub const LOCK_FILE: &str = "lock";

/// The file `kpackd trigger` writes when it records a trigger, so that a running
/// `kpackd watch` (which watches it) reconciles at once.
pub const DOORBELL_FILE: &str = "triggered";

/// The directories and files of one state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateLayout {
    root: PathBuf,
}

impl StateLayout {
    /// The layout of the state directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> StateLayout {
        StateLayout { root: root.into() }
    }

    /// The state directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.root.join(DATABASE_FILE)
    }

    /// The writer's lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// The doorbell (see [`DOORBELL_FILE`]).
    pub fn doorbell(&self) -> PathBuf {
        self.root.join(DOORBELL_FILE)
    }

    /// The log of build `number` of `image`, relative to the state directory, as the
    /// state records it.
    pub fn relative_log(image: &str, number: i64) -> PathBuf {
        Path::new("logs").join(image).join(format!("{number}.log"))
    }

    /// Where builds make their work directories.
    pub fn work_root(&self) -> PathBuf {
        self.root.join("work")
    }

    /// The work directory of build `number` of `image`.
    pub fn build_work_dir(&self, image: &str, number: u64) -> PathBuf {
        self.work_root().join(format!("{image}-{number}"))
    }

    /// Where build images are unpacked.
    pub fn stacks_dir(&self) -> PathBuf {
        self.root.join("stacks")
    }

    /// The build cache of `image`, its name made a safe directory name.
    pub fn image_cache_dir(&self, image: &str) -> PathBuf {
        CacheDir::for_image(&self.root.join("cache"), image)
            .dir()
            .to_path_buf()
    }

    /// The caches of upstreams: git repositories, downloaded archives, image manifests
    /// and configs, path sources' stat caches and mirrors.
    pub fn sources_dir(&self) -> PathBuf {
        self.root.join("sources")
    }

    /// The manifests and configs kpackd pushed to registries, kept so that the next
    /// rebase of an image reads them here instead of from the registry.
    pub fn pushed_dir(&self) -> PathBuf {
        self.root.join("pushed")
    }

    /// Where buildpacks from images are extracted.
    pub fn buildpacks_dir(&self) -> PathBuf {
        self.root.join("buildpacks")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_under_the_root() {
        let layout = StateLayout::new("/s");
        assert_eq!(layout.database(), Path::new("/s/state.db"));
        assert_eq!(layout.lock_file(), Path::new("/s/lock"));
        assert_eq!(layout.doorbell(), Path::new("/s/triggered"));
        assert_eq!(
            StateLayout::relative_log("hello", 3),
            Path::new("logs/hello/3.log")
        );
        assert_eq!(
            layout.build_work_dir("hello", 3),
            Path::new("/s/work/hello-3")
        );
        assert_eq!(layout.stacks_dir(), Path::new("/s/stacks"));
        assert_eq!(
            layout.image_cache_dir("../team/app:1"),
            Path::new("/s/cache/.._team_app_1")
        );
        assert_eq!(layout.sources_dir(), Path::new("/s/sources"));
        assert_eq!(layout.buildpacks_dir(), Path::new("/s/buildpacks"));
    }
}
