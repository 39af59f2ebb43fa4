//! What a provider's connection-level replies mean for one queue. A `421` at the banner, or on a
//! command after some messages, closes that connection; it is not a verdict on the queue. The queue
//! goes on over its other connections and opens new ones within its limits, after a short,
//! jittered delay per destination address. Only refusals in a row, with no connection of the
//! queue left delivering, defer the whole queue for `retry-after` (see README, "Connection-level
//! replies").
//!
//! The numbers, and where they come from:
//! - a server that closes after taking messages (Yahoo's `421 Max message per connection reached`,
//!   Outlook's `RP-002`): the next connection to that address waits 0.5 to 1.5 s;
//! - a refused connection (a 4xx banner, or a `421` before anything was delivered on it): 5 s,
//!   doubling with each refusal in a row at that address, at most 60 s, ±50% jitter;
//! - a server that closes at MAIL after the same number of messages twice in a row has a
//!   per-connection cap: the queue's connections end with QUIT after that many messages for an
//!   hour ([`Reconnect::learned_cap`]), so the cap costs no deferral;
//! - a refusal while other connections of the queue are open says "too many connections": the
//!   queue opens no more than it has open (at least 1) for a minute (Postfix's concurrency
//!   feedback, in one step);
//! - [`REFUSALS_BEFORE_DEFER`] refusals in a row, going on for [`REFUSING_FOR_MS`], with no other
//!   connection open: the queue is deferred as before (Postfix marks a destination dead after one
//!   cohort of failed connections).

use super::jitter;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Refused connections in a row (no delivery between, none of the queue's connections open) after
/// which the whole queue waits `retry-after`, once they have gone on for [`REFUSING_FOR_MS`].
pub const REFUSALS_BEFORE_DEFER: u32 = 3;
/// How long refusals in a row must have gone on before they defer the queue: a connection-rate
/// limit counted over a minute clears within one, a block does not.
pub const REFUSING_FOR_MS: i64 = 30_000;
/// The reconnect delay after a server closed a connection that delivered.
const CLOSED_DELAY: Duration = Duration::from_secs(1);
/// The first reconnect delay after a refusal; it doubles per refusal in a row at that address.
const REFUSED_DELAY: Duration = Duration::from_secs(5);
/// The longest reconnect delay.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// How long a lowered connection ceiling holds before the queue may open more again.
const CEILING_HOLD_MS: i64 = 60_000;
/// How long a learned per-connection cap holds (then the server may show a new one).
const CAP_HOLD_MS: i64 = 3_600_000;

/// How a connection ended on a connection-level reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The server closed it after messages were delivered on it.
    Closed,
    /// Refused before anything was delivered on it.
    Refused {
        /// Other connections of the queue were open at the time.
        others_open: u64,
    },
}

/// What the queue does after a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on: new connections to that address not before `delay` from now.
    Reconnect(Duration),
    /// Every recent attempt was refused and nothing is open: defer the queue.
    DeferQueue,
}

#[derive(Debug, Clone, Default)]
struct AtIp {
    /// No new connection to this address before (Unix ms).
    until_ms: i64,
    /// Refusals in a row here.
    refusals: u32,
}

/// A queue's view of its connection-level signals.
#[derive(Debug, Clone, Default)]
pub struct Reconnect {
    refusals: u32,
    /// When the refusals in a row began (Unix ms).
    refusing_since: i64,
    at_ip: BTreeMap<IpAddr, AtIp>,
    ceiling: Option<(u64, i64)>,
    /// Messages after which a server last closed at MAIL, and whether that was seen twice (the
    /// cap then holds until the time given).
    cap_seen: Option<u64>,
    cap: Option<(u64, i64)>,
    /// The last connection-level reply and the address that gave it.
    pub last: Option<(IpAddr, String)>,
}

impl Reconnect {
    /// A connection to `ip` ended with `reply`; `name` keys the jitter (the queue's name).
    pub fn ended(&mut self, ip: IpAddr, how: Ended, now_ms: i64, name: &str, reply: &str) -> Next {
        self.prune(now_ms);
        self.last = Some((ip, reply.to_string()));
        let at = self.at_ip.entry(ip).or_default();
        let delay = match how {
            Ended::Closed => {
                at.refusals = 0;
                jitter(CLOSED_DELAY, &format!("{name} {ip} {now_ms}"), 0.5)
            }
            Ended::Refused { others_open } => {
                if self.refusals == 0 {
                    self.refusing_since = now_ms;
                }
                self.refusals += 1;
                at.refusals += 1;
                if others_open == 0
                    && self.refusals >= REFUSALS_BEFORE_DEFER
                    && now_ms - self.refusing_since >= REFUSING_FOR_MS
                {
                    self.refusals = 0;
                    at.refusals = 0;
                    return Next::DeferQueue;
                }
                if others_open > 0 {
                    let cap = self
                        .ceiling
                        .map_or(others_open, |(c, _)| c.min(others_open));
                    self.ceiling = Some((cap.max(1), now_ms + CEILING_HOLD_MS));
                }
                let doubled = REFUSED_DELAY.saturating_mul(1 << (at.refusals - 1).min(4));
                let key = format!("{name} {ip} {} {now_ms}", at.refusals);
                jitter(doubled.min(MAX_DELAY), &key, 0.5)
            }
        };
        at.until_ms = now_ms + delay.as_millis() as i64;
        Next::Reconnect(delay)
    }

    /// The server closed a connection at MAIL after `messages` messages: twice the same number in
    /// a row is its per-connection cap.
    pub fn closed_at_mail(&mut self, messages: u64, now_ms: i64) {
        if messages == 0 {
            return;
        }
        if self.cap_seen == Some(messages) {
            self.cap = Some((messages, now_ms + CAP_HOLD_MS));
        }
        self.cap_seen = Some(messages);
    }

    /// The per-connection cap learned from the server, if one holds at `now_ms`.
    pub fn learned_cap(&self, now_ms: i64) -> Option<u64> {
        self.cap.filter(|(_, t)| *t > now_ms).map(|(n, _)| n)
    }

    /// A recipient was delivered over a connection to `ip`: the refusals in a row end.
    pub fn delivered(&mut self, ip: IpAddr) {
        self.refusals = 0;
        if let Some(at) = self.at_ip.get_mut(&ip) {
            at.refusals = 0;
        }
    }

    /// When a new connection to `ip` may open (Unix ms); `None` when it may now.
    pub fn wait_until(&self, ip: IpAddr, now_ms: i64) -> Option<i64> {
        self.at_ip
            .get(&ip)
            .map(|a| a.until_ms)
            .filter(|t| *t > now_ms)
    }

    /// The connection ceiling in force at `now_ms`, if a refusal lowered it.
    pub fn ceiling(&self, now_ms: i64) -> Option<u64> {
        self.ceiling.filter(|(_, t)| *t > now_ms).map(|(c, _)| c)
    }

    /// Forgets addresses whose delay is over and that have no refusals counted (keeps the map
    /// to the addresses that matter; done as each connection ends).
    pub fn prune(&mut self, now_ms: i64) {
        self.at_ip
            .retain(|_, a| a.until_ms > now_ms || a.refusals > 0);
        if self.ceiling.is_some_and(|(_, t)| t <= now_ms) {
            self.ceiling = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 100, 1, n])
    }

    fn secs(n: Next) -> f64 {
        match n {
            Next::Reconnect(d) => d.as_secs_f64(),
            Next::DeferQueue => f64::NAN,
        }
    }

    #[test]
    fn a_close_after_messages_waits_about_a_second_and_never_defers() {
        let mut r = Reconnect::default();
        for i in 0..50 {
            let n = r.ended(
                ip(1),
                Ended::Closed,
                1_000 * i,
                "yahoo.com/v",
                "421 Max message",
            );
            let Next::Reconnect(d) = n else {
                panic!("deferred after a close: {n:?}")
            };
            assert!((500..=1500).contains(&d.as_millis()), "{d:?}");
            let until = 1_000 * i + d.as_millis() as i64;
            assert_eq!(r.wait_until(ip(1), 1_000 * i), Some(until));
        }
        assert_eq!(
            r.wait_until(ip(2), 0),
            None,
            "other addresses are not delayed"
        );
    }

    #[test]
    fn refusals_back_off_per_address_and_defer_only_with_nothing_open() {
        let mut r = Reconnect::default();
        let refused = Ended::Refused { others_open: 0 };
        let a = secs(r.ended(ip(1), refused, 0, "q", "421 busy"));
        assert!((2.5..=7.5).contains(&a), "{a}");
        let b = secs(r.ended(
            ip(1),
            Ended::Refused { others_open: 2 },
            10,
            "q",
            "421 busy",
        ));
        assert!((5.0..=15.0).contains(&b), "doubled: {b}");
        assert_eq!(
            r.ceiling(10),
            Some(2),
            "a refusal beside two open connections caps at two"
        );
        assert_eq!(r.ceiling(10 + CEILING_HOLD_MS), None, "for a minute");
        // A third refusal in a row with nothing open, before they have gone on for 30 s: go on.
        assert!(matches!(
            r.ended(ip(2), refused, 20, "q", "421"),
            Next::Reconnect(_)
        ));
        // Once they have, it defers the queue ...
        let late = REFUSING_FOR_MS;
        assert_eq!(
            r.ended(ip(2), refused, late, "q", "421 busy"),
            Next::DeferQueue
        );
        // ... and counting starts afresh.
        assert!(matches!(
            r.ended(ip(2), refused, late + 10, "q", "421"),
            Next::Reconnect(_)
        ));
    }

    #[test]
    fn a_delivery_ends_the_refusals_in_a_row() {
        let mut r = Reconnect::default();
        let refused = Ended::Refused { others_open: 0 };
        r.ended(ip(1), refused, 0, "q", "421");
        r.ended(ip(1), refused, 1, "q", "421");
        r.delivered(ip(3));
        assert!(matches!(
            r.ended(ip(1), refused, 2, "q", "421"),
            Next::Reconnect(_)
        ));
        let d = secs(r.ended(ip(1), refused, 3, "q", "421"));
        assert!(d >= 10.0, "the address's own streak still counts: {d}");
        r.prune(1_000_000);
        assert_eq!(r.at_ip.len(), 1, "an address with refusals counted is kept");
        r.delivered(ip(1));
        r.prune(1_000_000);
        assert!(r.at_ip.is_empty());
    }

    #[test]
    fn the_same_close_at_mail_twice_is_a_cap_for_an_hour() {
        let mut r = Reconnect::default();
        r.closed_at_mail(20, 0);
        assert_eq!(r.learned_cap(0), None, "once is not yet a cap");
        r.closed_at_mail(17, 1);
        r.closed_at_mail(20, 2);
        assert_eq!(r.learned_cap(2), None, "20, 17, 20: not twice in a row");
        r.closed_at_mail(20, 3);
        assert_eq!(r.learned_cap(3), Some(20));
        assert_eq!(r.learned_cap(3 + CAP_HOLD_MS), None, "for an hour");
        r.closed_at_mail(0, 4);
        assert_eq!(
            r.learned_cap(4),
            Some(20),
            "a close before any message says nothing"
        );
    }

    #[test]
    fn delays_are_capped_and_deterministic() {
        let mut a = Reconnect::default();
        let mut b = Reconnect::default();
        let many = Ended::Refused { others_open: 1 };
        for i in 0..10 {
            let x = a.ended(ip(1), many, i, "q", "421");
            assert_eq!(x, b.ended(ip(1), many, i, "q", "421"));
            assert!(secs(x) <= 90.0, "60 s +50% at most");
        }
    }
}
