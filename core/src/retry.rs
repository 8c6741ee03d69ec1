//! The one backoff policy of Strata's retry loops: reconnecting to the broker, re-subscribing,
//! retrying a commit that lost a race, retrying a failed task or publish.

use std::time::Duration;

/// Delays between tries: `initial` before the first retry, doubled before each further one,
/// never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// A policy starting at `initial`, capped at `max`.
    pub const fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max }
    }

    /// The delay before retry number `retry` (1 is the first retry; 0 is treated as 1).
    pub fn delay(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The delays of retry 1, 2, … without end.
    pub fn delays(self) -> impl Iterator<Item = Duration> {
        (1u32..).map(move |retry| self.delay(retry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let delays: Vec<u128> = backoff.delays().take(5).map(|d| d.as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 700, 700]);
        assert_eq!(backoff.delay(0), Duration::from_millis(100));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_millis(700));
    }
}
