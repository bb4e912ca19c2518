//! What goes wrong reading an input: a diagnostic that points into the input's text.

use std::ops::Range;

use miette::{Diagnostic, NamedSource, SourceSpan};

/// A mistake in one input file, with the place it is at when the parser knows it.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error(transparent)]
#[diagnostic(transparent)]
pub struct InputError(Box<Details>);

#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct Details {
    message: String,
    #[source_code]
    source_code: NamedSource<String>,
    #[label("{label}")]
    span: Option<SourceSpan>,
    label: String,
    #[help]
    help: Option<String>,
}

impl InputError {
    pub fn new(input: &super::Input, message: impl Into<String>) -> InputError {
        InputError(Box::new(Details {
            message: message.into(),
            source_code: NamedSource::new(&input.name, input.text.clone()),
            span: None,
            label: String::new(),
            help: None,
        }))
    }

    /// Points at `span` (byte offsets into the input) with `label`.
    pub fn at(mut self, span: Range<usize>, label: impl Into<String>) -> InputError {
        self.0.span = Some(span.into());
        self.0.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> InputError {
        self.0.help = Some(help.into());
        self
    }
}
