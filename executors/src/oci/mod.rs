//! Images in OCI registries and OCI image layouts: resolving, reading, writing and
//! copying them, writing normalised layers and unpacking layers into a root filesystem.
//!
//! One handle serves registries and layouts alike: an [`ImageStore`], made from
//! [`StoreSettings`] (insecure registries, platform, [`CredentialSource`], retries),
//! whose methods take an [`imageref::ImageRef`] — `host/repo:tag[@digest]` or
//! `oci:dir[:name]`:
//!
//! - resolving: [`ImageStore::resolve_digest`] (tag → digest, one HEAD) and
//!   [`ImageStore::resolve`] (also the configured platform's manifest in an index);
//! - reading: [`ImageStore::manifest`] (exact bytes), [`ImageStore::image`] (the
//!   platform's manifest and config), [`ImageStore::open_blob`] (a stream, checked
//!   against its digest at the end), [`ImageStore::read_blob`] (small blobs);
//! - writing: blobs first ([`ImageStore::push_blob_file`], [`ImageStore::push_blob_bytes`],
//!   [`ImageStore::copy_blob`] — each skips a blob the destination has, and
//!   `copy_blob` mounts across repositories of one registry), then the manifest with
//!   its exact bytes ([`ImageStore::push_manifest`]: under the tag, else by digest;
//!   or as a layout name);
//! - whole images: [`copy_image`], [`unpack_image`], [`LayerInfo`] and
//!   [`RuntimeConfig`] (for a summary);
//! - layers: [`layer::LayerBuilder`] writes a CNB-normalised `tar+gzip` (or `tar+zstd`,
//!   [`LayerCompression`]) from files on disk, compressed on every core; [`unpack::unpack_layer`] applies one to a directory, refusing any entry that
//!   would write outside it.
//!
//! Transient registry failures (connection trouble, 429, 5xx) are retried with
//! backoff; permanent ones return at once as an [`OciError`] naming the reference and
//! carrying the registry's message. Credentials never appear in logs or errors.

mod auth;
mod beneath;
mod blob;
mod cache;
mod challenge;
pub mod compress;
mod copy;
mod error;
mod inspect;
pub mod layer;
mod layout;
mod manifest;
mod registry;
mod retry;
mod store;
pub mod unpack;

pub use auth::{Credential, CredentialSource};
pub use blob::{blocking_reader, BlobStream};
pub use compress::LayerCompression;
pub use copy::{copy_image, CopyProgress, CopyReport};
pub use error::{error_chain, OciError};
pub use inspect::{LayerInfo, RuntimeConfig};
pub use layout::Layout;
pub use manifest::{
    media_type, ContainerConfig, Descriptor, ImageConfig, ImageIndex, ImageManifest, Manifest,
    RawManifest, RootFs, REF_NAME_ANNOTATION,
};
pub use retry::RetryPolicy;
pub use store::{BlobTransfer, Image, ImageStore, Resolved, StoreSettings};
pub use unpack::{unpack_image, unpack_layer, UnpackOptions};
