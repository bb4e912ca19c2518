//! The `[kpackd]` table: where state lives, how much runs at once, registries, platform.

use std::num::NonZeroU32;
use std::time::Duration;

use imageref::Platform;
use toml::Spanned;

use super::values::resolve;
use super::Validator;
use crate::config::SettingsTable;
use crate::diagnostic::Problem;
use crate::model::{RegistryTimeouts, Settings};

const DEFAULT_STATE_DIR: &str = ".kpackd";
const DEFAULT_CONCURRENCY: u32 = 2;
/// Rebases at once: each is 7 small requests, so a remote registry's latency bounds
/// them; 32 overlaps those round trips, and keeps a registry from seeing more than 32
/// small requests in flight from one apply (bench/fleet-rebase sweeps the limit).
const DEFAULT_REBASE_CONCURRENCY: u32 = 32;
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);

impl Validator<'_> {
    pub(super) fn settings(&mut self, table: &SettingsTable) -> Settings {
        let state_dir = match &table.state_dir {
            Some(dir) if dir.get_ref().is_empty() => {
                self.report(
                    Problem::new("`state-dir` is empty")
                        .label(dir.span(), "expected a directory")
                        .help(format!(
                            "leave it out for the default, `{DEFAULT_STATE_DIR}`"
                        )),
                );
                None
            }
            Some(dir) => Some(resolve(self.dir, dir.get_ref())),
            None => None,
        }
        .unwrap_or_else(|| resolve(self.dir, DEFAULT_STATE_DIR));
        let concurrency = table
            .concurrency
            .as_ref()
            .map_or(NonZeroU32::new(DEFAULT_CONCURRENCY), |c| {
                self.at_least_one(
                    c,
                    "`concurrency` must be at least 1",
                    "no builds could run",
                    &format!("leave `concurrency` out for the default, {DEFAULT_CONCURRENCY}"),
                )
            })
            .unwrap_or(NonZeroU32::MIN);
        let rebase_concurrency = table
            .rebase_concurrency
            .as_ref()
            .map_or(NonZeroU32::new(DEFAULT_REBASE_CONCURRENCY), |c| {
                self.at_least_one(
                    c,
                    "`rebase-concurrency` must be at least 1",
                    "no rebases could run",
                    &format!(
                        "leave `rebase-concurrency` out for the default, {DEFAULT_REBASE_CONCURRENCY}"
                    ),
                )
            })
            .unwrap_or(NonZeroU32::MIN);
        let poll_interval = table
            .poll_interval
            .as_ref()
            .and_then(|p| self.duration("poll-interval", p))
            .unwrap_or(DEFAULT_POLL_INTERVAL);
        let insecure_registries = table
            .insecure_registries
            .iter()
            .filter_map(|r| self.registry_host(r))
            .collect();
        let platform = table
            .platform
            .as_ref()
            .and_then(|p| {
                let parsed = Platform::parse(p.get_ref());
                if parsed.is_none() {
                    self.report(
                        Problem::new(format!("invalid platform `{}`", p.get_ref()))
                            .label(p.span(), "expected `os/architecture[/variant]`")
                            .help("for example `linux/amd64` or `linux/arm64/v8`"),
                    );
                }
                parsed
            })
            .unwrap_or_else(Platform::host);
        let registry_timeouts = RegistryTimeouts {
            connect: self.timeout("registry-connect-timeout", &table.registry_connect_timeout),
            read: self.timeout("registry-read-timeout", &table.registry_read_timeout),
            request: self.timeout("registry-request-timeout", &table.registry_request_timeout),
        };
        Settings {
            state_dir,
            concurrency,
            rebase_concurrency,
            poll_interval,
            insecure_registries,
            platform,
            registry_timeouts,
            executor: table
                .executor
                .as_ref()
                .map(|e| *e.get_ref())
                .unwrap_or_default(),
        }
    }

    pub(super) fn registry_host(&mut self, host: &Spanned<String>) -> Option<String> {
        let h = host.get_ref();
        let (name, port) = h.rsplit_once(':').unwrap_or((h, ""));
        let valid = !name.is_empty()
            && name
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
            && port.chars().all(|c| c.is_ascii_digit());
        if valid {
            return Some(h.clone());
        }
        let problem = Problem::new(format!("invalid registry `{h}`"))
            .label(host.span(), "expected `host[:port]`");
        self.report(match h.split_once("://") {
            Some((_, rest)) => problem.help(format!(
                "name the host only, without a scheme: `{}`",
                rest.trim_end_matches('/')
            )),
            None => problem.help("for example `registry.internal:5000`"),
        });
        None
    }
}
