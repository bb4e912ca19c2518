//! What a loaded kpack.toml asks the watch loop to watch: which files, which upstreams.

use std::collections::BTreeSet;
use std::path::PathBuf;

use imageref::ImageRef;
use planner::{BuilderKind, Cache, Config, Source};

use super::reconciler::{ConfigSummary, Upstream};

impl ConfigSummary {
    /// The files, directories and upstreams of `config`. `state_dir` is the state dir in
    /// force (`--state-dir` may override the file's). Digest-pinned references are left
    /// out: they cannot change.
    pub fn from_config(config: &Config, state_dir: PathBuf) -> ConfigSummary {
        let mut summary = ConfigSummary {
            config_file: config.path.clone(),
            local_paths: BTreeSet::new(),
            doorbell: Some(crate::layout::StateLayout::new(&state_dir).doorbell()),
            ignored: BTreeSet::from([state_dir]),
            upstreams: BTreeSet::new(),
            poll_interval: config.settings.poll_interval,
        };
        for stack in config.stacks.values() {
            summary.input(&stack.build_image);
            summary.input(&stack.run_image);
        }
        for store in config.stores.values() {
            for image in store.images() {
                summary.input(image);
            }
            for dir in store.directories() {
                summary.local_paths.insert(dir.path.clone());
            }
        }
        for builder in config.builders.values() {
            if let BuilderKind::Image(image) = &builder.kind {
                summary.input(image);
            }
            if let Some(tag) = &builder.tag {
                summary.output(tag);
            }
            if let Some(lifecycle) = &builder.lifecycle {
                summary.input(lifecycle);
            }
        }
        for image in config.images.values() {
            match &image.source {
                Source::Git { url, .. } => {
                    summary.upstreams.insert(Upstream::Git(url.clone()));
                }
                Source::Path { path, .. } => {
                    summary.local_paths.insert(path.clone());
                }
                // A blob URL names an archive that is not expected to change in place.
                Source::Blob { .. } => {}
                Source::Image { reference, .. } => summary.input(reference),
            }
            summary.output(&image.tag);
            for tag in &image.additional_tags {
                summary.output(tag);
            }
            if let Cache::Image(cache) = &image.cache {
                summary.output(cache);
            }
        }
        summary
    }

    fn input(&mut self, image: &ImageRef) {
        match image {
            ImageRef::Registry(r) if r.digest.is_none() => {
                // `repo` and `repo:latest` are one upstream.
                if let Some(tag) = r.tag_or_default() {
                    let name = format!("{}/{}:{tag}", r.registry, r.repository);
                    self.upstreams.insert(Upstream::Registry(name));
                }
            }
            ImageRef::Registry(_) => {}
            ImageRef::Layout(layout) => {
                self.local_paths.insert(layout.dir.clone());
            }
        }
    }

    /// kpackd writes OCI layout outputs (images, caches) itself: a change there is no
    /// reason to rebuild.
    fn output(&mut self, image: &ImageRef) {
        if let ImageRef::Layout(layout) = image {
            self.ignored.insert(layout.dir.clone());
        }
    }
}
