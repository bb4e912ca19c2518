//! kpackd's own image, to run kpackd in a cluster: the static kpackd binary at
//! `/kpackd` on an empty base, and the CA certificates, nothing else. Both layers are
//! written like every layer (sorted, root-owned, mtime 1980-01-01T00:00:01Z) and the
//! config has a fixed creation time, so the same binary and certificates always make the
//! same image digest.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use imageref::{Digest, ImageRef};

use crate::oci::layer::{LayerBuilder, WrittenLayer};
use crate::oci::{
    media_type, ContainerConfig, ImageConfig, ImageManifest, ImageStore, Manifest, OciError,
    RawManifest, RootFs,
};

/// Where the binary is in the image, and the image's entrypoint.
pub const BINARY_IN_IMAGE: &str = "/kpackd";
/// Where the CA certificates are in the image (and on Debian-like hosts).
pub const CA_CERTIFICATES: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The image's user and group: not root, and no user of any distribution's base.
pub const USER: &str = "65532:65532";
/// The image config's `created`: fixed, so that equal inputs make equal digests.
pub const CREATED: &str = "1980-01-01T00:00:01Z";

/// What goes into the image.
#[derive(Debug, Clone)]
pub struct KpackdImage {
    /// A static kpackd executable.
    pub binary: PathBuf,
    /// A PEM bundle of CA certificates.
    pub ca_certificates: PathBuf,
    /// `org.opencontainers.image.version`.
    pub version: String,
    /// `org.opencontainers.image.revision`, when known.
    pub revision: Option<String>,
}

/// Why kpackd's image could not be made or pushed.
#[derive(Debug, thiserror::Error)]
pub enum KpackdImageError {
    #[error("{}: not an ELF executable", path.display())]
    NotElf { path: PathBuf },
    #[error(
        "{} is dynamically linked (it names the program interpreter {interpreter}), and an image with nothing but kpackd has no shared libraries: build a static kpackd with `scripts/build-static` and push it with `--binary`",
        path.display()
    )]
    Dynamic { path: PathBuf, interpreter: String },
    #[error("{}: an ELF executable for machine {machine:#x}, which has no OCI architecture name here", path.display())]
    UnknownMachine { path: PathBuf, machine: u16 },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to write a layer")]
    Layer(#[source] OciError),
    #[error("failed to push {reference}")]
    Push {
        reference: String,
        #[source]
        source: OciError,
    },
}

/// A static executable's OCI architecture (`amd64`, `arm64`, …), or why `path` is not a
/// static executable: not ELF, or with a `PT_INTERP` program header (a dynamic
/// executable names the loader that links it). Reads the headers only. Blocking.
pub fn static_executable(path: &Path) -> Result<&'static str, KpackdImageError> {
    let io = |source| KpackdImageError::Io {
        what: "failed to read",
        path: path.to_path_buf(),
        source,
    };
    let not_elf = || KpackdImageError::NotElf {
        path: path.to_path_buf(),
    };
    let mut file = File::open(path).map_err(io)?;
    let mut ident = [0u8; 64];
    let n = read_up_to(&mut file, &mut ident).map_err(io)?;
    if n < 52 || &ident[..4] != b"\x7fELF" {
        return Err(not_elf());
    }
    let wide = match ident[4] {
        1 => false,
        2 => true,
        _ => return Err(not_elf()),
    };
    let little = match ident[5] {
        1 => true,
        2 => false,
        _ => return Err(not_elf()),
    };
    let u16_at = |b: &[u8], at: usize| {
        let bytes = [b[at], b[at + 1]];
        if little {
            u16::from_le_bytes(bytes)
        } else {
            u16::from_be_bytes(bytes)
        }
    };
    let u32_at = |b: &[u8], at: usize| {
        let bytes = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if little {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        }
    };
    let u64_at = |b: &[u8], at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&b[at..at + 8]);
        if little {
            u64::from_le_bytes(bytes)
        } else {
            u64::from_be_bytes(bytes)
        }
    };
    if wide && n < 64 {
        return Err(not_elf());
    }
    let machine = u16_at(&ident, 18);
    let (phoff, phentsize, phnum) = if wide {
        (u64_at(&ident, 32), u16_at(&ident, 54), u16_at(&ident, 56))
    } else {
        (
            u64::from(u32_at(&ident, 28)),
            u16_at(&ident, 42),
            u16_at(&ident, 44),
        )
    };
    let entry_size = usize::from(phentsize);
    let offset_field = if wide { 8 } else { 4 };
    if entry_size < offset_field * 2 + 8 {
        return Err(not_elf());
    }
    // At most 65535 entries of at most 64 KiB: bounded, and read one at a time.
    let mut entry = vec![0u8; entry_size];
    for i in 0..u64::from(phnum) {
        file.seek(SeekFrom::Start(phoff + i * u64::from(phentsize)))
            .map_err(io)?;
        file.read_exact(&mut entry).map_err(io)?;
        const PT_INTERP: u32 = 3;
        if u32_at(&entry, 0) == PT_INTERP {
            let (offset, size) = if wide {
                (u64_at(&entry, 8), u64_at(&entry, 32))
            } else {
                (u64::from(u32_at(&entry, 4)), u64::from(u32_at(&entry, 16)))
            };
            return Err(KpackdImageError::Dynamic {
                path: path.to_path_buf(),
                interpreter: read_interpreter(&mut file, offset, size).map_err(io)?,
            });
        }
    }
    architecture(machine, wide, little).ok_or_else(|| KpackdImageError::UnknownMachine {
        path: path.to_path_buf(),
        machine,
    })
}

/// The OCI architecture of an ELF `e_machine`, 64-bit (`wide`) or not, little-endian or
/// not.
fn architecture(machine: u16, wide: bool, little: bool) -> Option<&'static str> {
    Some(match (machine, wide) {
        (0x3e, true) => "amd64",
        (0x03, false) => "386",
        (0xb7, true) => "arm64",
        (0x28, false) => "arm",
        (0x15, true) if little => "ppc64le",
        (0x16, true) => "s390x",
        (0xf3, true) => "riscv64",
        _ => return None,
    })
}

/// The program interpreter a `PT_INTERP` segment names (at most 4 KiB of it).
fn read_interpreter(file: &mut File, offset: u64, size: u64) -> io::Result<String> {
    let mut interpreter = Vec::new();
    file.seek(SeekFrom::Start(offset))?;
    file.take(size.min(4096)).read_to_end(&mut interpreter)?;
    Ok(String::from_utf8_lossy(&interpreter)
        .trim_end_matches('\0')
        .to_string())
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Writes kpackd's image and pushes it to `dest` (a registry or an OCI layout); returns
/// the manifest digest and the reference it was pushed as.
pub async fn push(
    store: &ImageStore,
    dest: &ImageRef,
    image: &KpackdImage,
) -> Result<(Digest, ImageRef), KpackdImageError> {
    let work = tempfile::Builder::new()
        .prefix("kpackd-image-")
        .tempdir()
        .map_err(|source| KpackdImageError::Io {
            what: "failed to make a work directory in",
            path: std::env::temp_dir(),
            source,
        })?;
    let inputs = image.clone();
    let dir = work.path().to_path_buf();
    let (architecture, layers) = tokio::task::spawn_blocking(move || write_layers(&inputs, &dir))
        .await
        .expect("writing the layers does not panic")?;
    let failed = |source| KpackdImageError::Push {
        reference: dest.to_string(),
        source,
    };
    for layer in &layers {
        store
            .push_blob_file(dest, &layer.descriptor(), &layer.path)
            .await
            .map_err(failed)?;
    }
    let config = config(image, architecture, &layers);
    let config_bytes = Bytes::from(serde_json::to_vec(&config).expect("a config serialises"));
    let (config_descriptor, _) = store
        .push_blob_bytes(dest, media_type::OCI_CONFIG, config_bytes)
        .await
        .map_err(failed)?;
    let manifest = RawManifest::from_manifest(&Manifest::Image(ImageManifest {
        schema_version: 2,
        media_type: Some(media_type::OCI_MANIFEST.into()),
        config: config_descriptor,
        layers: layers.iter().map(WrittenLayer::descriptor).collect(),
        annotations: None,
    }));
    let pushed = store.push_manifest(dest, &manifest).await.map_err(failed)?;
    Ok((manifest.digest, pushed))
}

/// The binary's layer and the certificates' layer, written into `dir`. Blocking.
fn write_layers(
    image: &KpackdImage,
    dir: &Path,
) -> Result<(&'static str, Vec<WrittenLayer>), KpackdImageError> {
    let architecture = static_executable(&image.binary)?;
    // Copies with the modes the image gets: the layer writer keeps a file's mode.
    let binary = copy_with_mode(&image.binary, &dir.join("kpackd"), 0o755)?;
    let certificates = copy_with_mode(
        &image.ca_certificates,
        &dir.join("ca-certificates.crt"),
        0o644,
    )?;
    let mut layers = Vec::new();
    for (in_image, on_disk) in [(BINARY_IN_IMAGE, binary), (CA_CERTIFICATES, certificates)] {
        let mut layer = LayerBuilder::new(0, 0);
        layer
            .add(Path::new(in_image), &on_disk)
            .map_err(KpackdImageError::Layer)?;
        layers.push(layer.write(dir).map_err(KpackdImageError::Layer)?);
    }
    Ok((architecture, layers))
}

fn copy_with_mode(from: &Path, to: &Path, mode: u32) -> Result<PathBuf, KpackdImageError> {
    fs::copy(from, to).map_err(|source| KpackdImageError::Io {
        what: "failed to read",
        path: from.to_path_buf(),
        source,
    })?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(|source| {
        KpackdImageError::Io {
            what: "failed to set the mode of",
            path: to.to_path_buf(),
            source,
        }
    })?;
    Ok(to.to_path_buf())
}

fn config(image: &KpackdImage, architecture: &str, layers: &[WrittenLayer]) -> ImageConfig {
    let mut labels = BTreeMap::from([
        (
            "org.opencontainers.image.title".to_string(),
            "kpackd".to_string(),
        ),
        (
            "org.opencontainers.image.version".to_string(),
            image.version.clone(),
        ),
    ]);
    if let Some(revision) = &image.revision {
        labels.insert(
            "org.opencontainers.image.revision".to_string(),
            revision.clone(),
        );
    }
    ImageConfig {
        architecture: architecture.to_string(),
        os: "linux".to_string(),
        variant: (architecture == "arm64").then(|| "v8".to_string()),
        created: Some(CREATED.to_string()),
        config: Some(ContainerConfig {
            user: Some(USER.to_string()),
            env: Some(vec![format!("SSL_CERT_FILE={CA_CERTIFICATES}")]),
            entrypoint: Some(vec![BINARY_IN_IMAGE.to_string()]),
            labels: Some(labels),
            ..ContainerConfig::default()
        }),
        rootfs: RootFs {
            kind: "layers".to_string(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
        history: Vec::new(),
        other: serde_json::Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_is_refused_with_its_interpreter() {
        // The test binary itself is linked dynamically against the host's glibc.
        let me = std::env::current_exe().expect("the test binary");
        match static_executable(&me) {
            Err(KpackdImageError::Dynamic { interpreter, .. }) => {
                assert!(interpreter.contains("ld-"), "{interpreter}");
            }
            other => panic!("expected Dynamic, got {other:?}"),
        }
    }

    #[test]
    fn a_text_file_is_not_an_executable() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("script");
        fs::write(&path, "#!/bin/sh\necho hi\n").expect("write");
        assert!(matches!(
            static_executable(&path),
            Err(KpackdImageError::NotElf { .. })
        ));
        fs::write(&path, b"\x7fELF").expect("write");
        assert!(matches!(
            static_executable(&path),
            Err(KpackdImageError::NotElf { .. })
        ));
    }
}
