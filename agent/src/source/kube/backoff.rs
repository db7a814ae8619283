//! The watchers' retry policy: exponential with jitter between a floor and a ceiling, reset by
//! the first event after a failure. kube-runtime's own `DefaultBackoff` (0.8 s to 30 s) is
//! client-go's; ours is the same shape with configurable bounds, so that tests (and small
//! clusters) can recover from an outage in about a second.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kube::runtime::utils::Backoff;

/// Exponential backoff: `min`, `2·min`, `4·min` ... capped at `max`, each scaled by a random
/// factor in [0.5, 1.0] so that the agents of many nodes do not retry in step.
#[derive(Debug, Clone)]
pub struct Jittered {
    min: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Jittered {
    pub fn new(min: Duration, max: Duration) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            min,
            max: max.max(min),
            next: min,
            seed: u64::from(nanos) ^ u64::from(std::process::id()) << 32 | 1,
        }
    }

    /// xorshift64: enough randomness for spreading retries.
    fn random_unit(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        (self.seed >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Iterator for Jittered {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(base.mul_f64(0.5 + self.random_unit() / 2.0))
    }
}

impl Backoff for Jittered {
    fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_with_jitter_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(800);
        let mut b = Jittered::new(min, max);
        let first: Vec<Duration> = b.by_ref().take(6).collect();
        for (i, d) in first.iter().enumerate() {
            let base = (min * 2u32.pow(i as u32)).min(max);
            assert!(*d >= base / 2 && *d <= base, "step {i}: {d:?} vs {base:?}");
        }
        b.reset();
        assert!(b.next().unwrap() <= min);
    }
}
