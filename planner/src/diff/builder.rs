//! The publishing rules: which builders kpackd publishes (assembled builders with a
//! `tag`) need their builder image written again, decided from what kpack.toml and the
//! upstreams say now ([`DesiredBuilder`], [`Observed`]) and the last successful publish
//! ([`RecordedPublish`]). Pure, like the image rules.
//!
//! A publish never makes an image rebuild: images are built from the assembled builder
//! and follow their own rules. A failed publish is not compared with: the builder is
//! planned again, with the same reasons, until a publish succeeds.

use std::collections::BTreeMap;

use imageref::Digest;
use serde::{Deserialize, Serialize};

use super::{change, note, Observed};
use crate::plan::{
    BuilderAction, BuilderChange, Detail, PublishInputs, StackKey, Upstream, UpstreamFailure,
};
use crate::{Group, Reason};

/// What kpack.toml wants for one published builder, with what the engine found for the
/// parts only it can know (buildpack digests, the lifecycle image's digest, the
/// entrypoint's digest). The build image's digest is in [`Observed::build_images`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredBuilder {
    pub builder: String,
    pub tag: String,
    pub stack: StackKey,
    /// The stack id the stack declares now.
    pub stack_id: String,
    pub run_image: String,
    pub run_image_mirrors: Vec<String>,
    /// Each group as `id`, `id@version`, `?` after an optional buildpack.
    pub order: Vec<Vec<String>>,
    /// `id@version` → content digest of every buildpack the builder provides now.
    pub buildpacks: BTreeMap<String, Digest>,
    /// Whether the builder names a `lifecycle` image, and its digest when resolved.
    pub lifecycle: bool,
    pub lifecycle_image: Option<Digest>,
    /// The sha256 of kpackd's build entrypoint, when there is one.
    pub entrypoint: Option<Digest>,
}

impl DesiredBuilder {
    /// A builder's order as [`DesiredBuilder::order`] writes it.
    pub fn order_of(order: &[Group]) -> Vec<Vec<String>> {
        order
            .iter()
            .map(|group| {
                group
                    .buildpacks
                    .iter()
                    .map(|bp| {
                        if bp.optional {
                            format!("{bp}?")
                        } else {
                            bp.to_string()
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

/// The last publish of a builder that succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedPublish {
    pub number: u64,
    pub inputs: PublishInputs,
    /// The manifest digest of the builder image pushed.
    pub digest: Digest,
}

/// Decides what to do with every published builder, by name.
pub fn diff_builders(
    desired: &[DesiredBuilder],
    observed: &Observed,
    recorded: &BTreeMap<String, RecordedPublish>,
) -> Vec<BuilderChange> {
    let mut changes: Vec<BuilderChange> = desired
        .iter()
        .map(|builder| {
            let last = recorded.get(&builder.builder);
            match pin_builder(builder, observed) {
                Ok(inputs) => plan_builder(builder, inputs, last),
                Err(blocked_by) => BuilderChange {
                    builder: builder.builder.clone(),
                    action: BuilderAction::Blocked,
                    tag: builder.tag.clone(),
                    reasons: Vec::new(),
                    details: Vec::new(),
                    inputs: None,
                    last_publish: last.map(|l| l.number),
                    blocked_by,
                },
            }
        })
        .collect();
    changes.sort_by(|a, b| a.builder.cmp(&b.builder));
    changes
}

/// The inputs a publish would use now, or the failed upstreams that prevent knowing
/// them.
fn pin_builder(
    builder: &DesiredBuilder,
    observed: &Observed,
) -> Result<PublishInputs, Vec<UpstreamFailure>> {
    let build_image = observed.build_images.get(&builder.stack);
    let mut needed = vec![
        (Upstream::Entrypoint, true),
        (
            Upstream::BuildImage {
                stack: builder.stack.clone(),
            },
            build_image.is_some(),
        ),
        (
            Upstream::Buildpacks {
                builder: builder.builder.clone(),
            },
            true,
        ),
    ];
    if builder.lifecycle {
        needed.push((
            Upstream::LifecycleImage {
                builder: builder.builder.clone(),
            },
            builder.lifecycle_image.is_some(),
        ));
    }
    let mut blocked_by = Vec::new();
    for (upstream, found) in needed {
        let before = blocked_by.len();
        blocked_by.extend(
            observed
                .failures
                .iter()
                .filter(|f| f.upstream == upstream)
                .cloned(),
        );
        if blocked_by.len() == before && !found {
            blocked_by.push(UpstreamFailure {
                upstream,
                error: "not resolved".to_string(),
            });
        }
    }
    match build_image {
        Some(build_image) if blocked_by.is_empty() => Ok(PublishInputs {
            tag: builder.tag.clone(),
            stack: builder.stack.clone(),
            stack_id: builder.stack_id.clone(),
            build_image: build_image.clone(),
            run_image: builder.run_image.clone(),
            run_image_mirrors: builder.run_image_mirrors.clone(),
            order: builder.order.clone(),
            buildpacks: builder.buildpacks.clone(),
            lifecycle_image: builder.lifecycle_image.clone(),
            entrypoint: builder.entrypoint.clone(),
        }),
        _ => {
            blocked_by.sort();
            blocked_by.dedup();
            Err(blocked_by)
        }
    }
}

/// The rules proper, for a builder whose upstreams all resolved.
fn plan_builder(
    builder: &DesiredBuilder,
    now: PublishInputs,
    last: Option<&RecordedPublish>,
) -> BuilderChange {
    let mut details = match last {
        None => vec![note(Reason::Config, "first publish")],
        Some(last) => publish_changes(&last.inputs, &now),
    };
    details.sort_by_key(|d| d.reason);
    let reasons: Vec<Reason> = Reason::ALL
        .into_iter()
        .filter(|r| details.iter().any(|d| d.reason == *r))
        .collect();
    let action = if reasons.is_empty() {
        BuilderAction::Noop
    } else {
        BuilderAction::Publish
    };
    BuilderChange {
        builder: builder.builder.clone(),
        action,
        tag: builder.tag.clone(),
        reasons,
        details,
        inputs: Some(now),
        last_publish: last.map(|l| l.number),
        blocked_by: Vec::new(),
    }
}

/// Every reason that fired since the last successful publish: STACK (the build image),
/// BUILDPACK (any buildpack changed, added or removed), CONFIG (the rest).
fn publish_changes(was: &PublishInputs, now: &PublishInputs) -> Vec<Detail> {
    let mut details = Vec::new();
    let text = |v: &Option<Digest>| {
        v.as_ref()
            .map_or_else(|| "none".to_string(), Digest::to_string)
    };
    let pairs = [
        ("tag", was.tag.clone(), now.tag.clone()),
        ("order", order_text(&was.order), order_text(&now.order)),
        ("run image", was.run_image.clone(), now.run_image.clone()),
        (
            "run image mirrors",
            list_text(&was.run_image_mirrors),
            list_text(&now.run_image_mirrors),
        ),
        ("stack id", was.stack_id.clone(), now.stack_id.clone()),
        (
            "lifecycle image",
            text(&was.lifecycle_image),
            text(&now.lifecycle_image),
        ),
        ("entrypoint", text(&was.entrypoint), text(&now.entrypoint)),
    ];
    for (what, old, new) in pairs {
        if old != new {
            details.push(change(Reason::Config, what, &old, &new));
        }
    }
    for (id, old) in &was.buildpacks {
        match now.buildpacks.get(id) {
            Some(new) if new == old => {}
            Some(new) => details.push(change(
                Reason::Buildpack,
                &format!("buildpack {id}"),
                &old.to_string(),
                &new.to_string(),
            )),
            None => details.push(change(
                Reason::Buildpack,
                &format!("buildpack {id}"),
                &old.to_string(),
                "gone from the builder",
            )),
        }
    }
    for (id, new) in &now.buildpacks {
        if !was.buildpacks.contains_key(id) {
            details.push(change(
                Reason::Buildpack,
                &format!("buildpack {id}"),
                "absent",
                &new.to_string(),
            ));
        }
    }
    if was.build_image != now.build_image {
        details.push(change(
            Reason::Stack,
            "build image",
            &was.build_image.to_string(),
            &now.build_image.to_string(),
        ));
    }
    details
}

/// An order as the plan names it: groups in brackets.
fn order_text(order: &[Vec<String>]) -> String {
    order
        .iter()
        .map(|group| format!("[{}]", group.join(", ")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn list_text(list: &[String]) -> String {
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}
