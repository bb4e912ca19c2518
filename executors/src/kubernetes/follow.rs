//! Following a build Pod: its status by watch (from the resourceVersion read, read again
//! after a 410 or the end of a watch), its log streamed line by line into the build's
//! [`LogSink`], and its end read as the build's result.
//!
//! A Pod that cannot start is not waited for forever: an image that cannot be pulled, a
//! Pod that cannot be scheduled or whose container cannot be created fails the build
//! once the trouble has lasted [`super::KubeSettings::start_grace`].

use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ContainerState, Pod};
use kube::api::{LogParams, WatchEvent, WatchParams};
use tokio::time::Instant;

use super::spec::CONTAINER;
use super::{Cluster, FailureCause, PodFailure};
use crate::lifecycle::request::{EntrypointFailure, EntrypointResult};
use crate::lifecycle::{LogSink, Phase};
use crate::oci::error_chain;

/// How long one watch request lasts before it is made again.
const WATCH_SECONDS: u32 = 60;
/// How often a waiting Pod is looked at again when nothing happens to it (so that the
/// start grace ends on time).
const TICK: Duration = Duration::from_secs(2);

/// Follows the Pod `name` to its end: its log into `logs`, its result from its
/// termination message.
pub(super) async fn follow(
    cluster: &Cluster,
    name: &str,
    logs: &dyn LogSink,
) -> Result<EntrypointResult, PodFailure> {
    let mut trouble = Trouble::default();
    let pod = wait(cluster, name, Stage::Started, &mut trouble, logs).await?;
    if !ended(&pod) || container_started(&pod) {
        stream_log(cluster, name, logs).await;
    }
    let pod = wait(cluster, name, Stage::Ended, &mut trouble, logs).await?;
    outcome(name, &pod)
}

/// What [`wait`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The container runs (or the Pod ended).
    Started,
    /// The Pod ended.
    Ended,
}

/// What keeps a Pod from starting, since when; and the last reason noted in the log.
#[derive(Debug, Default)]
struct Trouble {
    since: Option<(String, Instant)>,
    noted: Option<String>,
}

/// Waits until the Pod reaches `stage`, failing it when it cannot start within the grace.
async fn wait(
    cluster: &Cluster,
    name: &str,
    stage: Stage,
    trouble: &mut Trouble,
    logs: &dyn LogSink,
) -> Result<Pod, PodFailure> {
    let pods = cluster.pods();
    let grace = cluster.settings.start_grace;
    loop {
        let pod = pods
            .get_opt(name)
            .await
            .map_err(|e| PodFailure::api(&format!("read the Pod {name}"), &e))?
            .ok_or_else(|| gone(name))?;
        if assess(name, &pod, stage, trouble, grace, logs)? {
            return Ok(pod);
        }
        let version = pod.metadata.resource_version.clone().unwrap_or_default();
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(WATCH_SECONDS);
        let stream = match pods.watch(&params, &version).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(pod = name, error = %error_chain(&error), "watch failed; reading the Pod again");
                tokio::time::sleep(TICK).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        let mut last = pod;
        loop {
            let event = match tokio::time::timeout(TICK, stream.try_next()).await {
                // Nothing happened: the grace may have ended.
                Err(_) => {
                    if assess(name, &last, stage, trouble, grace, logs)? {
                        return Ok(last);
                    }
                    continue;
                }
                Ok(Ok(Some(event))) => event,
                // The watch ended or broke: read the Pod again and watch from there.
                Ok(Ok(None)) => break,
                Ok(Err(error)) => {
                    tracing::debug!(pod = name, error = %error_chain(&error), "watch broke");
                    break;
                }
            };
            match event {
                WatchEvent::Added(pod) | WatchEvent::Modified(pod) => {
                    if assess(name, &pod, stage, trouble, grace, logs)? {
                        return Ok(pod);
                    }
                    last = pod;
                }
                WatchEvent::Deleted(_) => return Err(gone(name)),
                WatchEvent::Bookmark(_) => {}
                // 410 Expired (the version is too old) or another error: start again
                // from a fresh read.
                WatchEvent::Error(status) => {
                    tracing::debug!(
                        pod = name,
                        code = status.code,
                        "watch error: {}",
                        status.message
                    );
                    break;
                }
            }
        }
    }
}

fn gone(name: &str) -> PodFailure {
    PodFailure::infrastructure(format!("the Pod {name} was deleted before it ended"))
}

/// Whether the Pod reached `stage`; an error when it has been kept from starting for
/// longer than `grace`. Notes each new reason it waits for in the log.
fn assess(
    name: &str,
    pod: &Pod,
    stage: Stage,
    trouble: &mut Trouble,
    grace: Duration,
    logs: &dyn LogSink,
) -> Result<bool, PodFailure> {
    if ended(pod) || (stage == Stage::Started && container_started(pod)) {
        return Ok(true);
    }
    let Some((reason, message, cause)) = waiting_trouble(pod) else {
        trouble.since = None;
        return Ok(false);
    };
    let note = format!("Pod {name}: {reason}: {message}");
    if trouble.noted.as_deref() != Some(note.as_str()) {
        logs.line(Phase::Prepare, None, &note);
        trouble.noted = Some(note);
    }
    if reason == "InvalidImageName" {
        return Err(PodFailure::build(format!(
            "the Pod {name} cannot start: {reason}: {message}"
        )));
    }
    let since = match &trouble.since {
        Some((kind, since)) if *kind == trouble_kind(&reason) => *since,
        _ => {
            let now = Instant::now();
            trouble.since = Some((trouble_kind(&reason).to_string(), now));
            now
        }
    };
    if since.elapsed() >= grace {
        return Err(PodFailure {
            message: format!(
                "the Pod {name} could not start within {}: {reason}: {message}",
                humantime::format_duration(grace)
            ),
            cause,
        });
    }
    Ok(false)
}

/// Pull errors alternate between two reasons; they are one trouble.
fn trouble_kind(reason: &str) -> &str {
    match reason {
        "ErrImagePull" | "ImagePullBackOff" => "pull",
        other => other,
    }
}

/// What keeps a pending Pod from starting, if anything does: a container waiting for a
/// reason other than being created, or a Pod the scheduler cannot place.
fn waiting_trouble(pod: &Pod) -> Option<(String, String, FailureCause)> {
    let status = pod.status.as_ref()?;
    let waiting = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER)
        .and_then(|c| c.state.as_ref()?.waiting.as_ref());
    if let Some(waiting) = waiting {
        let reason = waiting.reason.clone().unwrap_or_default();
        let message = waiting.message.clone().unwrap_or_default();
        let cause = match reason.as_str() {
            "ContainerCreating" | "PodInitializing" | "" => return None,
            "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull" | "RegistryUnavailable" => {
                FailureCause::Infrastructure
            }
            _ => FailureCause::Build,
        };
        return Some((reason, message, cause));
    }
    let unschedulable = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    })?;
    Some((
        "Unschedulable".to_string(),
        unschedulable.message.clone().unwrap_or_default(),
        FailureCause::Infrastructure,
    ))
}

fn ended(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn container_state(pod: &Pod) -> Option<&ContainerState> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()
}

fn container_started(pod: &Pod) -> bool {
    container_state(pod).is_some_and(|s| {
        s.running.is_some()
            || s.terminated
                .as_ref()
                .is_some_and(|t| t.started_at.is_some())
    })
}

/// Streams the container's log into `logs` until it ends (the container exits). A
/// stream that cannot be opened or breaks is noted and left: the Pod's end still
/// decides the build.
async fn stream_log(cluster: &Cluster, name: &str, logs: &dyn LogSink) {
    let params = LogParams {
        container: Some(CONTAINER.to_string()),
        follow: true,
        ..LogParams::default()
    };
    let reader = match cluster.pods().log_stream(name, &params).await {
        Ok(reader) => reader,
        Err(error) => {
            logs.line(
                Phase::Prepare,
                None,
                &format!("cannot read the log of Pod {name}: {}", error_chain(&error)),
            );
            return;
        }
    };
    let mut lines = std::pin::pin!(reader.lines());
    let mut translator = Translator::default();
    loop {
        match lines.next().await {
            Some(Ok(line)) => translator.forward(&line, logs),
            Some(Err(error)) => {
                logs.line(
                    translator.phase,
                    None,
                    &format!("the log of Pod {name} broke off: {error}"),
                );
                return;
            }
            None => return,
        }
    }
}

/// One line of the entrypoint's output, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogLine<'a> {
    /// `===> BUILD`: a phase begins.
    Phase(Phase),
    /// `[build] [bp] text` or `[build] text`.
    Line {
        phase: Phase,
        buildpack: Option<&'a str>,
        text: &'a str,
    },
    /// Anything else.
    Other(&'a str),
}

/// Reads a line as the entrypoint writes them (the format of kpackd's build logs).
pub fn translate_line(line: &str) -> LogLine<'_> {
    if let Some(name) = line.strip_prefix("===> ") {
        if let Some(phase) = phase_named(&name.to_ascii_lowercase()) {
            return LogLine::Phase(phase);
        }
    }
    let Some(rest) = line.strip_prefix('[') else {
        return LogLine::Other(line);
    };
    let Some((name, rest)) = rest.split_once("] ") else {
        // `[build]` with nothing after it.
        return match rest.strip_suffix(']').and_then(phase_named) {
            Some(phase) => LogLine::Line {
                phase,
                buildpack: None,
                text: "",
            },
            None => LogLine::Other(line),
        };
    };
    let Some(phase) = phase_named(name) else {
        return LogLine::Other(line);
    };
    if let Some(inner) = rest.strip_prefix('[') {
        if let Some((buildpack, text)) = inner.split_once("] ") {
            if !buildpack.is_empty() && !buildpack.contains(' ') {
                return LogLine::Line {
                    phase,
                    buildpack: Some(buildpack),
                    text,
                };
            }
        } else if let Some(buildpack) = inner.strip_suffix(']') {
            if !buildpack.is_empty() && !buildpack.contains(' ') {
                return LogLine::Line {
                    phase,
                    buildpack: Some(buildpack),
                    text: "",
                };
            }
        }
    }
    LogLine::Line {
        phase,
        buildpack: None,
        text: rest,
    }
}

fn phase_named(name: &str) -> Option<Phase> {
    [
        Phase::Prepare,
        Phase::Detect,
        Phase::Analyze,
        Phase::Restore,
        Phase::Build,
        Phase::Export,
    ]
    .into_iter()
    .find(|p| p.as_str() == name)
}

/// Forwards the entrypoint's lines to a [`LogSink`], in the phase last begun.
#[derive(Debug)]
struct Translator {
    phase: Phase,
}

impl Default for Translator {
    fn default() -> Translator {
        Translator {
            phase: Phase::Prepare,
        }
    }
}

impl Translator {
    fn forward(&mut self, line: &str, logs: &dyn LogSink) {
        match translate_line(line) {
            LogLine::Phase(phase) => {
                self.phase = phase;
                logs.phase_started(phase);
            }
            LogLine::Line {
                phase,
                buildpack,
                text,
            } => logs.line(phase, buildpack, text),
            // The result (stdout) and the error line: the build's result and failure
            // are recorded from the termination message.
            LogLine::Other(text)
                if text.starts_with("error: ")
                    || serde_json::from_str::<EntrypointResult>(text).is_ok() => {}
            LogLine::Other(text) => logs.line(self.phase, None, text),
        }
    }
}

/// The build's result from the ended Pod `pod`: its termination message, or why there is
/// none, with the Kubernetes reason.
fn outcome(name: &str, pod: &Pod) -> Result<EntrypointResult, PodFailure> {
    let status = pod.status.clone().unwrap_or_default();
    let terminated = container_state(pod).and_then(|s| s.terminated.clone());
    let message = terminated
        .as_ref()
        .and_then(|t| t.message.clone())
        .unwrap_or_default();
    if phase(pod) == "Succeeded" {
        return serde_json::from_str::<EntrypointResult>(message.trim()).map_err(|e| {
            PodFailure::build(format!(
                "the Pod {name} succeeded without a valid result in its termination message: {e}"
            ))
        });
    }
    let pod_reason = status.reason.clone().unwrap_or_default();
    let pod_message = status.message.clone().unwrap_or_default();
    match pod_reason.as_str() {
        "Evicted" => {
            return Err(PodFailure::infrastructure(format!(
                "the Pod {name} was evicted (Evicted): {pod_message}"
            )))
        }
        "DeadlineExceeded" => {
            let deadline = pod
                .spec
                .as_ref()
                .and_then(|s| s.active_deadline_seconds)
                .unwrap_or_default();
            return Err(PodFailure::infrastructure(format!(
                "the Pod {name} ran past its deadline of {} (DeadlineExceeded): {pod_message}",
                humantime::format_duration(Duration::from_secs(deadline.unsigned_abs()))
            )));
        }
        _ => {}
    }
    if let Ok(failure) = serde_json::from_str::<EntrypointFailure>(message.trim()) {
        return Err(PodFailure::build(failure.error));
    }
    match terminated {
        Some(t) => {
            let reason = t.reason.unwrap_or_default();
            let what = if reason == "OOMKilled" {
                "was killed for using more memory than its limit (OOMKilled)".to_string()
            } else {
                format!("exited {} ({reason})", t.exit_code)
            };
            Err(PodFailure::build(
                format!("the build container of Pod {name} {what}: {message}")
                    .trim_end_matches(": ")
                    .to_string(),
            ))
        }
        None => Err(PodFailure::infrastructure(
            format!("the Pod {name} failed ({pod_reason}): {pod_message}")
                .trim_end_matches(": ")
                .to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoint_lines_read_back_as_phases_and_lines() {
        assert_eq!(translate_line("===> DETECT"), LogLine::Phase(Phase::Detect));
        assert_eq!(
            translate_line("[build] [examples/node] npm install"),
            LogLine::Line {
                phase: Phase::Build,
                buildpack: Some("examples/node"),
                text: "npm install"
            }
        );
        assert_eq!(
            translate_line("[export] Adding layer 'launcher'"),
            LogLine::Line {
                phase: Phase::Export,
                buildpack: None,
                text: "Adding layer 'launcher'"
            }
        );
        assert_eq!(
            translate_line("[build] [a/b] "),
            LogLine::Line {
                phase: Phase::Build,
                buildpack: Some("a/b"),
                text: ""
            }
        );
        assert_eq!(
            translate_line("[build] [not a buildpack] x"),
            LogLine::Line {
                phase: Phase::Build,
                buildpack: None,
                text: "[not a buildpack] x"
            }
        );
        assert_eq!(
            translate_line("error: the build failed"),
            LogLine::Other("error: the build failed")
        );
        assert_eq!(translate_line("[other] x"), LogLine::Other("[other] x"));
        assert_eq!(translate_line("===> LATER"), LogLine::Other("===> LATER"));
    }
}
