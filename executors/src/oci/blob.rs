//! Blob streams: files read in bounded chunks, digests checked as the bytes pass, and
//! a bridge from an async stream to the blocking `Read` that tar wants.

use std::path::Path;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use imageref::Digest;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt;

use super::OciError;

/// The bytes of a blob, in order, as they arrive.
pub type BlobStream = futures::stream::BoxStream<'static, std::io::Result<Bytes>>;

/// Size of the reads when a blob comes from a file.
const FILE_CHUNK: usize = 256 * 1024;

/// Streams a file in fixed-size chunks, so a layer of any size passes through a
/// bounded buffer.
pub(crate) async fn file_stream(
    path: &Path,
) -> Result<impl Stream<Item = std::io::Result<Bytes>> + Send + 'static, OciError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| OciError::io(path, e))?;
    Ok(futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = bytes::BytesMut::with_capacity(FILE_CHUNK);
        while buf.len() < FILE_CHUNK {
            if file.read_buf(&mut buf).await? == 0 {
                break;
            }
        }
        Ok((!buf.is_empty()).then(|| (buf.freeze(), file)))
    }))
}

/// Passes `stream` through, failing at its end when the bytes do not hash to
/// `expected`. Readers must consume to the end to get the check.
pub(crate) fn verified<S>(stream: S, expected: Digest) -> BlobStream
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let state = (Box::pin(stream), Sha256::new(), expected);
    Box::pin(futures::stream::try_unfold(
        state,
        |(mut stream, mut hasher, expected)| async move {
            match stream.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    hasher.update(&chunk);
                    Ok(Some((chunk, (stream, hasher, expected))))
                }
                None => {
                    let actual = Digest::from_sha256(hasher);
                    if actual == expected {
                        Ok(None)
                    } else {
                        Err(std::io::Error::other(format!(
                            "blob digest mismatch: expected {expected}, got {actual}"
                        )))
                    }
                }
            }
        },
    ))
}

/// A blocking reader over an async blob stream, for use inside `spawn_blocking`.
pub fn blocking_reader(stream: BlobStream) -> impl std::io::Read + Send {
    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream))
}

/// Passes `stream` through while it keeps to `declared` bytes: more is an error at
/// the chunk that goes past (the excess is never buffered, nor read on), fewer an
/// error at the end.
pub(crate) fn limited<S>(stream: S, declared: u64, what: String) -> BlobStream
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let state = (Box::pin(stream), 0u64, what);
    Box::pin(futures::stream::try_unfold(
        state,
        move |(mut stream, seen, what)| async move {
            match stream.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let seen = seen.saturating_add(chunk.len() as u64);
                    if seen > declared {
                        return Err(std::io::Error::other(format!(
                            "{what}: served more than its declared size of {declared} bytes"
                        )));
                    }
                    Ok(Some((chunk, (stream, seen, what))))
                }
                None if seen < declared => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{what}: ended after {seen} of its declared {declared} bytes"),
                )),
                None => Ok(None),
            }
        },
    ))
}

/// Passes `stream` through, failing with [`std::io::ErrorKind::TimedOut`] when no
/// chunk comes for `idle`, or when `deadline` passes.
pub(crate) fn with_deadlines<S>(
    stream: S,
    idle: std::time::Duration,
    deadline: tokio::time::Instant,
    what: String,
) -> BlobStream
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
{
    let state = (Box::pin(stream), what);
    Box::pin(futures::stream::try_unfold(
        state,
        move |(mut stream, what)| async move {
            let wait = tokio::time::sleep(idle);
            tokio::select! {
                item = stream.next() => match item {
                    Some(chunk) => Ok(Some((chunk?, (stream, what)))),
                    None => Ok(None),
                },
                () = wait => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{what}: timed out: no data for {idle:?}"),
                )),
                () = tokio::time::sleep_until(deadline) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{what}: timed out: not finished by its deadline"),
                )),
            }
        },
    ))
}
