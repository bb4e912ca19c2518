//! When each upstream is polled next: every poll interval with ±10% jitter (so that
//! kpackd processes started together do not poll together), doubling the wait after
//! each failure up to a bound, and never twice at once (an upstream is "in flight" until
//! its reconcile ends).
//!
//! Upstreams come due in rounds: when the first is due, every upstream due within the
//! jitter's span (a fifth of the interval) is taken with it, so a fleet's hundred
//! remotes are polled by one reconcile per interval, not by a hundred reconciles that
//! each plan the whole fleet.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::reconciler::Upstream;

/// The longest wait after repeated failures, unless the poll interval is longer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
pub(crate) struct PollSchedule {
    interval: Duration,
    entries: BTreeMap<Upstream, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub due: Instant,
    /// Failures in a row; 0 after a success.
    pub failures: u32,
    pub in_flight: bool,
}

impl PollSchedule {
    pub fn new(interval: Duration) -> PollSchedule {
        PollSchedule {
            interval,
            entries: BTreeMap::new(),
        }
    }

    /// Follows a (re)loaded configuration: new upstreams are due one interval from now,
    /// removed ones are forgotten, and a shorter interval brings due times closer.
    pub fn set_upstreams(&mut self, upstreams: &BTreeSet<Upstream>, interval: Duration) {
        let now = Instant::now();
        self.entries.retain(|u, _| upstreams.contains(u));
        if interval < self.interval {
            for entry in self.entries.values_mut() {
                entry.due = entry.due.min(now + jitter(interval));
            }
        }
        self.interval = interval;
        for upstream in upstreams {
            self.entries
                .entry(upstream.clone())
                .or_insert_with(|| Entry {
                    due: now + jitter(interval),
                    failures: 0,
                    in_flight: false,
                });
        }
    }

    pub fn contains(&self, upstream: &Upstream) -> bool {
        self.entries.contains_key(upstream)
    }

    pub fn upstreams(&self) -> impl Iterator<Item = (&Upstream, &Entry)> {
        self.entries.iter()
    }

    /// The earliest due time of an upstream not already being polled.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| !e.in_flight)
            .map(|e| e.due)
            .min()
    }

    /// The upstreams due by `now`, with every one due within a round's span of it
    /// (see [`round_span`]), marked in flight; none when nothing is due by `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<Upstream> {
        if self.next_due().is_none_or(|due| due > now) {
            return Vec::new();
        }
        let by = now + round_span(self.interval);
        self.entries
            .iter_mut()
            .filter(|(_, e)| !e.in_flight && e.due <= by)
            .map(|(u, e)| {
                e.in_flight = true;
                u.clone()
            })
            .collect()
    }

    /// A webhook or an explicit request: poll at the next reconcile, whatever the due
    /// time. False when the upstream is unknown or already in flight.
    pub fn take_now(&mut self, upstream: &Upstream) -> bool {
        match self.entries.get_mut(upstream) {
            Some(entry) if !entry.in_flight => {
                entry.in_flight = true;
                true
            }
            _ => false,
        }
    }

    /// A reconcile that resolved `polled` ended; `failed` could not be resolved (they
    /// may include upstreams that were not polled on purpose, such as at startup).
    pub fn finished(&mut self, polled: &BTreeSet<Upstream>, failed: &BTreeSet<Upstream>) {
        let now = Instant::now();
        for upstream in polled.union(failed) {
            let Some(entry) = self.entries.get_mut(upstream) else {
                continue;
            };
            entry.in_flight = false;
            if failed.contains(upstream) {
                entry.failures = entry.failures.saturating_add(1);
            } else {
                entry.failures = 0;
            }
            entry.due = now + jitter(backoff(self.interval, entry.failures));
        }
    }
}

/// The wait before the next poll after `failures` failures in a row: the interval, then
/// twice, four times… as long, up to [`MAX_BACKOFF`] (or the interval, if longer).
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    executors::backoff::doubling(interval, failures, interval.max(MAX_BACKOFF))
}

/// How far ahead of a due upstream the others are taken with it: the jitter's whole
/// span, so that upstreams polled together stay together.
pub fn round_span(interval: Duration) -> Duration {
    interval / 5
}

/// `d` give or take 10%, at random.
pub fn jitter(d: Duration) -> Duration {
    executors::backoff::jitter(d, 0.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_bound() {
        let minute = Duration::from_secs(60);
        assert_eq!(backoff(minute, 0), minute);
        assert_eq!(backoff(minute, 1), 2 * minute);
        assert_eq!(backoff(minute, 3), 8 * minute);
        assert_eq!(backoff(minute, 10), MAX_BACKOFF);
        assert_eq!(backoff(minute, u32::MAX), MAX_BACKOFF);
        let day = Duration::from_secs(86_400);
        assert_eq!(backoff(day, 5), day);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let d = Duration::from_secs(100);
        for _ in 0..1000 {
            let j = jitter(d);
            assert!(
                j >= Duration::from_secs(90) && j <= Duration::from_secs(110),
                "{j:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_is_never_polled_twice_at_once() {
        let interval = Duration::from_secs(10);
        let git = Upstream::Git("https://example.com/app.git".into());
        let mut schedule = PollSchedule::new(interval);
        schedule.set_upstreams(&BTreeSet::from([git.clone()]), interval);
        assert!(schedule.take_due(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(12)).await;
        assert_eq!(schedule.take_due(Instant::now()), vec![git.clone()]);
        assert!(schedule.take_due(Instant::now()).is_empty());
        assert!(!schedule.take_now(&git));
        assert_eq!(schedule.next_due(), None);
        schedule.finished(
            &BTreeSet::from([git.clone()]),
            &BTreeSet::from([git.clone()]),
        );
        let due = schedule.next_due().expect("scheduled again");
        let wait = due - Instant::now();
        assert!(
            wait >= Duration::from_secs(18) && wait <= Duration::from_secs(22),
            "{wait:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn upstreams_due_within_a_round_are_polled_together() {
        let interval = Duration::from_secs(100);
        let upstreams: BTreeSet<Upstream> = (0..100)
            .map(|i| Upstream::Git(format!("https://example.com/{i}.git")))
            .collect();
        let mut schedule = PollSchedule::new(interval);
        schedule.set_upstreams(&upstreams, interval);
        for round in 0..3 {
            let due = schedule.next_due().expect("something is due");
            tokio::time::advance(due - Instant::now()).await;
            let taken = schedule.take_due(Instant::now());
            assert_eq!(taken.len(), upstreams.len(), "round {round}");
            assert_eq!(schedule.next_due(), None);
            schedule.finished(&taken.into_iter().collect(), &BTreeSet::new());
        }
        // A failing upstream backs off out of the round.
        let due = schedule.next_due().unwrap();
        tokio::time::advance(due - Instant::now()).await;
        let taken = schedule.take_due(Instant::now());
        let failed = BTreeSet::from([taken[0].clone()]);
        schedule.finished(&taken.into_iter().collect(), &failed);
        let due = schedule.next_due().unwrap();
        tokio::time::advance(due - Instant::now()).await;
        assert_eq!(schedule.take_due(Instant::now()).len(), upstreams.len() - 1);
    }
}
