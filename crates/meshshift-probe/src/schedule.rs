//! When each request is due (pure).
//!
//! Request `i` is due at `i / rate` seconds after the start, whatever happened to earlier requests: that
//! is what makes the prober open-loop. A closed-loop client (send, wait, send) slows down exactly when the
//! server does, so it sends fewer requests during an outage and never sees most of it ("coordinated
//! omission"). Offsets are computed from the index, not by adding intervals, so they do not drift.
//! Requests go round-robin over the targets, so every URL gets the same share at the same rate.

use std::time::Duration;

use crate::config::ProbeError;

/// One scheduled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Sequence number, from 0.
    pub seq: u64,
    /// When it is due, from the start of the probe.
    pub offset: Duration,
    /// Index of its target URL.
    pub target: usize,
}

/// Arrivals at a constant rate over a duration (or until stopped), round-robin over targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    rate: f64,
    count: Option<u64>,
    targets: usize,
}

impl Schedule {
    /// A schedule of `rate` requests per second for `duration` (`None`: until stopped) over `targets` URLs.
    pub fn new(rate: f64, duration: Option<Duration>, targets: usize) -> Result<Self, ProbeError> {
        if !rate.is_finite() || rate <= 0.0 {
            return Err(ProbeError::InvalidConfig(format!("the rate must be a positive number, got {rate}")));
        }
        if targets == 0 {
            return Err(ProbeError::InvalidConfig("at least one URL is needed".to_owned()));
        }
        let count = duration.map(|d| request_count(rate, d)).transpose()?;
        if count == Some(0) {
            return Err(ProbeError::InvalidConfig(format!(
                "{rate} requests/s for {:?} schedules no request",
                duration.unwrap_or_default()
            )));
        }
        Ok(Self { rate, count, targets })
    }

    /// How many requests the schedule holds (`None`: unbounded).
    pub fn count(&self) -> Option<u64> {
        self.count
    }

    /// The rate, in requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The time between two arrivals.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.rate)
    }

    /// The `seq`th request.
    pub fn slot(&self, seq: u64) -> Slot {
        // u64 -> usize: the modulo result is below `targets`, which is a usize.
        let target = usize::try_from(seq % self.targets as u64).unwrap_or(0);
        Slot { seq, offset: Duration::from_secs_f64(seq as f64 / self.rate), target }
    }

    /// Every request, in order (endless for an unbounded schedule).
    pub fn iter(&self) -> impl Iterator<Item = Slot> + '_ {
        let end = self.count.unwrap_or(u64::MAX);
        (0..end).map(|seq| self.slot(seq))
    }
}

/// The number of arrivals `i / rate` that fall in `[0, duration)`: `ceil(rate * duration)`, with a little
/// slack so that 100/s for 1 s is 100 requests even when the product is 100.00000000000001.
pub fn request_count(rate: f64, duration: Duration) -> Result<u64, ProbeError> {
    let exact = rate * duration.as_secs_f64();
    let count = (exact - 1e-9).ceil().max(0.0);
    if !count.is_finite() || count >= u64::MAX as f64 {
        return Err(ProbeError::InvalidConfig(format!("{rate} requests/s for {duration:?} is too many requests")));
    }
    Ok(count as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_is_rate_times_duration() {
        assert_eq!(request_count(100.0, Duration::from_secs(1)).unwrap(), 100);
        assert_eq!(request_count(0.1, Duration::from_secs(30)).unwrap(), 3);
        assert_eq!(request_count(2.3, Duration::from_secs(100)).unwrap(), 230);
        assert_eq!(request_count(1000.0, Duration::from_millis(2500)).unwrap(), 2500);
        // 3/s for 0.5 s: arrivals at 0 and 0.333 s.
        assert_eq!(request_count(3.0, Duration::from_millis(500)).unwrap(), 2);
        assert_eq!(request_count(1.0, Duration::ZERO).unwrap(), 0);
        assert!(request_count(f64::MAX, Duration::from_secs(10)).is_err());
    }

    #[test]
    fn arrivals_are_evenly_spaced_from_zero_and_inside_the_duration() {
        let s = Schedule::new(100.0, Some(Duration::from_secs(2)), 1).unwrap();
        let slots: Vec<Slot> = s.iter().collect();
        assert_eq!(slots.len(), 200);
        assert_eq!(slots[0].offset, Duration::ZERO);
        assert_eq!(slots[1].offset, Duration::from_millis(10));
        assert_eq!(slots[150].offset, Duration::from_millis(1500));
        assert!(slots.iter().all(|s| s.offset < Duration::from_secs(2)));
        assert!(slots.windows(2).all(|w| w[0].offset < w[1].offset && w[0].seq + 1 == w[1].seq));
        assert_eq!(s.interval(), Duration::from_millis(10));
    }

    #[test]
    fn offsets_do_not_drift_at_awkward_rates() {
        // 1/3 s is not representable: offsets come from the index, so request 3000 is due at exactly 1000 s.
        let s = Schedule::new(3.0, None, 1).unwrap();
        assert_eq!(s.slot(3000).offset, Duration::from_secs(1000));
        assert_eq!(s.count(), None);
        assert_eq!(s.iter().take(5).count(), 5);
    }

    #[test]
    fn targets_are_round_robin() {
        let s = Schedule::new(10.0, Some(Duration::from_secs(1)), 3).unwrap();
        let targets: Vec<usize> = s.iter().map(|s| s.target).collect();
        assert_eq!(targets, vec![0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn bad_schedules_are_refused() {
        assert!(Schedule::new(0.0, None, 1).is_err());
        assert!(Schedule::new(-1.0, None, 1).is_err());
        assert!(Schedule::new(f64::NAN, None, 1).is_err());
        assert!(Schedule::new(f64::INFINITY, None, 1).is_err());
        assert!(Schedule::new(10.0, None, 0).is_err());
        let none = Schedule::new(0.5, Some(Duration::from_millis(1)), 1);
        assert!(none.is_ok(), "one arrival at 0 is inside [0, 1 ms)");
        assert!(Schedule::new(1.0, Some(Duration::ZERO), 1).is_err());
    }
}
