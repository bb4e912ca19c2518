//! `kpackd apply [CONFIG | PLANFILE]`: plan (or read a saved plan), then build, rebase
//! and forget as planned, showing progress, and say how each image ended.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use engine::apply::{self, ApplyOptions, ApplyReport, ResultStatus};
use engine::planning::{self, PlanFile, Planned};
use engine::resolve::image_store;
use engine::state::{BuildStatus, PublishStatus, State, StateLock};
use miette::{miette, IntoDiagnostic, WrapErr};
use planner::plan::Action;
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use super::Outcome;
use crate::render;

pub struct Args {
    pub file: PathBuf,
    pub json: bool,
    pub targets: Vec<String>,
    pub concurrency: Option<usize>,
    pub lock_timeout: Option<Duration>,
    pub state_dir: Option<PathBuf>,
    pub verbose: bool,
    pub color: bool,
}

pub fn run(args: Args) -> miette::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .into_diagnostic()
        .wrap_err("start the async runtime")?;
    runtime.block_on(apply_async(args))
}

/// Whether `path` holds a saved plan (JSON) rather than a kpack.toml.
fn is_plan_file(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| bytes.iter().find(|b| !b.is_ascii_whitespace()).copied())
        == Some(b'{')
}

async fn apply_async(args: Args) -> miette::Result<Outcome> {
    let saved = if is_plan_file(&args.file) {
        if !args.targets.is_empty() {
            return Err(miette!(
                "--target cannot narrow a saved plan: it was made for its targets; plan again with --target"
            ));
        }
        Some(PlanFile::read(&args.file)?)
    } else {
        None
    };
    let config_path = saved
        .as_ref()
        .map_or(args.file.clone(), |f| f.config_path.clone());
    let config = super::shared::load_config(&config_path)?;
    let dir = planning::state_dir(&config, args.state_dir.as_deref());
    let _lock = StateLock::acquire(&dir, args.lock_timeout).map_err(super::lock_error)?;
    let mut state = State::open(&dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("open the state in {}", dir.display()))?;

    let planned: Planned = match saved {
        Some(file) => {
            file.check_current(&state)?;
            file.check_config(&config)?;
            file.into_planned(config)
        }
        None => {
            recover_pods(&config, &mut state).await?;
            repair(&mut state)?;
            planning::make_plan(&config, &state, &args.targets).await?
        }
    };
    let blocked = planned.plan.summary.blocked > 0 || !planned.plan.errors.is_empty();
    if !args.json {
        let mut out = anstream::stdout();
        let _ = write!(out, "{}", render::plan::render(&planned.plan, args.color));
        let _ = writeln!(out);
    }
    if !planned.plan.has_changes() {
        if args.json {
            print_json(
                &planned,
                &ApplyReport {
                    results: Vec::new(),
                    canceled: false,
                    publishes: Vec::new(),
                },
            )?;
        }
        return Ok(if blocked {
            Outcome::Failed
        } else {
            Outcome::Success
        });
    }

    let cancel = CancellationToken::new();
    spawn_signal_handler(cancel.clone());
    let options = ApplyOptions {
        concurrency: args
            .concurrency
            .unwrap_or(planned.config.settings.concurrency.get() as usize),
        rebase_concurrency: planned.config.settings.rebase_concurrency.get() as usize,
    };
    let progress = Progress::new(args.verbose || args.json);
    let store = image_store(&planned.config)
        .with_pushed_cache(engine::layout::StateLayout::new(&dir).pushed_dir());
    let planned = Arc::new(planned);
    let report = apply::apply(
        planned.clone(),
        &mut state,
        store,
        &options,
        &progress,
        cancel,
    )
    .await
    .into_diagnostic()
    .wrap_err("apply the plan")?;
    progress.finish();
    if args.json {
        print_json(&planned, &report)?;
    } else {
        print_summary(&report);
    }
    Ok(if report.failed() || blocked {
        Outcome::Failed
    } else {
        Outcome::Success
    })
}

/// Build Pods a killed kpackd left on the cluster: their builds are recorded as the Pods
/// ended (followed to their end first), so that work done is not done again.
async fn recover_pods(config: &planner::Config, state: &mut State) -> miette::Result<()> {
    let recorded = apply::recover::recover(config, state)
        .await
        .into_diagnostic()
        .wrap_err("recover the build Pods of a stopped kpackd")?;
    for build in recorded {
        let _ = writeln!(
            anstream::stderr(),
            "build {} #{} ran on in its Pod while kpackd was stopped: {}",
            build.image,
            build.number,
            build.status
        );
    }
    Ok(())
}

/// Builds a killed kpackd left running are marked `interrupted`; the plan builds them again.
fn repair(state: &mut State) -> miette::Result<()> {
    for build in state.mark_interrupted().into_diagnostic()? {
        let _ = writeln!(
            anstream::stderr(),
            "build {} #{} was interrupted (kpackd stopped while it ran); it is planned again",
            build.image,
            build.number
        );
    }
    Ok(())
}

/// First Ctrl-C or SIGTERM: cancel (running builds stop, recorded `canceled`). Second:
/// exit at once.
fn spawn_signal_handler(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    None
                }
            };
        let mut received = 0;
        loop {
            tokio::select! {
                result = tokio::signal::ctrl_c() => {
                    if result.is_err() {
                        return;
                    }
                }
                Some(()) = async {
                    match terminate.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            received += 1;
            if received == 1 {
                let _ = writeln!(
                    anstream::stderr(),
                    "canceling: stopping running builds (press Ctrl-C again to exit at once)"
                );
                cancel.cancel();
            } else {
                std::process::exit(i32::from(super::EXIT_ERROR));
            }
        }
    });
}

fn print_json(planned: &Planned, report: &ApplyReport) -> miette::Result<()> {
    let mut json = serde_json::json!({
        "format_version": planner::plan::FORMAT_VERSION,
        "config": planned.plan.config,
        "results": report.results,
        "canceled": report.canceled,
        "errors": planned.plan.errors,
    });
    if !report.publishes.is_empty() {
        json["publishes"] = serde_json::json!(report.publishes);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, &json).into_diagnostic()?;
    let _ = writeln!(out);
    out.flush().into_diagnostic()
}

fn print_summary(report: &ApplyReport) {
    let count = |action: Action, status: BuildStatus| {
        report
            .results
            .iter()
            .filter(|r| r.action == action && r.status == status)
            .count()
    };
    let failed: Vec<_> = report
        .results
        .iter()
        .filter(|r| !r.status.is_success())
        .collect();
    let mut out = anstream::stdout();
    for result in &report.results {
        if result.status == BuildStatus::Succeeded {
            let digest = result
                .digest
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} {} #{}: {} {}",
                if result.action == Action::Rebase {
                    "↻"
                } else {
                    "✓"
                },
                result.image,
                result.build.unwrap_or(0),
                if result.action == Action::Rebase {
                    "rebased"
                } else {
                    "built"
                },
                digest
            );
        }
    }
    for result in &failed {
        let number = result.build.unwrap_or(0);
        match &result.failure {
            Some(failure) => {
                let _ = writeln!(
                    out,
                    "  ✗ {} #{number} failed in {}: {}",
                    result.image, failure.step, failure.message
                );
            }
            None => {
                let _ = writeln!(out, "  ✗ {} #{number} {}", result.image, result.status);
            }
        }
        let _ = writeln!(
            out,
            "      see its log: kpackd logs {} --build {number}",
            result.image
        );
    }
    let published = print_publishes(&mut out, report);
    let _ = writeln!(
        out,
        "\nApply {}: {}{} built, {} rebased, {} forgotten, {} failed{}.",
        if report.canceled {
            "canceled"
        } else {
            "complete"
        },
        published,
        count(Action::Build, BuildStatus::Succeeded),
        count(Action::Rebase, BuildStatus::Succeeded),
        report
            .results
            .iter()
            .filter(|r| r.status == ResultStatus::Forgotten)
            .count(),
        failed
            .iter()
            .filter(|r| r.status == BuildStatus::Failed)
            .count(),
        match failed
            .iter()
            .filter(|r| r.status == BuildStatus::Canceled)
            .count()
        {
            0 => String::new(),
            n => format!(", {n} canceled"),
        }
    );
}

/// A line per publish, and the summary's count of them ("" when none ran).
fn print_publishes(out: &mut impl Write, report: &ApplyReport) -> String {
    if report.publishes.is_empty() {
        return String::new();
    }
    for publish in &report.publishes {
        let _ = match (publish.status, &publish.failure) {
            (PublishStatus::Succeeded, _) => writeln!(
                out,
                "  ✓ builder {} #{}: published {} {}",
                publish.builder,
                publish.publish,
                publish.tag,
                publish
                    .digest
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
            (status, failure) => writeln!(
                out,
                "  ✗ builder {} #{} {status}{}\n      see its log: {}",
                publish.builder,
                publish.publish,
                failure
                    .as_deref()
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default(),
                publish.log.display()
            ),
        };
    }
    let succeeded = report
        .publishes
        .iter()
        .filter(|p| p.status == PublishStatus::Succeeded)
        .count();
    let failed = report.publishes.len() - succeeded;
    match failed {
        0 => format!("{succeeded} published, "),
        n => format!("{succeeded} published, {n} publish failed, "),
    }
}
