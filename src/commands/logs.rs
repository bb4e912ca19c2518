//! `kpackd logs IMAGE [--build N] [--follow]`: a build's log, live while it runs.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use engine::state::{Build, State};
use miette::{miette, IntoDiagnostic, WrapErr};

use super::Outcome;

/// How often `--follow` looks for new lines and for the build's end.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

pub fn run(
    state_dir: &Path,
    image: &str,
    number: Option<u64>,
    follow: bool,
) -> miette::Result<Outcome> {
    let state = State::open(state_dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("open the state in {}", state_dir.display()))?;
    let build = find(&state, image, number)?;
    let mut out = std::io::stdout().lock();
    let mut file = match std::fs::File::open(&build.log) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !build.status.is_end() => {
            // Queued: the log appears when the build starts.
            wait_for(&build.log, &state, &build)?
        }
        Err(e) => {
            return Err(miette!(
                "build {image} #{} has no log at {}: {e}",
                build.number,
                build.log.display()
            ))
        }
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        file.read_to_end(&mut buf).into_diagnostic()?;
        out.write_all(&buf).into_diagnostic()?;
        out.flush().into_diagnostic()?;
        if !follow {
            break;
        }
        let now = find(&state, image, Some(build.number))?;
        if now.status.is_end() {
            // One last read: lines written between the read and the status check.
            buf.clear();
            file.read_to_end(&mut buf).into_diagnostic()?;
            out.write_all(&buf).into_diagnostic()?;
            break;
        }
        std::thread::sleep(FOLLOW_EVERY);
        let position = file.stream_position().into_diagnostic()?;
        file.seek(SeekFrom::Start(position)).into_diagnostic()?;
    }
    Ok(Outcome::Success)
}

fn wait_for(path: &Path, state: &State, build: &Build) -> miette::Result<std::fs::File> {
    loop {
        if let Ok(file) = std::fs::File::open(path) {
            return Ok(file);
        }
        let now = find(state, &build.image, Some(build.number))?;
        if now.status.is_end() {
            return Err(miette!(
                "build {} #{} ended {} without a log",
                build.image,
                build.number,
                now.status
            ));
        }
        std::thread::sleep(FOLLOW_EVERY);
    }
}

/// Build `number` of `image`, or its latest.
fn find(state: &State, image: &str, number: Option<u64>) -> miette::Result<Build> {
    let builds = state.builds(Some(image)).into_diagnostic()?;
    if builds.is_empty() {
        let known = state.images().into_diagnostic()?;
        return Err(miette!(
            help = if known.is_empty() {
                "no image has been built yet: run `kpackd apply`".to_string()
            } else {
                format!("images with builds: {}", known.join(", "))
            },
            "image \"{image}\" has no builds"
        ));
    }
    match number {
        None => Ok(builds.into_iter().last().expect("not empty")),
        Some(n) => {
            let numbers: Vec<String> = builds.iter().map(|b| b.number.to_string()).collect();
            builds.into_iter().find(|b| b.number == n).ok_or_else(|| {
                miette!(
                    help = format!("builds of {image} kept: {}", numbers.join(", ")),
                    "image \"{image}\" has no build #{n}"
                )
            })
        }
    }
}
