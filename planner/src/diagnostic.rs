//! How mistakes in kpack.toml are reported: each one a [`Problem`] with labelled spans
//! and help, all of a file's problems gathered into one [`ConfigError`] that renders like
//! a compiler's diagnostics.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

/// A byte range in kpack.toml.
pub type Span = Range<usize>;

/// One mistake in kpack.toml: what is wrong, where (the first label is the primary one)
/// and how to fix it. A mistake in a file kpack.toml names (a buildpack's
/// `buildpack.toml`) is a [`Problem::cause`] with that file as its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    message: String,
    labels: Vec<(Span, String)>,
    help: Option<String>,
    /// The file the spans are in, when it is not kpack.toml.
    source: Option<NamedSource<Arc<str>>>,
    causes: Vec<Problem>,
    /// Allowed, but probably not meant: reported without refusing the file.
    warning: bool,
}

impl Problem {
    pub fn new(message: impl Into<String>) -> Problem {
        Problem {
            message: message.into(),
            labels: Vec::new(),
            help: None,
            source: None,
            causes: Vec::new(),
            warning: false,
        }
    }

    /// The same mistake as a warning: reported, but the file is still loaded.
    pub fn warning(mut self) -> Problem {
        self.warning = true;
        self
    }

    /// Whether this is a warning rather than an error.
    pub fn is_warning(&self) -> bool {
        self.warning
    }

    /// A problem whose spans are in another file: `name` (as it is shown) holding `text`.
    pub fn in_file(message: impl Into<String>, name: &str, text: Arc<str>) -> Problem {
        Problem {
            source: Some(NamedSource::new(name, text)),
            ..Problem::new(message)
        }
    }

    /// Adds the problem this one comes from, shown under it.
    pub fn cause(mut self, cause: Problem) -> Problem {
        self.causes.push(cause);
        self
    }

    /// The problems this one comes from.
    pub fn causes(&self) -> &[Problem] {
        &self.causes
    }

    /// Points at `span`; the first label added is the primary one.
    pub fn label(mut self, span: Span, text: impl Into<String>) -> Problem {
        self.labels.push((span, text.into()));
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Problem {
        self.help = Some(help.into());
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where the problem is, if it points anywhere.
    pub fn span(&self) -> Option<&Span> {
        self.labels.first().map(|(span, _)| span)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

impl Diagnostic for Problem {
    fn severity(&self) -> Option<miette::Severity> {
        // None renders as an error.
        self.warning.then_some(miette::Severity::Warning)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        if self.causes.is_empty() {
            return None;
        }
        Some(Box::new(self.causes.iter().map(|p| p as &dyn Diagnostic)))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().enumerate().map(
            |(i, (span, text))| {
                let text = Some(text.clone()).filter(|t| !t.is_empty());
                if i == 0 {
                    LabeledSpan::new_primary_with_span(text, span.clone())
                } else {
                    LabeledSpan::new_with_span(text, span.clone())
                }
            },
        )))
    }
}

/// Why kpack.toml could not be loaded.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum ConfigError {
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(InvalidConfig),
}

impl ConfigError {
    /// The mistakes found in the file (none when it could not be read).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(invalid) => &invalid.problems,
        }
    }
}

/// Every mistake found in one file, rendered as related diagnostics over its source.
#[derive(Debug)]
pub struct InvalidConfig {
    source: NamedSource<Arc<str>>,
    problems: Vec<Problem>,
}

impl InvalidConfig {
    /// `name` is how the file is shown (the path as the user gave it); `problems` must
    /// not be empty.
    pub(crate) fn new(name: &str, text: Arc<str>, problems: Vec<Problem>) -> InvalidConfig {
        InvalidConfig {
            source: NamedSource::new(name, text),
            problems,
        }
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{} has {n} error{}",
            self.source.name(),
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for InvalidConfig {}

impl Diagnostic for InvalidConfig {
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.source)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.problems.iter().map(|p| p as &dyn Diagnostic)))
    }
}

/// The warnings about a valid file, rendered like [`InvalidConfig`]'s errors.
#[derive(Debug)]
pub struct ConfigWarnings {
    source: NamedSource<Arc<str>>,
    warnings: Vec<Problem>,
}

impl ConfigWarnings {
    pub(crate) fn new(name: &str, text: Arc<str>, warnings: Vec<Problem>) -> ConfigWarnings {
        ConfigWarnings {
            source: NamedSource::new(name, text),
            warnings,
        }
    }

    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }
}

impl fmt::Display for ConfigWarnings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.warnings.len();
        write!(
            f,
            "{} has {n} warning{}",
            self.source.name(),
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for ConfigWarnings {}

impl Diagnostic for ConfigWarnings {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Warning)
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.source)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(self.warnings.iter().map(|p| p as &dyn Diagnostic)))
    }
}

/// The candidate `word` was most likely meant to be, if one is close enough.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let word_squashed = squash(word);
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let distance = if squash(candidate) == word_squashed {
                0
            } else {
                strsim::damerau_levenshtein(word, candidate)
            };
            (distance <= limit).then_some((distance, candidate))
        })
        .min()
        .map(|(_, candidate)| candidate)
}

/// `a`, `b` and `c`: names for a help message.
pub fn list(names: impl IntoIterator<Item = impl fmt::Display>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let keys = ["build-image", "run-image", "run-image-mirrors", "id"];
        assert_eq!(did_you_mean("run-imag", keys), Some("run-image"));
        assert_eq!(did_you_mean("run_image", keys), Some("run-image"));
        assert_eq!(did_you_mean("buildImage", keys), Some("build-image"));
        assert_eq!(did_you_mean("ids", keys), Some("id"));
        assert_eq!(did_you_mean("colour", keys), None);
        assert_eq!(did_you_mean("COMIT", ["CONFIG", "COMMIT"]), Some("COMMIT"));
    }

    #[test]
    fn lists() {
        assert_eq!(list(["a"]), "`a`");
        assert_eq!(list(["a", "b", "c"]), "`a`, `b` and `c`");
        assert_eq!(list(Vec::<String>::new()), "");
    }
}
