//! A `[builders.<name>]` table: a builder image, or the stack, store and order of one kpackd assembles.

use std::collections::BTreeMap;

use toml::Spanned;

use super::store::missing_buildpack;
use super::Validator;
use crate::buildpack::{BuildpackRef, Group};
use crate::config::{BuilderTable, GroupEntry, KpackToml, OrderGroup};
use crate::diagnostic::{did_you_mean, list, Problem, Span};
use crate::model::{Builder, BuilderKind, Store};

impl Validator<'_> {
    /// A `[builders.<name>]` table: a ready-made `builder` image, or the `stack`, `store`
    /// and `order` of a builder kpackd assembles (not both).
    pub(super) fn builder(
        &mut self,
        name: &Spanned<String>,
        table: &Spanned<BuilderTable>,
        file: &KpackToml,
        stores: &BTreeMap<String, Store>,
    ) -> Option<Builder> {
        let t = table.get_ref();
        let n = name.get_ref();
        let tag = match &t.tag {
            Some(tag) => Some(self.output_ref(tag)?),
            None => None,
        };
        let parts: Vec<(&str, Span)> = [
            ("stack", t.stack.as_ref().map(Spanned::span)),
            ("store", t.store.as_ref().map(Spanned::span)),
            ("order", t.order.as_ref().map(Spanned::span)),
        ]
        .into_iter()
        .filter_map(|(key, span)| span.map(|s| (key, s)))
        .collect();
        let damaged = self.decoded.damaged(&["builders", n]);
        let kind = match (&t.builder, parts.first()) {
            (Some(image), Some((key, span))) => {
                self.report(
                    Problem::new(format!(
                        "builder `{n}` names both a `builder` image and a `{key}`"
                    ))
                    .label(image.span(), "a ready-made builder image")
                    .label(
                        span.clone(),
                        format!("`{key}` is for a builder kpackd assembles"),
                    )
                    .help("keep either `builder`, or `stack`, `store` and `order`"),
                );
                return None;
            }
            (Some(image), None) => {
                let r = self.image_ref(image);
                if !self.publishing_parts_of_image(n, image, t) {
                    return None;
                }
                BuilderKind::Image(r?)
            }
            (None, None) => {
                if !damaged {
                    self.report(
                        Problem::new(format!(
                            "builder `{n}` has neither a `builder` image nor a `stack`"
                        ))
                        .label(table.span(), "this builder is empty")
                        .help("give it `stack`, `store` and `order`, or `builder = \"<image>\"`"),
                    );
                }
                return None;
            }
            (None, Some(_)) => {
                let missing: Vec<&str> = ["stack", "store", "order"]
                    .into_iter()
                    .filter(|key| !parts.iter().any(|(k, _)| k == key))
                    .collect();
                if !missing.is_empty() {
                    if !damaged {
                        self.report(
                            Problem::new(format!("builder `{n}` has no {}", list(&missing)))
                                .label(table.span(), format!("needs {} too", list(&missing)))
                                .help(
                                    "a builder kpackd assembles needs `stack`, `store` and `order`",
                                ),
                        );
                    }
                    return None;
                }
                self.assembled(n, t, file, stores)?
            }
        };
        let lifecycle = self.lifecycle(n, t, tag.is_some())?;
        Some(Builder {
            name: n.clone(),
            kind,
            tag,
            lifecycle,
            span: name.span(),
        })
    }

    /// A builder kpackd assembles, once it has `stack`, `store` and `order`: the stack and
    /// store must exist, and the order's buildpacks be in the store.
    fn assembled(
        &mut self,
        n: &str,
        t: &BuilderTable,
        file: &KpackToml,
        stores: &BTreeMap<String, Store>,
    ) -> Option<BuilderKind> {
        let (Some(stack), Some(store), Some(order)) = (&t.stack, &t.store, &t.order) else {
            unreachable!("none of stack, store and order is missing");
        };
        let stack_names: Vec<&str> = file.stacks.keys().map(|k| k.get_ref().as_str()).collect();
        let store_names: Vec<&str> = file.stores.keys().map(|k| k.get_ref().as_str()).collect();
        let stack_ok = self.reference("stack", "stacks", stack, &stack_names);
        let store_ok = self.reference("store", "stores", store, &store_names);
        let order = self.order(n, order, stores.get(store.get_ref()));
        if !(stack_ok && store_ok) {
            return None;
        }
        Some(BuilderKind::Assembled {
            stack: stack.get_ref().clone(),
            store: store.get_ref().clone(),
            order: order?,
        })
    }

    /// A builder's order; its buildpacks are checked against `store` when that is valid.
    pub(super) fn order(
        &mut self,
        builder: &str,
        order: &Spanned<Vec<Spanned<OrderGroup>>>,
        store: Option<&Store>,
    ) -> Option<Vec<Group>> {
        if order.get_ref().is_empty() {
            self.report(
                Problem::new(format!("the order of builder `{builder}` is empty"))
                    .label(order.span(), "no groups")
                    .help("add a group, such as `{ group = [ { id = \"<buildpack id>\" } ] }`"),
            );
            return None;
        }
        let mut groups = Vec::new();
        let mut complete = true;
        for group in order.get_ref() {
            if group.get_ref().group.is_empty() {
                self.report(
                    Problem::new(format!("builder `{builder}` has an empty group"))
                        .label(group.span(), "no buildpacks")
                        .help("a group names at least one buildpack id"),
                );
                complete = false;
                continue;
            }
            let mut buildpacks = Vec::new();
            for entry in &group.get_ref().group {
                complete &= self.order_entry(entry.get_ref(), store);
                let GroupEntry {
                    id,
                    version,
                    optional,
                } = entry.get_ref();
                buildpacks.push(BuildpackRef {
                    id: id.get_ref().clone(),
                    version: version.as_ref().map(|v| v.get_ref().clone()),
                    optional: *optional,
                });
            }
            groups.push(Group { buildpacks });
        }
        complete.then_some(groups)
    }

    pub(super) fn order_entry(&mut self, entry: &GroupEntry, store: Option<&Store>) -> bool {
        let Some(store) = store else {
            // The store is missing or broken, and that was reported.
            return true;
        };
        let version = entry.version.as_ref().map(|v| v.get_ref().as_str());
        let Some((what, help)) = missing_buildpack(store, entry.id.get_ref(), version) else {
            return true;
        };
        let span = match (&entry.version, store.resolve(entry.id.get_ref(), None)) {
            (Some(v), Some(_)) => v.span(),
            _ => entry.id.span(),
        };
        let ids: Vec<&str> = store.directories().map(|bp| bp.id.as_str()).collect();
        let label = match did_you_mean(entry.id.get_ref(), ids) {
            Some(guess) if store.resolve(entry.id.get_ref(), None).is_none() => {
                format!("did you mean `{guess}`?")
            }
            _ => format!("not in store `{}`", store.name),
        };
        self.report(
            Problem::new(format!("store `{}` has no {what}", store.name))
                .label(span, label)
                .help(help),
        );
        false
    }
}
