//! Push webhooks: which repository a GitHub or GitLab payload names, which git
//! upstreams that is, and whether the request carries the shared secret.

use hmac::{KeyInit, Mac};
use sha2::Sha256;

use super::reconciler::Upstream;

/// Every URL a push payload gives for its repository (GitHub: `repository.clone_url`,
/// `html_url`, `ssh_url`, `git_url`; GitLab: `project.git_http_url`, `git_ssh_url`,
/// `web_url`, `repository.url`…). None for a body that is empty or names nothing: "poll
/// every git upstream".
pub(crate) fn repository_urls(body: &[u8]) -> Result<Option<Vec<String>>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let payload: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    const FIELDS: [&str; 8] = [
        "clone_url",
        "html_url",
        "ssh_url",
        "git_url",
        "git_http_url",
        "git_ssh_url",
        "web_url",
        "url",
    ];
    let urls: Vec<String> = ["repository", "project"]
        .iter()
        .filter_map(|key| payload.get(key))
        .flat_map(|object| FIELDS.iter().filter_map(|f| object.get(f)))
        .filter_map(|v| v.as_str())
        .map(str::to_string)
        .collect();
    Ok((!urls.is_empty()).then_some(urls))
}

/// The git upstreams that are the repository at one of `urls`, however each is spelled
/// (https or ssh, with or without `.git`).
pub(crate) fn matching<'a>(
    urls: &[String],
    upstreams: impl IntoIterator<Item = &'a Upstream>,
) -> Vec<Upstream> {
    let wanted: Vec<String> = urls.iter().map(|u| repository_key(u)).collect();
    upstreams
        .into_iter()
        .filter(|u| matches!(u, Upstream::Git(url) if wanted.contains(&repository_key(url))))
        .cloned()
        .collect()
}

/// `host/path` of a git URL, lower-case host, without scheme, user, port, `.git` or
/// trailing slash: `https://github.com/o/r.git`, `git@github.com:o/r` and
/// `ssh://git@github.com:22/o/r` all give `github.com/o/r`.
pub(crate) fn repository_key(url: &str) -> String {
    let url = url.trim();
    let (rest, scp_like) = match url.split_once("://") {
        Some((_, rest)) => (rest, false),
        None => (url, true),
    };
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    // `git@host:owner/repo`: a colon before any slash separates host and path.
    let colon_first = match (rest.find(':'), rest.find('/')) {
        (Some(colon), Some(slash)) => colon < slash,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let (host, path) = if scp_like && colon_first {
        rest.split_once(':').unwrap_or((rest, ""))
    } else {
        rest.split_once('/').unwrap_or((rest, ""))
    };
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    format!("{host}/{path}")
}

/// Whether a request proves it knows `secret`: GitHub's `X-Hub-Signature-256`
/// (`sha256=` + HMAC-SHA256 of the body), GitLab's `X-Gitlab-Token`, or
/// `Authorization: Bearer <secret>`.
pub(crate) fn authorized(secret: &str, headers: &hyper::HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(signature) = header("x-hub-signature-256") {
        let Some(hex_mac) = signature.strip_prefix("sha256=") else {
            return false;
        };
        let Ok(expected) = hex::decode(hex_mac) else {
            return false;
        };
        let Ok(mut mac) = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(body);
        return mac.verify_slice(&expected).is_ok();
    }
    let token = header("x-gitlab-token")
        .or_else(|| header("authorization").and_then(|v| v.strip_prefix("Bearer ")));
    token.is_some_and(|t| constant_time_eq(t.as_bytes(), secret.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The `X-Hub-Signature-256` value for `body` under `secret`.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    match <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        // HMAC takes keys of any length.
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_repository_however_spelled() {
        for url in [
            "https://github.com/acme/app.git",
            "https://github.com/acme/app",
            "https://GitHub.com/acme/app/",
            "git@github.com:acme/app.git",
            "ssh://git@github.com:22/acme/app.git",
            "git://github.com/acme/app.git",
            "github.com/acme/app",
        ] {
            assert_eq!(repository_key(url), "github.com/acme/app", "{url}");
        }
        assert_ne!(
            repository_key("https://github.com/acme/app2"),
            "github.com/acme/app"
        );
    }

    #[test]
    fn github_and_gitlab_payloads() {
        let github = br#"{"ref":"refs/heads/main","repository":{"clone_url":"https://github.com/acme/app.git","ssh_url":"git@github.com:acme/app.git"}}"#;
        let gitlab = br#"{"project":{"git_http_url":"https://gitlab.com/acme/lib.git","git_ssh_url":"git@gitlab.com:acme/lib.git"}}"#;
        let upstreams = [
            Upstream::Git("git@github.com:acme/app".into()),
            Upstream::Git("https://gitlab.com/acme/lib".into()),
            Upstream::Registry("docker.io/library/app:latest".into()),
        ];
        let urls = repository_urls(github).unwrap().unwrap();
        assert_eq!(matching(&urls, &upstreams), vec![upstreams[0].clone()]);
        let urls = repository_urls(gitlab).unwrap().unwrap();
        assert_eq!(matching(&urls, &upstreams), vec![upstreams[1].clone()]);
        assert_eq!(repository_urls(b"").unwrap(), None);
        assert_eq!(repository_urls(b"{}").unwrap(), None);
        assert!(repository_urls(b"not json").is_err());
    }

    #[test]
    fn signatures() {
        let body = b"{}";
        let mut headers = hyper::HeaderMap::new();
        assert!(!authorized("s3cret", &headers, body));
        let signature = github_signature("s3cret", body);
        headers.insert("x-hub-signature-256", signature.parse().unwrap());
        assert!(authorized("s3cret", &headers, body));
        assert!(!authorized("other", &headers, body));
        assert!(!authorized("s3cret", &headers, b"{ }"));
        let mut headers = hyper::HeaderMap::new();
        headers.insert("x-gitlab-token", "s3cret".parse().unwrap());
        assert!(authorized("s3cret", &headers, body));
        assert!(!authorized("s3cre", &headers, body));
    }
}
