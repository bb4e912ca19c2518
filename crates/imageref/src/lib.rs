//! Image references: where an image lives and how kpackd names it.
//!
//! One type, [`ImageRef`], serves the whole program: the planner validates the
//! references written in kpack.toml with it, and the executors resolve, pull and push
//! with it. It depends on nothing but serde and sha2 so that both sides can share it;
//! [`Platform`] and [`Target`] live here for the same reason, and [`Digest::sha256`] is
//! how every part of kpackd hashes content.
//!
//! Two forms are understood:
//! - the registry form familiar from docker (`host[:port]/repo[:tag][@sha256:…]`,
//!   optionally prefixed `docker://`), with the `docker.io` and `library/` defaults;
//! - `oci:<dir>[:<ref-name>]`, an OCI image layout on disk, as skopeo writes it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod compression;
mod platform;

pub use compression::LayerCompression;
pub use platform::{Platform, Target};

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The registry docker uses when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag assumed when a registry reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// A reference to an image: in a registry, or in an OCI image layout on disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImageRef {
    /// An image in a registry.
    Registry(RegistryRef),
    /// An image in an OCI image layout on disk.
    Layout(LayoutRef),
}

/// `host[:port]/repository[:tag][@digest]`, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryRef {
    /// `docker.io`, `ghcr.io`, `localhost:5000`, …
    pub registry: String,
    /// The repository path within the registry, `library/` added for docker.io.
    pub repository: String,
    /// The tag, if the reference names one.
    pub tag: Option<String>,
    /// The manifest digest the reference is pinned to, if any; it wins over the tag.
    pub digest: Option<Digest>,
}

/// `oci:<dir>[:<ref-name>]`: an image in an OCI image layout, selected by the
/// `org.opencontainers.image.ref.name` annotation of its `index.json` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayoutRef {
    /// The layout's directory (holding `oci-layout` and `index.json`).
    pub dir: PathBuf,
    /// The ref name; none selects the layout's only image.
    pub name: Option<String>,
}

/// A content digest, `algorithm:hex`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: String,
    hex: String,
}

/// Why a string is not an image reference. Messages read well after "invalid image
/// reference: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing was written.
    Empty,
    /// The reference holds white space.
    Whitespace,
    /// The repository (given) has upper-case letters.
    Uppercase(String),
    /// The repository (given) is not a valid repository name.
    BadRepository(String),
    /// The tag (given) is not a valid tag.
    BadTag(String),
    /// The digest (given) is not `sha256:` or `sha512:` and its hex digits.
    BadDigest(String),
    /// The registry host (given) is not a valid host and port.
    BadRegistry(String),
    /// An `oci:` reference names no directory.
    EmptyLayoutDir,
    /// The ref name (given) of an `oci:` reference is not a valid one.
    BadLayoutName(String),
    /// The repository name is this many characters long, more than allowed.
    TooLong(usize),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => write!(f, "the reference is empty"),
            ParseError::Whitespace => write!(f, "a reference cannot contain white space"),
            ParseError::Uppercase(repo) => {
                write!(f, "repository `{repo}` must be lowercase")
            }
            ParseError::BadRepository(repo) => write!(
                f,
                "`{repo}` is not a valid repository name (lowercase letters, digits and \
                 the separators `.`, `_`, `__`, `-`, components joined by `/`)"
            ),
            ParseError::BadTag(tag) => write!(
                f,
                "`{tag}` is not a valid tag (letters, digits, `_`, `.`, `-`; at most 128 \
                 characters, not starting with `.` or `-`)"
            ),
            ParseError::BadDigest(d) => write!(
                f,
                "`{d}` is not a valid digest (expected `sha256:` and 64 lowercase hex digits)"
            ),
            ParseError::BadRegistry(r) => write!(f, "`{r}` is not a valid registry host"),
            ParseError::EmptyLayoutDir => {
                write!(
                    f,
                    "an `oci:` reference needs a directory: `oci:<dir>[:<ref-name>]`"
                )
            }
            ParseError::BadLayoutName(n) => write!(
                f,
                "`{n}` is not a valid OCI layout reference name (letters, digits and \
                 `-._:@+`, starting and ending with a letter or digit)"
            ),
            ParseError::TooLong(n) => {
                write!(
                    f,
                    "the repository name is {n} characters long; at most 255 are allowed"
                )
            }
        }
    }
}

// Written out rather than derived: this crate stays dependency-free.
impl std::error::Error for ParseError {}

impl Digest {
    /// Parses `sha256:<64 hex>` (or `sha512:<128 hex>`).
    pub fn parse(s: &str) -> Result<Digest, ParseError> {
        let bad = || ParseError::BadDigest(s.to_string());
        let (algorithm, hex) = s.split_once(':').ok_or_else(bad)?;
        let want = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(bad()),
        };
        if hex.len() != want
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        Ok(Digest {
            algorithm: algorithm.to_string(),
            hex: hex.to_string(),
        })
    }

    /// A sha256 digest from its lowercase hex encoding.
    pub fn sha256_hex(hex: &str) -> Result<Digest, ParseError> {
        Digest::parse(&format!("sha256:{hex}"))
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_sha256(sha2::Sha256::new_with_prefix(bytes))
    }

    /// The sha256 digest of everything `reader` yields, read in bounded chunks.
    pub fn sha256_of_reader(reader: &mut impl std::io::Read) -> std::io::Result<Digest> {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(Digest::from_sha256(hasher)),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
        }
    }

    /// The sha256 digest of the contents of the file at `path`, read in bounded
    /// chunks. Blocking.
    pub fn sha256_of_file(path: &std::path::Path) -> std::io::Result<Digest> {
        Digest::sha256_of_reader(&mut std::fs::File::open(path)?)
    }

    /// The sha256 digest of everything `hasher` was fed.
    pub fn from_sha256(hasher: sha2::Sha256) -> Digest {
        use fmt::Write as _;
        use sha2::Digest as _;
        let mut hex = String::with_capacity(64);
        for byte in hasher.finalize() {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
        }
        Digest {
            algorithm: "sha256".to_string(),
            hex,
        }
    }

    /// The hash algorithm: `sha256` or `sha512`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// The hash, in lowercase hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, for people.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl FromStr for Digest {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

// Digests and references travel as their text in JSON and TOML.
impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ImageRef, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        ImageRef::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl ImageRef {
    /// Parses a reference as written by a user. Relative layout directories are kept
    /// relative; see [`ImageRef::resolve_relative_to`].
    pub fn parse(s: &str) -> Result<ImageRef, ParseError> {
        if s.is_empty() {
            return Err(ParseError::Empty);
        }
        if s.chars().any(char::is_whitespace) {
            return Err(ParseError::Whitespace);
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            return LayoutRef::parse(rest).map(ImageRef::Layout);
        }
        let rest = s.strip_prefix("docker://").unwrap_or(s);
        RegistryRef::parse(rest).map(ImageRef::Registry)
    }

    /// Makes a relative layout directory relative to `base` (the directory of the
    /// file that named it). Registry references are returned unchanged.
    pub fn resolve_relative_to(self, base: &Path) -> ImageRef {
        match self {
            ImageRef::Layout(l) if l.dir.is_relative() => ImageRef::Layout(LayoutRef {
                dir: base.join(l.dir),
                name: l.name,
            }),
            other => other,
        }
    }

    /// The digest pinned in the reference, if any.
    pub fn digest(&self) -> Option<&Digest> {
        match self {
            ImageRef::Registry(r) => r.digest.as_ref(),
            ImageRef::Layout(_) => None,
        }
    }

    /// The registry reference, if the image is in a registry.
    pub fn as_registry(&self) -> Option<&RegistryRef> {
        match self {
            ImageRef::Registry(r) => Some(r),
            ImageRef::Layout(_) => None,
        }
    }

    /// The layout reference, if the image is in an OCI image layout.
    pub fn as_layout(&self) -> Option<&LayoutRef> {
        match self {
            ImageRef::Layout(l) => Some(l),
            ImageRef::Registry(_) => None,
        }
    }

    /// The same image location with another tag (registry) or ref name (layout); a
    /// pinned digest is dropped. Used for additional and build-number tags.
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        match self {
            ImageRef::Registry(r) => ImageRef::Registry(RegistryRef {
                registry: r.registry.clone(),
                repository: r.repository.clone(),
                tag: Some(tag.to_string()),
                digest: None,
            }),
            ImageRef::Layout(l) => ImageRef::Layout(LayoutRef {
                dir: l.dir.clone(),
                name: Some(tag.to_string()),
            }),
        }
    }

    /// Whether two references name the same repository or layout (ignoring tags).
    pub fn same_location(&self, other: &ImageRef) -> bool {
        match (self, other) {
            (ImageRef::Registry(a), ImageRef::Registry(b)) => {
                a.registry == b.registry && a.repository == b.repository
            }
            (ImageRef::Layout(a), ImageRef::Layout(b)) => a.dir == b.dir,
            _ => false,
        }
    }
}

impl FromStr for ImageRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageRef::parse(s)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => r.fmt(f),
            ImageRef::Layout(l) => l.fmt(f),
        }
    }
}

impl RegistryRef {
    fn parse(s: &str) -> Result<RegistryRef, ParseError> {
        let (name, digest) = match s.split_once('@') {
            Some((name, digest)) => (name, Some(Digest::parse(digest)?)),
            None => (s, None),
        };
        // A colon after the last slash separates the tag; one before it is a port.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
            None => (name, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(ParseError::BadTag(tag.to_string()));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        if !valid_registry(&registry) {
            return Err(ParseError::BadRegistry(registry));
        }
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_string(),
            _ => registry,
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ParseError::Uppercase(repository));
        }
        if !valid_repository(&repository) {
            return Err(ParseError::BadRepository(repository));
        }
        let full = registry.len() + 1 + repository.len();
        if full > 255 {
            return Err(ParseError::TooLong(full));
        }
        Ok(RegistryRef {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// The tag, or `latest` when neither tag nor digest was given.
    pub fn tag_or_default(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some(DEFAULT_TAG),
            (None, Some(_)) => None,
        }
    }

    /// The tag if given, else the digest, else `latest`: what a registry request for
    /// the manifest names.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The same repository pinned to `digest`.
    pub fn at_digest(&self, digest: Digest) -> RegistryRef {
        RegistryRef {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: Some(digest),
        }
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl LayoutRef {
    fn parse(s: &str) -> Result<LayoutRef, ParseError> {
        // As in skopeo: the first colon separates the directory from the ref name, so a
        // ref name may itself contain colons.
        let (dir, name) = match s.split_once(':') {
            Some((dir, name)) => (dir, Some(name)),
            None => (s, None),
        };
        if dir.is_empty() {
            return Err(ParseError::EmptyLayoutDir);
        }
        if let Some(name) = name {
            if !valid_layout_name(name) {
                return Err(ParseError::BadLayoutName(name.to_string()));
            }
        }
        Ok(LayoutRef {
            dir: PathBuf::from(dir),
            name: name.map(str::to_string),
        })
    }
}

impl fmt::Display for LayoutRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci:{}", self.dir.display())?;
        if let Some(name) = &self.name {
            write!(f, ":{name}")?;
        }
        Ok(())
    }
}

fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    tag.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_registry(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` per path component, as the distribution spec
/// requires.
fn valid_repository(repo: &str) -> bool {
    repo.split('/').all(|component| {
        let bytes = component.as_bytes();
        if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            if is_alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !is_alnum(bytes[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
            if !ok {
                return false;
            }
        }
        true
    })
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_layout_name(name: &str) -> bool {
    let ok_edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    ok_edge(name.chars().next())
        && ok_edge(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '@' | '+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_hashed_as_its_bytes() {
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let dir = std::env::temp_dir().join(format!("imageref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        std::fs::write(&path, &bytes).unwrap();
        let digest = Digest::sha256_of_file(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(digest, Digest::sha256(&bytes));
        assert!(Digest::sha256_of_file(&dir.join("missing")).is_err());
    }

    fn reg(s: &str) -> RegistryRef {
        match ImageRef::parse(s).unwrap() {
            ImageRef::Registry(r) => r,
            other => panic!("expected a registry reference, got {other:?}"),
        }
    }

    const SHA: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn docker_hub_defaults() {
        let r = reg("ubuntu");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/ubuntu");
        assert_eq!(r.tag, None);
        assert_eq!(r.reference(), "latest");
        assert_eq!(reg("paketo/builder:base").repository, "paketo/builder");
        assert_eq!(
            reg("docker://index.docker.io/ubuntu:22.04").to_string(),
            "docker.io/library/ubuntu:22.04"
        );
    }

    #[test]
    fn hosts_ports_tags_digests() {
        let r = reg("localhost:5000/apps/hello:v1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "apps/hello", Some("v1"))
        );
        let r = reg(&format!("ghcr.io/o/r@{SHA}"));
        assert_eq!(
            r.digest.as_ref().map(|d| d.to_string()),
            Some(SHA.to_string())
        );
        assert_eq!(r.reference(), SHA);
        let r = reg(&format!("127.0.0.1:5000/x:t@{SHA}"));
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/x:t@{SHA}"));
        assert_eq!(reg("localhost/app").registry, "localhost");
    }

    #[test]
    fn layouts() {
        let l = ImageRef::parse("oci:out/images:hello").unwrap();
        assert_eq!(
            l,
            ImageRef::Layout(LayoutRef {
                dir: "out/images".into(),
                name: Some("hello".into())
            })
        );
        let l = ImageRef::parse("oci:/abs/dir").unwrap();
        assert_eq!(l.to_string(), "oci:/abs/dir");
        let l = ImageRef::parse("oci:d:name:v1").unwrap();
        assert_eq!(l.as_layout().unwrap().name.as_deref(), Some("name:v1"));
        let resolved = ImageRef::parse("oci:out:x")
            .unwrap()
            .resolve_relative_to(Path::new("/proj"));
        assert_eq!(resolved.to_string(), "oci:/proj/out:x");
    }

    #[test]
    fn rejects() {
        for (input, want) in [
            ("", ParseError::Empty),
            ("a b", ParseError::Whitespace),
            ("Ubuntu", ParseError::Uppercase("library/Ubuntu".into())),
            ("ubuntu:", ParseError::BadTag(String::new())),
            ("ubuntu:-x", ParseError::BadTag("-x".into())),
            (
                "ubuntu@sha256:abc",
                ParseError::BadDigest("sha256:abc".into()),
            ),
            ("a//b", ParseError::BadRepository("a//b".into())),
            ("reg.io/a..b", ParseError::BadRepository("a..b".into())),
            ("oci:", ParseError::EmptyLayoutDir),
            ("oci::x", ParseError::EmptyLayoutDir),
            ("oci:dir:-x", ParseError::BadLayoutName("-x".into())),
            (
                "host:99999999/x",
                ParseError::BadRegistry("host:99999999".into()),
            ),
        ] {
            assert_eq!(ImageRef::parse(input), Err(want), "{input}");
        }
    }

    #[test]
    fn digest_accessors() {
        let d = Digest::parse(SHA).unwrap();
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.short(), "0123456789ab");
        assert!(Digest::parse("md5:00").is_err());
        assert!(Digest::parse(
            "sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"
        )
        .is_err());
    }

    #[test]
    fn sha256_digests_of_content() {
        // The sha256 of the empty string and of "abc", as FIPS 180-2 gives them.
        assert_eq!(
            Digest::sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            Digest::sha256(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn with_tag_and_location() {
        let r = ImageRef::parse("reg.io/a/b:1").unwrap();
        assert_eq!(r.with_tag("2").to_string(), "reg.io/a/b:2");
        assert!(r.same_location(&ImageRef::parse("reg.io/a/b:9").unwrap()));
        assert!(!r.same_location(&ImageRef::parse("reg.io/a/c:1").unwrap()));
    }
}
