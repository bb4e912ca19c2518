//! Registry credentials from a docker `config.json`: `auths` entries (base64 `auth`,
//! `username`/`password`, `identitytoken`) and credential helpers (`credHelpers`,
//! `credsStore`, run as `docker-credential-<name> get`). Secrets never reach logs.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::Deserialize;

use super::OciError;

/// What kpackd presents to a registry.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credential {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth refresh token (`identitytoken`); sent to the token service with basic
    /// auth, as registries that issue them accept.
    IdentityToken {
        username: String,
        token: String,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Anonymous => write!(f, "Anonymous"),
            Credential::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credential::IdentityToken { username, .. } => {
                write!(
                    f,
                    "IdentityToken {{ username: {username:?}, token: <redacted> }}"
                )
            }
        }
    }
}

impl Credential {
    /// The user and secret sent with Basic authentication (to a registry that asks
    /// for it, or to its token service); `None` when anonymous.
    pub(crate) fn basic_pair(&self) -> Option<(&str, &str)> {
        match self {
            Credential::Anonymous => None,
            Credential::Basic { username, password } => Some((username, password)),
            Credential::IdentityToken { username, token } => Some((username, token)),
        }
    }
}

/// Where credentials come from: a docker config file, or none. The path is chosen
/// by the caller so that tests (and kpack.toml) need not touch process-wide
/// environment variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialSource {
    config: Option<PathBuf>,
}

impl CredentialSource {
    /// No credentials: every registry is accessed anonymously.
    pub fn anonymous() -> CredentialSource {
        CredentialSource { config: None }
    }

    /// The docker config at `path` (a missing file means anonymous access).
    pub fn docker_config(path: impl Into<PathBuf>) -> CredentialSource {
        CredentialSource {
            config: Some(path.into()),
        }
    }

    /// Docker's own lookup: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn from_env() -> CredentialSource {
        let path = std::env::var_os("DOCKER_CONFIG")
            .map(|d| PathBuf::from(d).join("config.json"))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker/config.json"))
            });
        CredentialSource { config: path }
    }

    pub fn config_path(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// The credential for `registry` (`host[:port]`).
    pub fn lookup(&self, registry: &str) -> Result<Credential, OciError> {
        let Some(path) = &self.config else {
            return Ok(Credential::Anonymous);
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credential::Anonymous),
            Err(e) => return Err(OciError::io(path, e)),
        };
        let config: DockerConfig =
            serde_json::from_str(&text).map_err(|e| OciError::Credentials {
                registry: registry.into(),
                reason: format!("{} is not a valid docker config: {e}", path.display()),
            })?;
        config.lookup(registry)
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

impl DockerConfig {
    fn lookup(&self, registry: &str) -> Result<Credential, OciError> {
        let wanted = normalise_host(registry);
        if let Some(helper) = self
            .cred_helpers
            .iter()
            .find(|(host, _)| normalise_host(host) == wanted)
            .map(|(_, helper)| helper)
        {
            return run_helper(helper, registry);
        }
        if let Some(entry) = self
            .auths
            .iter()
            .find(|(host, _)| normalise_host(host) == wanted)
            .map(|(_, entry)| entry)
        {
            return entry.credential(registry);
        }
        match &self.creds_store {
            Some(store) => run_helper(store, registry),
            None => Ok(Credential::Anonymous),
        }
    }
}

impl AuthEntry {
    fn credential(&self, registry: &str) -> Result<Credential, OciError> {
        let bad = |reason: &str| OciError::Credentials {
            registry: registry.into(),
            reason: reason.into(),
        };
        let (username, password) = match (&self.auth, &self.username, &self.password) {
            (Some(auth), _, _) if !auth.is_empty() => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| bad("the `auth` field is not base64"))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| bad("the `auth` field is not UTF-8 once decoded"))?;
                let (user, pass) = decoded
                    .split_once(':')
                    .ok_or_else(|| bad("the `auth` field is not `username:password`"))?;
                (user.to_string(), pass.to_string())
            }
            (_, Some(user), Some(pass)) => (user.clone(), pass.clone()),
            _ => (String::new(), String::new()),
        };
        match &self.identitytoken {
            Some(token) if !token.is_empty() => Ok(Credential::IdentityToken {
                username: if username.is_empty() {
                    "<token>".into()
                } else {
                    username
                },
                token: token.clone(),
            }),
            _ if username.is_empty() => Ok(Credential::Anonymous),
            _ => Ok(Credential::Basic { username, password }),
        }
    }
}

/// `https://index.docker.io/v1/`, `index.docker.io`, `docker.io` → `docker.io`;
/// `http://host:5000/v2/` → `host:5000`.
fn normalise_host(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => host,
    }
}

/// Runs `docker-credential-<helper> get` with the server URL on stdin.
fn run_helper(helper: &str, registry: &str) -> Result<Credential, OciError> {
    let program = format!("docker-credential-{helper}");
    let server = if normalise_host(registry) == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    };
    let failed = |reason: String| OciError::Credentials {
        registry: registry.into(),
        reason: format!("`{program} get` {reason}"),
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(format!("could not be started: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .map_err(|e| failed(format!("did not take its input: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(format!("did not finish: {e}")))?;
    if !out.status.success() {
        // Helpers answer "credentials not found" with a failure status; that is
        // anonymous access, not an error. The output is not shown: it may hold secrets.
        tracing::debug!(%program, registry, "credential helper has no credentials");
        return Ok(Credential::Anonymous);
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HelperAnswer {
        username: String,
        secret: String,
    }
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout)
        .map_err(|_| failed("answered something that is not its JSON format".into()))?;
    if answer.username == "<token>" {
        Ok(Credential::IdentityToken {
            username: answer.username,
            token: answer.secret,
        })
    } else {
        Ok(Credential::Basic {
            username: answer.username,
            password: answer.secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(json: &str, registry: &str) -> Credential {
        serde_json::from_str::<DockerConfig>(json)
            .unwrap()
            .lookup(registry)
            .unwrap()
    }

    #[test]
    fn auths_in_every_spelling() {
        // "user:pass"
        let json = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
                                 "http://127.0.0.1:5000/v2/":{"username":"u","password":"p"},
                                 "ghcr.io":{"identitytoken":"tok"}}}"#;
        assert_eq!(
            lookup(json, "docker.io"),
            Credential::Basic {
                username: "user".into(),
                password: "pass".into()
            }
        );
        assert_eq!(
            lookup(json, "127.0.0.1:5000"),
            Credential::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert!(matches!(
            lookup(json, "ghcr.io"),
            Credential::IdentityToken { .. }
        ));
        assert_eq!(lookup(json, "quay.io"), Credential::Anonymous);
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credential::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn missing_helper_is_a_clear_error() {
        let json = r#"{"credHelpers":{"reg.example":"kpackd-test-absent"}}"#;
        let err = serde_json::from_str::<DockerConfig>(json)
            .unwrap()
            .lookup("reg.example")
            .unwrap_err();
        assert!(err
            .to_string()
            .contains("docker-credential-kpackd-test-absent"));
    }
}
