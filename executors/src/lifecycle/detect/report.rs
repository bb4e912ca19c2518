//! What detect says about the groups it tried, when none passed.

use std::fmt;

/// What happened to one group during detect.
#[derive(Debug, Clone)]
pub struct GroupReport {
    pub buildpacks: Vec<DetectReport>,
    /// Why the group failed.
    pub reason: String,
}

/// What one buildpack's `bin/detect` said.
#[derive(Debug, Clone)]
pub struct DetectReport {
    pub id: String,
    pub version: String,
    pub optional: bool,
    pub verdict: Verdict,
    /// The last lines of its output.
    pub output: Vec<String>,
}

/// The result of a `bin/detect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Exit 0.
    Pass,
    /// Exit 100.
    Fail,
    /// Any other exit, a signal, or an unusable plan.
    Error(String),
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => f.write_str("pass"),
            Verdict::Fail => f.write_str("fail (exit 100)"),
            Verdict::Error(why) => write!(f, "error ({why})"),
        }
    }
}

pub(super) struct NoGroupDisplay<'a>(pub(super) &'a [GroupReport]);

impl fmt::Display for NoGroupDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "detect: no buildpack group passed")?;
        for (i, group) in self.0.iter().enumerate() {
            let members: Vec<String> = group
                .buildpacks
                .iter()
                .map(|b| {
                    format!(
                        "{}@{}{}",
                        b.id,
                        b.version,
                        if b.optional { " (optional)" } else { "" }
                    )
                })
                .collect();
            write!(
                f,
                "\n  group {}: {}: {}",
                i + 1,
                members.join(", "),
                group.reason
            )?;
            for bp in &group.buildpacks {
                write!(f, "\n    {}@{}: {}", bp.id, bp.version, bp.verdict)?;
                for line in &bp.output {
                    write!(f, "\n      | {line}")?;
                }
            }
        }
        Ok(())
    }
}
