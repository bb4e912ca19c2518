//! Errors of the OCI layer, and how a registry's answers map onto them: which are
//! worth retrying (connection trouble, 429, 5xx) and which are reported at once.

use std::path::PathBuf;

use oci_client::errors::{OciDistributionError, OciErrorCode};

/// Messages read well after "failed to …: ". They name the reference involved and
/// carry the registry's own message; they never carry credentials.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("cannot reach registry {registry}: {reason}")]
    Unreachable { registry: String, reason: String },
    /// A registry did not answer, or stopped sending, within its deadline. Not
    /// retried: the deadlines are how long the user is willing to wait.
    #[error("{reference}: {what} timed out ({reason})")]
    TimedOut {
        reference: String,
        what: String,
        reason: String,
    },
    #[error("{reference}: not found ({message})")]
    NotFound { reference: String, message: String },
    #[error("{reference}: authentication required or credentials rejected ({message})")]
    Unauthorized { reference: String, message: String },
    #[error("{reference}: access denied ({message})")]
    Denied { reference: String, message: String },
    #[error("{reference}: {}{message}", answered(.status))]
    Registry {
        reference: String,
        /// The HTTP status, when the registry sent one.
        status: Option<u16>,
        message: String,
    },
    #[error("{what}: digest mismatch, expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{reference}: no manifest for platform {platform} (the index has: {available})")]
    PlatformNotFound {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("credentials for {registry}: {reason}")]
    Credentials { registry: String, reason: String },
    #[error("OCI layout {dir}: {reason}")]
    Layout { dir: PathBuf, reason: String },
    #[error("layer entry `{entry}`: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

impl OciError {
    /// Whether trying again later may succeed: connection trouble, 429 and 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            OciError::Unreachable { .. } => true,
            OciError::Registry {
                status: Some(s), ..
            } => *s == 429 || *s >= 500,
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> OciError {
        OciError::Io {
            path: path.into(),
            source,
        }
    }

    /// Maps an oci-client error for an operation on `reference` (shown to people)
    /// at `registry` (the host:port).
    pub(crate) fn from_client(err: OciDistributionError, registry: &str, reference: &str) -> Self {
        let reference = reference.to_string();
        let by_status = |status: u16, message: String| match status {
            401 => OciError::Unauthorized {
                reference: reference.clone(),
                message,
            },
            403 => OciError::Denied {
                reference: reference.clone(),
                message,
            },
            404 => OciError::NotFound {
                reference: reference.clone(),
                message,
            },
            _ => OciError::Registry {
                reference: reference.clone(),
                status: Some(status),
                message,
            },
        };
        match err {
            OciDistributionError::RequestError(e) => {
                if let Some(status) = e.status() {
                    return by_status(status.as_u16(), status.to_string());
                }
                if e.is_timeout() {
                    return OciError::TimedOut {
                        reference,
                        what: "request".into(),
                        reason: error_chain(&e),
                    };
                }
                if e.is_connect() || e.is_request() || e.is_body() {
                    return OciError::Unreachable {
                        registry: registry.to_string(),
                        reason: error_chain(&e),
                    };
                }
                OciError::Registry {
                    reference,
                    status: None,
                    message: error_chain(&e),
                }
            }
            OciDistributionError::ServerError { code, message, .. } => {
                let message = message.trim();
                let message = if message.is_empty() {
                    format!("HTTP {code}")
                } else {
                    envelope_message(message).unwrap_or_else(|| message.to_string())
                };
                by_status(code, message)
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let message = envelope
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", code_name(&e.code), e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let status = envelope.errors.first().map(|e| match &e.code {
                    OciErrorCode::BlobUnknown
                    | OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound => 404,
                    OciErrorCode::Unauthorized => 401,
                    OciErrorCode::Denied => 403,
                    OciErrorCode::Toomanyrequests => 429,
                    _ => 400,
                });
                by_status(status.unwrap_or(400), message)
            }
            OciDistributionError::UnauthorizedError { .. } => by_status(401, "HTTP 401".into()),
            OciDistributionError::AuthenticationFailure(reason) => by_status(401, reason),
            OciDistributionError::ImageManifestNotFoundError(message) => by_status(404, message),
            OciDistributionError::DigestError(e) => OciError::DigestMismatch {
                what: reference,
                expected: String::new(),
                actual: e.to_string(),
            },
            OciDistributionError::IoError(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                OciError::TimedOut {
                    reference,
                    what: "transfer".into(),
                    reason: e.to_string(),
                }
            }
            OciDistributionError::IoError(e) => OciError::Unreachable {
                registry: registry.to_string(),
                reason: e.to_string(),
            },
            other => OciError::Registry {
                reference,
                status: None,
                message: other.to_string(),
            },
        }
    }
}

fn answered(status: &Option<u16>) -> String {
    status.map_or_else(String::new, |s| format!("registry answered HTTP {s}: "))
}

/// The `message` of an OCI error envelope in a body oci-client did not decode.
fn envelope_message(body: &str) -> Option<String> {
    let envelope: oci_client::errors::OciEnvelope = serde_json::from_str(body).ok()?;
    let messages: Vec<String> = envelope
        .errors
        .iter()
        .map(|e| format!("{}: {}", code_name(&e.code), e.message))
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

fn code_name(code: &OciErrorCode) -> String {
    match code {
        OciErrorCode::Other(s) => s.clone(),
        known => serde_json::to_value(known)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{known:?}")),
    }
}

/// An error and its causes, `: `-separated, each cause once ("error sending request:
/// connection refused"): what logs, results and the summary show.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registrys_message_is_kept() {
        let err = OciError::from_client(
            OciDistributionError::ServerError {
                code: 404,
                url: "http://127.0.0.1:5000/v2/a/manifests/x".into(),
                message: r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#.into(),
            },
            "127.0.0.1:5000",
            "127.0.0.1:5000/a:x",
        );
        assert!(matches!(err, OciError::NotFound { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "127.0.0.1:5000/a:x: not found (MANIFEST_UNKNOWN: manifest unknown)"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn transient_or_not() {
        let status = |code: u16| {
            OciError::from_client(
                OciDistributionError::ServerError {
                    code,
                    url: String::new(),
                    message: String::new(),
                },
                "r",
                "r/a:x",
            )
        };
        for code in [429, 500, 502, 503, 504] {
            assert!(status(code).is_transient(), "{code}");
        }
        for code in [400, 401, 403, 404, 405] {
            assert!(!status(code).is_transient(), "{code}");
        }
        assert!(status(503).to_string().contains("HTTP 503"));
    }
}
