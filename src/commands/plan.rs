//! `kpackd plan [CONFIG]`: what apply would do, and why — for people (terraform-like)
//! or as the stable JSON documented in docs/commands.md; optionally saved for a later `apply`.

use std::io::Write;
use std::path::PathBuf;

use engine::planning;
use engine::state::State;
use miette::{IntoDiagnostic, WrapErr};

use super::shared::closed_pipe_is_fine;
use super::Outcome;
use crate::render;

pub struct Args {
    pub config: PathBuf,
    pub json: bool,
    pub out: Option<PathBuf>,
    pub detailed_exitcode: bool,
    pub targets: Vec<String>,
    pub state_dir: Option<PathBuf>,
    pub color: bool,
}

pub fn run(args: Args) -> miette::Result<Outcome> {
    let config = super::shared::load_config(&args.config)?;
    // Before any network work: an unknown target is a usage error.
    planning::select(&config, &args.targets)?;
    let dir = planning::state_dir(&config, args.state_dir.as_deref());
    let state = State::open(&dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("open the state in {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()
        .wrap_err("start the async runtime")?;
    let planned = runtime.block_on(planning::make_plan(&config, &state, &args.targets));
    // A resolver that timed out may still be blocked in a read: do not wait for it.
    runtime.shutdown_background();
    let planned = planned?;
    if let Some(out) = &args.out {
        planned.plan_file()?.write(out)?;
        tracing::info!(path = %out.display(), "plan saved");
    }
    let plan = &planned.plan;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let written = if args.json {
        serde_json::to_writer_pretty(&mut stdout, plan)
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(stdout))
    } else {
        write!(stdout, "{}", render::plan::render(plan, args.color)).and_then(|()| {
            match &args.out {
                Some(out) => writeln!(
                    stdout,
                    "\nSaved the plan to {0}; run `kpackd apply {0}` to carry it out.",
                    out.display()
                ),
                None => Ok(()),
            }
        })
    };
    closed_pipe_is_fine(written.and_then(|()| stdout.flush()))
        .into_diagnostic()
        .wrap_err("write the plan")?;
    if !plan.errors.is_empty() || plan.summary.blocked > 0 {
        let count = plan.errors.len();
        tracing::error!(
            "{count} upstream{} could not be resolved; the images that need {} are blocked",
            if count == 1 { "" } else { "s" },
            if count == 1 { "it" } else { "them" },
        );
        return Ok(Outcome::Failed);
    }
    if args.detailed_exitcode && plan.has_changes() {
        return Ok(Outcome::Changes);
    }
    Ok(Outcome::Success)
}
