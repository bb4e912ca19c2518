//! A lifecycle image (`lifecycle = { image = … }`): its `/cnb/lifecycle` directory,
//! written again as a normalised layer of the builder, and its version and APIs from
//! its `io.buildpacks.lifecycle.*` labels. The image is untrusted: its layers are applied
//! by the hardened unpacker into a scratch directory, with bounds on their compressed
//! and uncompressed sizes, and its labels are checked before they reach the builder's.

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use cnb::buildpack::ApiVersion;
use cnb::labels::{self, LifecycleApis, LIFECYCLE_APIS, LIFECYCLE_VERSION};
use imageref::ImageRef;

use super::layers::{lifecycle_layer, LIFECYCLE_DIR};
use super::Fail;
use super::PublishError;
use crate::oci::layer::WrittenLayer;
use crate::oci::{blocking_reader, unpack_layer, ImageStore, UnpackOptions};

/// The most a lifecycle image's layers may declare, compressed: 512 MiB (the reference
/// lifecycle image is about 30 MiB).
pub const MAX_LIFECYCLE_COMPRESSED: u64 = 512 << 20;
/// The most its layers may hold uncompressed, together: 2 GiB.
pub const MAX_LIFECYCLE_UNCOMPRESSED: u64 = 2 << 30;
/// The longest version label taken.
const MAX_VERSION_LEN: usize = 64;
/// The most API versions one list may name.
const MAX_APIS: usize = 64;

/// What a builder takes from a lifecycle image.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    pub version: String,
    pub apis: LifecycleApis,
    /// `/cnb/lifecycle`, as a layer of the builder.
    pub layer: WrittenLayer,
}

/// Reads the lifecycle image `image`, unpacks it under `work` and writes its
/// `/cnb/lifecycle` as a layer into `work`.
pub async fn lifecycle(
    store: &ImageStore,
    image: &ImageRef,
    work: &Path,
    fail: &Fail<'_>,
) -> Result<Lifecycle, PublishError> {
    let what = || format!("read the lifecycle image {image}");
    let found = store
        .image(image)
        .await
        .map_err(|e| fail.image(what(), e))?;
    let labels = found.config.labels();
    let version = labels
        .get(LIFECYCLE_VERSION)
        .ok_or_else(|| {
            fail.invalid(format!(
                "the lifecycle image {image} has no {LIFECYCLE_VERSION} label"
            ))
        })?
        .clone();
    check_version(&version).map_err(|reason| {
        fail.invalid(format!(
            "the lifecycle image {image}: {LIFECYCLE_VERSION} {:?} {reason}",
            version.escape_debug().to_string()
        ))
    })?;
    let apis: LifecycleApis = labels::read(&labels, LIFECYCLE_APIS)
        .map_err(|e| fail.invalid(format!("the lifecycle image {image}: {e}")))?
        .ok_or_else(|| {
            fail.invalid(format!(
                "the lifecycle image {image} has no {LIFECYCLE_APIS} label"
            ))
        })?;
    check_apis(&apis).map_err(|reason| {
        fail.invalid(format!(
            "the lifecycle image {image}: {LIFECYCLE_APIS}: {reason}"
        ))
    })?;

    let declared: u64 = found.manifest.layers.iter().map(|l| l.size).sum();
    if declared > MAX_LIFECYCLE_COMPRESSED {
        return Err(fail.invalid(format!(
            "the lifecycle image {image} declares {declared} bytes of layers, more than the \
             {MAX_LIFECYCLE_COMPRESSED} kpackd takes from a lifecycle image"
        )));
    }
    let scratch = tempfile::Builder::new()
        .prefix(".lifecycle-")
        .tempdir_in(work)
        .map_err(|e| fail.io("make a scratch directory", e))?;
    let root = scratch.path().join("root");
    std::fs::create_dir(&root).map_err(|e| fail.io("make a scratch directory", e))?;
    let pinned = found.pinned();
    let result = async {
        let mut budget = MAX_LIFECYCLE_UNCOMPRESSED;
        for blob in &found.manifest.layers {
            let reader = blocking_reader(
                store
                    .open_blob(&pinned, blob)
                    .await
                    .map_err(|e| fail.image(what(), e))?,
            );
            let target = root.clone();
            let used = tokio::task::spawn_blocking(move || apply_bounded(reader, &target, budget))
                .await
                .expect("unpacking a layer does not panic")
                .map_err(|e| fail.image(format!("unpack layer {} of {image}", blob.digest), e))?;
            budget -= used;
        }

        // `/cnb` and `/cnb/lifecycle` must be directories of the image, not links out of it.
        let dir = root.join(LIFECYCLE_DIR);
        for path in [root.join("cnb"), dir.clone()] {
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            if !is_dir {
                return Err(fail.invalid(format!(
                    "the lifecycle image {image} has no /{LIFECYCLE_DIR} directory"
                )));
            }
        }
        let out = work.to_path_buf();
        tokio::task::spawn_blocking(move || lifecycle_layer(&dir, &out))
            .await
            .expect("writing a layer does not panic")
            .map_err(|e| fail.image("write the lifecycle layer".into(), e))
    }
    .await;
    // The image's directory modes may forbid removing what is in them.
    let scratch_root = scratch.path().to_path_buf();
    tokio::task::spawn_blocking(move || make_removable(&scratch_root))
        .await
        .expect("walking the scratch directory does not panic");
    Ok(Lifecycle {
        version,
        apis,
        layer: result?,
    })
}

/// Gives the owner full access to every directory under `dir` (not following links), so
/// that the scratch directory can be removed. Best effort. Blocking.
fn make_removable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            make_removable(&entry.path());
        }
    }
}

fn check_version(version: &str) -> Result<(), &'static str> {
    if version.is_empty() || version.len() > MAX_VERSION_LEN {
        return Err("is empty or too long");
    }
    if !version
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'))
    {
        return Err("holds characters other than letters, digits, `.`, `-`, `+` and `_`");
    }
    Ok(())
}

fn check_apis(apis: &LifecycleApis) -> Result<(), String> {
    for (kind, set) in [("buildpack", &apis.buildpack), ("platform", &apis.platform)] {
        if set.supported.is_empty() {
            return Err(format!("it supports no {kind} API"));
        }
        for list in [&set.supported, &set.deprecated] {
            if list.len() > MAX_APIS {
                return Err(format!("more than {MAX_APIS} {kind} APIs"));
            }
            if let Some(bad) = list.iter().find(|v| ApiVersion::parse(v).is_none()) {
                return Err(format!(
                    "{kind} API {:?} is not <major>.<minor>",
                    bad.escape_debug().to_string()
                ));
            }
        }
    }
    Ok(())
}

/// Applies one layer (gzip, zstd or plain tar) to `target` through the hardened
/// unpacker, failing once its tar exceeds `budget` bytes. Returns the bytes of tar read.
/// Blocking.
fn apply_bounded(
    reader: impl Read,
    target: &Path,
    budget: u64,
) -> Result<u64, crate::oci::OciError> {
    let io_err = |e| crate::oci::OciError::io(target, e);
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered.fill_buf().map_err(io_err)?;
    let tar: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(io_err)?)
    } else {
        Box::new(buffered)
    };
    let mut bounded = Bounded {
        inner: tar,
        read: 0,
        budget,
    };
    unpack_layer(&mut bounded, target, &UnpackOptions { chown: false })?;
    Ok(bounded.read)
}

/// A reader that fails once more than `budget` bytes have come through.
struct Bounded<R> {
    inner: R,
    read: u64,
    budget: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.budget {
            return Err(io::Error::other(format!(
                "the lifecycle image's layers hold more than {MAX_LIFECYCLE_UNCOMPRESSED} \
                 bytes uncompressed"
            )));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnb::labels::ApiSet;

    #[test]
    fn versions_and_apis_are_checked() {
        assert!(check_version("0.20.1").is_ok());
        assert!(check_version("").is_err());
        assert!(check_version("0.1\n\u{1b}[2J").is_err());
        assert!(check_version(&"1".repeat(65)).is_err());
        let set = |v: &[&str]| ApiSet {
            deprecated: Vec::new(),
            supported: v.iter().map(|s| s.to_string()).collect(),
        };
        let good = LifecycleApis {
            buildpack: set(&["0.7", "0.12"]),
            platform: set(&["0.12"]),
        };
        assert!(check_apis(&good).is_ok());
        let bad = LifecycleApis {
            buildpack: set(&["0.7", "x"]),
            platform: set(&["0.12"]),
        };
        assert!(check_apis(&bad).is_err());
        let none = LifecycleApis {
            buildpack: set(&[]),
            platform: set(&["0.12"]),
        };
        assert!(check_apis(&none).is_err());
    }

    #[test]
    fn a_layer_over_the_budget_fails() {
        let work = tempfile::tempdir().unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(4096);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, "big", &[0u8; 4096][..])
            .unwrap();
        let bytes = tar.into_inner().unwrap();
        let root = work.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let err = apply_bounded(&bytes[..], &root, 1024)
            .unwrap_err()
            .to_string();
        assert!(err.contains("uncompressed"), "{err}");
        let used = apply_bounded(&bytes[..], &root, 1 << 20).unwrap();
        assert!(used >= 4096);
    }
}
