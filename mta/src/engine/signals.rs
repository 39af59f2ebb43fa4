//! The providers' connection-level signals as the delivery session meets them: a connection that
//! ended on a `421` or a refused banner, the addresses waiting out a reconnect delay, a server's
//! per-connection cap ([`crate::shaping::reconnect`] decides; this notes it on the queue).

use super::*;
use crate::shaping::reconnect::{Ended, Next};

impl Engine {
    /// A connection of `key` to `ip` ended on the connection-level `reply` (a 4xx banner, or a
    /// `421` on a command), after delivering (`delivered_here`) or not: what the queue does next
    /// ([`crate::shaping::reconnect`]). A reconnect delay is noted where the scheduler and the
    /// operator see it.
    pub(super) fn connection_ended(
        &self,
        key: &QueueKey,
        ip: IpAddr,
        delivered_here: bool,
        reply: &Reply,
    ) -> Next {
        let now = self.now_ms();
        let text = reply.to_string();
        let name = key.to_string();
        let next = self.with(|s| {
            let Some(q) = s.queues.get_mut(key) else {
                return Next::DeferQueue;
            };
            let how = if delivered_here {
                Ended::Closed
            } else {
                // This connection still holds its slot.
                Ended::Refused {
                    others_open: q.shaper.connections().saturating_sub(1),
                }
            };
            q.signals.ended(ip, how, now, &name, &text)
        });
        let what = if delivered_here { "closed" } else { "refused" };
        if let Some(n) = self.repeats.note(&format!("{what} {key} {ip}")) {
            tracing::info!(queue = %key, %ip, reply = %text, times = n, outcome = ?next, "connection {what} by the server (logged at the 1st, 10th, 100th ... time)");
        }
        next
    }

    /// The targets a new connection may use now: those not in a reconnect delay. `None` (and
    /// the queue waits for the first to be ready) when every one is.
    pub(super) fn ready_targets(
        &self,
        key: &QueueKey,
        targets: Vec<SocketAddr>,
    ) -> Option<Vec<SocketAddr>> {
        let now = self.now_ms();
        self.with(|s| {
            let Some(q) = s.queues.get_mut(key) else {
                return Some(targets);
            };
            let mut first: Option<i64> = None;
            let ready: Vec<SocketAddr> = targets
                .into_iter()
                .filter(|t| match q.signals.wait_until(t.ip(), now) {
                    Some(until) => {
                        first = Some(first.map_or(until, |f| f.min(until)));
                        false
                    }
                    None => true,
                })
                .collect();
            if ready.is_empty() {
                q.not_before_ms = first.unwrap_or(now + 1000);
                q.not_before_why = super::waiting::NotBefore::Reconnect;
                return None;
            }
            Some(ready)
        })
    }

    /// The server closed a connection of `key` at MAIL after `messages` messages.
    pub(super) fn closed_at_mail(&self, key: &QueueKey, messages: u64) {
        let now = self.now_ms();
        self.with(|s| {
            if let Some(q) = s.queues.get_mut(key) {
                q.signals.closed_at_mail(messages, now);
            }
        });
    }
}
