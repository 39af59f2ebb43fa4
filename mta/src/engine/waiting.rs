//! Why a queue is waiting: what the scheduler's last pass saw ([`Blocked`]) turned into words for
//! `mta show queues`, `/queueDetail`, the dashboard and the metrics.

use super::QueueState;

/// Why a queue may open no connection before `not_before_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotBefore {
    /// The MX rollup group it shares with other queues has every connection open.
    RollupFull,
    /// Every address of its mail hosts waits out a reconnect delay.
    Reconnect,
}

/// Why a queue sent nothing more at the scheduler's last pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Blocked {
    /// Nothing waits.
    #[default]
    Empty,
    /// Connections are open and take what is due, or one is being opened.
    Sending,
    /// Paused by an operator.
    Paused,
    /// A reply deferred the whole queue until then (Unix ms).
    Held(i64),
    /// The next recipient is due then: its own retry time.
    Retry(i64),
    /// A reconnect delay or a full MX rollup group, until then.
    NotBefore(i64),
    /// `max-msg-rate` / `max-connect-rate` lets the next one through then.
    Rate(i64),
    /// The queue's connection limit (`max-smtp-out`, or a ceiling after refusals) is reached.
    ConnectionLimit,
    /// The vMTA's or the whole MTA's connection limit is reached.
    SharedLimit,
    /// Every source address of the vMTA is out of service until then.
    SourcesDisabled(i64),
}

impl Blocked {
    /// A short machine-readable name (metrics label, JSON).
    pub(super) fn kind(self) -> &'static str {
        match self {
            Blocked::Empty => "empty",
            Blocked::Sending => "sending",
            Blocked::Paused => "paused",
            Blocked::Held(_) => "retry-queue",
            Blocked::Retry(_) => "retry",
            Blocked::NotBefore(_) => "reconnect",
            Blocked::Rate(_) => "rate",
            Blocked::ConnectionLimit => "connection-limit",
            Blocked::SharedLimit => "vmta-limit",
            Blocked::SourcesDisabled(_) => "sources-disabled",
        }
    }

    /// When the wait ends by itself (Unix ms), if it does.
    pub(super) fn until(self) -> Option<i64> {
        match self {
            Blocked::Held(t)
            | Blocked::Retry(t)
            | Blocked::NotBefore(t)
            | Blocked::Rate(t)
            | Blocked::SourcesDisabled(t) => Some(t),
            _ => None,
        }
    }
}

/// The reason a queue waits, in words: "retry after <reply>", "backoff since <time> because
/// <reply>", "rate gate", "connection limit 20 reached", "reconnect delay after <reply>", ...
pub(super) fn reason(q: &QueueState, retry_reply: Option<&str>) -> String {
    let mut out = match q.blocked {
        Blocked::Empty => "nothing waiting".to_string(),
        Blocked::Sending => format!("sending over {} connection(s)", q.shaper.connections()),
        Blocked::Paused => "paused by an operator".to_string(),
        Blocked::Held(_) => match &q.held_by {
            Some(reply) => format!("queue deferred: retry after {reply}"),
            None => "queue deferred".to_string(),
        },
        Blocked::Retry(_) => match retry_reply {
            Some(r) => format!("retry after {r}"),
            None => "next recipient not yet due".to_string(),
        },
        Blocked::NotBefore(_) => match (q.not_before_why, &q.signals.last) {
            (NotBefore::Reconnect, Some((ip, reply))) => {
                format!("reconnect delay for {ip} after {reply}")
            }
            (NotBefore::Reconnect, None) => "reconnect delay".to_string(),
            (NotBefore::RollupFull, _) => "MX rollup group full".to_string(),
        },
        Blocked::Rate(_) => "rate gate (max-msg-rate / max-connect-rate)".to_string(),
        Blocked::ConnectionLimit => {
            format!("connection limit {} reached", q.shaper.connections().max(1))
        }
        Blocked::SharedLimit => "vMTA or total-max-smtp-out connection limit reached".to_string(),
        Blocked::SourcesDisabled(_) => "every source IP of the vMTA is disabled".to_string(),
    };
    if let Some(c) = q.shaper.backoff_since() {
        let at = crate::acct::record::iso_time(c.at_ms);
        out = match &c.reply {
            Some(reply) => format!("backoff since {at} because {reply}; {out}"),
            None => format!("backoff since {at} ({}); {out}", c.cause),
        };
    }
    out
}
