//! A smooth rate limiter (GCRA, the generic cell rate algorithm): events are spaced evenly at
//! `per / count`, so a `1000/h` limit never lets a burst through at a window edge.

use crate::config::values::Rate;

/// One rate limit. Times are Unix milliseconds (the clock seam's), so simulated runs are exact.
#[derive(Debug, Clone, PartialEq)]
pub struct Gcra {
    /// Milliseconds between events (0 = unlimited).
    interval_ms: f64,
    /// Theoretical arrival time of the next event.
    tat_ms: f64,
    /// Events that may go back to back before spacing applies (at least 1).
    burst: u32,
}

impl Gcra {
    /// A limiter for `rate`; `burst` events may pass back to back.
    pub fn new(rate: Rate, burst: u32) -> Gcra {
        let interval_ms = match rate.count {
            None => 0.0,
            Some(0) => f64::INFINITY,
            Some(c) => rate.per.as_millis() as f64 / c as f64,
        };
        Gcra {
            interval_ms,
            tat_ms: f64::MIN,
            burst: burst.max(1),
        }
    }

    /// True when there is no limit.
    pub fn is_unlimited(&self) -> bool {
        self.interval_ms == 0.0
    }

    /// Milliseconds to wait before an event may happen at `now_ms` (0 = now; `None` = never, for
    /// a rate of 0).
    pub fn wait_ms(&self, now_ms: i64) -> Option<i64> {
        if self.interval_ms == 0.0 {
            return Some(0);
        }
        if self.interval_ms.is_infinite() {
            return None;
        }
        let now = now_ms as f64;
        let tolerance = self.interval_ms * f64::from(self.burst - 1);
        let tat = self.tat_ms.max(now);
        let earliest = tat - tolerance;
        Some(if earliest <= now {
            0
        } else {
            (earliest - now).ceil() as i64
        })
    }

    /// Records an event at `now_ms` if allowed; `Err(wait)` otherwise (wait in ms, `i64::MAX` for never).
    pub fn take(&mut self, now_ms: i64) -> Result<(), i64> {
        match self.wait_ms(now_ms) {
            Some(0) => {
                if self.interval_ms > 0.0 {
                    self.tat_ms = self.tat_ms.max(now_ms as f64) + self.interval_ms;
                }
                Ok(())
            }
            Some(w) => Err(w),
            None => Err(i64::MAX),
        }
    }

    /// Changes the rate, keeping the schedule already built up.
    pub fn set_rate(&mut self, rate: Rate) {
        let fresh = Gcra::new(rate, self.burst);
        self.interval_ms = fresh.interval_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::parse_rate;
    use proptest::prelude::*;

    fn rate(s: &str) -> Rate {
        parse_rate(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn spacing_and_waits() {
        let mut g = Gcra::new(rate("60/m"), 1);
        assert_eq!(g.take(0), Ok(()));
        assert_eq!(g.take(0), Err(1000));
        assert_eq!(g.take(999), Err(1));
        assert_eq!(g.take(1000), Ok(()));
        let mut u = Gcra::new(Rate::UNLIMITED, 1);
        assert!((0..1000).all(|_| u.take(0).is_ok()));
        let mut z = Gcra::new(rate("0"), 1);
        assert_eq!(z.take(0), Err(i64::MAX));
        let mut b = Gcra::new(rate("10/s"), 3);
        assert_eq!(
            [b.take(0), b.take(0), b.take(0), b.take(0)],
            [Ok(()), Ok(()), Ok(()), Err(100)]
        );
    }

    proptest! {
        /// Whatever the arrival pattern, no window of the rate's period ever holds more than
        /// count + burst - 1 events: no bursts at window edges.
        #[test]
        fn never_more_than_the_rate_in_any_window(count in 1u64..200, per_s in 1u64..120, arrivals in proptest::collection::vec(0i64..5_000, 1..400)) {
            let r = Rate { count: Some(count), per: std::time::Duration::from_secs(per_s) };
            let mut g = Gcra::new(r, 1);
            let mut t = 0i64;
            let mut passed = Vec::new();
            for gap in arrivals {
                t += gap;
                if g.take(t).is_ok() {
                    passed.push(t);
                }
            }
            let window = (per_s * 1000) as i64;
            for (i, start) in passed.iter().enumerate() {
                let n = passed[i..].iter().take_while(|x| **x < start + window).count() as u64;
                prop_assert!(n <= count, "{} events in {}ms from {}", n, window, start);
            }
        }
    }
}
