//! Running one buildpack program in the sandbox, streaming its output to the logs and
//! keeping its last lines for error messages.

use std::io;
use std::path::Path;
use std::sync::Mutex;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::env::Env;
use super::sandbox::PhaseSandbox;
use crate::lifecycle::{LogSink, Phase};
use crate::sandbox::SandboxError;

/// How many lines of a program's output are kept for error messages.
pub const OUTPUT_TAIL_LINES: usize = 40;
/// Longer lines are cut into pieces of this many bytes.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// A buildpack program that could not be run at all.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error("run the program: {0}")]
    Spawn(#[source] io::Error),
}

/// How a buildpack program ended, and the last lines it printed.
pub(in crate::lifecycle) struct ProgramRun {
    /// The exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub tail: Vec<String>,
}

/// Runs `program` in the sandbox with the app directory as cwd, streaming every line of
/// its stdout and stderr (one stream, in the order written) to `logs` as it comes and
/// keeping the last [`OUTPUT_TAIL_LINES`]. In a container, what the program leaves
/// running in its process group is killed when it exits (or when this is dropped).
pub(in crate::lifecycle) async fn run_program(
    sandbox: &PhaseSandbox,
    program: &Path,
    args: &[String],
    env: &Env,
    phase: Phase,
    buildpack: &str,
    logs: &dyn LogSink,
) -> Result<ProgramRun, ProgramError> {
    let mut command = sandbox.command(program, args, env)?;
    // One pipe for stdout and stderr, so the log keeps the order the program wrote in.
    let (reader, writer) = std::io::pipe().map_err(ProgramError::Spawn)?;
    let writer_for_stderr = writer.try_clone().map_err(ProgramError::Spawn)?;
    command.stdout(writer).stderr(writer_for_stderr);
    let mut child = command.spawn().map_err(ProgramError::Spawn)?;
    // The command holds the pipe's write end: without dropping it the output never ends.
    drop(command);
    let group = sandbox
        .ends_process_groups()
        .then(|| child.id().map(GroupGuard))
        .flatten();
    let output =
        tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(reader))
            .map_err(ProgramError::Spawn)?;
    let tail = Mutex::new(std::collections::VecDeque::with_capacity(OUTPUT_TAIL_LINES));
    let emit = |line: &str| {
        logs.line(phase, Some(buildpack), line);
        let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if tail.len() == OUTPUT_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
    };
    let wait = async {
        let status = child.wait().await;
        // Whatever it left running would hold the output open: the group ends with it.
        drop(group);
        status
    };
    let (_, status) = tokio::join!(pump(Some(output), &emit), wait);
    let status = status.map_err(ProgramError::Spawn)?;
    let tail = tail
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .into_iter()
        .collect();
    Ok(ProgramRun {
        code: status.code(),
        tail,
    })
}

/// Kills a program's process group when dropped.
struct GroupGuard(u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        crate::sandbox::kill_process_group(self.0);
    }
}

/// Reads `reader` to its end, calling `emit` for each line (without its line ending);
/// lines longer than [`MAX_LINE_BYTES`] are cut.
async fn pump<R: AsyncRead + Unpin>(reader: Option<R>, emit: &(dyn Fn(&str) + Sync)) {
    let Some(mut reader) = reader else { return };
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let flush = |bytes: &[u8]| {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        emit(&String::from_utf8_lossy(bytes));
    };
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "read a buildpack's output");
                break;
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|&b| b == b'\n') {
            flush(&buf[start..start + pos]);
            start += pos + 1;
        }
        buf.drain(..start);
        while buf.len() > MAX_LINE_BYTES {
            flush(&buf[..MAX_LINE_BYTES]);
            buf.drain(..MAX_LINE_BYTES);
        }
    }
    if !buf.is_empty() {
        flush(&buf);
    }
}
