//! What the management interface shows that the queues themselves do not hold: traffic counters
//! per minute and hour (PowerMTA's total / last hour / top per hour / last minute / top per minute),
//! recent bounces and feedback reports, and per-queue recent errors and recipient events. Fed with
//! every accounting record the engine writes; memory is bounded whatever the traffic.

use crate::acct::{Record, RecordType};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Recipients, messages and kilobytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// Recipients.
    pub rcp: u64,
    /// Messages.
    pub msg: u64,
    /// Kilobytes (rounded up per message).
    pub kb: u64,
}

impl Volume {
    fn add(&mut self, rcp: u64, msg: u64, bytes: u64) {
        self.rcp += rcp;
        self.msg += msg;
        self.kb += if msg > 0 { bytes.div_ceil(1024) } else { 0 };
    }
    fn max(self, o: Volume) -> Volume {
        if o.rcp > self.rcp {
            o
        } else {
            self
        }
    }
}

/// Inbound and outbound volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InOut {
    /// Received.
    #[serde(rename = "in")]
    pub inbound: Volume,
    /// Delivered.
    pub out: Volume,
}

impl InOut {
    fn max(self, o: InOut) -> InOut {
        InOut {
            inbound: self.inbound.max(o.inbound),
            out: self.out.max(o.out),
        }
    }
    fn sum(it: impl Iterator<Item = InOut>) -> InOut {
        let mut t = InOut::default();
        for x in it {
            t.inbound.add(x.inbound.rcp, 0, 0);
            t.inbound.msg += x.inbound.msg;
            t.inbound.kb += x.inbound.kb;
            t.out.add(x.out.rcp, 0, 0);
            t.out.msg += x.out.msg;
            t.out.kb += x.out.kb;
        }
        t
    }
}

/// Traffic as PowerMTA's status page shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Since start (or the last counter reset).
    pub total: InOut,
    /// The last 60 minutes.
    pub last_hr: InOut,
    /// The busiest clock hour seen.
    pub top_per_hr: InOut,
    /// The last full minute.
    pub last_min: InOut,
    /// The busiest minute seen.
    pub top_per_min: InOut,
}

/// Outcome counts of one domain in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    /// Recipients delivered.
    pub delivered: u64,
    /// Transient failures.
    pub deferred: u64,
    /// Recipients bounced.
    pub bounced: u64,
}

/// A recent bounce or feedback report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentEvent {
    /// When (Unix ms).
    pub time_ms: i64,
    /// Record type (`b`, `rb`, `t`, `d`, `f` ...).
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Recipient (for `f`: the original recipient).
    pub rcpt: String,
    /// Sender.
    pub orig: String,
    /// Queue (`domain/vmta`) where known.
    pub queue: String,
    /// Bounce category or feedback type.
    pub category: String,
    /// Status (`5.1.1`).
    pub status: String,
    /// Diagnostic text.
    pub diag: String,
}

const MINUTES: usize = 60;
const HOURS: usize = 48;
const RECENT: usize = 100;
const QUEUE_EVENTS: usize = 50;
const QUEUE_ERRORS: usize = 10;
/// Domains tracked per minute for the per-domain rates (the busiest are kept).
const DOMAINS_PER_MIN: usize = 200;
/// Queues with per-queue event history (older queues are dropped first).
const QUEUES_TRACKED: usize = 2000;

/// Recent events, oldest first.
type Events = VecDeque<Arc<RecentEvent>>;

#[derive(Default)]
struct Inner {
    total: InOut,
    minutes: VecDeque<(i64, InOut)>,
    hours: VecDeque<(i64, InOut)>,
    top_min: InOut,
    top_hr: InOut,
    domain_minutes: VecDeque<(i64, BTreeMap<String, Outcomes>)>,
    bounces: VecDeque<RecentEvent>,
    feedback: VecDeque<RecentEvent>,
    /// Per queue: its last events and last errors (an error is in both, shared).
    queue_events: BTreeMap<String, (Events, Events)>,
    queue_order: VecDeque<String>,
    last_in_key: MsgKey,
    categories: BTreeMap<String, u64>,
    last_out_key: MsgKey,
}

/// The monitor: one per engine.
pub struct Monitor {
    inner: Mutex<Inner>,
    /// Inbound SMTP sessions open now.
    pub smtp_in: AtomicU64,
    /// When the MTA started (Unix ms).
    pub started_ms: AtomicI64,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor {
            inner: Mutex::new(Inner::default()),
            smtp_in: AtomicU64::new(0),
            started_ms: AtomicI64::new(0),
        }
    }
}

fn push_capped<T>(q: &mut VecDeque<T>, x: T, cap: usize) {
    q.push_back(x);
    while q.len() > cap {
        q.pop_front();
    }
}

/// Identifies the message of a record: time, sender and Message-ID (or the recipient if none).
#[derive(Default)]
struct MsgKey {
    time_ms: Option<i64>,
    orig: String,
    id: String,
}

impl MsgKey {
    /// Whether `r` is of another message than the last one; remembers `r`'s (buffers reused).
    fn is_new(&mut self, r: &Record) -> bool {
        let id = r
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Message-ID"))
            .map(|(_, v)| v.as_str())
            .unwrap_or(r.rcpt.as_str());
        if self.time_ms == Some(r.time_logged) && self.orig == r.orig && self.id == id {
            return false;
        }
        self.time_ms = Some(r.time_logged);
        self.orig.clear();
        self.orig.push_str(&r.orig);
        self.id.clear();
        self.id.push_str(id);
        true
    }
}

fn event(r: &Record) -> RecentEvent {
    RecentEvent {
        time_ms: r.time_logged,
        ty: r.ty.map(|t| t.code()).unwrap_or(""),
        rcpt: r.rcpt.clone(),
        orig: r.orig.clone(),
        queue: r.queue.clone(),
        category: if r.ty == Some(RecordType::Feedback) {
            r.feedback_type.clone()
        } else {
            r.bounce_cat.clone()
        },
        status: r.dsn_status.clone(),
        diag: r.dsn_diag.clone(),
    }
}

impl Monitor {
    /// A monitor whose uptime counts from `now_ms`.
    pub fn new(now_ms: i64) -> Monitor {
        let m = Monitor::default();
        m.started_ms.store(now_ms, Ordering::Relaxed);
        m
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// Takes one accounting record into the counters.
    pub fn observe(&self, r: &Record) {
        let now = r.time_logged;
        let minute = now.div_euclid(60_000);
        let hour = now.div_euclid(3_600_000);
        self.with(|s| {
            let mut delta = InOut::default();
            let size = r.dlv_size.unwrap_or(0);
            match r.ty {
                Some(RecordType::Received) => {
                    // One `r` record per recipient, written together: a new key is a new message.
                    let new_msg = s.last_in_key.is_new(r);
                    delta
                        .inbound
                        .add(1, new_msg as u64, if new_msg { size } else { 0 });
                }
                Some(RecordType::Delivered) => {
                    // A message counts once per delivery transaction: recipients of one message
                    // delivered at the same moment share it.
                    let new_msg = s.last_out_key.is_new(r);
                    delta
                        .out
                        .add(1, new_msg as u64, if new_msg { size } else { 0 });
                }
                _ => {}
            }
            if delta != InOut::default() {
                s.total = InOut::sum([s.total, delta].into_iter());
                match s.minutes.back_mut() {
                    Some((m, v)) if *m == minute => *v = InOut::sum([*v, delta].into_iter()),
                    _ => push_capped(&mut s.minutes, (minute, delta), MINUTES + 1),
                }
                match s.hours.back_mut() {
                    Some((h, v)) if *h == hour => *v = InOut::sum([*v, delta].into_iter()),
                    _ => push_capped(&mut s.hours, (hour, delta), HOURS),
                }
                if let Some((_, v)) = s.minutes.back() {
                    s.top_min = s.top_min.max(*v);
                }
                if let Some((_, v)) = s.hours.back() {
                    s.top_hr = s.top_hr.max(*v);
                }
            }
            let domain = r.rcpt.rsplit_once('@').map_or("", |(_, d)| d);
            // Lower-cased only when it is not already (almost always it is).
            let domain: std::borrow::Cow<str> = if domain.bytes().any(|b| b.is_ascii_uppercase()) {
                domain.to_ascii_lowercase().into()
            } else {
                domain.into()
            };
            let outcome = match r.ty {
                Some(RecordType::Delivered) => Some(0),
                Some(RecordType::Transient | RecordType::TransientQueue) => Some(1),
                Some(RecordType::Bounced) => Some(2),
                _ => None,
            };
            if let Some(o) = outcome {
                if s.domain_minutes.back().map(|(m, _)| *m) != Some(minute) {
                    push_capped(
                        &mut s.domain_minutes,
                        (minute, BTreeMap::new()),
                        MINUTES + 1,
                    );
                }
                if let Some((_, map)) = s.domain_minutes.back_mut() {
                    if map.len() < DOMAINS_PER_MIN && !map.contains_key(domain.as_ref()) {
                        map.insert(domain.to_string(), Outcomes::default());
                    }
                    if let Some(e) = map.get_mut(domain.as_ref()) {
                        match o {
                            0 => e.delivered += 1,
                            1 => e.deferred += 1,
                            _ => e.bounced += 1,
                        }
                    }
                }
            }
            match r.ty {
                Some(RecordType::Bounced | RecordType::RemoteBounce) => {
                    if s.categories.len() < 64 || s.categories.contains_key(&r.bounce_cat) {
                        *s.categories.entry(r.bounce_cat.clone()).or_insert(0) += 1;
                    }
                    push_capped(&mut s.bounces, event(r), RECENT)
                }
                Some(RecordType::Feedback) => push_capped(&mut s.feedback, event(r), RECENT),
                _ => {}
            }
            if !r.queue.is_empty()
                && matches!(
                    r.ty,
                    Some(
                        RecordType::Delivered
                            | RecordType::Bounced
                            | RecordType::Transient
                            | RecordType::TransientQueue
                    )
                )
            {
                if !s.queue_events.contains_key(&r.queue) {
                    push_capped(&mut s.queue_order, r.queue.clone(), usize::MAX);
                    while s.queue_order.len() > QUEUES_TRACKED {
                        if let Some(old) = s.queue_order.pop_front() {
                            s.queue_events.remove(&old);
                        }
                    }
                }
                let (events, errors) = match s.queue_events.get_mut(&r.queue) {
                    Some(q) => q,
                    None => s.queue_events.entry(r.queue.clone()).or_default(),
                };
                let e = Arc::new(event(r));
                if r.ty != Some(RecordType::Delivered) {
                    push_capped(errors, e.clone(), QUEUE_ERRORS);
                }
                push_capped(events, e, QUEUE_EVENTS);
            }
        });
    }

    /// Traffic counters as of `now_ms`.
    pub fn traffic(&self, now_ms: i64) -> Traffic {
        let minute = now_ms.div_euclid(60_000);
        self.with(|s| Traffic {
            total: s.total,
            last_hr: InOut::sum(
                s.minutes
                    .iter()
                    .filter(|(m, _)| *m > minute - 60)
                    .map(|(_, v)| *v),
            ),
            top_per_hr: s.top_hr,
            last_min: s
                .minutes
                .iter()
                .find(|(m, _)| *m == minute - 1)
                .map(|(_, v)| *v)
                .unwrap_or_default(),
            top_per_min: s.top_min,
        })
    }

    /// Delivered recipients per minute for the last `n` minutes up to `now_ms`, oldest first
    /// (`(minute start ms, in, out)`), for the dashboard's chart.
    pub fn per_minute(&self, now_ms: i64, n: usize) -> Vec<(i64, u64, u64)> {
        let minute = now_ms.div_euclid(60_000);
        self.with(|s| {
            (0..n as i64)
                .rev()
                .map(|k| {
                    let m = minute - k;
                    let v = s
                        .minutes
                        .iter()
                        .find(|(x, _)| *x == m)
                        .map(|(_, v)| *v)
                        .unwrap_or_default();
                    (m * 60_000, v.inbound.rcp, v.out.rcp)
                })
                .collect()
        })
    }

    /// Outcomes per recipient domain over the last `minutes` minutes.
    pub fn domain_outcomes(&self, now_ms: i64, minutes: i64) -> BTreeMap<String, Outcomes> {
        let minute = now_ms.div_euclid(60_000);
        self.with(|s| {
            let mut out: BTreeMap<String, Outcomes> = BTreeMap::new();
            for (m, map) in &s.domain_minutes {
                if *m > minute - minutes {
                    for (d, o) in map {
                        let e = out.entry(d.clone()).or_default();
                        e.delivered += o.delivered;
                        e.deferred += o.deferred;
                        e.bounced += o.bounced;
                    }
                }
            }
            out
        })
    }

    /// Bounced recipients per category since start.
    pub fn bounce_categories(&self) -> BTreeMap<String, u64> {
        self.with(|s| s.categories.clone())
    }

    /// The most recent bounces (newest first).
    pub fn recent_bounces(&self) -> Vec<RecentEvent> {
        self.with(|s| s.bounces.iter().rev().cloned().collect())
    }

    /// The most recent feedback reports (newest first).
    pub fn recent_feedback(&self) -> Vec<RecentEvent> {
        self.with(|s| s.feedback.iter().rev().cloned().collect())
    }

    /// A queue's last recipient events and last errors (newest first).
    pub fn queue_events(&self, queue: &str) -> (Vec<RecentEvent>, Vec<RecentEvent>) {
        self.with(|s| {
            s.queue_events
                .get(queue)
                .map(|(e, x)| {
                    (
                        e.iter().rev().map(|e| RecentEvent::clone(e)).collect(),
                        x.iter().rev().map(|e| RecentEvent::clone(e)).collect(),
                    )
                })
                .unwrap_or_default()
        })
    }

    /// Resets the traffic counters (`reset counters`).
    pub fn reset_counters(&self) {
        self.with(|s| {
            s.total = InOut::default();
            s.minutes.clear();
            s.hours.clear();
            s.top_min = InOut::default();
            s.top_hr = InOut::default();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ty: RecordType, t: i64, rcpt: &str, size: u64) -> Record {
        let mut r = Record::new(ty, t);
        r.rcpt = rcpt.into();
        r.headers.push(("Message-ID".into(), format!("<m{t}@x>")));
        r.dlv_size = Some(size);
        r.queue = format!("{}/{{default}}", rcpt.rsplit_once('@').map_or("", |x| x.1));
        r
    }

    #[test]
    fn counts_traffic_per_minute_and_hour() {
        let m = Monitor::new(0);
        // Minute 0: one message to two recipients in; minute 1: three deliveries.
        m.observe(&rec(RecordType::Received, 1_000, "a@x.com", 2048));
        m.observe(&rec(RecordType::Received, 1_000, "b@x.com", 2048));
        for (i, t) in [61_000, 62_000, 63_000].into_iter().enumerate() {
            m.observe(&rec(RecordType::Delivered, t, &format!("r{i}@y.com"), 1500));
        }
        let t = m.traffic(125_000);
        assert_eq!(
            t.total.inbound,
            Volume {
                rcp: 2,
                msg: 1,
                kb: 2
            }
        );
        assert_eq!(
            t.total.out,
            Volume {
                rcp: 3,
                msg: 3,
                kb: 6
            }
        );
        assert_eq!(
            t.last_min.out.rcp, 3,
            "minute 1 is the last full minute at 2:05"
        );
        assert_eq!(t.last_min.inbound.rcp, 0);
        assert_eq!(t.top_per_min.out.rcp, 3);
        assert_eq!(t.last_hr.out.rcp + t.last_hr.inbound.rcp, 5);
        // An hour later the last hour is empty but totals and tops remain.
        let later = m.traffic(2 * 3_600_000);
        assert_eq!(later.last_hr, InOut::default());
        assert_eq!(later.total.out.rcp, 3);
        assert_eq!(later.top_per_hr.out.rcp, 3);
        let pm = m.per_minute(125_000, 3);
        assert_eq!(pm, vec![(0, 2, 0), (60_000, 0, 3), (120_000, 0, 0)]);
    }

    #[test]
    fn keeps_recent_events_bounded() {
        let m = Monitor::new(0);
        for i in 0..(RECENT as i64 + 30) {
            let mut r = rec(RecordType::Bounced, i, &format!("u{i}@z.com"), 10);
            r.bounce_cat = "bad-mailbox".into();
            m.observe(&r);
        }
        let b = m.recent_bounces();
        assert_eq!(b.len(), RECENT);
        assert_eq!(b[0].rcpt, format!("u{}@z.com", RECENT + 29), "newest first");
        let (events, errors) = m.queue_events("z.com/{default}");
        assert_eq!(events.len(), QUEUE_EVENTS);
        assert_eq!(errors.len(), QUEUE_ERRORS);
        let d = m.domain_outcomes(200, 5);
        assert_eq!(d["z.com"].bounced, RECENT as u64 + 30);
    }
}
