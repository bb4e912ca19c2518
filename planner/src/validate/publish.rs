//! The keys of a builder that concern publishing it as a CNB builder image: `tag` and
//! `lifecycle`, which only a builder kpackd assembles may have.

use toml::Spanned;

use super::Validator;
use crate::config::BuilderTable;
use crate::Problem;
use imageref::ImageRef;

impl Validator<'_> {
    /// A builder's `lifecycle` image: None when absent; Err (reported) when it is there
    /// without a `tag`, or is not an image reference.
    pub(super) fn lifecycle(
        &mut self,
        builder: &str,
        table: &BuilderTable,
        has_tag: bool,
    ) -> Option<Option<ImageRef>> {
        let Some(lifecycle) = &table.lifecycle else {
            return Some(None);
        };
        if !has_tag {
            self.report(
                Problem::new(format!(
                    "builder `{builder}` has a `lifecycle` but no `tag`"
                ))
                .label(
                    lifecycle.span(),
                    "only a published builder image carries a lifecycle",
                )
                .help("add `tag = \"<where to publish the builder>\"`, or remove `lifecycle`"),
            );
            return None;
        }
        Some(Some(self.image_ref(&lifecycle.get_ref().image)?))
    }

    /// A ready-made builder image is not published: `tag` and `lifecycle` are for a
    /// builder kpackd assembles. False (reported) when either is there.
    pub(super) fn publishing_parts_of_image(
        &mut self,
        builder: &str,
        image: &Spanned<String>,
        table: &BuilderTable,
    ) -> bool {
        let parts = [
            ("tag", table.tag.as_ref().map(Spanned::span)),
            ("lifecycle", table.lifecycle.as_ref().map(Spanned::span)),
        ];
        let mut fine = true;
        for (key, span) in parts {
            let Some(span) = span else { continue };
            fine = false;
            self.report(
                Problem::new(format!(
                    "builder `{builder}` is a ready-made builder image and has a `{key}`"
                ))
                .label(image.span(), "a ready-made builder image")
                .label(
                    span,
                    format!("`{key}` is for a builder kpackd assembles and publishes"),
                )
                .help(format!(
                    "remove `{key}`: kpackd publishes the builders it assembles from `stack`, `store` and `order`"
                )),
            );
        }
        fine
    }
}
