//! Executors: OCI images, sources, the CNB lifecycle, the sandbox and rebase.

// Unsafe code is denied (workspace lints); only `sandbox::network` allows it, for the
// pre-exec hooks and the namespace ioctl it needs, each with its SAFETY comment.
pub mod backoff;
pub mod builder;
mod hashing;
pub mod inspect;
pub mod kpackd_image;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod lifecycle;
pub mod oci;
pub mod rebase;
pub mod sandbox;
pub mod source;

/// The launcher, a static executable (built from crates/launcher by build.rs) that app
/// images get as `/cnb/lifecycle/launcher`.
pub fn launcher_binary() -> &'static [u8] {
    include_bytes!(concat!(env!("OUT_DIR"), "/launcher"))
}
