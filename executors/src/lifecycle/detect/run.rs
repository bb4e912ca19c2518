//! Running one buildpack's `bin/detect` in the sandbox.

use std::fs;
use std::path::PathBuf;

use super::{DetectError, Detector, Verdict};
use crate::lifecycle::descriptor::{ApiVersion, BuildPlan};
use crate::lifecycle::phase::context::refuse_symlink;
use crate::lifecycle::phase::env::buildpack_env;
use crate::lifecycle::phase::program::run_program;
use crate::lifecycle::phase::BuildpackDir;
use crate::lifecycle::Phase;

/// The result of one buildpack's `bin/detect`.
#[derive(Debug, Clone)]
pub(super) struct DetectRun {
    pub(super) verdict: Verdict,
    pub(super) plan: Option<BuildPlan>,
    pub(super) output: Vec<String>,
}

impl Detector<'_> {
    /// Runs `bp`'s `bin/detect` with `run_dir` as its scratch directory (the plan file it
    /// writes is there); a buildpack that cannot run on the target, or has no
    /// `bin/detect`, errors without running.
    pub(super) async fn run_detect(
        &self,
        bp: &BuildpackDir,
        run_dir: PathBuf,
    ) -> Result<DetectRun, DetectError> {
        let Detector {
            ctx,
            sandbox,
            base,
            operator_env,
            logs,
            ..
        } = self;
        let (ctx, logs) = (*ctx, *logs);
        let id = bp.id();
        if !ctx.target.satisfies(&bp.descriptor.effective_targets()) {
            return Ok(DetectRun {
                verdict: Verdict::Error(format!(
                    "no target of the buildpack matches {:?}",
                    ctx.target
                )),
                plan: None,
                output: Vec::new(),
            });
        }
        if !bp.path.join("bin/detect").is_file() {
            return Ok(DetectRun {
                verdict: Verdict::Error("the buildpack has no bin/detect".into()),
                plan: None,
                output: Vec::new(),
            });
        }
        let io_err = |what: &str| {
            let what = format!("{what} for {id}");
            move |source| DetectError::Io { what, source }
        };
        fs::create_dir_all(&run_dir).map_err(io_err("create the run directory"))?;
        let plan_host = run_dir.join("plan.toml");
        fs::write(&plan_host, b"").map_err(io_err("create the plan file"))?;
        ctx.hand_over(&run_dir)
            .and_then(|()| ctx.hand_over(&plan_host))
            .map_err(io_err("give the run directory to the CNB user"))?;
        let (sandbox, tmp) = sandbox.with_run_dir(&run_dir);
        let plan_path = tmp.join("plan.toml").to_string_lossy().into_owned();

        let mut env =
            buildpack_env(ctx, bp, base, operator_env).map_err(io_err("read env files"))?;
        if bp.api() >= ApiVersion::new(0, 8) {
            env.insert("CNB_BUILD_PLAN_PATH".into(), plan_path.clone());
        }
        let program = ctx.buildpack_dir_inside(bp).join("bin/detect");
        let args = [
            ctx.platform_dir_inside().to_string_lossy().into_owned(),
            plan_path,
        ];
        let run = run_program(&sandbox, &program, &args, &env, Phase::Detect, id, logs).await?;
        let verdict = match run.code {
            Some(0) => Verdict::Pass,
            Some(100) => Verdict::Fail,
            Some(code) => Verdict::Error(format!("exit {code}")),
            None => Verdict::Error("killed by a signal".into()),
        };
        let (verdict, plan) = match verdict {
            Verdict::Pass => match refuse_symlink(&plan_host)
                .map_err(|e| e.to_string())
                .and_then(|()| BuildPlan::read(&plan_host).map_err(|e| e.to_string()))
            {
                Ok(plan) => (Verdict::Pass, Some(plan)),
                Err(e) => (Verdict::Error(e), None),
            },
            other => (other, None),
        };
        tracing::debug!(buildpack = id, %verdict, "detect ran");
        Ok(DetectRun {
            verdict,
            plan,
            output: run.tail,
        })
    }
}
