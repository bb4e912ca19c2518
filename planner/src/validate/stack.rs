//! A `[stacks.<name>]` table: the build and run images.

use imageref::ImageRef;
use toml::Spanned;

use super::Validator;
use crate::config::StackTable;
use crate::diagnostic::Problem;
use crate::model::{Stack, StackSpans};

impl Validator<'_> {
    pub(super) fn stack(
        &mut self,
        name: &Spanned<String>,
        table: &Spanned<StackTable>,
    ) -> Option<Stack> {
        let t = table.get_ref();
        let build_image = self.image_ref(&t.build_image);
        let run_image = self.image_ref(&t.run_image);
        let mirrors: Vec<Option<ImageRef>> = t
            .run_image_mirrors
            .iter()
            .map(|m| self.image_ref(m))
            .collect();
        let id = match &t.id {
            Some(id) if id.get_ref().trim().is_empty() => {
                self.report(
                    Problem::new(format!("the id of stack `{}` is empty", name.get_ref()))
                        .label(id.span(), "expected a stack id")
                        .help("leave `id` out to take it from the images' labels"),
                );
                return None;
            }
            other => other.as_ref().map(|id| id.get_ref().clone()),
        };
        Some(Stack {
            name: name.get_ref().clone(),
            build_image: build_image?,
            run_image: run_image?,
            run_image_mirrors: mirrors.into_iter().collect::<Option<_>>()?,
            id,
            spans: StackSpans {
                name: name.span(),
                build_image: t.build_image.span(),
                run_image: t.run_image.span(),
                id: t.id.as_ref().map(Spanned::span),
            },
        })
    }
}
