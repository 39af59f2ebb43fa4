//! Queues: one per `domain/vmta`. Picks the vMTA for a message the way PowerMTA does, holds each
//! queue's recipients with their next-attempt times, steps through `retry-after` lists, and expires
//! recipients after `bounce-after` whatever state the queue is in.

pub mod select;

pub use select::{PoolCursors, VmtaChoice};

use crate::config::QueueSettings;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::time::Duration;

/// The name of the vMTA used when a message names none (PowerMTA's `{default}`).
pub const DEFAULT_VMTA: &str = "{default}";

/// A queue name: destination domain (or MX rollup / `queue-to` group) and vMTA.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueKey {
    /// Destination domain, lower-case.
    pub domain: String,
    /// vMTA name, or `{default}`.
    pub vmta: String,
}

impl QueueKey {
    /// The queue for `domain` on `vmta` (`None` = `{default}`).
    pub fn new(domain: &str, vmta: Option<&str>) -> QueueKey {
        QueueKey {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            vmta: vmta.unwrap_or(DEFAULT_VMTA).to_string(),
        }
    }

    /// The vMTA, `None` for `{default}`.
    pub fn vmta(&self) -> Option<&str> {
        (self.vmta != DEFAULT_VMTA).then_some(self.vmta.as_str())
    }
}

impl fmt::Display for QueueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written piece by piece: every accounting record names its queue.
        f.write_str(&self.domain)?;
        f.write_str("/")?;
        f.write_str(&self.vmta)
    }
}

/// Queue mode (issue "shaping": backoff changes rates, connections and retry intervals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Normal limits.
    #[default]
    Normal,
    /// Backoff limits (`backoff-*`).
    Backoff,
}

/// When to try again after the `attempt`-th failed attempt (1-based): `retry-after` steps through its
/// list, then repeats the last value (reference part A); in backoff `backoff-retry-after` applies.
pub fn retry_delay(settings: &QueueSettings, mode: Mode, attempt: u32) -> Duration {
    let list = match mode {
        Mode::Normal => &settings.retry_after,
        Mode::Backoff => &settings.backoff_retry_after,
    };
    let fallback = match mode {
        Mode::Normal => Duration::from_secs(600),
        Mode::Backoff => Duration::from_secs(3600),
    };
    let idx = (attempt.max(1) - 1) as usize;
    list.get(idx).or(list.last()).copied().unwrap_or(fallback)
}

/// One recipient (or a group of recipients of one message) waiting in a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting<Id> {
    /// The message.
    pub id: Id,
    /// Which of its recipients (indexes into the envelope).
    pub rcpts: Vec<u32>,
    /// When the message was accepted (Unix ms): `bounce-after` counts from here.
    pub received_ms: i64,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// The recipients of one queue, ordered by when they may next be tried (then by arrival, so runs
/// are deterministic).
#[derive(Debug)]
pub struct Queue<Id> {
    /// The queue's name.
    pub key: QueueKey,
    /// Its settings after merging.
    pub settings: QueueSettings,
    /// Normal or backoff.
    pub mode: Mode,
    heap: BinaryHeap<Reverse<(i64, u64)>>,
    items: BTreeMap<u64, Waiting<Id>>,
    /// (received, seq) of every waiting group: the oldest first, for expiry without a full scan.
    by_received: std::collections::BTreeSet<(i64, u64)>,
    /// Recipients over all waiting groups.
    rcpts: usize,
    seq: u64,
    /// Set by a queue-wide deferral: nothing is tried before this time (Unix ms).
    pub held_until_ms: Option<i64>,
}

impl<Id: Clone> Queue<Id> {
    /// An empty queue.
    pub fn new(key: QueueKey, settings: QueueSettings) -> Queue<Id> {
        Queue {
            key,
            settings,
            mode: Mode::Normal,
            heap: BinaryHeap::new(),
            items: BTreeMap::new(),
            by_received: std::collections::BTreeSet::new(),
            rcpts: 0,
            seq: 0,
            held_until_ms: None,
        }
    }

    /// Recipient groups waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Recipients waiting (summed over groups).
    pub fn recipients(&self) -> usize {
        self.rcpts
    }

    /// Adds a recipient group to be tried at `at_ms`.
    pub fn push(&mut self, w: Waiting<Id>, at_ms: i64) {
        self.seq += 1;
        self.heap.push(Reverse((at_ms, self.seq)));
        self.by_received.insert((w.received_ms, self.seq));
        self.rcpts += w.rcpts.len();
        self.items.insert(self.seq, w);
    }

    /// When the next group may be tried (respecting a queue-wide hold).
    pub fn next_due_ms(&self) -> Option<i64> {
        let next = self.heap.peek().map(|Reverse((t, _))| *t)?;
        Some(self.held_until_ms.map_or(next, |h| next.max(h)))
    }

    /// The group that is due next, without taking it.
    pub fn peek_next(&self) -> Option<&Waiting<Id>> {
        let Reverse((_, seq)) = self.heap.peek()?;
        self.items.get(seq)
    }

    /// Takes the next group that is due at `now_ms`.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<Waiting<Id>> {
        if self.held_until_ms.is_some_and(|h| h > now_ms) {
            return None;
        }
        let Reverse((t, seq)) = *self.heap.peek()?;
        if t > now_ms {
            return None;
        }
        self.heap.pop();
        let w = self.items.remove(&seq)?;
        self.by_received.remove(&(w.received_ms, seq));
        self.rcpts -= w.rcpts.len();
        Some(w)
    }

    /// Puts a group back after a transient failure: `attempts` goes up and the retry schedule of the
    /// current mode decides when it is tried again; `None` if it has expired instead (the caller
    /// bounces it as `message-expired`).
    pub fn retry(&mut self, mut w: Waiting<Id>, now_ms: i64) -> Option<Waiting<Id>> {
        w.attempts += 1;
        if self.is_expired(&w, now_ms) {
            return Some(w);
        }
        let at = now_ms + retry_delay(&self.settings, self.mode, w.attempts).as_millis() as i64;
        // Never schedule past the expiry: the group is looked at again when it expires.
        let at = self.expiry_ms(&w).map_or(at, |e| at.min(e));
        self.push(w, at);
        None
    }

    /// Like [`Queue::retry`] but after `delay` (`retry-recipients-after`) instead of the schedule.
    pub fn retry_in(
        &mut self,
        mut w: Waiting<Id>,
        now_ms: i64,
        delay: Duration,
    ) -> Option<Waiting<Id>> {
        w.attempts += 1;
        if self.is_expired(&w, now_ms) {
            return Some(w);
        }
        let at = now_ms + delay.as_millis() as i64;
        let at = self.expiry_ms(&w).map_or(at, |e| at.min(e));
        self.push(w, at);
        None
    }

    /// When a group expires (`bounce-after` after reception), if ever.
    pub fn expiry_ms(&self, w: &Waiting<Id>) -> Option<i64> {
        self.settings
            .bounce_after
            .map(|d| w.received_ms + d.as_millis() as i64)
    }

    /// True if `w` is past `bounce-after` at `now_ms`.
    pub fn is_expired(&self, w: &Waiting<Id>, now_ms: i64) -> bool {
        self.expiry_ms(w).is_some_and(|e| now_ms >= e)
    }

    /// Removes and returns every group past `bounce-after`, whatever the queue's mode or hold.
    pub fn take_expired(&mut self, now_ms: i64) -> Vec<Waiting<Id>> {
        let Some(after) = self.settings.bounce_after else {
            return Vec::new();
        };
        let after = after.as_millis() as i64;
        let mut expired = Vec::new();
        while let Some(&(received, seq)) = self.by_received.first() {
            if now_ms < received + after {
                break;
            }
            self.by_received.pop_first();
            expired.push(seq);
        }
        if expired.is_empty() {
            return Vec::new();
        }
        let out: Vec<Waiting<Id>> = expired
            .iter()
            .filter_map(|k| self.items.remove(k))
            .collect();
        self.rcpts -= out.iter().map(|w| w.rcpts.len()).sum::<usize>();
        self.heap
            .retain(|Reverse((_, seq))| self.items.contains_key(seq));
        out
    }

    /// The waiting groups, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Waiting<Id>> {
        self.items.values()
    }

    /// Removes and returns the groups for which `pred` holds (a delete by job id).
    pub fn remove_where(&mut self, mut pred: impl FnMut(&Waiting<Id>) -> bool) -> Vec<Waiting<Id>> {
        let seqs: Vec<u64> = self
            .items
            .iter()
            .filter(|(_, w)| pred(w))
            .map(|(s, _)| *s)
            .collect();
        let out: Vec<Waiting<Id>> = seqs
            .iter()
            .filter_map(|s| {
                let w = self.items.remove(s)?;
                self.by_received.remove(&(w.received_ms, *s));
                self.rcpts -= w.rcpts.len();
                Some(w)
            })
            .collect();
        if !out.is_empty() {
            let items = &self.items;
            self.heap.retain(|Reverse((_, s))| items.contains_key(s));
        }
        out
    }

    /// Removes and returns everything (for `bounce-queue` or a delete).
    pub fn drain_all(&mut self) -> Vec<Waiting<Id>> {
        self.heap.clear();
        self.by_received.clear();
        self.rcpts = 0;
        std::mem::take(&mut self.items).into_values().collect()
    }

    /// Makes everything due now (`schedule` / retry now).
    pub fn schedule_now(&mut self, now_ms: i64) {
        self.held_until_ms = None;
        let seqs: Vec<u64> = self.items.keys().copied().collect();
        self.heap = seqs.into_iter().map(|s| Reverse((now_ms, s))).collect();
    }

    /// The earliest expiry among waiting groups (so an idle queue still wakes up to expire mail).
    pub fn next_expiry_ms(&self) -> Option<i64> {
        let after = self.settings.bounce_after?;
        self.by_received
            .first()
            .map(|(received, _)| received + after.as_millis() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{effective::EffectiveSettings, load_str};

    fn settings(domain_block: &str) -> QueueSettings {
        let l = load_str(
            "t.conf",
            &format!("<domain *>\n{domain_block}\n</domain>\n"),
        );
        assert!(l.is_valid(), "{:?}", l.diagnostics);
        let e: EffectiveSettings = l.config.domain_settings("example.com", None);
        QueueSettings::from_effective(&e)
    }

    fn w(id: u32, received: i64) -> Waiting<u32> {
        Waiting {
            id,
            rcpts: vec![0],
            received_ms: received,
            attempts: 0,
        }
    }

    #[test]
    fn retry_lists_step_through_then_repeat_the_last() {
        let s = settings("retry-after 1m,5m,20m\nbackoff-retry-after 2h");
        let d = |m, a| retry_delay(&s, m, a).as_secs();
        assert_eq!(
            [
                d(Mode::Normal, 1),
                d(Mode::Normal, 2),
                d(Mode::Normal, 3),
                d(Mode::Normal, 9)
            ],
            [60, 300, 1200, 1200]
        );
        assert_eq!(d(Mode::Backoff, 1), 7200);
        let dflt = settings("max-smtp-out 1");
        assert_eq!(
            retry_delay(&dflt, Mode::Normal, 4).as_secs(),
            600,
            "default retry-after 10m"
        );
        assert_eq!(
            retry_delay(&dflt, Mode::Backoff, 1).as_secs(),
            3600,
            "default backoff-retry-after 1h"
        );
    }

    #[test]
    fn due_order_retry_and_expiry() {
        let s = settings("retry-after 1m,5m\nbounce-after 10m");
        let mut q: Queue<u32> = Queue::new(QueueKey::new("Example.COM.", None), s);
        assert_eq!(q.key.to_string(), "example.com/{default}");
        q.push(w(1, 0), 0);
        q.push(w(2, 0), 0);
        q.push(w(3, 0), 30_000);
        assert_eq!(
            q.pop_due(0).map(|w| w.id),
            Some(1),
            "same time: arrival order"
        );
        let two = q.pop_due(0).unwrap_or_else(|| panic!("2 due"));
        assert_eq!(q.pop_due(0), None, "3 is not due yet");
        assert_eq!(q.next_due_ms(), Some(30_000));
        // 2 fails: retried after 1m, then 5m, then 5m ...
        assert_eq!(q.retry(two, 0), None);
        assert_eq!(q.pop_due(30_000).map(|w| w.id), Some(3));
        assert_eq!(q.next_due_ms(), Some(60_000));
        let two = q.pop_due(60_000).unwrap_or_else(|| panic!("2 due again"));
        assert_eq!(two.attempts, 1);
        assert_eq!(q.retry(two, 60_000), None);
        assert_eq!(q.next_due_ms(), Some(360_000));
        let two = q
            .pop_due(360_000)
            .unwrap_or_else(|| panic!("2 due a third time"));
        // Retrying at 6m would land at 11m, past bounce-after 10m: it is capped at the expiry.
        assert_eq!(q.retry(two, 360_000), None);
        assert_eq!(q.next_due_ms(), Some(600_000));
        let two = q.pop_due(600_000).unwrap_or_else(|| panic!("2 at expiry"));
        assert_eq!(
            q.retry(two, 600_000).map(|w| (w.id, w.attempts)),
            Some((2, 4)),
            "expired: handed back to bounce"
        );
        assert!(q.is_empty());
    }

    #[test]
    fn expiry_applies_in_every_state() {
        let s = settings("bounce-after 2m");
        let mut q: Queue<u32> = Queue::new(QueueKey::new("x.org", Some("v1")), s);
        q.mode = Mode::Backoff;
        q.held_until_ms = Some(10 * 3_600_000); // deferred for hours
        q.push(w(1, 0), 0);
        q.push(w(2, 60_000), 60_000);
        assert_eq!(q.pop_due(100_000), None, "held");
        assert_eq!(q.next_expiry_ms(), Some(120_000));
        let gone: Vec<u32> = q.take_expired(120_000).into_iter().map(|w| w.id).collect();
        assert_eq!(gone, vec![1]);
        assert_eq!(q.len(), 1);
        q.schedule_now(150_000);
        assert_eq!(
            q.pop_due(150_000).map(|w| w.id),
            Some(2),
            "schedule clears the hold"
        );
        assert_eq!(q.next_expiry_ms(), None, "nothing waits");
    }

    #[test]
    fn the_expiry_index_follows_pops_and_removals() {
        let s = settings("bounce-after 10m");
        let mut q: Queue<u32> = Queue::new(QueueKey::new("x.org", None), s);
        // Received out of order; the oldest decides the next expiry.
        q.push(w(1, 300_000), 0);
        q.push(w(2, 100_000), 5);
        q.push(w(3, 200_000), 10);
        assert_eq!(q.next_expiry_ms(), Some(700_000));
        assert_eq!(q.pop_due(5).map(|w| w.id), Some(1));
        assert_eq!(q.pop_due(5).map(|w| w.id), Some(2), "pops leave the index");
        assert_eq!(q.next_expiry_ms(), Some(800_000));
        assert!(q.take_expired(799_999).is_empty());
        q.push(w(4, 0), 1_000_000);
        let gone: Vec<u32> = q.take_expired(800_000).into_iter().map(|w| w.id).collect();
        assert_eq!(gone, vec![4, 3], "oldest first");
        assert!(q.is_empty());
        assert_eq!(
            q.pop_due(2_000_000),
            None,
            "expired groups left the schedule too"
        );
        q.push(w(5, 50_000), 0);
        assert_eq!(q.remove_where(|w| w.id == 5).len(), 1);
        assert_eq!(q.next_expiry_ms(), None, "removals leave the index");
        q.push(w(6, 50_000), 0);
        assert_eq!(q.drain_all().len(), 1);
        assert_eq!(q.next_expiry_ms(), None, "a drained queue has no expiry");
    }

    /// The recipient count follows every way a group comes and goes.
    #[test]
    fn the_recipient_count_follows_pushes_pops_expiry_and_removals() {
        let s = settings("bounce-after 10m");
        let mut q: Queue<u32> = Queue::new(QueueKey::new("x.org", None), s);
        let group = |id, n: u32, received| Waiting {
            rcpts: (0..n).collect(),
            ..w(id, received)
        };
        q.push(group(1, 3, 300_000), 0);
        q.push(group(2, 2, 100_000), 5);
        q.push(group(3, 4, 200_000), 10);
        assert_eq!(q.recipients(), 9);
        assert_eq!(q.pop_due(0).map(|w| w.id), Some(1));
        assert_eq!(q.recipients(), 6);
        assert_eq!(q.take_expired(700_000).len(), 1, "group 2");
        assert_eq!(q.recipients(), 4);
        q.push(group(4, 5, 400_000), 20);
        assert_eq!(q.remove_where(|w| w.id == 3).len(), 1);
        assert_eq!(q.recipients(), 5);
        q.push(group(5, 1, 400_000), 20);
        assert_eq!(q.recipients(), 6);
        assert_eq!(q.drain_all().len(), 2);
        assert_eq!(q.recipients(), 0);
    }
}
