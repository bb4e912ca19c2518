//! Registry authorization, shared by every [`ImageStore`](super::ImageStore) of the
//! process: what each registry asks for (learnt from the first `401` a real request
//! gets, never from a `GET /v2/` probe), and Bearer tokens cached per token service,
//! scope and credential until shortly before they expire.
//!
//! A registry that lets a request through unauthenticated costs nothing; one that
//! wants authentication costs one `401` per host and process, then one token request
//! per scope until the token expires.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::header::HeaderValue;

/// What a registry asks for on a `401`, from its `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// Credentials on every request.
    Basic,
    /// A token from the service at `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Challenge {
    /// The challenge in a `WWW-Authenticate` value, if it is Basic or Bearer (with a
    /// realm).
    pub(crate) fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = auth_params(params);
        let realm = params.get("realm")?.clone();
        Some(Challenge::Bearer {
            realm,
            service: params.get("service").cloned(),
        })
    }
}

/// `key=value, key="quoted, value"` → a map with lowercase keys.
fn auth_params(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => match quoted.split_once('"') {
                Some((value, tail)) => (value, tail),
                None => (quoted, ""),
            },
            None => after.split_once(',').unwrap_or((after, "")),
        };
        out.insert(key, value.trim().to_string());
        rest = tail.trim_start().trim_start_matches(',');
    }
    out
}

/// What the process knows of one registry origin (`scheme://host[:port]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Known {
    /// Nothing answered yet: the first request goes alone, the others wait for it.
    Unknown,
    /// Requests went through without authentication (so far).
    Open,
    /// It answered `401` with this challenge.
    Challenged(Challenge),
}

/// One registry origin, as the whole process knows it.
pub(crate) struct Origin {
    known: Mutex<Known>,
    /// Held by the first request to an origin still [`Known::Unknown`], so that a
    /// burst of requests learns the challenge from one `401`, not one each.
    pub(crate) gate: tokio::sync::Mutex<()>,
    /// Whether the warning about withheld credentials was given.
    warned: Mutex<bool>,
}

impl Origin {
    pub(crate) fn known(&self) -> Known {
        self.known
            .lock()
            .expect("the origin state is never left poisoned")
            .clone()
    }

    pub(crate) fn learn(&self, known: Known) {
        *self
            .known
            .lock()
            .expect("the origin state is never left poisoned") = known;
    }

    /// True the first time it is asked.
    pub(crate) fn first_warning(&self) -> bool {
        let mut warned = self
            .warned
            .lock()
            .expect("the warning flag is never left poisoned");
        !std::mem::replace(&mut *warned, true)
    }
}

/// Which token: the service, the scopes (space-separated, as sent), and whose
/// credential (a hash with a per-process key, so the map holds no secret).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TokenKey {
    pub(crate) realm: String,
    pub(crate) service: Option<String>,
    pub(crate) scope: String,
    pub(crate) credential: u64,
}

/// A token and until when it is used.
#[derive(Clone)]
pub(crate) struct Token {
    pub(crate) value: HeaderValue,
    pub(crate) until: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// Tokens kept at most: well above a fleet's repositories times two operations;
/// beyond it, expired tokens are dropped.
const MAX_TOKENS: usize = 8192;

struct Shared {
    origins: Mutex<HashMap<String, Arc<Origin>>>,
    tokens: Mutex<HashMap<TokenKey, Slot>>,
    hasher: RandomState,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| Shared {
        origins: Mutex::new(HashMap::new()),
        tokens: Mutex::new(HashMap::new()),
        hasher: RandomState::new(),
    })
}

/// The process-wide record of `origin` (`scheme://host[:port]`).
pub(crate) fn origin(origin: &str) -> Arc<Origin> {
    shared()
        .origins
        .lock()
        .expect("the origin map is never left poisoned")
        .entry(origin.to_string())
        .or_insert_with(|| {
            Arc::new(Origin {
                known: Mutex::new(Known::Unknown),
                gate: tokio::sync::Mutex::new(()),
                warned: Mutex::new(false),
            })
        })
        .clone()
}

/// A per-process hash of a credential (`None`: anonymous).
pub(crate) fn credential_key(basic: Option<(&str, &str)>) -> u64 {
    match basic {
        None => 0,
        Some((user, secret)) => shared().hasher.hash_one((user, secret)).max(1),
    }
}

/// The slot of `key`: its token, locked while it is being fetched so that
/// concurrent requests for one scope make one token request.
pub(crate) fn slot(key: &TokenKey) -> Slot {
    let mut tokens = shared()
        .tokens
        .lock()
        .expect("the token map is never left poisoned");
    if tokens.len() >= MAX_TOKENS && !tokens.contains_key(key) {
        let now = Instant::now();
        tokens.retain(|_, slot| match slot.try_lock() {
            Ok(token) => token.as_ref().is_some_and(|t| t.until > now),
            Err(_) => true,
        });
    }
    tokens.entry(key.clone()).or_default().clone()
}

/// How long a token is used: its `expires_in` (60 s when absent, as the distribution
/// spec says), less a margin for clock skew and requests in flight, at most a day.
pub(crate) fn lifetime(expires_in: Option<u64>) -> Duration {
    let secs = expires_in.unwrap_or(60).clamp(1, 24 * 3600);
    let margin = (secs / 10).clamp(1, 30);
    Duration::from_secs(secs.saturating_sub(margin).max(1))
}

/// The `Authorization` value for Basic credentials.
pub(crate) fn basic(user: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))
    )
}

/// Whether credentials may be sent to the token `realm` of the registry at `base`
/// (`scheme://host[:port]`): over HTTPS, or to the registry's own host and port.
pub(crate) fn realm_may_receive_credentials(realm: &str, base: &str) -> bool {
    let (Ok(realm), Ok(base)) = (reqwest::Url::parse(realm), reqwest::Url::parse(base)) else {
        return false;
    };
    realm.scheme() == "https" || same_origin(&realm, &base)
}

/// Whether `a` and `b` have one scheme, host and port.
pub(crate) fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            Challenge::parse(r#"Bearer realm="http://other:1/token",service="reg""#),
            Some(Challenge::Bearer {
                realm: "http://other:1/token".into(),
                service: Some("reg".into())
            })
        );
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            Challenge::parse("bearer realm=https://t/x, service=s"),
            Some(Challenge::Bearer {
                realm: "https://t/x".into(),
                service: Some("s".into())
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Bearer service=s"), None);
        assert_eq!(Challenge::parse("Negotiate"), None);
    }

    #[test]
    fn realms() {
        let base = "http://127.0.0.1:5000";
        assert!(realm_may_receive_credentials(
            "https://auth.example/token",
            base
        ));
        assert!(realm_may_receive_credentials(
            "http://127.0.0.1:5000/token",
            base
        ));
        assert!(!realm_may_receive_credentials(
            "http://127.0.0.1:5001/token",
            base
        ));
        assert!(!realm_may_receive_credentials("http://other/token", base));
        assert!(!realm_may_receive_credentials("not a url", base));
    }

    #[test]
    fn lifetimes_keep_a_margin() {
        assert_eq!(lifetime(None), Duration::from_secs(54));
        assert_eq!(lifetime(Some(300)), Duration::from_secs(270));
        assert_eq!(lifetime(Some(3600)), Duration::from_secs(3570));
        assert_eq!(lifetime(Some(1)), Duration::from_secs(1));
        assert_eq!(
            lifetime(Some(u64::MAX)),
            Duration::from_secs(24 * 3600 - 30)
        );
    }

    #[test]
    fn credentials_hash_apart() {
        assert_eq!(credential_key(None), 0);
        let a = credential_key(Some(("u", "p")));
        assert_ne!(a, 0);
        assert_eq!(a, credential_key(Some(("u", "p"))));
        assert_ne!(a, credential_key(Some(("u", "q"))));
    }
}
