//! Blob sources: an archive (tar, tar.gz or zip) at a URL. A blob is resolved at plan
//! time by downloading it — the version is the sha256 of the archive — and extracted
//! from the downloaded copy at build time, so a build uses exactly the planned bytes.
//!
//! Downloads stream through the hasher into a content-addressed cache file. When an
//! http(s) server gives an ETag, the next resolve asks with `If-None-Match`, and an
//! unchanged archive is not downloaded again.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Seek};
use std::os::unix::ffi::OsStringExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::app_dir::{confined_path, AppDir};
use super::{hashing_copy, EntryError};

/// The longest symbolic link target a zip entry may carry.
const MAX_LINK_TARGET: u64 = 4096;

/// A downloaded archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobVersion {
    /// `sha256:<hex>` of the archive: the blob's version.
    pub digest: String,
    /// The archive in the cache, named after its digest.
    pub archive: PathBuf,
}

/// A blob source that cannot be fetched or extracted.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("`{url}` is not a valid blob URL")]
    InvalidUrl { url: String },
    #[error("`{url}`: only http, https and file URLs (or a plain path) are supported")]
    UnsupportedScheme { url: String },
    #[error("could not download {url}")]
    Download {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("could not download {url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("could not read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is neither a tar, a tar.gz nor a zip archive", archive.display())]
    UnknownFormat { archive: PathBuf },
    #[error("could not read the zip archive {}", archive.display())]
    Zip {
        archive: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("sub-path `{sub_path}` must be relative and stay inside the archive")]
    InvalidSubPath { sub_path: String },
    #[error(transparent)]
    Entry(#[from] EntryError),
}

/// Downloads the blob at `url` (http, https, file, or a plain path) into `cache` and
/// returns its version. Blocking.
pub fn fetch(url: &str, cache: &Path) -> Result<BlobVersion, BlobError> {
    let archives = cache.join("sha256");
    fs::create_dir_all(&archives).map_err(|source| write_error(&archives, source))?;
    let mut download =
        tempfile::NamedTempFile::new_in(cache).map_err(|source| write_error(cache, source))?;
    let version = match location(url)? {
        Location::Http => match download_http(url, cache, download.as_file_mut())? {
            Http::Unchanged(version) => version,
            Http::Downloaded { hasher, etag } => {
                let version = keep(download, hasher, &archives)?;
                remember_etag(url, cache, etag.as_deref(), &version)?;
                version
            }
        },
        Location::File(path) => {
            let mut file = fs::File::open(&path).map_err(|source| read_error(&path, source))?;
            let hasher = hashing_copy(&mut file, download.as_file_mut())
                .map_err(|source| read_error(&path, source))?;
            keep(download, hasher, &archives)?
        }
    };
    tracing::debug!(url, digest = %version.digest, "fetched blob");
    Ok(version)
}

/// Extracts `archive` (tar, tar.gz or zip, told apart by their first bytes) into
/// `dest`, a fresh directory: the first `strip_components` path components of every
/// entry are dropped, and with a `sub_path` only what lies under it is extracted.
/// An entry that is absolute, has a `..` component, or is a symbolic link resolving
/// outside `dest` is refused, naming it. Blocking.
pub fn extract(
    archive: &Path,
    strip_components: usize,
    sub_path: Option<&str>,
    dest: &Path,
) -> Result<(), BlobError> {
    let sub = match sub_path {
        Some(raw) => confined_path(Path::new(raw)).ok_or_else(|| BlobError::InvalidSubPath {
            sub_path: raw.into(),
        })?,
        None => PathBuf::new(),
    };
    let placement = Placement {
        strip: strip_components,
        sub,
    };
    let mut file = fs::File::open(archive).map_err(|source| read_error(archive, source))?;
    let format = sniff(&mut file).map_err(|source| read_error(archive, source))?;
    let mut app = AppDir::create(dest)?;
    match format {
        Some(Format::Tar) => extract_tar(file, archive, &placement, &mut app)?,
        Some(Format::Gzip) => {
            let tar = flate2::read::MultiGzDecoder::new(io::BufReader::new(file));
            extract_tar(tar, archive, &placement, &mut app)?;
        }
        Some(Format::Zip) => extract_zip(file, archive, &placement, &mut app)?,
        None => {
            return Err(BlobError::UnknownFormat {
                archive: archive.to_path_buf(),
            })
        }
    }
    app.finish()?;
    Ok(())
}

enum Location {
    Http,
    File(PathBuf),
}

fn location(url: &str) -> Result<Location, BlobError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Location::Http);
    }
    if url.starts_with("file://") {
        return reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .map(Location::File)
            .ok_or_else(|| BlobError::InvalidUrl { url: url.into() });
    }
    if url.contains("://") {
        return Err(BlobError::UnsupportedScheme { url: url.into() });
    }
    Ok(Location::File(PathBuf::from(url)))
}

enum Http {
    Unchanged(BlobVersion),
    Downloaded {
        hasher: Sha256,
        etag: Option<String>,
    },
}

fn download_http(url: &str, cache: &Path, into: &mut fs::File) -> Result<Http, BlobError> {
    let download_error = |source| BlobError::Download {
        url: url.into(),
        source,
    };
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(download_error)?;
    let known = known_etag(url, cache);
    let mut request = client.get(url);
    if let Some((etag, _)) = &known {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag.as_str());
    }
    let mut response = request.send().map_err(download_error)?;
    if response.status() == reqwest::StatusCode::NOT_MODIFIED {
        if let Some((_, version)) = known {
            tracing::debug!(url, digest = %version.digest, "blob unchanged (ETag)");
            return Ok(Http::Unchanged(version));
        }
    }
    if !response.status().is_success() {
        return Err(BlobError::Status {
            url: url.into(),
            status: response.status().as_u16(),
        });
    }
    let etag = response
        .headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let hasher = hashing_copy(&mut response, into).map_err(|source| BlobError::Read {
        path: PathBuf::from(url),
        source,
    })?;
    Ok(Http::Downloaded { hasher, etag })
}

/// Moves a finished download to its content-addressed name.
fn keep(
    download: tempfile::NamedTempFile,
    hasher: Sha256,
    archives: &Path,
) -> Result<BlobVersion, BlobError> {
    let digest = imageref::Digest::from_sha256(hasher);
    let archive = archives.join(digest.hex());
    download
        .persist(&archive)
        .map_err(|e| write_error(&archive, e.error))?;
    Ok(BlobVersion {
        digest: digest.to_string(),
        archive,
    })
}

/// Where the ETag of `url`'s last download is kept, next to the digest it belongs to.
fn etag_record(url: &str, cache: &Path) -> PathBuf {
    cache
        .join("etag")
        .join(hex::encode(Sha256::digest(url.as_bytes())))
}

/// The ETag of `url`'s last download and its version, if that archive is still cached.
fn known_etag(url: &str, cache: &Path) -> Option<(String, BlobVersion)> {
    let record = fs::read_to_string(etag_record(url, cache)).ok()?;
    let (digest, etag) = record.split_once('\n')?;
    let archive = cache.join("sha256").join(digest.strip_prefix("sha256:")?);
    archive.is_file().then(|| {
        let version = BlobVersion {
            digest: digest.to_string(),
            archive,
        };
        (etag.to_string(), version)
    })
}

fn remember_etag(
    url: &str,
    cache: &Path,
    etag: Option<&str>,
    version: &BlobVersion,
) -> Result<(), BlobError> {
    let record = etag_record(url, cache);
    let written = match etag {
        Some(etag) => record
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::write(&record, format!("{}\n{etag}", version.digest))),
        None => match fs::remove_file(&record) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    };
    written.map_err(|source| write_error(&record, source))
}

enum Format {
    Tar,
    Gzip,
    Zip,
}

/// Tells the archive format from the first bytes and rewinds.
fn sniff(file: &mut fs::File) -> io::Result<Option<Format>> {
    let mut head = Vec::with_capacity(512);
    file.by_ref().take(512).read_to_end(&mut head)?;
    file.rewind()?;
    let format = if head.starts_with(&[0x1f, 0x8b]) {
        Some(Format::Gzip)
    } else if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        Some(Format::Zip)
    } else if head.get(257..262) == Some(b"ustar") {
        Some(Format::Tar)
    } else {
        None
    };
    Ok(format)
}

/// How archive entry names map to app directory paths.
struct Placement {
    strip: usize,
    sub: PathBuf,
}

impl Placement {
    /// Where the entry `raw` lands, or `None` when stripping or the sub-path leave
    /// nothing of it. Absolute names and names with `..` are refused whatever the
    /// stripping.
    fn place(&self, raw: &Path) -> Result<Option<PathBuf>, EntryError> {
        let normal = confined_path(raw).ok_or_else(|| EntryError::PathEscapes {
            entry: raw.display().to_string(),
        })?;
        let stripped: PathBuf = normal.components().skip(self.strip).collect();
        Ok(stripped
            .strip_prefix(&self.sub)
            .ok()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf))
    }
}

fn extract_tar(
    reader: impl Read,
    archive: &Path,
    placement: &Placement,
    app: &mut AppDir,
) -> Result<(), BlobError> {
    let read = |source| read_error(archive, source);
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        let raw = entry.path().map_err(read)?.into_owned();
        let Some(at) = placement.place(&raw)? else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() {
            let executable = entry.header().mode().map_err(read)? & 0o111 != 0;
            app.file(&at, &mut entry, executable)?;
        } else if kind.is_dir() {
            app.dir(&at)?;
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(read)?
                .ok_or_else(|| EntryError::PathEscapes {
                    entry: raw.display().to_string(),
                })?
                .into_owned();
            if kind.is_symlink() {
                app.symlink(&at, target)?;
            } else {
                let existing =
                    placement
                        .place(&target)?
                        .ok_or_else(|| EntryError::HardLinkMissing {
                            entry: raw.display().to_string(),
                            target: target.display().to_string(),
                        })?;
                app.hard_link(&at, &existing)?;
            }
        } else if !kind.is_pax_global_extensions() && !kind.is_pax_local_extensions() {
            tracing::warn!(entry = %raw.display(), "skipping a special file in a blob source");
        }
    }
    Ok(())
}

fn extract_zip(
    file: fs::File,
    archive: &Path,
    placement: &Placement,
    app: &mut AppDir,
) -> Result<(), BlobError> {
    let zip_error = |source| BlobError::Zip {
        archive: archive.to_path_buf(),
        source,
    };
    let mut zip = zip::ZipArchive::new(io::BufReader::new(file)).map_err(zip_error)?;
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(zip_error)?;
        let raw = PathBuf::from(entry.name().map_err(zip_error)?.as_ref());
        let Some(at) = placement.place(&raw)? else {
            continue;
        };
        if entry.is_dir() {
            app.dir(&at)?;
        } else if entry.is_symlink() {
            let mut target = Vec::new();
            entry
                .by_ref()
                .take(MAX_LINK_TARGET)
                .read_to_end(&mut target)
                .map_err(|source| read_error(archive, source))?;
            app.symlink(&at, PathBuf::from(OsString::from_vec(target)))?;
        } else {
            let executable = entry.unix_mode().is_some_and(|mode| mode & 0o111 != 0);
            app.file(&at, &mut entry, executable)?;
        }
    }
    Ok(())
}

fn read_error(path: &Path, source: io::Error) -> BlobError {
    BlobError::Read {
        path: path.to_path_buf(),
        source,
    }
}

fn write_error(path: &Path, source: io::Error) -> BlobError {
    BlobError::Write {
        path: path.to_path_buf(),
        source,
    }
}
