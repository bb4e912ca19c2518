//! The Cloud Native Buildpacks contracts kpackd reads and writes, as plain values:
//!
//! - [`buildpack`]: `buildpack.toml`, parsed from its text and checked (the Buildpack API
//!   range kpackd runs, the targets a buildpack declares or implies);
//! - [`labels`]: the `io.buildpacks.*` image labels, one serde type per label, and their
//!   keys;
//! - [`names`]: names that come from untrusted labels and become paths (buildpack ids and
//!   versions, layer names, process types), validated where they are parsed;
//! - [`inspect`]: what an image's CNB labels say, summarised for `kpackd inspect`.
//!
//! Nothing here does I/O.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod buildpack;
pub mod inspect;
pub mod labels;
pub mod names;

pub use names::{BuildpackId, BuildpackVersion, LayerName, NameError, ProcessType};
