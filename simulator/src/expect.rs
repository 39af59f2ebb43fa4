//! Checks a scenario's expectations against what happened: the providers' event records, the MTA's
//! accounting records and its queue mode changes. Each check gives a readable verdict: what was
//! expected, what was observed, and where.

use crate::isp::{Event, EventKind};
use crate::report::Verdict;
use crate::scenario::{Expectation, Incident, Loaded};
use crate::tally::{LedgerReport, Tally};
use mta::queue::Mode;
use mta::shaping::ModeChange;
use std::collections::BTreeMap;

/// Everything a run produced that expectations look at.
#[derive(Debug)]
pub struct Observed {
    /// Provider name -> its recorded events.
    pub events: BTreeMap<String, Vec<Event>>,
    /// What was kept of the MTA's accounting records (fed one at a time).
    pub tally: Tally,
    /// Queue name -> its mode changes.
    pub modes: BTreeMap<String, Vec<ModeChange>>,
    /// The run's `--volume`: expectations that count messages scale with it.
    pub volume: f64,
}

impl Observed {
    /// Nothing observed yet, for scenario `l`.
    pub fn new(l: &Loaded) -> Observed {
        Observed {
            events: BTreeMap::new(),
            tally: Tally::new(l),
            modes: BTreeMap::new(),
            volume: 1.0,
        }
    }
}

/// A count bound scaled to the run's volume (`--volume 0.1` makes `>= 500` `>= 50`); at least 1
/// where the bound was.
pub fn scale_count(n: u64, volume: f64) -> u64 {
    if (volume - 1.0).abs() < 1e-9 || n == 0 {
        return n;
    }
    // Rounded to a millionth first: 500 x 0.1 is 50.000000000000007 in floating point.
    let x = ((n as f64 * volume) * 1e6).round() / 1e6;
    (x.ceil() as u64).max(1)
}

/// How a bound reads when it was scaled: `>= 50 (500 at full volume)`.
fn scaled_note(orig: u64, now: u64) -> String {
    if orig == now {
        String::new()
    } else {
        format!(" ({orig} at full volume)")
    }
}

fn verdict(
    expectation: String,
    passed: bool,
    expected: String,
    observed: String,
    location: String,
) -> Verdict {
    Verdict {
        expectation,
        passed,
        exercised: true,
        expected,
        observed,
        location,
    }
}

/// The verdict of an expectation whose subject never happened: it fails, marked as such.
fn hollow(expectation: String, expected: String, why: String, location: String) -> Verdict {
    Verdict {
        expectation,
        passed: false,
        exercised: false,
        expected,
        observed: why,
        location,
    }
}

/// Does queue `name` (`domain/vmta`) match `pattern` (`*` allowed in either part)?
pub fn queue_matches(pattern: &str, name: &str) -> bool {
    let (pd, pv) = pattern.split_once('/').unwrap_or((pattern, "*"));
    let (nd, nv) = name.split_once('/').unwrap_or((name, ""));
    (pd == "*" || pd.eq_ignore_ascii_case(nd)) && (pv == "*" || pv == nv)
}

/// When an incident starts and ends (Unix ms).
pub(crate) fn incident_window(l: &Loaded, inc: &Incident) -> (i64, i64) {
    let at = mta::config::values::parse_interval(&inc.at).map_or(0, |d| d.as_millis() as i64);
    let lasts = mta::config::values::parse_interval(&inc.lasts).map_or(0, |d| d.as_millis() as i64);
    (l.start_ms + at, l.start_ms + at + lasts)
}

/// Why no connection met an incident, if none did: no connection to its provider in its window,
/// or (for a reply incident) none given its reply.
fn incident_unmet(o: &Observed, inc: &Incident, start: i64, end: i64) -> Option<String> {
    let evs = o
        .events
        .get(&inc.provider)
        .map_or(&[][..], |v| v.as_slice());
    let during: Vec<&Event> = evs
        .iter()
        .filter(|e| e.t_ms >= start && e.t_ms < end)
        .collect();
    if during.is_empty() {
        return Some(format!(
            "no connection reached {} during incident ({}..{} after the start)",
            inc.provider, inc.at, inc.lasts
        ));
    }
    if let crate::scenario::IncidentKind::Reply { reply, .. } = &inc.kind {
        // The reply's fixed start (placeholders such as {ip} vary).
        let head = reply.split('{').next().unwrap_or(reply);
        let met = during.iter().any(|e| match &e.kind {
            EventKind::Refused(r) => r.reply.starts_with(head),
            _ => false,
        });
        if !met {
            return Some(format!(
                "{} never gave the incident's reply ({head}...) to a connection",
                inc.provider
            ));
        }
    }
    None
}

fn ms(s: &str) -> i64 {
    mta::config::values::parse_interval(s).map_or(0, |d| d.as_millis() as i64)
}

/// Checks every expectation of the scenario.
pub fn check(l: &Loaded, o: &Observed) -> Vec<Verdict> {
    l.scenario
        .expectations
        .iter()
        .map(|e| check_one(l, o, e))
        .collect()
}

fn check_one(l: &Loaded, o: &Observed, e: &Expectation) -> Verdict {
    match e {
        Expectation::MaxConnections { provider, max } => max_connections(l, o, provider, max),
        Expectation::MessagesPerConnection { provider, max } => {
            messages_per_connection(o, provider, max)
        }
        Expectation::Rate { provider, max } => rate(l, o, provider, max),
        Expectation::Backoff {
            queue,
            incident,
            enter_within,
            leave_within,
        } => backoff(l, o, queue, incident, enter_within, leave_within),
        Expectation::Category {
            category,
            or,
            min,
            max,
        } => category_bounds(o, category, or, min, max),
        Expectation::DkimVerified { share } => dkim_verified(o, share),
        Expectation::FeedbackRecords { min: min0 } => feedback_records(o, min0),
        Expectation::NothingLost => nothing_lost(&o.tally.ledger.report()),
        Expectation::DeliveryTime {
            provider,
            percentile,
            under,
        } => delivery_time(o, provider, percentile, under),
    }
}

/// Concurrent connections per source IP at a provider.
fn max_connections(l: &Loaded, o: &Observed, provider: &String, max: &u32) -> Verdict {
    let empty = Vec::new();
    let ev = o.events.get(provider).unwrap_or(&empty);
    let worst = ev.iter().filter_map(|e| match e.kind {
        EventKind::Connect { open } => Some((open, e.ip, e.t_ms)),
        _ => None,
    });
    let worst = worst.max_by_key(|(open, _, t)| (*open, std::cmp::Reverse(*t)));
    if worst.is_none() {
        return hollow(
            format!("at most {max} concurrent connections per source IP at {provider}"),
            format!("<= {max}"),
            format!("{provider} received no connections"),
            provider.clone(),
        );
    }
    let (seen, where_) = worst.map_or((0, "no connections".to_string()), |(n, ip, t)| {
        (
            n,
            format!("{provider}, from {ip} at +{}s", (t - l.start_ms) / 1000),
        )
    });
    verdict(
        format!("at most {max} concurrent connections per source IP at {provider}"),
        seen <= *max,
        format!("<= {max}"),
        seen.to_string(),
        where_,
    )
}

/// Messages per connection at a provider.
fn messages_per_connection(o: &Observed, provider: &String, max: &u32) -> Verdict {
    let empty = Vec::new();
    let mut per: BTreeMap<u64, (u32, std::net::IpAddr)> = BTreeMap::new();
    for e in o.events.get(provider).unwrap_or(&empty) {
        if let EventKind::Accepted { .. } = e.kind {
            per.entry(e.conn).or_insert((0, e.ip)).0 += 1;
        }
    }
    if per.is_empty() {
        return hollow(
            format!("at most {max} messages per connection at {provider}"),
            format!("<= {max}"),
            format!("{provider} accepted no messages"),
            provider.clone(),
        );
    }
    let worst = per
        .iter()
        .max_by_key(|(c, (n, _))| (*n, std::cmp::Reverse(**c)));
    let (seen, where_) = worst.map_or((0, "no messages".into()), |(c, (n, ip))| {
        (*n, format!("{provider}, connection #{c} from {ip}"))
    });
    verdict(
        format!("at most {max} messages per connection at {provider}"),
        seen <= *max,
        format!("<= {max}"),
        seen.to_string(),
        where_,
    )
}

/// Accepted recipients per source IP in any window of the rate.
fn rate(l: &Loaded, o: &Observed, provider: &String, max: &String) -> Verdict {
    let empty = Vec::new();
    let rate = mta::config::values::parse_rate(max).unwrap_or(mta::config::values::Rate::UNLIMITED);
    let (Some(count), window) = (rate.count, rate.per.as_millis() as i64) else {
        return verdict(
            format!("rate at {provider} within {max}"),
            true,
            max.clone(),
            "unlimited".into(),
            provider.clone(),
        );
    };
    let mut per_ip: BTreeMap<std::net::IpAddr, Vec<i64>> = BTreeMap::new();
    for e in o.events.get(provider).unwrap_or(&empty) {
        if let EventKind::Accepted { rcpts, .. } = e.kind {
            per_ip
                .entry(e.ip)
                .or_default()
                .extend(std::iter::repeat_n(e.t_ms, rcpts as usize));
        }
    }
    if per_ip.is_empty() {
        return hollow(
            format!("accepted recipients per source IP at {provider} within {max} in every window"),
            format!(
                "<= {count} per {}",
                mta::config::values::format_interval(rate.per)
            ),
            format!("{provider} accepted no messages"),
            provider.clone(),
        );
    }
    let mut worst = (0u64, String::from("no traffic"));
    for (ip, ts) in &per_ip {
        let mut j = 0;
        for i in 0..ts.len() {
            while ts[i] - ts[j] >= window {
                j += 1;
            }
            let n = (i - j + 1) as u64;
            if n > worst.0 {
                worst = (
                    n,
                    format!(
                        "{provider}, from {ip}, window ending +{}s",
                        (ts[i] - l.start_ms) / 1000
                    ),
                );
            }
        }
    }
    verdict(
        format!("accepted recipients per source IP at {provider} within {max} in every window"),
        worst.0 <= count,
        format!(
            "<= {count} per {}",
            mta::config::values::format_interval(rate.per)
        ),
        worst.0.to_string(),
        worst.1,
    )
}

/// Queues back off within a deadline of an incident and return to normal after it.
fn backoff(
    l: &Loaded,
    o: &Observed,
    queue: &String,
    incident: &usize,
    enter_within: &String,
    leave_within: &String,
) -> Verdict {
    let Some(inc) = l.scenario.incidents.get(*incident) else {
        return verdict(
            format!("backoff for {queue}"),
            false,
            "an incident".into(),
            format!("no incident #{incident}"),
            String::new(),
        );
    };
    let (start, end) = incident_window(l, inc);
    let (enter_by, leave_by) = (start + ms(enter_within), end + ms(leave_within));
    if let Some(why) = incident_unmet(o, inc, start, end) {
        return hollow(
                format!("queues {queue} back off within {enter_within} of incident #{incident} and return to normal within {leave_within} after it"),
                "an incident the MTA's connections meet".into(),
                why,
                inc.provider.clone(),
            );
    }
    let mut entered = None;
    let mut left = None;
    let mut which = String::new();
    for (q, changes) in o.modes.iter().filter(|(q, _)| queue_matches(queue, q)) {
        if let Some(c) = changes
            .iter()
            .find(|c| c.to == Mode::Backoff && c.at_ms >= start)
        {
            if entered.is_none_or(|t| c.at_ms < t) {
                entered = Some(c.at_ms);
                which = q.clone();
            }
        }
    }
    // Every matching queue that entered backoff must be back to normal by the deadline.
    let mut late: Option<(String, Option<i64>)> = None;
    for (q, changes) in o.modes.iter().filter(|(q, _)| queue_matches(queue, q)) {
        let last_backoff = changes
            .iter()
            .rev()
            .find(|c| c.to == Mode::Backoff && c.at_ms >= start);
        if let Some(b) = last_backoff {
            let back = changes
                .iter()
                .find(|c| c.to == Mode::Normal && c.at_ms > b.at_ms)
                .map(|c| c.at_ms);
            left = left.max(back);
            if back.is_none_or(|t| t > leave_by) {
                late = Some((q.clone(), back));
            }
        }
    }
    let rel = |t: i64| format!("+{}s", (t - l.start_ms) / 1000);
    let ok = entered.is_some_and(|t| t <= enter_by) && late.is_none();
    let observed = match (&entered, &late) {
        (None, _) => "never entered backoff".to_string(),
        (Some(t), Some((q, None))) => {
            format!("entered at {}, {q} still in backoff at the end", rel(*t))
        }
        (Some(t), Some((q, Some(b)))) => format!(
            "entered at {}, {q} back to normal only at {}",
            rel(*t),
            rel(*b)
        ),
        (Some(t), None) => format!(
            "entered at {}, all back to normal by {}",
            rel(*t),
            left.map_or("-".into(), rel)
        ),
    };
    verdict(
            format!("queues {queue} back off within {enter_within} of incident #{incident} and return to normal within {leave_within} after it"),
            ok,
            format!("enter by {}, normal by {}", rel(enter_by), rel(leave_by)),
            observed,
            if which.is_empty() { queue.clone() } else { which },
        )
}

/// Bounces in a category (or any of several), the bounds scaled to the volume.
fn category_bounds(
    o: &Observed,
    category: &String,
    or: &[String],
    min: &Option<u64>,
    max: &Option<u64>,
) -> Verdict {
    let (min0, max0) = (*min, *max);
    let min = &min.map(|m| scale_count(m, o.volume));
    let max = &max.map(|m| scale_count(m, o.volume));
    let n: u64 = std::iter::once(category)
        .chain(or)
        .map(|c| o.tally.bounces_in(c))
        .sum();
    let category = &std::iter::once(category.as_str())
        .chain(or.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" or ");
    if o.tally.totals.accepted == 0 {
        return hollow(
            format!("bounces in category {category}"),
            "mail to bounce".into(),
            "the MTA accepted no message".into(),
            "accounting b/rb records".into(),
        );
    }
    let ok = min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m);
    let bound = match (min, max) {
        (Some(a), Some(b)) => format!("{a}..={b}"),
        (Some(a), None) => format!(">= {a}"),
        (None, Some(b)) => format!("<= {b}"),
        (None, None) => "any".into(),
    } + &scaled_note(min0.or(max0).unwrap_or(0), min.or(*max).unwrap_or(0));
    verdict(
        format!("bounces in category {category}"),
        ok,
        bound,
        n.to_string(),
        "accounting b/rb records".into(),
    )
}

/// The share of delivered messages whose DKIM signature a provider verified.
fn dkim_verified(o: &Observed, share: &f64) -> Verdict {
    let (mut all, mut pass) = (0u64, 0u64);
    for ev in o.events.values().flatten() {
        if let EventKind::Accepted { dkim_pass, .. } = ev.kind {
            all += 1;
            pass += u64::from(dkim_pass);
        }
    }
    if all == 0 {
        return hollow(
            "delivered messages verified DKIM at the providers".into(),
            format!(">= {:.1}%", share * 100.0),
            "no provider accepted a message".into(),
            "provider end-of-data checks".into(),
        );
    }
    let seen = pass as f64 / all as f64;
    verdict(
        "delivered messages verified DKIM at the providers".into(),
        all > 0 && seen >= *share,
        format!(">= {:.1}%", share * 100.0),
        format!("{pass} of {all} ({:.2}%)", seen * 100.0),
        "provider end-of-data checks".into(),
    )
}

/// Complaints turned into `f` records.
fn feedback_records(o: &Observed, min0: &u64) -> Verdict {
    let min = scale_count(*min0, o.volume);
    let n = o.tally.totals.complaints;
    if o.tally.totals.delivered == 0 {
        return hollow(
            "ARF complaints turned into f records".into(),
            format!(">= {min}"),
            "no message was delivered to complain about".into(),
            "accounting f records".into(),
        );
    }
    verdict(
        "ARF complaints turned into f records".into(),
        n >= min,
        format!(">= {min}{}", scaled_note(*min0, min)),
        n.to_string(),
        "accounting f records".into(),
    )
}

/// A percentile of delivery times at a provider.
fn delivery_time(o: &Observed, provider: &String, percentile: &f64, under: &String) -> Verdict {
    let mut times: Vec<i64> = o
        .tally
        .delivery_ms
        .get(provider)
        .cloned()
        .unwrap_or_default();
    times.sort_unstable();
    let bound = ms(under);
    if times.is_empty() {
        return hollow(
            format!("p{percentile} delivery time at {provider} under {under}"),
            format!("< {under}"),
            format!("no deliveries at {provider}"),
            provider.clone(),
        );
    }
    let idx = ((percentile / 100.0) * (times.len() as f64 - 1.0)).round() as usize;
    let p = times[idx.min(times.len() - 1)];
    verdict(
        format!("p{percentile} delivery time at {provider} under {under}"),
        p < bound,
        format!("< {under}"),
        format!("{:.1}s over {} deliveries", p as f64 / 1000.0, times.len()),
        provider.clone(),
    )
}

/// Every accepted recipient (`r` record) ends exactly once in a `d` or `b` record (expiry is a `b`
/// with `message-expired`), and nothing ends that was never accepted.
fn nothing_lost(r: &LedgerReport) -> Verdict {
    if r.received == 0 && r.stray.is_empty() {
        return hollow(
            "nothing lost: every accepted recipient delivered, bounced or expired exactly once"
                .into(),
            "accepted recipients to follow".into(),
            "the MTA accepted no message".into(),
            "accounting r records".into(),
        );
    }
    let ok = r.open.is_empty() && r.twice.is_empty() && r.stray.is_empty() && r.received > 0;
    let first = r
        .open
        .first()
        .or(r.twice.first())
        .or(r.stray.first())
        .map(|(id, rcpt)| format!("message {id} to {rcpt}"))
        .unwrap_or_default();
    verdict(
        "nothing lost: every accepted recipient delivered, bounced or expired exactly once".into(),
        ok,
        format!("{} recipients ended once each", r.received),
        format!(
            "{} unfinished, {} ended twice or more, {} ended without reception",
            r.open.len(),
            r.twice.len(),
            r.stray.len()
        ),
        if first.is_empty() {
            "accounting r/d/b records".into()
        } else {
            first
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_lost_names_the_first_open_recipient() {
        let mut l = crate::tally::Ledger::default();
        l.received("<1>", "a@x");
        l.ended("<1>", "a@x");
        assert!(nothing_lost(&l.report()).passed);
        l.ended("<1>", "a@x");
        let v = nothing_lost(&l.report());
        assert!(!v.passed && v.observed.contains("1 ended twice"), "{v:?}");
        let mut l = crate::tally::Ledger::default();
        l.received("<2>", "c@x");
        l.received("<1>", "b@x");
        let v = nothing_lost(&l.report());
        assert!(!v.passed && v.location == "message <1> to b@x", "{v:?}");
        assert!(!nothing_lost(&crate::tally::Ledger::default().report()).passed);
    }

    #[test]
    fn queue_patterns() {
        assert!(queue_matches("yahoo.com/*", "yahoo.com/mkt-1"));
        assert!(queue_matches("*/mkt-1", "aol.com/mkt-1"));
        assert!(!queue_matches("yahoo.com/*", "aol.com/mkt-1"));
        assert!(queue_matches("yahoo.com", "yahoo.com/{default}"));
    }
}
