//! What the expectations and the report keep of the MTA's accounting records, fed one record at a
//! time as the MTA writes them: counts, per-provider totals and series, delivery times, and the
//! nothing-lost ledger. Nothing is kept per record except the keys of messages still in flight and
//! a 128-bit hash per accepted and per ended recipient, so a day of traffic fits in memory.

use crate::report::{ProviderTotals, Timeline, Totals};
use crate::scenario::Loaded;
use mta::acct::{Record, RecordType};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One accounting record as the tally reads it (from the MTA's tap or from a CSV file).
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Record type.
    pub ty: Option<RecordType>,
    /// When it was logged (Unix ms).
    pub time_logged: i64,
    /// When the message was queued (Unix ms).
    pub time_queued: Option<i64>,
    /// Recipient (any case).
    pub rcpt: &'a str,
    /// Bounce category.
    pub bounce_cat: &'a str,
    /// The message's Message-ID.
    pub message_id: &'a str,
    /// The reply or reason quoted (`b` records).
    pub dsn_diag: &'a str,
    /// The envelope sender; empty for the MTA's own DSNs.
    pub orig: &'a str,
}

impl<'a> RecordView<'a> {
    /// The view of an MTA accounting record (its Message-ID from the record's header fields).
    pub fn of(r: &'a Record) -> RecordView<'a> {
        RecordView {
            ty: r.ty,
            time_logged: r.time_logged,
            time_queued: r.time_queued,
            rcpt: &r.rcpt,
            bounce_cat: &r.bounce_cat,
            message_id: r
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("message-id"))
                .map_or("", |(_, v)| v.as_str()),
            dsn_diag: &r.dsn_diag,
            orig: &r.orig,
        }
    }
}

/// Every accepted recipient must end exactly once (`d` or `b`), and nothing may end that was never
/// accepted. Keys are (Message-ID, lower-cased recipient).
#[derive(Debug, Default)]
pub struct Ledger {
    received: HashSet<u128>,
    open: HashMap<u128, (String, String)>,
    ended: HashSet<u128>,
    twice: Vec<(String, String)>,
    maybe_stray: Vec<(u128, String, String)>,
}

/// The ledger's findings at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerReport {
    /// Recipients accepted.
    pub received: usize,
    /// Accepted, never ended.
    pub open: Vec<(String, String)>,
    /// Ended more than once.
    pub twice: Vec<(String, String)>,
    /// Ended without being accepted.
    pub stray: Vec<(String, String)>,
}

fn key(id: &str, rcpt: &str) -> u128 {
    let a = crate::isp::engine::stable_hash(&[b"ledger-a", id.as_bytes(), b"\0", rcpt.as_bytes()]);
    let b = crate::isp::engine::stable_hash(&[b"ledger-b", id.as_bytes(), b"\0", rcpt.as_bytes()]);
    (u128::from(a) << 64) | u128::from(b)
}

impl Ledger {
    /// A recipient accepted (`r`).
    pub fn received(&mut self, id: &str, rcpt: &str) {
        let k = key(id, rcpt);
        if self.received.insert(k) && !self.ended.contains(&k) {
            self.open.insert(k, (id.to_string(), rcpt.to_string()));
        }
    }

    /// A recipient ended (`d` or `b`).
    pub fn ended(&mut self, id: &str, rcpt: &str) {
        let k = key(id, rcpt);
        if !self.ended.insert(k) {
            self.twice.push((id.to_string(), rcpt.to_string()));
            return;
        }
        if self.open.remove(&k).is_none() {
            // Not (yet) accepted: decided at the end, when every `r` record is in.
            self.maybe_stray.push((k, id.to_string(), rcpt.to_string()));
        }
    }

    /// What the ledger found, each list sorted.
    pub fn report(&self) -> LedgerReport {
        let mut open: Vec<(String, String)> = self.open.values().cloned().collect();
        open.sort();
        let mut twice = self.twice.clone();
        twice.sort();
        twice.dedup();
        let mut stray: Vec<(String, String)> = self
            .maybe_stray
            .iter()
            .filter(|(k, _, _)| !self.received.contains(k))
            .map(|(_, id, r)| (id.clone(), r.clone()))
            .collect();
        stray.sort();
        LedgerReport {
            received: self.received.len(),
            open,
            twice,
            stray,
        }
    }
}

/// Counts, series and times from the accounting records.
#[derive(Debug)]
pub struct Tally {
    domains: HashMap<String, String>,
    /// Run totals.
    pub totals: Totals,
    /// Per provider (`other` for domains no profile serves).
    pub providers: BTreeMap<String, ProviderTotals>,
    /// Deliveries, deferrals and bounces over time, per provider and per bounce category.
    pub timeline: Timeline,
    /// `rb` records (remote bounces) per bounce category; `b` records are in `totals.by_category`.
    pub remote_bounces: BTreeMap<String, u64>,
    /// Delivery times (ms from queued to delivered) per provider, in record order.
    pub delivery_ms: BTreeMap<String, Vec<i64>>,
    /// The nothing-lost ledger.
    pub ledger: Ledger,
    /// Bounced recipients by why: (provider, category, reply with addresses as `{ip}`); the
    /// traffic's mail only, not the MTA's own DSNs.
    pub bounce_reasons: BTreeMap<(String, String, String), u64>,
    /// Recipients of the MTA's own DSNs (null envelope sender) among `totals.accepted`.
    pub dsns_accepted: u64,
}

/// Distinct bounce reasons kept; past it, new ones are counted under `(other replies)`.
const MAX_REASONS: usize = 500;

/// A reply with its IPv4 addresses written `{ip}` (the same refusal from several source IPs is
/// one reason), cut at 300 characters.
pub fn reason_text(reply: &str) -> String {
    let mut out = String::with_capacity(reply.len().min(300));
    let b = reply.as_bytes();
    let mut i = 0;
    while i < b.len() && out.len() < 300 {
        let run = b[i..]
            .iter()
            .take_while(|c| c.is_ascii_digit() || **c == b'.')
            .count();
        let at_word = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if run > 0 && at_word {
            let tok = reply[i..i + run].trim_end_matches('.');
            if tok.split('.').count() == 4 && tok.parse::<std::net::Ipv4Addr>().is_ok() {
                out.push_str("{ip}");
                i += tok.len();
                continue;
            }
            out.push_str(&reply[i..i + run]);
            i += run;
            continue;
        }
        let ch = reply[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

impl Tally {
    /// `b` and `rb` records in bounce category `cat`.
    pub fn bounces_in(&self, cat: &str) -> u64 {
        self.totals.by_category.get(cat).copied().unwrap_or(0)
            + self.remote_bounces.get(cat).copied().unwrap_or(0)
    }

    /// An empty tally for scenario `l` (its providers' domains, its timeline).
    pub fn new(l: &Loaded) -> Tally {
        let mut domains = HashMap::new();
        for p in &l.profiles {
            for d in &p.domains {
                domains
                    .entry(d.to_ascii_lowercase())
                    .or_insert_with(|| p.name.clone());
            }
        }
        Tally {
            domains,
            totals: Totals::default(),
            providers: BTreeMap::new(),
            timeline: Timeline::new(l.start_ms, l.duration.as_millis() as i64),
            remote_bounces: BTreeMap::new(),
            delivery_ms: BTreeMap::new(),
            ledger: Ledger::default(),
            bounce_reasons: BTreeMap::new(),
            dsns_accepted: 0,
        }
    }

    /// Takes one record into account.
    pub fn add(&mut self, r: &RecordView<'_>) {
        let Some(ty) = r.ty else { return };
        let mut rcpt_buf = String::new();
        let rcpt = if r.rcpt.bytes().any(|b| b.is_ascii_uppercase()) {
            rcpt_buf.push_str(r.rcpt);
            rcpt_buf.make_ascii_lowercase();
            rcpt_buf.as_str()
        } else {
            r.rcpt
        };
        let provider = rcpt
            .rsplit_once('@')
            .and_then(|(_, d)| self.domains.get(d))
            .map_or("other", |p| p.as_str());
        // Every record's provider is listed in the report, even one with nothing but receptions.
        let pt = provider_entry(&mut self.providers, provider);
        match ty {
            RecordType::Received => {
                self.totals.accepted += 1;
                if r.orig.is_empty() {
                    self.dsns_accepted += 1;
                }
                self.ledger.received(r.message_id, rcpt);
            }
            RecordType::Delivered => {
                self.totals.delivered += 1;
                pt.delivered += 1;
                self.timeline
                    .add(provider, "deliveries", r.time_logged, 1.0);
                if let Some(q) = r.time_queued {
                    self.delivery_ms
                        .entry(provider.to_string())
                        .or_default()
                        .push(r.time_logged - q);
                }
                self.ledger.ended(r.message_id, rcpt);
            }
            RecordType::Bounced => {
                self.totals.bounced += 1;
                pt.bounced += 1;
                if r.bounce_cat == "message-expired" {
                    self.totals.expired += 1;
                }
                *self
                    .totals
                    .by_category
                    .entry(r.bounce_cat.to_string())
                    .or_insert(0) += 1;
                self.timeline.add(provider, "bounces", r.time_logged, 1.0);
                let cat = if r.bounce_cat.is_empty() {
                    "other"
                } else {
                    r.bounce_cat
                };
                self.timeline
                    .add(cat, "bounces-by-category", r.time_logged, 1.0);
                self.ledger.ended(r.message_id, rcpt);
                if r.orig.is_empty() {
                    return;
                }
                let key = (
                    provider.to_string(),
                    cat.to_string(),
                    reason_text(r.dsn_diag),
                );
                let key = if self.bounce_reasons.len() < MAX_REASONS
                    || self.bounce_reasons.contains_key(&key)
                {
                    key
                } else {
                    (
                        provider.to_string(),
                        cat.to_string(),
                        "(other replies)".into(),
                    )
                };
                *self.bounce_reasons.entry(key).or_insert(0) += 1;
            }
            RecordType::RemoteBounce => {
                *self
                    .remote_bounces
                    .entry(r.bounce_cat.to_string())
                    .or_insert(0) += 1;
            }
            RecordType::Transient | RecordType::TransientQueue => {
                self.totals.deferrals += 1;
                pt.deferrals += 1;
                self.timeline.add(provider, "deferrals", r.time_logged, 1.0);
            }
            RecordType::Feedback => self.totals.complaints += 1,
            RecordType::RemoteStatus => {}
        }
    }
}

fn provider_entry<'a>(
    providers: &'a mut BTreeMap<String, ProviderTotals>,
    name: &str,
) -> &'a mut ProviderTotals {
    if !providers.contains_key(name) {
        providers.insert(name.to_string(), ProviderTotals::default());
    }
    providers
        .get_mut(name)
        .unwrap_or_else(|| unreachable!("inserted above"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fold_addresses() {
        assert_eq!(
            reason_text(
                "421 4.7.0 [TSS04] Messages from 203.0.113.11 temporarily deferred - 4.16.55.1"
            ),
            "421 4.7.0 [TSS04] Messages from {ip} temporarily deferred - {ip}"
        );
        assert_eq!(
            reason_text("550 5.7.26 blocked [1.2.3]"),
            "550 5.7.26 blocked [1.2.3]"
        );
        assert_eq!(reason_text("x".repeat(400).as_str()).len(), 300);
    }

    #[test]
    fn ledger_finds_open_double_and_stray_recipients() {
        let mut l = Ledger::default();
        l.received("<1>", "a@x");
        l.received("<1>", "b@x");
        l.ended("<1>", "a@x");
        l.ended("<1>", "b@x");
        let r = l.report();
        assert_eq!(r.received, 2);
        assert!(r.open.is_empty() && r.twice.is_empty() && r.stray.is_empty());
        l.ended("<1>", "a@x");
        l.ended("<1>", "a@x");
        assert_eq!(l.report().twice, vec![("<1>".into(), "a@x".into())]);
        l.received("<2>", "c@x");
        assert_eq!(l.report().open, vec![("<2>".into(), "c@x".into())]);
        // An end before its reception (record order) is not stray once the reception comes.
        l.ended("<3>", "d@x");
        l.ended("<4>", "e@x");
        l.received("<3>", "d@x");
        let r = l.report();
        assert_eq!(r.stray, vec![("<4>".into(), "e@x".into())]);
        assert_eq!(r.open, vec![("<2>".into(), "c@x".into())]);
    }
}
