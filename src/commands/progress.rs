//! How apply shows its builds while they run: a line per build on a terminal, updated in
//! place (indicatif), or one plain line per step otherwise (CI logs, pipes).

use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::sync::Mutex;
use std::time::Duration;

use engine::apply::Observer;
use engine::state::{Build, BuildStatus, Publish, PublishStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::render::short;

/// Shows progress on stderr.
pub struct Progress {
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    by_build: Mutex<HashMap<(String, u64), ProgressBar>>,
}

impl Progress {
    /// Bars on a terminal when nothing else writes to it (no `-v` logs), lines otherwise.
    pub fn new(verbose: bool) -> Progress {
        let bars = (std::io::stderr().is_terminal() && !verbose).then(|| Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            style: ProgressStyle::with_template("{spinner} {prefix:<24} {wide_msg} {elapsed:>4}")
                .expect("the template is valid")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏✓"),
            by_build: Mutex::new(HashMap::new()),
        });
        Progress { bars }
    }

    /// Clears the bars that are left, before the summary prints.
    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            let _ = bars.multi.clear();
        }
    }
}

fn label(build: &Build) -> String {
    format!("{} #{}", build.image, build.number)
}

fn step(build: &Build) -> String {
    match build.status {
        BuildStatus::Queued => format!("queued ({})", build.action),
        BuildStatus::Succeeded => match &build.output {
            Some(digest) => format!("succeeded {}", short(&digest.to_string())),
            None => "succeeded".into(),
        },
        BuildStatus::Failed => match &build.failure {
            Some(f) => format!("failed in {}: {}", f.step, first_line(&f.message)),
            None => "failed".into(),
        },
        status => status.to_string(),
    }
}

/// Writes `text` and a newline to stderr at once: one write, not one per piece, so that
/// a thousand builds' lines cost a thousand writes and never interleave.
fn line(text: &str) {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    let _ = std::io::stderr().write_all(&bytes);
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

impl Observer for Progress {
    fn moved(&self, build: &Build) {
        let Some(bars) = &self.bars else {
            line(&format!("{}: {}", label(build), step(build)));
            return;
        };
        let key = (build.image.clone(), build.number);
        let mut by_build = bars.by_build.lock().unwrap_or_else(|e| e.into_inner());
        let bar = by_build.entry(key.clone()).or_insert_with(|| {
            let bar = bars.multi.add(ProgressBar::new_spinner());
            bar.set_style(bars.style.clone());
            bar.set_prefix(label(build));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(step(build));
        if build.status.is_end() {
            bar.finish();
            by_build.remove(&key);
        }
    }

    /// On a terminal, a build's latest output line follows its step.
    fn said(&self, image: &str, number: u64, line: &str) {
        let Some(bars) = &self.bars else {
            return;
        };
        let by_build = bars.by_build.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bar) = by_build.get(&(image.to_string(), number)) {
            let step = bar.message();
            let step = step.split(" · ").next().unwrap_or_default();
            bar.set_message(format!("{step} · {}", line.trim()));
        }
    }

    /// A publish shows like a build, labelled `builder NAME #N`.
    fn publish_moved(&self, publish: &Publish) {
        let label = format!("builder {} #{}", publish.builder, publish.number);
        let step = match (publish.status, &publish.digest, &publish.failure) {
            (PublishStatus::Queued, ..) => "queued (publish)".to_string(),
            (PublishStatus::Succeeded, Some(digest), _) => {
                format!("published {}", short(&digest.to_string()))
            }
            (PublishStatus::Failed, _, Some(failure)) => format!("failed: {}", first_line(failure)),
            (status, ..) => status.to_string(),
        };
        let Some(bars) = &self.bars else {
            line(&format!("{label}: {step}"));
            return;
        };
        let key = (format!("builder {}", publish.builder), publish.number);
        let mut by_build = bars.by_build.lock().unwrap_or_else(|e| e.into_inner());
        let bar = by_build.entry(key.clone()).or_insert_with(|| {
            let bar = bars.multi.add(ProgressBar::new_spinner());
            bar.set_style(bars.style.clone());
            bar.set_prefix(label);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(step);
        if publish.status.is_end() {
            bar.finish();
            by_build.remove(&key);
        }
    }

    fn forgotten(&self, image: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(format!("- {image}: forgotten"));
            }
            None => line(&format!("{image}: forgotten")),
        }
    }
}
