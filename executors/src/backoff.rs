//! Waiting after failures: a wait that doubles with each failure in a row, up to a bound,
//! spread at random so that many clients failing together do not try again together.
//! Registry requests retry with it ([`crate::oci::RetryPolicy`]), and `kpackd watch`
//! spaces its polls of an upstream that keeps failing with it.

use std::time::Duration;

/// `base` doubled for each of `failures`, at most `max`.
pub fn doubling(base: Duration, failures: u32, max: Duration) -> Duration {
    let factor = 2u32.checked_pow(failures).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max)
}

/// Full jitter: uniformly random between nothing and `ceiling`.
pub fn full_jitter(ceiling: Duration) -> Duration {
    ceiling.mul_f64(fastrand::f64())
}

/// `d` give or take `spread` (a fraction of it), uniformly at random.
pub fn jitter(d: Duration, spread: f64) -> Duration {
    d.mul_f64(1.0 - spread + 2.0 * spread * fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_up_to_the_bound() {
        let second = Duration::from_secs(1);
        let max = Duration::from_secs(10);
        assert_eq!(doubling(second, 0, max), second);
        assert_eq!(doubling(second, 3, max), 8 * second);
        assert_eq!(doubling(second, 4, max), max);
        assert_eq!(doubling(second, u32::MAX, max), max);
    }

    #[test]
    fn jitter_stays_in_its_span() {
        let d = Duration::from_secs(100);
        for _ in 0..1000 {
            assert!(full_jitter(d) <= d);
            let j = jitter(d, 0.1);
            assert!(
                j >= Duration::from_secs(90) && j <= Duration::from_secs(110),
                "{j:?}"
            );
        }
    }
}
