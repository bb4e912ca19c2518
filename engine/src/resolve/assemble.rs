//! Turns what the jobs found into the planner's [`Observed`](planner::diff::Observed)
//! and apply's pins, in named steps: sources, then per builder its stack and its
//! buildpacks.

use std::collections::{BTreeMap, BTreeSet};

use imageref::{Digest, ImageRef};
use planner::diff::SourceVersion;
use planner::plan::{StackKey, Upstream, UpstreamFailure};
use planner::{BuilderKind, Config, DirectoryBuildpack, Group, Image, Source, Stack};

use super::jobs::{Done, ImageFacts, Job, Output};
use super::{BuildpackLocation, BuildpackPin, Resolution, ResolveError, SourcePin, StackPin};

/// Labels read from stack, buildpackage and builder images.
pub(super) use cnb::labels::{
    BASE_ID as BASE_ID_LABEL, BUILDER_METADATA as BUILDER_METADATA_LABEL,
    BUILDPACK_LAYERS as BUILDPACK_LAYERS_LABEL, STACK_ID as STACK_ID_LABEL,
};

/// The resolution being put together, with the upstreams that failed.
struct Assembly<'d> {
    done: &'d Done,
    resolution: Resolution,
    failures: Vec<UpstreamFailure>,
}

/// Turns the jobs' outputs into the planner's view and apply's pins.
pub(super) fn assemble(
    config: &Config,
    images: &[&Image],
    builders: &BTreeSet<&str>,
    done: &Done,
) -> Resolution {
    let mut assembly = Assembly {
        done,
        resolution: Resolution {
            upstreams: done.len(),
            ..Resolution::default()
        },
        failures: Vec::new(),
    };
    for image in images {
        assembly.source(&image.source);
    }
    for name in builders {
        let Some(builder) = config.builders.get(*name) else {
            continue;
        };
        match &builder.kind {
            BuilderKind::Assembled {
                stack,
                store,
                order,
            } => {
                if let Some(stack_config) = config.stacks.get(stack) {
                    assembly.stack(stack, stack_config);
                }
                if let Some(store) = config.stores.get(store) {
                    // The builder provides what its order reaches, and what the groups
                    // of the images built with it (their `buildpacks`) reach.
                    let mut groups = order.clone();
                    groups.extend(
                        config
                            .images
                            .values()
                            .filter(|i| i.builder == *name && !i.buildpacks.is_empty())
                            .map(|i| Group {
                                buildpacks: i.buildpacks.clone(),
                            }),
                    );
                    let found = store_buildpacks(store, &groups, done);
                    assembly.buildpacks(name, found);
                }
            }
            BuilderKind::Image(r) => assembly.builder_image(name, r),
        }
    }
    assembly.finish()
}

impl Assembly<'_> {
    fn fail(&mut self, upstream: Upstream, error: &ResolveError) {
        self.failures.push(UpstreamFailure {
            upstream,
            error: error.message(),
        });
    }

    fn finish(mut self) -> Resolution {
        self.failures.sort();
        self.failures.dedup();
        self.resolution.observed.failures = self.failures;
        self.resolution
    }

    /// A source's version and pin, once per source identity.
    fn source(&mut self, source: &Source) {
        let identity = source.identity();
        if self.resolution.sources.contains_key(&identity) {
            return;
        }
        match source_version(source, self.done) {
            Ok((version, pin)) => {
                self.resolution
                    .observed
                    .sources
                    .insert(identity.clone(), version);
                self.resolution.sources.insert(identity, pin);
            }
            Err(error) => self.fail(Upstream::Source { source: identity }, &error),
        }
    }

    /// A stack of kpack.toml: its build and run images, once per stack.
    fn stack(&mut self, stack: &str, stack_config: &Stack) {
        let stack = StackKey::stack(stack);
        if self.resolution.stacks.contains_key(&stack) {
            return;
        }
        let build = facts_of(self.done, &stack_config.build_image);
        match &build {
            Ok(facts) => {
                self.resolution
                    .observed
                    .build_images
                    .insert(stack.clone(), facts.digest.clone());
            }
            Err(e) => self.fail(
                Upstream::BuildImage {
                    stack: stack.clone(),
                },
                e,
            ),
        }
        let run = facts_of(self.done, &stack_config.run_image)
            .and_then(|run| stack_id(stack_config.id.as_deref(), run).map(|id| (run, id)));
        match &run {
            Ok((facts, _)) => {
                self.resolution
                    .observed
                    .run_images
                    .insert(stack.clone(), facts.digest.clone());
            }
            Err(e) => self.fail(
                Upstream::RunImage {
                    stack: stack.clone(),
                },
                e,
            ),
        }
        if let (Ok(build), Ok((run, id))) = (build, run) {
            self.resolution
                .stacks
                .insert(stack, stack_pin(build, run, id));
        }
    }

    /// The buildpacks a builder provides, or why they are unknown.
    fn buildpacks(
        &mut self,
        builder: &str,
        found: Result<BTreeMap<String, BuildpackPin>, ResolveError>,
    ) {
        match found {
            Ok(pins) => {
                self.resolution.buildpacks.insert(builder.to_string(), pins);
            }
            Err(error) => self.fail(
                Upstream::Buildpacks {
                    builder: builder.to_string(),
                },
                &error,
            ),
        }
    }

    /// A builder image: its own stack (itself as build image, the run image it names)
    /// and the buildpacks it carries.
    fn builder_image(&mut self, name: &str, r: &ImageRef) {
        let key = StackKey::builder(name);
        let facts = match facts_of(self.done, r) {
            Ok(facts) => facts,
            Err(error) => {
                for upstream in [
                    Upstream::BuildImage { stack: key.clone() },
                    Upstream::RunImage { stack: key.clone() },
                    Upstream::Buildpacks {
                        builder: name.to_string(),
                    },
                ] {
                    self.fail(upstream, &error);
                }
                return;
            }
        };
        self.resolution
            .observed
            .build_images
            .insert(key.clone(), facts.digest.clone());
        let run = builder_run_image(facts).and_then(|run| {
            let run = run.ok_or_else(|| ResolveError::NoRunImage {
                builder: r.to_string(),
                label: BUILDER_METADATA_LABEL,
            })?;
            let run_facts = facts_of(self.done, &run)?;
            let id = stack_id(None, run_facts)
                .or_else(|_| stack_id(None, facts))
                .unwrap_or_default();
            Ok((run_facts, id))
        });
        match run {
            Ok((run, id)) => {
                self.resolution
                    .observed
                    .run_images
                    .insert(key.clone(), run.digest.clone());
                self.resolution
                    .stacks
                    .insert(key, stack_pin(facts, run, id));
            }
            Err(error) => self.fail(Upstream::RunImage { stack: key }, &error),
        }
        self.buildpacks(name, image_buildpacks(facts));
    }
}

fn stack_pin(build: &ImageFacts, run: &ImageFacts, stack_id: String) -> StackPin {
    StackPin {
        build_image: build.pinned.clone(),
        build_image_digest: build.digest.clone(),
        run_image: run.pinned.clone(),
        run_image_digest: run.digest.clone(),
        stack_id,
        target: run.target.clone(),
    }
}

/// What the jobs found for `source`: its version and what materialises it.
fn source_version(
    source: &Source,
    done: &Done,
) -> Result<(SourceVersion, SourcePin), ResolveError> {
    match source {
        Source::Git {
            url,
            revision,
            sub_path,
        } => {
            let job = done.iter().find(|(job, _)| {
                matches!(job, Job::Git { url: u, revision: r, .. } if u == url && r == revision)
            });
            let (commit, trees) = match job.map(|(_, result)| result) {
                Some(Ok(Output::Git { commit, trees })) => (commit, trees),
                Some(Err(e)) => return Err(e.clone()),
                _ => return Err(ResolveError::NotResolved),
            };
            match sub_path {
                None => Ok((
                    SourceVersion::Commit(commit.clone()),
                    SourcePin::Git {
                        url: url.clone(),
                        commit: commit.clone(),
                        sub_path: None,
                        tree: None,
                    },
                )),
                Some(sub) => match trees.get(sub) {
                    Some(tree) => Ok((
                        SourceVersion::Tree(tree.clone()),
                        SourcePin::Git {
                            url: url.clone(),
                            commit: commit.clone(),
                            sub_path: Some(sub.clone()),
                            tree: Some(tree.clone()),
                        },
                    )),
                    None => Err(ResolveError::SubPathNotResolved(sub.clone())),
                },
            }
        }
        Source::Path { path, sub_path, .. } => match done.get(&Job::Path {
            dir: path.clone(),
            sub_path: sub_path.clone(),
        }) {
            Some(Ok(Output::Content(digest))) => Ok((
                SourceVersion::Content(digest.clone()),
                SourcePin::Path {
                    path: path.clone(),
                    sub_path: sub_path.clone(),
                    digest: digest.clone(),
                },
            )),
            Some(Err(e)) => Err(e.clone()),
            _ => Err(ResolveError::NotResolved),
        },
        Source::Blob {
            url,
            strip_components,
            sub_path,
        } => match done.get(&Job::Blob { url: url.clone() }) {
            Some(Ok(Output::Blob(version))) => Ok((
                SourceVersion::Content(version.digest.clone()),
                SourcePin::Blob {
                    url: url.clone(),
                    digest: version.digest.clone(),
                    archive: version.archive.clone(),
                    strip_components: *strip_components,
                    sub_path: sub_path.clone(),
                },
            )),
            Some(Err(e)) => Err(e.clone()),
            _ => Err(ResolveError::NotResolved),
        },
        Source::Image {
            reference,
            sub_path,
            ..
        } => {
            let facts = facts_of(done, reference)?;
            Ok((
                SourceVersion::Image(facts.digest.clone()),
                SourcePin::Image {
                    reference: facts.pinned.clone(),
                    digest: facts.digest.clone(),
                    sub_path: sub_path.clone(),
                },
            ))
        }
    }
}

/// What the read of image `r` found.
pub(super) fn facts_of<'d>(done: &'d Done, r: &ImageRef) -> Result<&'d ImageFacts, ResolveError> {
    let failed = |source: ResolveError| ResolveError::Image {
        reference: r.to_string(),
        source: Box::new(source),
    };
    match done.get(&Job::Image(r.to_string())) {
        Some(Ok(Output::Image(facts))) => Ok(facts),
        Some(Err(e)) => Err(failed(e.clone())),
        _ => Err(failed(ResolveError::NotResolved)),
    }
}

/// The stack id: kpack.toml's, checked against the run image's labels, or the labels'.
fn stack_id(declared: Option<&str>, run: &ImageFacts) -> Result<String, ResolveError> {
    let label = run
        .labels
        .get(BASE_ID_LABEL)
        .or_else(|| run.labels.get(STACK_ID_LABEL));
    match (declared, label) {
        (Some(declared), Some(label)) if declared != label => Err(ResolveError::StackIdMismatch {
            declared: declared.to_string(),
            label: label.clone(),
        }),
        (Some(declared), _) => Ok(declared.to_string()),
        (None, Some(label)) => Ok(label.clone()),
        (None, None) => Err(ResolveError::NoStackId {
            base: BASE_ID_LABEL,
            legacy: STACK_ID_LABEL,
        }),
    }
}

/// Every buildpack an image carries (`io.buildpacks.buildpack.layers`).
fn image_buildpacks(facts: &ImageFacts) -> Result<BTreeMap<String, BuildpackPin>, ResolveError> {
    let Some(label) = facts.labels.get(BUILDPACK_LAYERS_LABEL) else {
        return Err(ResolveError::MissingLabel {
            reference: facts.pinned.to_string(),
            label: BUILDPACK_LAYERS_LABEL,
        });
    };
    // Ids and versions are validated names: a version like `../../dir` fails here, before
    // it can become a directory.
    let layers: cnb::labels::BuildpackLayers =
        serde_json::from_str(label).map_err(|e| ResolveError::InvalidLabel {
            reference: facts.pinned.to_string(),
            label: BUILDPACK_LAYERS_LABEL,
            source: std::sync::Arc::new(e),
        })?;
    let mut pins = BTreeMap::new();
    for (id, versions) in layers {
        for (version, info) in versions {
            let digest = Digest::parse(&info.layer_diff_id).map_err(|source| {
                ResolveError::InvalidDigest {
                    what: format!(
                        "{}: invalid {BUILDPACK_LAYERS_LABEL}: buildpack {id}@{version}",
                        facts.pinned
                    ),
                    source,
                }
            })?;
            pins.insert(
                format!("{id}@{version}"),
                BuildpackPin {
                    id: id.to_string(),
                    version: version.to_string(),
                    digest,
                    location: BuildpackLocation::Image {
                        reference: facts.pinned.clone(),
                    },
                },
            );
        }
    }
    Ok(pins)
}

/// The run image a builder image names in its metadata.
pub(super) fn builder_run_image(facts: &ImageFacts) -> Result<Option<ImageRef>, ResolveError> {
    let Some(label) = facts.labels.get(BUILDER_METADATA_LABEL) else {
        return Ok(None);
    };
    let metadata: cnb::labels::BuilderMetadata =
        serde_json::from_str(label).map_err(|e| ResolveError::InvalidLabel {
            reference: facts.pinned.to_string(),
            label: BUILDER_METADATA_LABEL,
            source: std::sync::Arc::new(e),
        })?;
    metadata
        .run_image()
        .map(|s| {
            ImageRef::parse(s).map_err(|source| ResolveError::InvalidRunImage {
                name: s.to_string(),
                source,
            })
        })
        .transpose()
}

/// The buildpacks an assembled builder provides: those its order reaches in the store
/// (composites followed), and every buildpack of the store's images.
fn store_buildpacks(
    store: &planner::Store,
    order: &[Group],
    done: &Done,
) -> Result<BTreeMap<String, BuildpackPin>, ResolveError> {
    fn reach<'s>(
        store: &'s planner::Store,
        groups: &[Group],
        queue: &mut Vec<&'s DirectoryBuildpack>,
    ) {
        for group in groups {
            for entry in &group.buildpacks {
                if let Some(bp) = store.resolve(&entry.id, entry.version.as_deref()) {
                    queue.push(bp);
                }
            }
        }
    }
    let mut pins = BTreeMap::new();
    for r in store.images() {
        pins.extend(image_buildpacks(facts_of(done, r)?)?);
    }
    let mut seen = BTreeSet::new();
    let mut queue: Vec<&DirectoryBuildpack> = Vec::new();
    reach(store, order, &mut queue);
    while let Some(bp) = queue.pop() {
        if !seen.insert(bp.path.clone()) {
            continue;
        }
        reach(store, &bp.order, &mut queue);
        let failed = |source: ResolveError| ResolveError::Buildpack {
            id_version: bp.id_version(),
            source: Box::new(source),
        };
        let digest = match done.get(&Job::BuildpackDir(bp.path.clone())) {
            Some(Ok(Output::Content(digest))) => Digest::parse(digest).map_err(|source| {
                failed(ResolveError::InvalidDigest {
                    what: "its content digest".to_string(),
                    source,
                })
            })?,
            Some(Err(e)) => return Err(failed(e.clone())),
            _ => return Err(failed(ResolveError::NotResolved)),
        };
        pins.insert(
            bp.id_version(),
            BuildpackPin {
                id: bp.id.clone(),
                version: bp.version.clone(),
                digest,
                location: BuildpackLocation::Directory {
                    path: bp.path.clone(),
                },
            },
        );
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use imageref::Target;

    use super::*;

    const AA: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const A1: &str = "sha256:a100000000000000000000000000000000000000000000000000000000000000";
    const A2: &str = "sha256:a200000000000000000000000000000000000000000000000000000000000000";
    const B1: &str = "sha256:b100000000000000000000000000000000000000000000000000000000000000";

    fn facts(labels: &[(&str, &str)]) -> ImageFacts {
        ImageFacts {
            digest: Digest::parse(AA).unwrap(),
            pinned: ImageRef::parse(&format!("registry.test/stack@{AA}")).unwrap(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            target: Target {
                os: "linux".into(),
                arch: "amd64".into(),
                variant: None,
            },
        }
    }

    #[test]
    fn the_stack_id_comes_from_the_file_or_the_labels_and_must_agree() {
        let base = facts(&[(BASE_ID_LABEL, "io.test.base")]);
        let legacy = facts(&[(STACK_ID_LABEL, "io.test.legacy")]);
        assert_eq!(stack_id(None, &base).unwrap(), "io.test.base");
        assert_eq!(stack_id(None, &legacy).unwrap(), "io.test.legacy");
        assert_eq!(
            stack_id(Some("io.test.base"), &base).unwrap(),
            "io.test.base"
        );
        assert_eq!(stack_id(Some("mine"), &facts(&[])).unwrap(), "mine");
        let err = stack_id(Some("other"), &base).unwrap_err().message();
        assert!(
            err.contains("`other`") && err.contains("`io.test.base`"),
            "{err}"
        );
        assert_eq!(
            stack_id(None, &facts(&[])).unwrap_err().message(),
            "the run image has no io.buildpacks.base.id (or io.buildpacks.stack.id) label; \
             set `id` in the stack"
        );
    }

    #[test]
    fn image_buildpacks_are_read_from_the_layers_label() {
        let label = format!(
            r#"{{"tests/a":{{"1.0.0":{{"api":"0.10","layerDiffID":"{A1}"}},
                        "2.0.0":{{"api":"0.10","layerDiffID":"{A2}"}}}},
                        "tests/b":{{"0.1.0":{{"layerDiffID":"{B1}"}}}}}}"#
        );
        let pins = image_buildpacks(&facts(&[(BUILDPACK_LAYERS_LABEL, &label)])).unwrap();
        let digests: Vec<(&str, String)> = pins
            .iter()
            .map(|(k, v)| (k.as_str(), v.digest.to_string()))
            .collect();
        assert_eq!(
            digests,
            [
                ("tests/a@1.0.0", A1.to_string()),
                ("tests/a@2.0.0", A2.to_string()),
                ("tests/b@0.1.0", B1.to_string())
            ]
        );
        assert!(image_buildpacks(&facts(&[])).is_err());
        let invalid = image_buildpacks(&facts(&[(BUILDPACK_LAYERS_LABEL, "nope")]))
            .unwrap_err()
            .message();
        assert!(
            invalid.starts_with(&format!(
                "registry.test/stack@{AA}: invalid io.buildpacks.buildpack.layers: expected"
            )),
            "{invalid}"
        );
        let not_a_digest = r#"{"tests/a":{"1.0.0":{"layerDiffID":"sha256:a1"}}}"#;
        let err = image_buildpacks(&facts(&[(BUILDPACK_LAYERS_LABEL, not_a_digest)]))
            .unwrap_err()
            .message();
        assert!(
            err.contains("tests/a@1.0.0") && err.contains("`sha256:a1`"),
            "{err}"
        );
        let escaping = format!(r#"{{"tests/a":{{"../../dir":{{"layerDiffID":"{A1}"}}}}}}"#);
        let err = image_buildpacks(&facts(&[(BUILDPACK_LAYERS_LABEL, &escaping)]))
            .unwrap_err()
            .message();
        assert!(err.contains(BUILDPACK_LAYERS_LABEL), "{err}");
        assert!(err.contains("`../../dir`"), "{err}");
    }

    #[test]
    fn a_builder_image_names_its_run_image() {
        let new = r#"{"images":[{"image":"registry.test/run:1"}],"stack":{"runImage":{"image":"old/run"}}}"#;
        let old = r#"{"stack":{"runImage":{"image":"registry.test/run:2"}}}"#;
        let run = |label| builder_run_image(&facts(&[(BUILDER_METADATA_LABEL, label)]));
        assert_eq!(
            run(new).unwrap().unwrap().to_string(),
            "registry.test/run:1"
        );
        assert_eq!(
            run(old).unwrap().unwrap().to_string(),
            "registry.test/run:2"
        );
        assert_eq!(run("{}").unwrap(), None);
        assert!(run("[").is_err());
    }

    #[test]
    fn a_failed_image_read_is_named_with_its_reference() {
        let r = ImageRef::parse("registry.test/run:1").unwrap();
        let mut done = Done::new();
        done.insert(
            Job::Image(r.to_string()),
            Err(ResolveError::TimedOut(std::time::Duration::from_secs(60))),
        );
        assert_eq!(
            facts_of(&done, &r).unwrap_err().message(),
            "registry.test/run:1: timed out after 1m"
        );
        assert_eq!(
            facts_of(&Done::new(), &r).unwrap_err().message(),
            "registry.test/run:1: not resolved"
        );
    }

    /// A builder provides what its order reaches and what the `buildpacks` of the images
    /// built with it reach: an image may name a store buildpack the order does not.
    #[test]
    fn an_image_s_own_buildpacks_are_provided_by_its_builder() {
        let fixtures = testkit::fixtures::valid();
        let config = planner::parse(
            &fixtures.join("inline.toml"),
            r#"
[stacks.base]
build-image = "registry.example.com/stacks/base-build"
run-image = "registry.example.com/stacks/base-run"

[stores.fixtures]
buildpacks = ["buildpacks/runtime", "buildpacks/app"]

[builders.default]
stack = "base"
store = "fixtures"
order = [{ group = [{ id = "fixture/runtime" }] }]

[images.hello]
tag = "oci:out/images:hello"
builder = "default"
source = { path = "apps/hello" }
buildpacks = ["fixture/app"]
"#,
        )
        .expect("a valid configuration");
        let mut done = Done::new();
        for bp in config.stores["fixtures"].directories() {
            done.insert(
                Job::BuildpackDir(bp.path.clone()),
                Ok(Output::Content(format!("sha256:{:064x}", bp.id.len()))),
            );
        }
        let store = &config.stores["fixtures"];
        let order = vec![Group {
            buildpacks: config.images["hello"].buildpacks.clone(),
        }];
        let pins = store_buildpacks(store, &order, &done).expect("all pinned");
        assert_eq!(pins.keys().collect::<Vec<_>>(), ["fixture/app@1.0.0"]);
        let images: Vec<&Image> = config.images.values().collect();
        let resolution = assemble(&config, &images, &BTreeSet::from(["default"]), &done);
        let provided: Vec<&String> = resolution.buildpacks["default"].keys().collect();
        assert_eq!(provided, ["fixture/app@1.0.0", "fixture/runtime@0.1.0"]);
    }
}
