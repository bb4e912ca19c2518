//! `kpackd trigger IMAGE...`: ask for a rebuild (TRIGGER) at the next apply.

use std::io::Write;
use std::path::PathBuf;

use engine::planning;
use engine::state::State;
use miette::{IntoDiagnostic, WrapErr};

use super::Outcome;

pub fn run(
    images: &[String],
    config: &std::path::Path,
    state_dir: Option<&std::path::Path>,
) -> miette::Result<Outcome> {
    let config = planner::load(config)?;
    // Every name must exist before anything is recorded.
    planning::select(&config, images)?;
    let dir: PathBuf = planning::state_dir(&config, state_dir);
    let mut state = State::open(&dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("open the state in {}", dir.display()))?;
    let mut stdout = std::io::stdout().lock();
    let mut recorded = Ok(());
    for image in images {
        recorded = state
            .add_trigger(image)
            .into_diagnostic()
            .wrap_err_with(|| format!("record a trigger for {image}"));
        if recorded.is_err() {
            break;
        }
        let _ = writeln!(
            stdout,
            "image \"{image}\" will be rebuilt at the next apply (TRIGGER)"
        );
    }
    // Once, for every trigger recorded (also when a later one failed).
    state.ring_doorbell();
    recorded?;
    Ok(Outcome::Success)
}
