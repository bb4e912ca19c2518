//! Path sources as images: a local directory cannot be bound into a build that runs
//! elsewhere (a Pod of the builder image), so it travels as a source image: one layer
//! holding exactly the tree a local build's app directory gets ([`super::path::copy`]),
//! written reproducibly (fixed times, sorted entries, root-owned), so the same tree gives
//! the same digest. A build request then names it by digest.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use imageref::ImageRef;

use super::path::{self, PathError};
use crate::oci::layer::LayerBuilder;
use crate::oci::{ContainerConfig, ImageConfig, ImageStore, OciError};

/// The label of a source image holding its path version (`sha256:…` of [`path::hash`]).
pub const SOURCE_VERSION_LABEL: &str = "io.kpackd.source.version";

/// A path source pushed as an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedSource {
    /// Where it went, pinned by digest.
    pub image: ImageRef,
    /// The path source's version, as [`path::hash`] gives it.
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceImageError {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("write the source layer: {0}")]
    Layer(#[source] OciError),
    #[error("push the source image {image}: {source}")]
    Push {
        image: String,
        #[source]
        source: OciError,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Copies the path source `dir` (or its `sub_path`) as a local build would, writes it as
/// a one-layer image (the tree at the image's root; os and architecture of the store's
/// platform, no other runtime settings) under `work`, and pushes it to `to`. Layers are
/// written on a blocking thread.
pub async fn push_path(
    store: &ImageStore,
    dir: &Path,
    sub_path: Option<&str>,
    to: &ImageRef,
    work: &Path,
) -> Result<PushedSource, SourceImageError> {
    let scratch = tempfile::Builder::new()
        .prefix("source-image-")
        .tempdir_in(work)
        .map_err(|source| SourceImageError::Io {
            what: format!("create a directory in {}", work.display()),
            source,
        })?;
    let (dir, sub_path, scratch_dir) = (
        dir.to_path_buf(),
        sub_path.map(str::to_owned),
        scratch.path().to_path_buf(),
    );
    let (version, layer) = tokio::task::spawn_blocking(move || {
        let tree = scratch_dir.join("tree");
        let version = path::copy(&dir, sub_path.as_deref(), &tree)?;
        let layer = tree_layer(&tree, &scratch_dir)?;
        Ok::<_, SourceImageError>((version, layer))
    })
    .await
    .map_err(|e| SourceImageError::Io {
        what: "write the source layer".into(),
        source: io::Error::other(e),
    })??;
    let platform = &store.settings().platform;
    let config = ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        config: Some(ContainerConfig {
            labels: Some(BTreeMap::from([(
                SOURCE_VERSION_LABEL.to_owned(),
                version.clone(),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let image = store
        .push_image(to, config, &[layer])
        .await
        .map_err(|source| SourceImageError::Push {
            image: to.to_string(),
            source,
        })?;
    tracing::info!(%image, %version, "pushed a path source as an image");
    Ok(PushedSource { image, version })
}

/// One layer of everything in `tree`, at `/`, in name order.
fn tree_layer(
    tree: &Path,
    out_dir: &Path,
) -> Result<crate::oci::layer::WrittenLayer, SourceImageError> {
    let io_err = |source| SourceImageError::Io {
        what: format!("read {}", tree.display()),
        source,
    };
    let mut names: Vec<PathBuf> = Vec::new();
    if tree.is_dir() {
        for entry in fs::read_dir(tree).map_err(io_err)? {
            names.push(PathBuf::from(entry.map_err(io_err)?.file_name()));
        }
    }
    names.sort();
    let mut builder = LayerBuilder::new(0, 0);
    for name in names {
        builder
            .add(&Path::new("/").join(&name), &tree.join(&name))
            .map_err(SourceImageError::Layer)?;
    }
    builder.write(out_dir).map_err(SourceImageError::Layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{unpack_image, CredentialSource, StoreSettings, UnpackOptions};

    fn store() -> ImageStore {
        ImageStore::new(StoreSettings {
            credentials: CredentialSource::anonymous(),
            ..StoreSettings::default()
        })
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, content) in files {
            let path = dir.join(name);
            fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            fs::write(path, content).expect("write");
        }
    }

    #[tokio::test]
    async fn the_same_tree_gives_the_same_image_holding_what_a_copy_holds() {
        let work = tempfile::tempdir().expect("tempdir");
        let (a, b) = (work.path().join("a"), work.path().join("b"));
        let files = [
            ("web/index.html", "<p>hi</p>"),
            ("web/.gitignore", "*.log\n"),
            ("web/debug.log", "ignored"),
            ("README", "top"),
        ];
        write(&a, &files);
        write(&b, &files);
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(b.join("README"), "top").expect("rewrite: a newer mtime");
        let layout = work.path().join("layout");
        let to = |name: &str| {
            ImageRef::parse(&format!("oci:{}:{name}", layout.display())).expect("a layout ref")
        };
        let store = store();
        let first = push_path(&store, &a, Some("web"), &to("a"), work.path())
            .await
            .expect("push a");
        let second = push_path(&store, &b, Some("web"), &to("b"), work.path())
            .await
            .expect("push b");
        assert_eq!(first.version, path::hash(&a, Some("web")).expect("hash"));
        let one = store.image(&first.image).await.expect("read a");
        let two = store.image(&second.image).await.expect("read b");
        assert_eq!(one.digest(), two.digest(), "same tree, same image");
        assert_eq!(
            one.config.labels().get(SOURCE_VERSION_LABEL),
            Some(&first.version)
        );

        let unpacked = work.path().join("unpacked");
        unpack_image(
            &store,
            &first.image,
            &unpacked,
            &UnpackOptions { chown: false },
        )
        .await
        .expect("unpack");
        let copied = work.path().join("copied");
        path::copy(&a, Some("web"), &copied).expect("copy");
        assert_eq!(
            path::hash(&unpacked, None).expect("hash the unpacked tree"),
            path::hash(&copied, None).expect("hash the copy")
        );
        assert!(unpacked.join("index.html").is_file());
        assert!(
            !unpacked.join("debug.log").exists(),
            "ignored files stay out"
        );

        write(&a, &[("web/index.html", "<p>changed</p>")]);
        let third = push_path(&store, &a, Some("web"), &to("c"), work.path())
            .await
            .expect("push c");
        assert_ne!(
            store.image(&third.image).await.expect("read c").digest(),
            one.digest()
        );
    }
}
