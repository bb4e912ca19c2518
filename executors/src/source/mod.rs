//! Sources: where an image's app comes from — a git remote, a local directory or an
//! archive at a URL. Each kind resolves cheaply to a version at plan time and
//! materialises exactly that version into a fresh app directory at build time.
//!
//! Every function here blocks on file or network I/O (gix and the blob download are
//! blocking clients): call them from `tokio::task::spawn_blocking`.

pub mod app_contents;
mod app_dir;
pub mod blob;
pub mod git;
pub mod image;
pub mod mirror;
pub mod path;
pub mod project;
mod stat_cache;

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

pub use app_dir::EntryError;

/// Copies `reader` into `writer`, returning a hasher fed with everything that passed
/// through. Bounded memory: one buffer at a time.
fn hashing_copy(reader: &mut impl Read, writer: &mut impl Write) -> io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(hasher),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
    }
}

/// The `sha256:<hex>` form of a finished hash.
fn digest_string(hasher: Sha256) -> String {
    imageref::Digest::from_sha256(hasher).to_string()
}
