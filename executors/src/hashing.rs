//! Hashing bytes while they are read.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

/// A reader that feeds everything read through it to a SHA-256 hasher.
pub(crate) struct HashingReader<R> {
    pub(crate) inner: R,
    pub(crate) hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
