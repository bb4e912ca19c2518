//! A plan as people read it, terraform-like: one headline per change, its reasons and
//! what changed, the notes, and a summary line.

use std::fmt::Write as _;

use owo_colors::{OwoColorize, Style};
use planner::diff::FailureKind;
use planner::plan::{Action, BuilderAction, BuilderChange, Change, Detail, Failing, Plan};
use planner::Reason;

use super::short;

/// Headlines are padded to this width so the reasons line up, as in terraform's plans.
const HEADLINE_WIDTH: usize = 45;

/// A failing image's error is shown up to this many lines; its log has the rest.
const FAILING_ERROR_LINES: usize = 6;

/// The plan for people, terraform-like; ANSI colours only when `color`.
pub fn render(plan: &Plan, color: bool) -> String {
    let paint = Painter { color };
    let mut out = String::new();
    let any_change = changes_text(&mut out, plan, &paint);
    if !plan.notes.is_empty() {
        if any_change {
            out.push('\n');
        }
        for note in &plan.notes {
            let _ = writeln!(
                out,
                "  {} stack \"{}\": {}: {} → {} (no work now; the next build of {} uses it)",
                paint.style("#", Style::new().dimmed()),
                note.stack,
                note.what,
                short(&note.old.to_string()),
                short(&note.new.to_string()),
                quoted_list(&note.images)
            );
        }
    }
    if !plan.failing.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        for failing in &plan.failing {
            failing_text(&mut out, failing, &paint);
        }
    }
    if !out.is_empty() {
        out.push('\n');
    }
    summary_text(&mut out, plan, &paint);
    out
}

/// The builders to publish, then the images with work (publishes run first: the images
/// built with a builder wait for its publish), each a headline with its reasons and
/// details. Whether there was any.
fn changes_text(out: &mut String, plan: &Plan, paint: &Painter) -> bool {
    let shown: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::Noop)
        .collect();
    let builders: Vec<&BuilderChange> = plan
        .builders
        .iter()
        .filter(|b| b.action != BuilderAction::Noop)
        .collect();
    if shown.is_empty() && builders.is_empty() {
        return false;
    }
    out.push_str("kpackd will perform the following actions:\n\n");
    let builder_headlines: Vec<(String, Style)> =
        builders.iter().map(|b| builder_headline(b)).collect();
    let headlines: Vec<(String, Style)> = shown.iter().map(|c| headline(c)).collect();
    let width = headlines
        .iter()
        .chain(&builder_headlines)
        .map(|(h, _)| h.chars().count() + 2)
        .max()
        .unwrap_or(0)
        .max(HEADLINE_WIDTH);
    for (change, (headline, style)) in builders.iter().zip(builder_headlines) {
        let pad = width - headline.chars().count();
        let _ = write!(out, "{}", paint.style(&headline, style));
        if change.action == BuilderAction::Blocked {
            blocked_text(out, &change.blocked_by);
        } else {
            let _ = writeln!(
                out,
                "{:pad$}({})",
                "",
                reasons_of(&change.reasons, &change.details)
            );
        }
        details_text(out, &change.details, paint);
    }
    for (change, (headline, style)) in shown.iter().zip(headlines) {
        let pad = width - headline.chars().count();
        let _ = write!(out, "{}", paint.style(&headline, style));
        match change.action {
            Action::Blocked => blocked_text(out, &change.blocked_by),
            Action::Forget => {
                let _ = writeln!(
                    out,
                    "{:pad$}{}",
                    "",
                    paint.dim("(not in kpack.toml; its tags stay in the registry)")
                );
            }
            _ => {
                let _ = writeln!(out, "{:pad$}({})", "", reasons_text(change));
            }
        }
        details_text(out, &change.details, paint);
    }
    true
}

/// Ends a blocked headline's line, then one line per cause.
fn blocked_text(out: &mut String, causes: &[impl std::fmt::Display]) {
    out.push('\n');
    for cause in causes {
        let _ = writeln!(out, "      {cause}");
    }
}

/// The last line: `No changes…`, or `Plan: …` with the count of each action and, in red,
/// what is blocked or failing.
fn summary_text(out: &mut String, plan: &Plan, paint: &Painter) {
    let builders_blocked = plan
        .builders
        .iter()
        .filter(|b| b.action == BuilderAction::Blocked)
        .count();
    if !plan.has_changes() && plan.summary.blocked == 0 && builders_blocked == 0 {
        if plan.failing.is_empty() {
            out.push_str(&paint.bold("No changes. The fleet is up to date."));
        } else {
            let failing = match plan.failing.len() {
                1 => "1 image's last build failed".to_string(),
                n => format!("{n} images' last builds failed"),
            };
            let _ = write!(
                out,
                "{} {}",
                paint.bold("No changes, but"),
                paint.style(&format!("{failing}."), Style::new().red().bold())
            );
        }
        out.push('\n');
        return;
    }
    let first_builds = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Build && c.last_build.is_none())
        .count();
    let publishes = match plan.publishes() {
        0 => String::new(),
        n => format!(" {n} to publish,"),
    };
    let _ = write!(
        out,
        "{}{publishes} {} to build, {} to rebuild, {} to rebase, {} to forget, {} unchanged",
        paint.bold("Plan:"),
        first_builds,
        plan.summary.build - first_builds,
        plan.summary.rebase,
        plan.summary.forget,
        plan.summary.noop
    );
    let alarms = [
        (plan.summary.blocked > 0).then(|| format!("{} blocked", plan.summary.blocked)),
        match builders_blocked {
            0 => None,
            1 => Some("1 builder blocked".to_string()),
            n => Some(format!("{n} builders blocked")),
        },
        (!plan.failing.is_empty()).then(|| format!("{} failing", plan.failing.len())),
    ];
    for alarm in alarms.into_iter().flatten() {
        let _ = write!(out, ", {}", paint.style(&alarm, Style::new().red().bold()));
    }
    out.push_str(".\n");
}

/// `  ✗ image "api" failed in building (build #4)`, its error, and what builds it again.
fn failing_text(out: &mut String, failing: &Failing, paint: &Painter) {
    let headline = format!(
        "  ✗ image \"{}\" failed in {} (build #{})",
        failing.image, failing.step, failing.build
    );
    let _ = writeln!(out, "{}", paint.style(&headline, Style::new().red().bold()));
    for line in failing.error.lines().take(FAILING_ERROR_LINES) {
        let _ = writeln!(out, "      {line}");
    }
    let again = match failing.kind {
        FailureKind::Build => format!(
            "built again when an input changes, or after `kpackd trigger {}`",
            failing.image
        ),
        FailureKind::Infrastructure => format!(
            "failed outside the build {} times in a row; `kpackd trigger {}` tries again",
            failing.retries + 1,
            failing.image
        ),
    };
    let _ = writeln!(
        out,
        "      {}",
        paint.dim(&format!("({again}; `kpackd logs {}`)", failing.image))
    );
}

/// `  ~ image "hello" will be rebuilt`, and the style of its symbol.
fn headline(change: &Change) -> (String, Style) {
    let (symbol, verb, style) = match change.action {
        Action::Build if change.last_build.is_none() => {
            ("+", "will be built", Style::new().green())
        }
        Action::Build => ("~", "will be rebuilt", Style::new().yellow()),
        Action::Rebase => ("↻", "will be rebased", Style::new().cyan()),
        Action::Forget => ("-", "will be forgotten", Style::new().red()),
        Action::Blocked => ("!", "is blocked", Style::new().red().bold()),
        Action::Noop => (" ", "is unchanged", Style::new()),
    };
    (
        format!("  {symbol} image \"{}\" {verb}", change.image),
        style,
    )
}

/// `  + builder "default" will be published`, and the style of its symbol.
fn builder_headline(change: &BuilderChange) -> (String, Style) {
    let (symbol, verb, style) = match change.action {
        BuilderAction::Publish if change.last_publish.is_none() => {
            ("+", "will be published", Style::new().green())
        }
        BuilderAction::Publish => ("~", "will be republished", Style::new().yellow()),
        BuilderAction::Blocked => ("!", "is blocked", Style::new().red().bold()),
        BuilderAction::Noop => (" ", "is unchanged", Style::new()),
    };
    (
        format!("  {symbol} builder \"{}\" {verb}", change.builder),
        style,
    )
}

/// Each change of value: `what: old → new`.
fn details_text(out: &mut String, details: &[Detail], paint: &Painter) {
    for detail in details {
        if let (Some(old), Some(new)) = (&detail.old, &detail.new) {
            let _ = writeln!(
                out,
                "      {}: {} → {}",
                detail.what,
                paint.dim(&short(old)),
                short(new)
            );
        }
    }
}

/// `COMMIT, STACK`, with the notes of details that are not a change of value:
/// `CONFIG: first build`.
fn reasons_text(change: &Change) -> String {
    reasons_of(&change.reasons, &change.details)
}

fn reasons_of(reasons: &[Reason], details: &[Detail]) -> String {
    let parts: Vec<String> = reasons
        .iter()
        .map(|reason| {
            let notes: Vec<&str> = details
                .iter()
                .filter(|d| d.reason == *reason && d.old.is_none() && d.new.is_none())
                .map(|d| d.what.as_str())
                .collect();
            if notes.is_empty() {
                reason.to_string()
            } else {
                format!("{reason}: {}", notes.join(", "))
            }
        })
        .collect();
    parts.join(", ")
}

fn quoted_list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    quoted.join(", ")
}

/// Applies styles only when colours were asked for.
struct Painter {
    color: bool,
}

impl Painter {
    fn style(&self, text: &str, style: Style) -> String {
        if self.color {
            text.style(style).to_string()
        } else {
            text.to_string()
        }
    }

    fn dim(&self, text: &str) -> String {
        self.style(text, Style::new().dimmed())
    }

    fn bold(&self, text: &str) -> String {
        self.style(text, Style::new().bold())
    }
}

#[cfg(test)]
mod tests;
