//! The counters `GET /metrics` serves, in the Prometheus text exposition format
//! (version 0.0.4). The watch loop owns them; nothing else writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::reconciler::{ReconcileReport, Upstream};

/// Upper bounds of the build duration buckets, in seconds: a rebase takes seconds, a
/// cold build many minutes.
const DURATION_BUCKETS: [f64; 11] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// By (outcome, reasons joined with ",", as kpack's reason annotation).
    builds: BTreeMap<(&'static str, String), u64>,
    /// Cumulative counts per bucket of [`DURATION_BUCKETS`].
    duration_buckets: [u64; DURATION_BUCKETS.len()],
    duration_count: u64,
    duration_sum: f64,
    poll_errors: BTreeMap<String, u64>,
    reconciles: u64,
    reload_errors: u64,
}

impl Metrics {
    pub fn record_reconcile(&mut self, report: &ReconcileReport) {
        self.reconciles += 1;
        for build in &report.builds {
            *self
                .builds
                .entry((build.outcome.as_str(), build.reasons.join(",")))
                .or_default() += 1;
            let seconds = build.duration.as_secs_f64();
            for (count, bound) in self.duration_buckets.iter_mut().zip(DURATION_BUCKETS) {
                if seconds <= bound {
                    *count += 1;
                }
            }
            self.duration_count += 1;
            self.duration_sum += seconds;
        }
        for error in &report.upstream_errors {
            self.record_poll_error(&error.upstream);
        }
    }

    fn record_poll_error(&mut self, upstream: &Upstream) {
        *self.poll_errors.entry(upstream.to_string()).or_default() += 1;
    }

    pub fn record_reload_error(&mut self) {
        self.reload_errors += 1;
    }

    pub fn render(&self, queue_length: usize) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "kpackd_builds_total",
            "counter",
            "Builds and rebases that ended, by outcome and reasons.",
        );
        for ((outcome, reason), n) in &self.builds {
            sample(
                &mut out,
                "kpackd_builds_total",
                &[("outcome", outcome), ("reason", reason)],
                *n as f64,
            );
        }
        header(
            &mut out,
            "kpackd_build_duration_seconds",
            "histogram",
            "How long builds and rebases took.",
        );
        for (count, bound) in self.duration_buckets.iter().zip(DURATION_BUCKETS) {
            sample(
                &mut out,
                "kpackd_build_duration_seconds_bucket",
                &[("le", &bound.to_string())],
                *count as f64,
            );
        }
        sample(
            &mut out,
            "kpackd_build_duration_seconds_bucket",
            &[("le", "+Inf")],
            self.duration_count as f64,
        );
        sample(
            &mut out,
            "kpackd_build_duration_seconds_sum",
            &[],
            self.duration_sum,
        );
        sample(
            &mut out,
            "kpackd_build_duration_seconds_count",
            &[],
            self.duration_count as f64,
        );
        header(
            &mut out,
            "kpackd_upstream_poll_errors_total",
            "counter",
            "Failed resolutions of a git remote or registry tag.",
        );
        for (upstream, n) in &self.poll_errors {
            sample(
                &mut out,
                "kpackd_upstream_poll_errors_total",
                &[("upstream", upstream)],
                *n as f64,
            );
        }
        header(
            &mut out,
            "kpackd_queue_length",
            "gauge",
            "Builds and rebases planned but not started.",
        );
        sample(&mut out, "kpackd_queue_length", &[], queue_length as f64);
        header(
            &mut out,
            "kpackd_reconciles_total",
            "counter",
            "Reconciles (plan and apply) run by watch.",
        );
        sample(
            &mut out,
            "kpackd_reconciles_total",
            &[],
            self.reconciles as f64,
        );
        header(
            &mut out,
            "kpackd_config_reload_errors_total",
            "counter",
            "Edits of the configuration rejected as invalid.",
        );
        sample(
            &mut out,
            "kpackd_config_reload_errors_total",
            &[],
            self.reload_errors as f64,
        );
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape_label(out, value);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and line feed.
fn escape_label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}
