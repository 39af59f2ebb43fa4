//! What an operator sees of and does to the running engine: queue views, pause/resume, mode
//! changes ("reset backoff"), schedule (retry now), delete by queue or job, source IPs taken out of
//! and back into service. The management HTTP interface and `mta` CLI commands sit on top.

use super::{Engine, Outcome};
use crate::acct::RecordType;
use crate::config::Config;
use crate::queue::{Mode, QueueKey, Waiting};
use crate::smtp::Reply;
use crate::spool::MessageId;
use serde::Serialize;
use std::net::IpAddr;
use std::sync::Arc;

/// One queue as the status pages show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    /// `domain/vmta`.
    pub name: String,
    /// Destination domain.
    pub domain: String,
    /// vMTA (`{default}` when none).
    pub vmta: String,
    /// Waiting recipients.
    pub rcpt: usize,
    /// Kilobytes of the waiting messages (each counted once per queue).
    pub kb: u64,
    /// Open connections.
    pub conn: u64,
    /// Connection limit in force.
    pub max_conn: u64,
    /// `normal` or `backoff`.
    pub mode: String,
    /// The rule (pattern) that put the queue in its mode, or who did.
    pub mode_cause: Option<String>,
    /// The reply that triggered the mode change.
    pub mode_reply: Option<String>,
    /// Paused by an operator.
    pub paused: bool,
    /// When the next recipient is due (Unix ms).
    pub next_retry_ms: Option<i64>,
    /// The last error reply.
    pub last_error: Option<String>,
    /// When the queue next tries to send (Unix ms): the end of what it waits for; `None` while
    /// it sends, or waits for an operator or for nothing.
    pub next_attempt_ms: Option<i64>,
    /// Why it waits, in words: "retry after <reply>", "backoff since <time> because <reply>; …",
    /// "rate gate …", "connection limit N reached", "reconnect delay for <ip> after <reply>", …
    pub waiting: String,
    /// The same as a name: `empty`, `sending`, `paused`, `retry`, `retry-queue`, `reconnect`,
    /// `rate`, `connection-limit`, `vmta-limit`, `sources-disabled`.
    pub waiting_kind: String,
    /// The reply that put the queue in backoff, and since when (Unix ms), while it is in backoff.
    pub backoff_since_ms: Option<i64>,
}

/// A source IP's state.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SourceIpView {
    /// The address.
    pub ip: String,
    /// The host name it says in EHLO.
    pub host_name: Option<String>,
    /// Out of service.
    pub disabled: bool,
    /// Back in service at (Unix ms), if it comes back by itself.
    pub reenable_at_ms: Option<i64>,
}

/// A vMTA as the status pages show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VmtaView {
    /// Name.
    pub name: String,
    /// Queues (domains) it has.
    pub domains: usize,
    /// Waiting recipients.
    pub rcpt: usize,
    /// Kilobytes waiting.
    pub kb: u64,
    /// Open connections.
    pub conn: u64,
    /// Its source addresses.
    pub source_ips: Vec<SourceIpView>,
}

/// Which queues an action applies to: `domain/vmta` with `*` for either part (`*/*`, `gmail.com/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSelector {
    domain: String,
    vmta: String,
}

impl QueueSelector {
    /// Parses `domain/vmta`, `domain` (every vMTA) or `*/*`.
    pub fn parse(s: &str) -> Result<QueueSelector, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty queue name (expected domain/vmta, domain/* or */*)".into());
        }
        let (d, v) = s.split_once('/').unwrap_or((s, "*"));
        if d.is_empty() || v.is_empty() {
            return Err(format!(
                "`{s}`: expected domain/vmta, domain/* or */* (PowerMTA's queue names)"
            ));
        }
        Ok(QueueSelector {
            domain: d.to_ascii_lowercase(),
            vmta: v.to_string(),
        })
    }

    /// True if `key` is selected.
    pub fn matches(&self, key: &QueueKey) -> bool {
        (self.domain == "*" || self.domain == key.domain)
            && (self.vmta == "*" || self.vmta == key.vmta)
    }
}

impl Engine {
    /// Every queue, largest first (then by name).
    pub fn queue_views(&self) -> Vec<QueueView> {
        let mut v: Vec<QueueView> = self.with(|s| {
            s.queues
                .iter()
                .map(|(k, q)| {
                    let mut ids: Vec<MessageId> = q.queue.iter().map(|w| w.id).collect();
                    ids.sort();
                    ids.dedup();
                    let bytes: u64 = ids
                        .iter()
                        .filter_map(|id| s.messages.get(id).map(|m| m.env.size))
                        .sum();
                    let last = q.shaper.history.last();
                    let retry_reply = q.queue.peek_next().and_then(|w| {
                        let m = s.messages.get(&w.id)?;
                        w.rcpts.iter().find_map(|r| m.last_reply.get(r))
                    });
                    QueueView {
                        name: k.to_string(),
                        domain: k.domain.clone(),
                        vmta: k.vmta.clone(),
                        rcpt: q.queue.recipients(),
                        kb: bytes.div_ceil(1024),
                        conn: q.shaper.connections(),
                        max_conn: q.shaper.max_connections(),
                        mode: mode_name(q.shaper.mode()).into(),
                        mode_cause: last.map(|m| m.cause.clone()),
                        mode_reply: last.and_then(|m| m.reply.clone()),
                        paused: q.paused,
                        next_retry_ms: q
                            .queue
                            .next_due_ms()
                            .map(|t| t.max(q.queue.held_until_ms.unwrap_or(t))),
                        last_error: q.last_error.clone(),
                        next_attempt_ms: q.blocked.until(),
                        waiting: super::waiting::reason(
                            q,
                            retry_reply.map(|r| r.to_string()).as_deref(),
                        ),
                        waiting_kind: q.blocked.kind().to_string(),
                        backoff_since_ms: q.shaper.backoff_since().map(|c| c.at_ms),
                    }
                })
                .collect()
        });
        v.sort_by(|a, b| b.rcpt.cmp(&a.rcpt).then_with(|| a.name.cmp(&b.name)));
        v
    }

    /// The vMTAs of the config (plus `{default}` when it has queues) with their queues and IPs.
    pub fn vmta_views(&self) -> Vec<VmtaView> {
        let queues = self.queue_views();
        let cfg = self.config();
        let now = self.now_ms();
        let disabled = self.with(|s| s.disabled_ips.clone());
        let ip_view = |h: &crate::config::model::SourceHost| {
            let ip = h.net.addr();
            let state = disabled.get(&ip);
            SourceIpView {
                ip: ip.to_string(),
                host_name: h.host_name.clone(),
                disabled: state.is_some_and(|until| until.is_none_or(|t| t > now)),
                reenable_at_ms: state.copied().flatten().filter(|t| *t > now),
            }
        };
        let mut names: Vec<String> = cfg.vmtas.keys().cloned().collect();
        if queues.iter().any(|q| q.vmta == crate::queue::DEFAULT_VMTA) {
            names.push(crate::queue::DEFAULT_VMTA.to_string());
        }
        names
            .into_iter()
            .map(|name| {
                let mine: Vec<&QueueView> = queues.iter().filter(|q| q.vmta == name).collect();
                let hosts = match cfg.vmtas.get(&name) {
                    Some(v) => &v.source_hosts,
                    None => &cfg.source_hosts,
                };
                VmtaView {
                    domains: mine.len(),
                    rcpt: mine.iter().map(|q| q.rcpt).sum(),
                    kb: mine.iter().map(|q| q.kb).sum(),
                    conn: mine.iter().map(|q| q.conn).sum(),
                    source_ips: hosts.iter().map(ip_view).collect(),
                    name,
                }
            })
            .collect()
    }

    fn selected(&self, sel: &QueueSelector) -> Vec<QueueKey> {
        self.with(|s| {
            s.queues
                .keys()
                .filter(|k| sel.matches(k))
                .cloned()
                .collect()
        })
    }

    /// Pauses (or resumes) the selected queues: a paused queue opens no connection (mail still
    /// expires). Returns how many queues matched.
    pub fn set_paused(&self, sel: &QueueSelector, paused: bool) -> usize {
        let keys = self.selected(sel);
        self.with(|s| {
            for k in &keys {
                if let Some(q) = s.queues.get_mut(k) {
                    q.paused = paused;
                }
            }
        });
        for k in &keys {
            tracing::info!(queue = %k, paused, "queue paused or resumed by an operator");
        }
        self.wake.notify_one();
        keys.len()
    }

    /// Sets the selected queues' mode (`normal` is PowerMTA's "reset backoff"). Returns how many.
    pub fn set_mode(&self, sel: &QueueSelector, mode: Mode) -> usize {
        let now = self.now_ms();
        let keys = self.selected(sel);
        self.with(|s| {
            for k in &keys {
                if let Some(q) = s.queues.get_mut(k) {
                    match mode {
                        Mode::Normal => q.shaper.set_normal(now, "operator", None),
                        Mode::Backoff => q.shaper.enter_backoff(now, "operator", None, None),
                    }
                    q.queue.mode = q.shaper.mode();
                }
            }
        });
        self.wake.notify_one();
        keys.len()
    }

    /// Makes everything in the selected queues due now (`schedule`). Returns how many queues.
    pub fn schedule(&self, sel: &QueueSelector) -> usize {
        let now = self.now_ms();
        let keys = self.selected(sel);
        self.with(|s| {
            for k in &keys {
                if let Some(q) = s.queues.get_mut(k) {
                    q.queue.schedule_now(now);
                    q.not_before_ms = 0;
                }
            }
        });
        self.wake.notify_one();
        keys.len()
    }

    /// Deletes the waiting recipients of the selected queues, or only those of messages with job id
    /// `job`: each gets a `b` record (category `other`, no DSN to the sender). Returns how many
    /// recipients were deleted.
    pub async fn delete(&self, sel: Option<&QueueSelector>, job: Option<&str>) -> usize {
        let all = QueueSelector::parse("*/*").unwrap_or(QueueSelector {
            domain: "*".into(),
            vmta: "*".into(),
        });
        let sel = sel.unwrap_or(&all);
        let keys = self.selected(sel);
        let mut taken: Vec<(QueueKey, Waiting<MessageId>)> = Vec::new();
        self.with(|s| {
            for k in &keys {
                let Some(q) = s.queues.get_mut(k) else {
                    continue;
                };
                let groups = match job {
                    None => q.queue.drain_all(),
                    Some(j) => {
                        let messages = &s.messages;
                        q.queue.remove_where(|w| {
                            messages
                                .get(&w.id)
                                .is_some_and(|m| m.env.job_id.as_deref() == Some(j))
                        })
                    }
                };
                taken.extend(groups.into_iter().map(|w| (k.clone(), w)));
            }
        });
        let reply = Reply::new(554, "5.0.0", "deleted by an operator");
        let mut n = 0;
        for (k, w) in taken {
            for r in &w.rcpts {
                n += 1;
                self.finish(
                    &k,
                    w.id,
                    *r,
                    Outcome {
                        ty: RecordType::Bounced,
                        reply: &reply,
                        category: "other",
                        conn: None,
                        notify: false,
                    },
                )
                .await;
            }
        }
        tracing::info!(
            recipients = n,
            job = job.unwrap_or(""),
            "deleted by an operator"
        );
        n
    }

    /// Takes a source IP out of service (until `until_ms`, or until enabled again).
    pub fn disable_source_ip(&self, ip: IpAddr, until_ms: Option<i64>) {
        tracing::warn!(%ip, until_ms, "source IP disabled");
        self.with(|s| s.disabled_ips.insert(ip, until_ms));
        self.wake.notify_one();
    }

    /// Puts a source IP back into service. Returns false if it was not disabled.
    pub fn enable_source_ip(&self, ip: IpAddr) -> bool {
        let was = self.with(|s| s.disabled_ips.remove(&ip).is_some());
        if was {
            tracing::info!(%ip, "source IP enabled");
        }
        self.wake.notify_one();
        was
    }

    /// Is `ip` out of service at `now_ms`?
    pub fn is_ip_disabled(&self, ip: IpAddr, now_ms: i64) -> bool {
        self.with(|s| ip_disabled(&s.disabled_ips, ip, now_ms))
    }

    /// Puts a new configuration in force without a restart: queue settings (rates, connection
    /// limits, retry and backoff settings, pattern lists) are recomputed for every queue while
    /// their mode, open connections and waiting mail stay; bounce-category patterns and DKIM keys
    /// are read again; source rules apply to new sessions. Listeners, spool directories,
    /// accounting files and the management port need a restart (their changes are listed in the
    /// returned notes).
    pub fn reload(&self, new: Config) -> Vec<String> {
        let old = self.config();
        let mut notes = Vec::new();
        let listeners = |c: &Config| -> Vec<String> {
            c.listeners.iter().map(|l| format!("{}", l.addr)).collect()
        };
        if listeners(&old) != listeners(&new) {
            notes.push("smtp-listener changes take effect at the next restart".into());
        }
        let spools = |c: &Config| -> Vec<String> {
            c.spools
                .iter()
                .map(|s| s.path.display().to_string())
                .collect()
        };
        if spools(&old) != spools(&new) {
            notes.push("<spool> changes take effect at the next restart".into());
        }
        if crate::config::effective::mgmt_listen_addr(&old).ok()
            != crate::config::effective::mgmt_listen_addr(&new).ok()
        {
            notes.push("http-mgmt-port changes take effect at the next restart".into());
        }
        let classifier = crate::bounce::Classifier::from_config(&new).unwrap_or_else(|e| {
            notes.push(format!(
                "bounce-category-patterns unusable ({e}); using the built-in rules only"
            ));
            crate::bounce::Classifier::default()
        });
        let new = Arc::new(new);
        match self.config.write() {
            Ok(mut c) => *c = new.clone(),
            Err(p) => *p.into_inner() = new.clone(),
        }
        match self.classifier.write() {
            Ok(mut c) => *c = Arc::new(classifier),
            Err(p) => *p.into_inner() = Arc::new(classifier),
        }
        self.keys.clear();
        let keys: Vec<QueueKey> = self.with(|s| s.queues.keys().cloned().collect());
        let settings: Vec<(QueueKey, crate::config::QueueSettings)> = keys
            .into_iter()
            .map(|k| {
                let qs = self.queue_settings(&k);
                (k, qs)
            })
            .collect();
        self.with(|s| {
            for (k, qs) in settings {
                if let Some(q) = s.queues.get_mut(&k) {
                    q.queue.settings = qs.clone();
                    q.shaper.update_settings(qs);
                }
            }
            s.total_gate.max = Some(super::total_max_smtp_out(&new));
            for (name, gate) in s.vmta_gates.iter_mut() {
                gate.max = new
                    .vmtas
                    .get(name)
                    .and_then(|v| v.settings.get("max-smtp-out"))
                    .and_then(|st| match st.value {
                        crate::config::values::Value::Int(n) => Some(n),
                        _ => None,
                    });
            }
        });
        tracing::info!(config = %new.path.display(), notes = notes.len(), "configuration reloaded");
        self.wake.notify_one();
        notes
    }

    /// The suppression list (empty and unused unless `suppress-after` is set).
    pub fn suppression(&self) -> &crate::suppress::List {
        &self.suppression.1
    }

    /// The suppression entry of `address` when `suppress-after` is in force and it is listed.
    pub fn suppressed(&self, address: &str) -> Option<crate::suppress::Entry> {
        if !self.suppression.0.any() && self.suppression.1.is_empty() {
            return None;
        }
        self.suppression.1.get(address)
    }

    /// Adds the recipient of a hard bounce or a complaint to the list, as `suppress-after` says.
    pub(super) fn maybe_suppress(&self, rec: &crate::acct::Record) {
        let policy = self.suppression.0;
        if !policy.any() {
            return;
        }
        let (reason, detail) = match rec.ty {
            Some(RecordType::Bounced | RecordType::RemoteBounce)
                if policy.hard_bounce
                    && crate::suppress::HARD_CATEGORIES.contains(&rec.bounce_cat.as_str()) =>
            {
                (
                    "hard-bounce",
                    format!("{} {}", rec.bounce_cat, rec.dsn_status),
                )
            }
            Some(RecordType::Feedback) if policy.complaint => {
                ("complaint", format!("feedback {}", rec.feedback_type))
            }
            _ => return,
        };
        match self
            .suppression
            .1
            .add(&rec.rcpt, reason, detail.trim(), rec.time_logged)
        {
            Ok(true) => tracing::info!(address = %rec.rcpt, reason, "address suppressed"),
            Ok(false) => {}
            Err(e) => tracing::error!(%e, "could not record a suppression"),
        }
    }

    /// True while `ip` may not try AUTH: [`AUTH_FAILURES_PER_IP`] failures within
    /// [`AUTH_WINDOW_MS`], across sessions (a password-guessing client opening new connections).
    pub fn auth_locked(&self, ip: IpAddr, now_ms: i64) -> bool {
        self.auth_failures
            .lock()
            .map(|m| {
                m.get(&ip).is_some_and(|v| {
                    v.iter().filter(|t| now_ms - **t < AUTH_WINDOW_MS).count()
                        >= AUTH_FAILURES_PER_IP
                })
            })
            .unwrap_or(false)
    }

    /// Records a failed AUTH from `ip`.
    pub fn auth_failed(&self, ip: IpAddr, now_ms: i64) {
        if let Ok(mut m) = self.auth_failures.lock() {
            if m.len() > 10_000 {
                // Bounded: forget addresses whose failures are all old.
                m.retain(|_, v| v.iter().any(|t| now_ms - *t < AUTH_WINDOW_MS));
            }
            let v = m.entry(ip).or_default();
            v.retain(|t| now_ms - *t < AUTH_WINDOW_MS);
            v.push(now_ms);
        }
    }

    /// The monitor (traffic, recent events).
    pub fn monitor(&self) -> &crate::monitor::Monitor {
        &self.monitor
    }

    /// The monitor, for a tap reader that feeds it (see [`super::Parts::monitor_on_tap`]).
    pub fn shared_monitor(&self) -> Arc<crate::monitor::Monitor> {
        self.monitor.clone()
    }
}

/// Failed AUTH attempts from one address that lock it out of AUTH for the rest of the window.
pub const AUTH_FAILURES_PER_IP: usize = 10;
/// The window of [`AUTH_FAILURES_PER_IP`] (10 minutes).
pub const AUTH_WINDOW_MS: i64 = 600_000;

/// True if `ip` is disabled at `now_ms` in `map`.
pub(super) fn ip_disabled(
    map: &std::collections::BTreeMap<IpAddr, Option<i64>>,
    ip: IpAddr,
    now_ms: i64,
) -> bool {
    map.get(&ip)
        .is_some_and(|until| until.is_none_or(|t| t > now_ms))
}

/// `normal` / `backoff`.
pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Normal => "normal",
        Mode::Backoff => "backoff",
    }
}

impl Engine {
    /// Messages still held (not every recipient finished).
    pub fn pending_messages(&self) -> usize {
        self.with(|s| s.messages.len())
    }

    /// Queue names with their mode changes (for reports and status).
    pub fn mode_history(
        &self,
    ) -> std::collections::BTreeMap<String, Vec<crate::shaping::ModeChange>> {
        self.with(|s| {
            s.queues
                .iter()
                .map(|(k, q)| (k.to_string(), q.shaper.history.clone()))
                .collect()
        })
    }

    /// Waiting recipients per destination domain (summed over vMTAs).
    pub fn queue_depths(&self) -> std::collections::BTreeMap<String, usize> {
        self.with(|s| {
            let mut m = std::collections::BTreeMap::new();
            for (k, q) in &s.queues {
                *m.entry(k.domain.clone()).or_insert(0) += q.queue.recipients();
            }
            m
        })
    }

    /// Waiting recipients over all queues.
    pub fn queued_recipients(&self) -> usize {
        self.with(|s| s.queues.values().map(|q| q.queue.recipients()).sum())
    }

    /// Mode of a queue, if it exists.
    pub fn mode_of(&self, key: &QueueKey) -> Option<Mode> {
        self.with(|s| s.queues.get(key).map(|q| q.shaper.mode()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_follow_powermta_queue_names() {
        let k = QueueKey::new("gmail.com", Some("mkt-1"));
        for (s, m) in [
            ("*/*", true),
            ("gmail.com/*", true),
            ("gmail.com", true),
            ("GMAIL.com/mkt-1", true),
            ("gmail.com/mkt-2", false),
            ("*/mkt-1", true),
            ("yahoo.com/*", false),
        ] {
            assert_eq!(QueueSelector::parse(s).map(|x| x.matches(&k)), Ok(m), "{s}");
        }
        assert!(QueueSelector::parse("").is_err());
        assert!(QueueSelector::parse("/x").is_err());
    }
}
