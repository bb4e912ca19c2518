//! Build logs: every line a build prints, with its phase and buildpack, kept in one file
//! per build under the state directory (`logs/<image>/<number>.log`) for `kpackd logs`,
//! and echoed through tracing (`-v`) as it comes.
//!
//! A log keeps at most [`LOG_LIMIT`] bytes of buildpack output: a buildpack that prints
//! without end cannot fill the disk. Past the limit its lines are counted, not kept, and a
//! marker line says how much was cut before kpackd's next line of its own (a phase, the
//! failure) and at the end. A failed build's message carries the last lines of output, so
//! the cause stays visible.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use executors::lifecycle::{LogSink, Phase};

/// The most buildpack output one build log keeps.
pub const LOG_LIMIT: u64 = 16 * 1024 * 1024;

/// The log of one running build. Lines are flushed as they are written, so
/// `kpackd logs --follow` sees them at once.
#[derive(Debug)]
pub struct BuildLog {
    image: String,
    number: u64,
    path: PathBuf,
    limit: u64,
    file: Mutex<LogFile>,
}

/// The open file and what was written to it and cut from it.
#[derive(Debug)]
struct LogFile {
    out: BufWriter<File>,
    written: u64,
    cut_lines: u64,
    cut_bytes: u64,
}

impl BuildLog {
    /// Creates (or appends to) the log file at `path`, readable by its owner only.
    pub fn create(path: &Path, image: &str, number: u64) -> io::Result<BuildLog> {
        BuildLog::with_limit(path, image, number, LOG_LIMIT)
    }

    /// [`BuildLog::create`] keeping at most `limit` bytes of buildpack output.
    pub fn with_limit(path: &Path, image: &str, number: u64, limit: u64) -> io::Result<BuildLog> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?
        };
        let written = file.metadata()?.len();
        Ok(BuildLog {
            image: image.to_string(),
            number,
            path: path.to_path_buf(),
            limit,
            file: Mutex::new(LogFile {
                out: BufWriter::new(file),
                written,
                cut_lines: 0,
                cut_bytes: 0,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A line of kpackd's own about the build (not a buildpack's).
    pub fn note(&self, phase: Phase, line: &str) {
        tracing::info!(target: "kpackd::build", image = %self.image, number = self.number, %phase, "{line}");
        self.write(&format!("[{phase}] {line}\n"));
    }

    /// Why the build failed, at the end of its log.
    pub fn failure(&self, message: &str) {
        tracing::info!(target: "kpackd::build", image = %self.image, number = self.number, "failed: {message}");
        let mut text = String::from("===> FAILED\n");
        for line in message.lines() {
            text.push_str(line);
            text.push('\n');
        }
        self.write(&text);
    }

    /// Writes a line of kpackd's own: always kept, after the marker of anything cut.
    fn write(&self, text: &str) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let result = file.mark_cut().and_then(|()| file.append(text));
        self.report(result);
    }

    /// Writes a line of buildpack output, or counts it when the log is full.
    fn write_output(&self, text: &str) {
        // A poisoned lock means another thread panicked mid-line: keep logging anyway.
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if file.written + text.len() as u64 > self.limit {
            file.cut_lines += 1;
            file.cut_bytes += text.len() as u64;
            return;
        }
        let result = file.append(text);
        self.report(result);
    }

    fn report(&self, result: io::Result<()>) {
        if let Err(error) = result {
            tracing::warn!(path = %self.path.display(), %error, "cannot write the build log");
        }
    }
}

impl LogFile {
    fn append(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        self.written += text.len() as u64;
        Ok(())
    }

    /// Writes the marker of the output cut since the last one, if any.
    fn mark_cut(&mut self) -> io::Result<()> {
        if self.cut_lines == 0 {
            return Ok(());
        }
        let marker = format!(
            "===> LOG LIMIT: {} lines ({} bytes) of output were not kept; this log keeps the first {} of buildpack output\n",
            self.cut_lines,
            self.cut_bytes,
            human_bytes(self.written),
        );
        self.cut_lines = 0;
        self.cut_bytes = 0;
        self.append(&marker)
    }
}

impl Drop for BuildLog {
    fn drop(&mut self) {
        let file = self.file.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Err(error) = file.mark_cut() {
            tracing::warn!(path = %self.path.display(), %error, "cannot write the build log");
        }
    }
}

/// `16 MiB`, `512 KiB`, `300 bytes`.
fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

impl LogSink for BuildLog {
    fn line(&self, phase: Phase, buildpack: Option<&str>, line: &str) {
        tracing::info!(
            target: "kpackd::build",
            image = %self.image,
            number = self.number,
            %phase,
            buildpack = buildpack.unwrap_or(""),
            "{line}"
        );
        let text = match buildpack {
            Some(bp) => format!("[{phase}] [{bp}] {line}\n"),
            None => format!("[{phase}] {line}\n"),
        };
        self.write_output(&text);
    }

    fn phase_started(&self, phase: Phase) {
        self.write(&format!("===> {}\n", phase.as_str().to_uppercase()));
    }
}

/// Deletes log files of builds the state dropped; a file already gone is fine.
pub fn delete_logs(paths: &[PathBuf]) {
    for path in paths {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot delete an old build log")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_limit_is_counted_and_marked_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        {
            let log = BuildLog::with_limit(&path, "app", 1, 100).unwrap();
            log.phase_started(Phase::Build);
            for i in 0..1000 {
                log.line(Phase::Build, Some("bp"), &format!("line {i}"));
            }
            log.failure("bin/build exited 1");
            log.line(Phase::Build, Some("bp"), "after the failure");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "===> BUILD");
        assert_eq!(lines[1], "[build] [bp] line 0");
        assert!(text.len() < 1000, "{text}");
        let cut = lines
            .iter()
            .position(|l| l.starts_with("===> LOG LIMIT"))
            .unwrap();
        assert!(
            lines[cut].starts_with("===> LOG LIMIT: 99") && lines[cut].contains("lines ("),
            "{}",
            lines[cut]
        );
        // kpackd's own lines are kept past the limit, after the marker.
        assert_eq!(lines[cut + 1], "===> FAILED");
        assert_eq!(lines[cut + 2], "bin/build exited 1");
        // What was cut after that is marked when the log closes.
        assert!(
            lines[cut + 3].starts_with("===> LOG LIMIT: 1 lines"),
            "{text}"
        );
        assert_eq!(lines.len(), cut + 4);
    }
}
