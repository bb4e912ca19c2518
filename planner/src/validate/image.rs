//! An `[images.<name>]` table: tags, builder, environment, cache, history and limits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use imageref::ImageRef;
use toml::Spanned;

use super::Validator;
use crate::config::{CacheSetting, HistoryTable, ImageTable, KpackToml};
use crate::diagnostic::Problem;
use crate::model::{Builder, BuilderKind, Cache, History, Image, ImageSpans, PodPlacement, Store};
use crate::Reason;

/// How long one build may run unless the image says otherwise (`timeout`).
const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(60 * 60);

impl Validator<'_> {
    pub(super) fn image(
        &mut self,
        name: &Spanned<String>,
        table: &Spanned<ImageTable>,
        file: &KpackToml,
        builders: &BTreeMap<String, Builder>,
        stores: &BTreeMap<String, Store>,
    ) -> Option<Image> {
        let t = table.get_ref();
        let n = name.get_ref();
        let tag = self.output_ref(&t.tag);
        let additional_tags: Vec<Option<ImageRef>> = t
            .additional_tags
            .iter()
            .map(|tag| self.output_ref(tag))
            .collect();
        let builder_names: Vec<&str> = file.builders.keys().map(|k| k.get_ref().as_str()).collect();
        let builder_ok = self.reference("builder", "builders", &t.builder, &builder_names);
        let source = self.source(n, &t.source);
        let env = self.image_env(&t.env);
        let default_process = self.default_process(t.default_process.as_ref())?;
        let cache = match t.cache.as_ref().map(Spanned::get_ref) {
            None | Some(CacheSetting::Dir) => Some(Cache::Dir),
            Some(CacheSetting::Disabled) => Some(Cache::Disabled),
            Some(CacheSetting::Image(image)) => self.output_ref(image).map(Cache::Image),
        };
        let history = self.history(t.history.as_ref());
        let rebuild_on = match &t.rebuild_on {
            None => Reason::ALL.into_iter().collect(),
            Some(reasons) => reasons
                .iter()
                .map(|r| *r.get_ref())
                .collect::<BTreeSet<_>>(),
        };
        let timeout = t
            .timeout
            .as_ref()
            .and_then(|d| self.duration("timeout", d))
            .unwrap_or(DEFAULT_BUILD_TIMEOUT);
        let buildpacks = match &t.buildpacks {
            Some(list) => {
                let store = builders
                    .get(t.builder.get_ref())
                    .and_then(|b| match &b.kind {
                        BuilderKind::Assembled { store, .. } => stores.get(store),
                        BuilderKind::Image(_) => None,
                    });
                self.image_buildpacks(n, list, store)
            }
            None => Some(Vec::new()),
        };
        let project_descriptor = match &t.project_descriptor {
            Some(p) => Some(Some(self.project_descriptor(p)?)),
            None => Some(None),
        };
        if !builder_ok {
            return None;
        }
        Some(Image {
            name: n.clone(),
            tag: tag?,
            additional_tags: additional_tags.into_iter().collect::<Option<_>>()?,
            builder: t.builder.get_ref().clone(),
            source: source?,
            env: env?,
            default_process,
            cache: cache?,
            history: history?,
            network: t.network.unwrap_or(true),
            layer_compression: t.layer_compression.map(Into::into).unwrap_or_default(),
            rebuild_on,
            timeout,
            buildpacks: buildpacks?,
            project_descriptor: project_descriptor?,
            // Set by `Validator::kubernetes`, after every image.
            kubernetes: PodPlacement::default(),
            spans: ImageSpans {
                name: name.span(),
                tag: t.tag.span(),
                builder: t.builder.span(),
                source: t.source.span(),
            },
        })
    }

    /// The image's `env`, each name checked; `None` when one is invalid (each is reported).
    fn image_env(
        &mut self,
        env: &BTreeMap<Spanned<String>, Spanned<String>>,
    ) -> Option<BTreeMap<String, String>> {
        env.iter()
            .map(|(key, value)| {
                self.env_name(key)
                    .then(|| (key.get_ref().clone(), value.get_ref().clone()))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .collect()
    }

    /// The image's `default-process`, which must be a valid process type: `None` (and
    /// reported) when it is not.
    fn default_process(&mut self, process: Option<&Spanned<String>>) -> Option<Option<String>> {
        match process {
            Some(p) if !valid_process_type(p.get_ref()) => {
                self.report(
                    Problem::new(format!("invalid process type `{}`", p.get_ref()))
                        .label(p.span(), "letters, digits, `.`, `_` and `-` only")
                        .help("name a process type the buildpacks define, such as `web`"),
                );
                None
            }
            other => Some(other.map(|p| p.get_ref().clone())),
        }
    }

    /// How many builds of an image are kept, of each outcome.
    fn history(&mut self, history: Option<&HistoryTable>) -> Option<History> {
        match history {
            None => Some(History::default()),
            Some(h) => {
                let defaults = History::default();
                let mut count = |value: &Option<Spanned<u32>>, outcome: &str, default| match value {
                    None => Some(default),
                    Some(v) => self.at_least_one(
                        v,
                        &format!("`history.{outcome}` must be at least 1"),
                        "the build in progress could not be kept",
                        &format!(
                            "leave `{outcome}` out for the default, {}",
                            History::default().success
                        ),
                    ),
                };
                let success = count(&h.success, "success", defaults.success);
                let failed = count(&h.failed, "failed", defaults.failed);
                success
                    .zip(failed)
                    .map(|(success, failed)| History { success, failed })
            }
        }
    }

    pub(super) fn env_name(&mut self, key: &Spanned<String>) -> bool {
        let k = key.get_ref();
        let valid = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            self.report(
                Problem::new(format!("invalid environment variable name `{k}`"))
                    .label(
                        key.span(),
                        "letters, digits and `_`, not starting with a digit",
                    )
                    .help("buildpacks read each variable from a file of that name"),
            );
        }
        valid
    }
}

pub(super) fn valid_process_type(p: &str) -> bool {
    !p.is_empty()
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
