//! Layer compression on every core, with output that does not depend on how many.
//!
//! The uncompressed stream is cut into [`CHUNK`]-byte pieces at fixed offsets (0,
//! `CHUNK`, 2·`CHUNK`, …); each piece is compressed on its own into one complete gzip
//! member (or zstd frame), and the members are written in stream order. Concatenated
//! gzip members are one valid gzip stream (RFC 1952 §2.2), concatenated zstd frames one
//! valid zstd stream, so any reader gets the whole tar back. Because the cut points are
//! byte offsets and every piece is compressed with the same settings and a header
//! without time or OS-dependent bytes, the result is byte for byte the same on 1 thread
//! or 64. A stream of at most one chunk is a single member, exactly what a plain
//! encoder writes.
//!
//! Memory is bounded: at most `2 × threads` chunks are in flight (queued or
//! compressed and waiting for their turn to be written), plus the one being filled.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use flate2::write::GzEncoder;

/// The size of the pieces compressed independently: 2 MiB. Layers whose tar is no
/// longer than this (most layers, the launcher's among them) are one gzip member, as
/// before compression went parallel.
pub const CHUNK: usize = 2 << 20;

/// At most this many threads by default: with `2 × threads` chunks in flight, about
/// 130 MiB at most, whatever the machine.
const MAX_DEFAULT_THREADS: usize = 16;

/// The zstd level of `tar+zstd` layers: zstd's default, faster than gzip's fastest
/// level on most data and smaller.
const ZSTD_LEVEL: i32 = 3;

pub use imageref::LayerCompression;

/// One chunk as one complete, self-contained member.
fn compress(compression: LayerCompression, chunk: &[u8]) -> io::Result<Vec<u8>> {
    match compression {
        LayerCompression::Gzip => {
            // flate2's default header: no name, no mtime (0), OS byte 255 ("unknown").
            let mut gz = GzEncoder::new(
                Vec::with_capacity(chunk.len() / 2 + 64),
                flate2::Compression::fast(),
            );
            gz.write_all(chunk)?;
            gz.finish()
        }
        LayerCompression::Zstd => zstd::bulk::compress(chunk, ZSTD_LEVEL),
    }
}

/// The threads layers are compressed on by default: one per core, at most 16.
pub fn default_threads() -> NonZeroUsize {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    NonZeroUsize::new(cores.min(MAX_DEFAULT_THREADS)).unwrap_or(NonZeroUsize::MIN)
}

/// Runs `produce` with a writer that compresses what it is given into `out` as
/// described in the module docs, on up to `threads` threads (started only once a
/// second chunk exists), and returns what `produce` returned and `out`.
pub fn compress_into<W, T>(
    out: W,
    compression: LayerCompression,
    threads: NonZeroUsize,
    produce: impl FnOnce(&mut ChunkedWriter<'_, '_, W>) -> io::Result<T>,
) -> io::Result<(T, W)>
where
    W: Write,
{
    std::thread::scope(|scope| {
        let mut writer = ChunkedWriter {
            scope,
            out,
            compression,
            threads: threads.get(),
            buf: Vec::new(),
            workers: Vec::new(),
            pending: VecDeque::new(),
            next: 0,
        };
        let value = produce(&mut writer)?;
        let out = writer.finish()?;
        Ok((value, out))
    })
}

/// One compressing thread: chunks in, members out, in the order they came.
struct Worker<'scope> {
    jobs: Option<SyncSender<Vec<u8>>>,
    done: Receiver<io::Result<Vec<u8>>>,
    handle: Option<ScopedJoinHandle<'scope, ()>>,
}

/// The writer [`compress_into`] hands out. Chunk `i` goes to worker `i mod threads`;
/// each worker answers in the order it was given work, so reading the answers
/// round-robin yields the members in stream order.
pub struct ChunkedWriter<'scope, 'env, W> {
    scope: &'scope Scope<'scope, 'env>,
    out: W,
    compression: LayerCompression,
    threads: usize,
    buf: Vec<u8>,
    workers: Vec<Worker<'scope>>,
    /// The workers that hold a chunk not yet written out, oldest first.
    pending: VecDeque<usize>,
    /// The worker the next chunk goes to.
    next: usize,
}

impl<'scope, W: Write> ChunkedWriter<'scope, '_, W> {
    /// Hands a full chunk on: compressed here when there is one thread, else queued for
    /// a worker once the oldest member in flight is written if the limit is reached.
    fn submit(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        if self.threads == 1 {
            let member = compress(self.compression, &chunk)?;
            return self.out.write_all(&member);
        }
        if self.workers.is_empty() {
            self.start_workers();
        }
        if self.pending.len() >= 2 * self.threads {
            self.write_oldest()?;
        }
        let worker = self.next;
        self.next = (self.next + 1) % self.threads;
        let sent = self.workers[worker]
            .jobs
            .as_ref()
            .map(|jobs| jobs.send(chunk).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(io::Error::other("a compression thread stopped"));
        }
        self.pending.push_back(worker);
        Ok(())
    }

    fn start_workers(&mut self) {
        let compression = self.compression;
        for _ in 0..self.threads {
            let (jobs, inbox) = sync_channel::<Vec<u8>>(1);
            let (outbox, done) = sync_channel::<io::Result<Vec<u8>>>(2);
            let handle = self.scope.spawn(move || {
                for chunk in inbox {
                    if outbox.send(compress(compression, &chunk)).is_err() {
                        return;
                    }
                }
            });
            self.workers.push(Worker {
                jobs: Some(jobs),
                done,
                handle: Some(handle),
            });
        }
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(worker) = self.pending.pop_front() else {
            return Ok(());
        };
        let member = self.workers[worker]
            .done
            .recv()
            .map_err(|_| io::Error::other("a compression thread stopped"))??;
        self.out.write_all(&member)
    }

    /// Compresses what is left, writes every member in order, stops the workers and
    /// returns `out`. An empty stream is one (empty) member, as a plain encoder writes.
    fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() || (self.workers.is_empty() && self.pending.is_empty()) {
            let last = std::mem::take(&mut self.buf);
            if self.workers.is_empty() {
                let member = compress(self.compression, &last)?;
                self.out.write_all(&member)?;
            } else {
                self.submit(last)?;
            }
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        for worker in &mut self.workers {
            worker.jobs = None;
            if let Some(handle) = worker.handle.take() {
                handle
                    .join()
                    .map_err(|_| io::Error::other("a compression thread panicked"))?;
            }
        }
        Ok(self.out)
    }
}

impl<W: Write> Write for ChunkedWriter<'_, '_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() == CHUNK {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.submit(full)?;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(CHUNK.min(data.len().max(64 * 1024)));
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn compressed(data: &[u8], compression: LayerCompression, threads: usize) -> Vec<u8> {
        let threads = NonZeroUsize::new(threads).unwrap();
        let ((), out) = compress_into(Vec::new(), compression, threads, |w| {
            // Odd write sizes, so chunk boundaries fall inside writes.
            for piece in data.chunks(7919) {
                w.write_all(piece)?;
            }
            Ok(())
        })
        .unwrap();
        out
    }

    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Half random, half text-like, so both stored and compressed blocks occur.
                if (i / 4096) % 2 == 0 {
                    x as u8
                } else {
                    b"layer "[i % 6]
                }
            })
            .collect()
    }

    #[test]
    fn gzip_is_the_same_bytes_on_any_number_of_threads_and_gunzips_to_the_input() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 12345] {
            let data = pseudo_random(len);
            let one = compressed(&data, LayerCompression::Gzip, 1);
            for threads in [2, 8] {
                assert!(
                    one == compressed(&data, LayerCompression::Gzip, threads),
                    "{len} bytes on {threads} threads"
                );
            }
            let mut back = Vec::new();
            flate2::read::MultiGzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "{len} bytes round trip");
        }
    }

    #[test]
    fn one_chunk_is_what_a_plain_gzip_encoder_writes() {
        let data = pseudo_random(CHUNK);
        let mut plain = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        plain.write_all(&data).unwrap();
        assert!(plain.finish().unwrap() == compressed(&data, LayerCompression::Gzip, 8));
        let mut empty = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        empty.write_all(&[]).unwrap();
        assert_eq!(
            empty.finish().unwrap(),
            compressed(&[], LayerCompression::Gzip, 2)
        );
    }

    #[test]
    fn zstd_is_the_same_bytes_on_any_number_of_threads_and_decodes_to_the_input() {
        for len in [0, CHUNK, 3 * CHUNK + 7] {
            let data = pseudo_random(len);
            let one = compressed(&data, LayerCompression::Zstd, 1);
            for threads in [2, 8] {
                assert!(one == compressed(&data, LayerCompression::Zstd, threads));
            }
            assert!(zstd::stream::decode_all(&one[..]).unwrap() == data);
        }
    }
}
