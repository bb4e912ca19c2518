//! Retrying transient registry failures: exponential backoff with full jitter, a
//! bounded number of attempts. Permanent failures return at once.

use std::future::Future;
use std::time::Duration;

use crate::backoff;

use super::OciError;

/// How often and how patiently a transient failure is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub attempts: u32,
    /// The backoff ceiling before the second attempt; it doubles for each further one.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails permanently, or the attempts run out; the
    /// last error is returned as is.
    pub(crate) async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, OciError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    let delay = self.backoff(attempt);
                    tracing::debug!(what, attempt, ?delay, error = %e, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Full jitter: uniformly random in `[0, min(max, initial * 2^(attempt-1))]`, so
    /// that many clients failing together do not retry together.
    fn backoff(&self, attempt: u32) -> Duration {
        backoff::full_jitter(backoff::doubling(
            self.initial_backoff,
            attempt.saturating_sub(1),
            self.max_backoff,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn quick() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_until_the_attempts_run_out() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = quick()
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(OciError::Registry {
                    reference: "r".into(),
                    status: Some(503),
                    message: "busy".into(),
                })
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = quick()
            .run("test", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(OciError::NotFound {
                    reference: "r".into(),
                    message: "manifest unknown".into(),
                })
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn backoff_stays_under_the_ceiling() {
        let p = RetryPolicy::default();
        for attempt in 1..30 {
            assert!(p.backoff(attempt) <= p.max_backoff);
        }
    }
}
