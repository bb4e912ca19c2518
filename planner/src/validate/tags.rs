//! Tags must be unique across the file: two pushes to one tag overwrite each other.

use std::collections::HashMap;

use imageref::ImageRef;
use toml::Spanned;

use super::values::resolve_ref;
use super::Validator;
use crate::config::KpackToml;
use crate::diagnostic::{Problem, Span};

impl Validator<'_> {
    /// Two images (or builders) pushing to one tag would overwrite each other's work.
    pub(super) fn unique_tags(&mut self, file: &KpackToml) {
        let builder_tags = file.builders.iter().filter_map(|(name, b)| {
            let tag = b.get_ref().tag.as_ref()?;
            Some((format!("builder `{}`", name.get_ref()), tag))
        });
        let image_tags = file.images.iter().flat_map(|(name, i)| {
            let i = i.get_ref();
            std::iter::once(&i.tag)
                .chain(&i.additional_tags)
                .map(move |tag| (format!("image `{}`", name.get_ref()), tag))
        });
        let mut tags: Vec<(String, &Spanned<String>)> = builder_tags.chain(image_tags).collect();
        tags.sort_by_key(|(_, tag)| tag.span().start);
        let mut first: HashMap<String, (String, Span)> = HashMap::new();
        for (owner, tag) in tags {
            let Ok(parsed) = ImageRef::parse(tag.get_ref()) else {
                continue;
            };
            let key = tag_key(&resolve_ref(self.dir, parsed));
            match first.get(&key) {
                None => {
                    first.insert(key, (owner, tag.span()));
                }
                Some((first_owner, first_span)) => {
                    let message = if *first_owner == owner {
                        format!("{owner} pushes to `{}` twice", tag.get_ref())
                    } else {
                        format!(
                            "{owner} pushes to `{}`, as {first_owner} does",
                            tag.get_ref()
                        )
                    };
                    self.report(
                        Problem::new(message)
                            .label(tag.span(), "the same tag again")
                            .label(first_span.clone(), "first here")
                            .help("give each image a tag of its own: one push would overwrite the other"),
                    );
                }
            }
        }
    }
}

/// A tag with the defaults filled in, so that equal tags compare equal.
pub(super) fn tag_key(tag: &ImageRef) -> String {
    match tag {
        ImageRef::Registry(r) => format!(
            "{}/{}:{}",
            r.registry,
            r.repository,
            r.tag_or_default().unwrap_or_default()
        ),
        ImageRef::Layout(l) => format!(
            "oci:{}:{}",
            l.dir.display(),
            l.name.as_deref().unwrap_or("")
        ),
    }
}
