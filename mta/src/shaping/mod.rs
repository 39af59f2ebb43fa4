//! The gates in front of delivery, per queue: concurrent connections (`max-smtp-out`, also per
//! whole vMTA), messages per connection, message and connect rates (smooth, GCRA), and backoff
//! mode, entered and left through `smtp-pattern-list` rules, with jittered return to normal and a
//! history of every mode change with the rule and reply that caused it.

pub mod rate;
pub mod reconnect;

pub use rate::Gcra;
pub use reconnect::Reconnect;

use crate::config::model::{PatternAction, PatternRule, SmtpPatternList};
use crate::config::QueueSettings;
use crate::queue::Mode;
use std::time::Duration;

/// The first rule of `list` whose pattern matches `reply` (the whole reply line), if any.
pub fn match_reply<'a>(list: &'a SmtpPatternList, reply: &str) -> Option<&'a PatternRule> {
    list.rules.iter().find(|r| r.pattern.is_match(reply))
}

/// One mode change, for logs and the management interface.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeChange {
    /// When (Unix ms).
    pub at_ms: i64,
    /// The new mode.
    pub to: Mode,
    /// Why: the pattern of the rule, `backoff-to-normal-after`, a delivery, or an operator.
    pub cause: String,
    /// The reply that triggered it, if any.
    pub reply: Option<String>,
}

/// Why a queue may not open a connection or send a message now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// All connection slots are taken.
    Connections,
    /// The rate allows the next one in this many ms.
    Rate(i64),
}

/// Deterministic jitter of up to ±`spread` of `base` for a queue: queues leaving backoff together
/// do not all retry in the same instant.
pub fn jitter(base: Duration, key: &str, spread: f64) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Final avalanche (MurmurHash3's fmix64) so keys differing in the last byte spread out.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    let x = (h >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    let f = 1.0 + spread * (2.0 * x - 1.0);
    Duration::from_millis((base.as_millis() as f64 * f).max(0.0) as u64)
}

/// The shaping state of one queue.
#[derive(Debug, Clone)]
pub struct Shaper {
    name: String,
    settings: QueueSettings,
    mode: Mode,
    /// When backoff ends by itself (Unix ms), if it does.
    backoff_until_ms: Option<i64>,
    connections: u64,
    msg_rate: Gcra,
    connect_rate: Gcra,
    /// Every mode change, oldest first.
    pub history: Vec<ModeChange>,
}

impl Shaper {
    /// A queue named `name` (for logs and jitter) in normal mode.
    pub fn new(name: &str, settings: QueueSettings) -> Shaper {
        let msg_rate = Gcra::new(settings.max_msg_rate, 1);
        let connect_rate = Gcra::new(settings.max_connect_rate, 1);
        Shaper {
            name: name.to_string(),
            settings,
            mode: Mode::Normal,
            backoff_until_ms: None,
            connections: 0,
            msg_rate,
            connect_rate,
            history: Vec::new(),
        }
    }

    /// New settings after a reload: limits and rates change, the mode and open connections stay.
    pub fn update_settings(&mut self, settings: QueueSettings) {
        let (msg, conn) = match self.mode {
            Mode::Normal => (settings.max_msg_rate, settings.max_connect_rate),
            Mode::Backoff => (
                settings.backoff_max_msg_rate,
                settings.backoff_max_connect_rate,
            ),
        };
        self.msg_rate.set_rate(msg);
        self.connect_rate.set_rate(conn);
        self.settings = settings;
    }

    /// The current mode (call [`Shaper::tick`] first to let a timed backoff end).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The change that put the queue in backoff, while it is in backoff.
    pub fn backoff_since(&self) -> Option<&ModeChange> {
        if self.mode != Mode::Backoff {
            return None;
        }
        self.history.iter().rev().find(|c| c.to == Mode::Backoff)
    }

    /// Connections open now.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// The connection limit in force (`max-smtp-out` or `backoff-max-smtp-out`).
    pub fn max_connections(&self) -> u64 {
        match self.mode {
            Mode::Normal => self.settings.max_smtp_out,
            Mode::Backoff => self
                .settings
                .backoff_max_smtp_out
                .min(self.settings.max_smtp_out),
        }
    }

    /// Messages per connection (0 = unlimited).
    pub fn max_msg_per_connection(&self) -> u64 {
        self.settings.max_msg_per_connection
    }

    /// Ends a timed backoff when its time has come; returns true if the mode changed.
    pub fn tick(&mut self, now_ms: i64) -> bool {
        if self.mode == Mode::Backoff && self.backoff_until_ms.is_some_and(|t| now_ms >= t) {
            self.set_mode(now_ms, Mode::Normal, "backoff-to-normal-after".into(), None);
            return true;
        }
        false
    }

    /// When a timed backoff ends, if one is running.
    pub fn backoff_until_ms(&self) -> Option<i64> {
        (self.mode == Mode::Backoff)
            .then_some(self.backoff_until_ms)
            .flatten()
    }

    /// May a connection open at `now_ms`? Takes a connect-rate slot and a connection slot if so.
    pub fn open_connection(&mut self, now_ms: i64) -> Result<(), Wait> {
        self.tick(now_ms);
        if self.connections >= self.max_connections() {
            return Err(Wait::Connections);
        }
        self.connect_rate.take(now_ms).map_err(Wait::Rate)?;
        self.connections += 1;
        Ok(())
    }

    /// A connection closed.
    pub fn close_connection(&mut self) {
        self.connections = self.connections.saturating_sub(1);
    }

    /// Milliseconds until `max-msg-rate` lets the next recipient be attempted (0 = now,
    /// `i64::MAX` = never, for a rate of 0). Takes nothing.
    pub fn message_wait(&mut self, now_ms: i64) -> i64 {
        self.tick(now_ms);
        self.msg_rate.wait_ms(now_ms).unwrap_or(i64::MAX)
    }

    /// May `recipients` more recipients be attempted now (`max-msg-rate` counts attempted
    /// recipients)? Takes the rate slots if so.
    pub fn attempt_recipients(&mut self, now_ms: i64, recipients: u32) -> Result<(), Wait> {
        self.tick(now_ms);
        if self.msg_rate.is_unlimited() {
            return Ok(());
        }
        // All-or-nothing: check the whole group first on a copy.
        let mut probe = self.msg_rate.clone();
        for _ in 0..recipients {
            probe.take(now_ms).map_err(Wait::Rate)?;
        }
        self.msg_rate = probe;
        Ok(())
    }

    fn set_mode(&mut self, now_ms: i64, to: Mode, cause: String, reply: Option<String>) {
        if self.mode == to {
            return;
        }
        self.mode = to;
        let (msg, conn) = match to {
            Mode::Normal => (self.settings.max_msg_rate, self.settings.max_connect_rate),
            Mode::Backoff => (
                self.settings.backoff_max_msg_rate,
                self.settings.backoff_max_connect_rate,
            ),
        };
        self.msg_rate.set_rate(msg);
        self.connect_rate.set_rate(conn);
        if to == Mode::Normal {
            self.backoff_until_ms = None;
        }
        tracing::info!(queue = %self.name, mode = ?to, %cause, reply = reply.as_deref().unwrap_or(""), "queue mode changed");
        self.history.push(ModeChange {
            at_ms: now_ms,
            to,
            cause,
            reply,
        });
    }

    /// Puts the queue into backoff (or keeps it there, extending the timed end) because `cause`
    /// matched `reply`; `after` overrides `backoff-to-normal-after`.
    pub fn enter_backoff(
        &mut self,
        now_ms: i64,
        cause: &str,
        reply: Option<&str>,
        after: Option<Duration>,
    ) {
        let after = after.or(self.settings.backoff_to_normal_after);
        self.backoff_until_ms =
            after.map(|d| now_ms + jitter(d, &self.name, 0.1).as_millis() as i64);
        self.set_mode(
            now_ms,
            Mode::Backoff,
            cause.to_string(),
            reply.map(str::to_string),
        );
    }

    /// Back to normal now (`mode=normal` rule or an operator's "reset backoff").
    pub fn set_normal(&mut self, now_ms: i64, cause: &str, reply: Option<&str>) {
        self.set_mode(
            now_ms,
            Mode::Normal,
            cause.to_string(),
            reply.map(str::to_string),
        );
    }

    /// A recipient was delivered: with `backoff-to-normal-after-delivery` that ends backoff.
    pub fn delivered(&mut self, now_ms: i64) {
        if self.mode == Mode::Backoff && self.settings.backoff_to_normal_after_delivery {
            self.set_mode(
                now_ms,
                Mode::Normal,
                "backoff-to-normal-after-delivery".into(),
                None,
            );
        }
    }

    /// Applies the mode actions of a matched rule (the other actions are the delivery code's).
    pub fn apply_rule(&mut self, now_ms: i64, rule: &PatternRule, reply: &str) {
        let after = rule.actions.iter().find_map(|a| match a {
            PatternAction::BackoffToNormalAfter(d) => Some(*d),
            _ => None,
        });
        for a in &rule.actions {
            match a {
                PatternAction::ModeBackoff => {
                    self.enter_backoff(now_ms, &rule.pattern.to_string(), Some(reply), after)
                }
                PatternAction::ModeNormal => {
                    self.set_normal(now_ms, &rule.pattern.to_string(), Some(reply))
                }
                _ => {}
            }
        }
    }

    /// The retry delay in force after the `attempt`-th failure.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        crate::queue::retry_delay(&self.settings, self.mode, attempt)
    }
}

/// The connection limit of a whole vMTA (`max-smtp-out` in `<virtual-mta>`), across its queues.
#[derive(Debug, Clone, Default)]
pub struct VmtaGate {
    /// The limit; `None` = unlimited.
    pub max: Option<u64>,
    open: u64,
}

impl VmtaGate {
    /// A gate with `max` connections.
    pub fn new(max: Option<u64>) -> VmtaGate {
        VmtaGate { max, open: 0 }
    }

    /// Takes a slot if one is free.
    pub fn try_open(&mut self) -> bool {
        if self.max.is_some_and(|m| self.open >= m) {
            return false;
        }
        self.open += 1;
        true
    }

    /// Gives a slot back.
    pub fn close(&mut self) {
        self.open = self.open.saturating_sub(1);
    }

    /// Slots taken.
    pub fn open(&self) -> u64 {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::effective::EffectiveSettings;
    use crate::config::load_str;

    fn setup(extra: &str) -> (Shaper, crate::config::Config) {
        let l = load_str(
            "t.conf",
            &format!("<smtp-pattern-list y>\nreply /\\[TSS04\\]/ mode=backoff,backoff-to-normal-after=30m\nreply /(?-i)RESUME/ mode=normal\nreply /TSS0/ mode=backoff\n</smtp-pattern-list>\n<domain yahoo.com>\nmax-smtp-out 3\nmax-msg-rate 60/m\nbackoff-max-smtp-out 1\nbackoff-max-msg-rate 6/m\nsmtp-pattern-list y\n{extra}\n</domain>\n"),
        );
        assert!(l.is_valid(), "{:?}", l.diagnostics);
        let e: EffectiveSettings = l.config.domain_settings("yahoo.com", None);
        (
            Shaper::new("yahoo.com/{default}", QueueSettings::from_effective(&e)),
            l.config,
        )
    }

    #[test]
    fn connection_slots_hold_exactly() {
        let (mut s, _) = setup("");
        for _ in 0..3 {
            assert_eq!(s.open_connection(0), Ok(()));
        }
        assert_eq!(s.open_connection(0), Err(Wait::Connections));
        s.close_connection();
        assert_eq!(s.open_connection(0), Ok(()));
        let mut g = VmtaGate::new(Some(2));
        assert!(g.try_open() && g.try_open() && !g.try_open());
        g.close();
        assert!(g.try_open());
    }

    #[test]
    fn first_matching_rule_wins_and_backoff_changes_limits_then_ends_jittered() {
        let (mut s, cfg) = setup("");
        let list = &cfg.smtp_pattern_lists["y"];
        let reply = "421 4.7.0 [TSS04] Messages from 203.0.113.1 temporarily deferred";
        let rule = match_reply(list, reply).unwrap_or_else(|| panic!("no rule"));
        assert_eq!(
            rule.pattern.source, "\\[TSS04\\]",
            "the first of two matching rules"
        );
        assert!(match_reply(list, "250 ok").is_none());
        assert!(
            match_reply(list, "resume please").is_none(),
            "(?-i) makes the rule case-sensitive"
        );
        s.apply_rule(1000, rule, reply);
        assert_eq!(s.mode(), Mode::Backoff);
        assert_eq!(s.max_connections(), 1);
        assert_eq!(
            s.retry_delay(1),
            Duration::from_secs(3600),
            "backoff-retry-after default 1h"
        );
        let until = s
            .backoff_until_ms()
            .unwrap_or_else(|| panic!("timed backoff"));
        let base = 1000 + 30 * 60_000;
        assert!(
            (until - base).abs() <= 180_000 && until != base,
            "30m with up to 10% jitter: {until}"
        );
        // In backoff the rate is 6/m: the second recipient waits 10 s.
        assert_eq!(s.attempt_recipients(2000, 1), Ok(()));
        assert_eq!(s.attempt_recipients(2000, 1), Err(Wait::Rate(10_000)));
        assert!(!s.tick(until - 1));
        assert!(s.tick(until));
        assert_eq!(s.mode(), Mode::Normal);
        assert_eq!(s.max_connections(), 3);
        let causes: Vec<(Mode, String)> =
            s.history.iter().map(|h| (h.to, h.cause.clone())).collect();
        assert_eq!(
            causes,
            vec![
                (Mode::Backoff, "/\\[TSS04\\]/".to_string()),
                (Mode::Normal, "backoff-to-normal-after".to_string())
            ]
        );
        assert_eq!(s.history[0].reply.as_deref(), Some(reply));
        // Different queues leave backoff at different moments.
        assert_ne!(
            jitter(Duration::from_secs(1800), "yahoo.com/a", 0.1),
            jitter(Duration::from_secs(1800), "yahoo.com/b", 0.1)
        );
    }

    #[test]
    fn delivery_ends_backoff_when_configured() {
        let (mut s, _) = setup("backoff-to-normal-after-delivery yes");
        s.enter_backoff(0, "test", None, None);
        assert_eq!(
            s.backoff_until_ms(),
            None,
            "no timed end: backoff-to-normal-after never"
        );
        s.delivered(5000);
        assert_eq!(s.mode(), Mode::Normal);
        let (mut s, _) = setup("");
        s.enter_backoff(0, "test", None, None);
        s.delivered(5000);
        assert_eq!(
            s.mode(),
            Mode::Backoff,
            "without the setting a delivery changes nothing"
        );
    }

    #[test]
    fn recipients_are_rate_limited_all_or_nothing() {
        let (mut s, _) = setup("");
        assert_eq!(s.attempt_recipients(0, 1), Ok(()));
        assert!(matches!(s.attempt_recipients(0, 3), Err(Wait::Rate(_))));
        assert_eq!(
            s.attempt_recipients(1000, 1),
            Ok(()),
            "the refused group took no slots"
        );
    }
}
