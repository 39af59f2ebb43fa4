//! The clock seam: timers come from tokio (virtual under the paused clock of a simulated run), and
//! wall-clock timestamps are an epoch plus tokio's elapsed time, so simulated logs carry the
//! scenario's dates and live logs the real ones.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time for logs and accounting, consistent with tokio's timers.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch_ms: i64,
    start: tokio::time::Instant,
}

impl Clock {
    /// A clock whose "now" starts at the real current time.
    pub fn live() -> Clock {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Clock::starting_at(now)
    }

    /// A clock whose "now" starts at `epoch_ms` (Unix milliseconds), e.g. a scenario's start time.
    /// Must be called inside a tokio runtime.
    pub fn starting_at(epoch_ms: i64) -> Clock {
        Clock {
            epoch_ms,
            start: tokio::time::Instant::now(),
        }
    }

    /// Now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.epoch_ms + self.start.elapsed().as_millis() as i64
    }

    /// Time since the clock started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn simulated_time_follows_the_paused_clock() {
        let c = Clock::starting_at(1_795_474_800_000);
        assert_eq!(c.now_ms(), 1_795_474_800_000);
        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        assert_eq!(c.now_ms(), 1_795_474_800_000 + 3 * 3_600_000);
        assert_eq!(c.elapsed(), Duration::from_secs(3 * 3600));
    }
}
