//! Build logs: every line a build prints, with its phase and buildpack, kept in one file
//! per build under the state directory (`logs/<image>/<number>.log`) for `kpackd logs`,
//! and echoed through tracing (`-v`) as it comes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use executors::lifecycle::{LogSink, Phase};

/// The log of one running build. Lines are flushed as they are written, so
/// `kpackd logs --follow` sees them at once.
#[derive(Debug)]
pub struct BuildLog {
    image: String,
    number: u64,
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

impl BuildLog {
    /// Creates (or appends to) the log file at `path`, readable by its owner only.
    pub fn create(path: &Path, image: &str, number: u64) -> io::Result<BuildLog> {
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
        Ok(BuildLog {
            image: image.to_string(),
            number,
            path: path.to_path_buf(),
            file: Mutex::new(BufWriter::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A line of kpackd's own about the build (not a buildpack's).
    pub fn note(&self, phase: Phase, line: &str) {
        self.line(phase, None, line);
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

    fn write(&self, text: &str) {
        // A poisoned lock means another thread panicked mid-line: keep logging anyway.
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(error) = file.write_all(text.as_bytes()).and_then(|()| file.flush()) {
            tracing::warn!(path = %self.path.display(), %error, "cannot write the build log");
        }
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
        self.write(&text);
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
