//! A fake provider's decisions, separate from its sockets: per-source-IP state shared by all of
//! its MX hosts (open connections, connect and message rates over sliding windows, reputation),
//! the mailbox population, greylisting, incident overrides, and a record of every decision for the
//! expectations engine. Time comes in as Unix milliseconds, so simulated runs are deterministic.

use crate::profile::{Phase, Profile, Response};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// A reply the provider gives and whether it closes the connection after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The full reply line (code, enhanced status, text).
    pub reply: String,
    /// Hang up after it.
    pub disconnect: bool,
}

impl Answer {
    fn from(r: &Response, ip: IpAddr, rcpt: &str, sender_domain: &str) -> Answer {
        Answer {
            reply: r.render(ip, rcpt, sender_domain),
            disconnect: r.disconnect,
        }
    }

    /// The reply code.
    pub fn code(&self) -> u16 {
        self.reply
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

/// What a mailbox is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mailbox {
    /// Exists and takes mail.
    Ok,
    /// Does not exist.
    Unknown,
    /// Over quota.
    Full,
    /// Disabled account.
    Disabled,
}

/// FNV-1a, 64 bits, with MurmurHash3's final avalanche: a stable hash (same value on every run and
/// platform) for drawing states.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A number in [0, 1) drawn from the parts (deterministic).
pub fn draw(parts: &[&[u8]]) -> f64 {
    (stable_hash(parts) >> 11) as f64 / (1u64 << 53) as f64
}

/// A scenario incident that changes the provider's answers for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// What it answers.
    pub response: Response,
    /// Share of connections (drawn per connection) that get it.
    pub share: f64,
    /// From when (Unix ms).
    pub from_ms: i64,
    /// Until when (Unix ms).
    pub until_ms: i64,
}

/// One recorded decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When (Unix ms).
    pub t_ms: i64,
    /// The sending IP.
    pub ip: IpAddr,
    /// The connection's number at this provider.
    pub conn: u64,
    /// What happened.
    pub kind: EventKind,
}

/// A refusal's details.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Phase.
    pub phase: Phase,
    /// Recipient, where it applies.
    pub rcpt: Option<String>,
    /// The reply.
    pub reply: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A connection was opened; `open` counts the IP's connections including this one.
    Connect {
        /// Concurrent connections from the IP, this one included.
        open: u32,
    },
    /// A reply that refused something (4xx/5xx), in which phase (boxed: an event is kept for
    /// every connection and message of a run, and most are not refusals).
    Refused(Box<Refusal>),
    /// A message was accepted for `rcpts` recipients.
    Accepted {
        /// Recipients.
        rcpts: u32,
        /// DKIM passed (as the caller verified it).
        dkim_pass: bool,
        /// Over TLS.
        tls: bool,
    },
    /// The connection closed.
    Disconnect,
}

#[derive(Debug, Default)]
struct IpState {
    open: u32,
    connects: VecDeque<i64>,
    accepted: Accepted,
    reputation: Option<f64>,
    rep_updated_ms: i64,
    /// Recipients accepted, decayed with a one-hour time constant: about the messages an hour.
    volume: f64,
    volume_ms: i64,
}

/// The time constant of an IP's volume estimate.
const VOLUME_TAU_MS: f64 = 3_600_000.0;

impl IpState {
    /// The IP's current volume estimate (recipients an hour).
    fn volume(&mut self, now: i64) -> f64 {
        let dt = (now - self.volume_ms).max(0) as f64;
        if dt > 0.0 {
            self.volume *= (-dt / VOLUME_TAU_MS).exp();
            self.volume_ms = now;
        }
        self.volume
    }

    /// Counts `n` more recipients accepted at `now`.
    fn add_volume(&mut self, n: u32, now: i64) {
        self.volume(now);
        self.volume += f64::from(n);
    }
}

#[derive(Debug, Default)]
struct State {
    ips: BTreeMap<IpAddr, IpState>,
    /// First sight of each (source IP, sender, recipient), lower-cased; looked up, never walked.
    greylist: HashMap<(IpAddr, String, String), i64>,
    overrides: Vec<Override>,
    events: Vec<Event>,
    next_conn: u64,
    /// Today's message count per sending domain, with the day it counts (for the bulk-sender
    /// rules; a new day starts the count again).
    domain_day: HashMap<String, (i64, u64)>,
}

/// A provider's shared state and rules. Cheap to clone (shared).
#[derive(Clone)]
pub struct Engine {
    /// The profile it plays.
    pub profile: Arc<Profile>,
    state: Arc<Mutex<State>>,
}

/// Per-connection state the engine needs.
#[derive(Debug, Clone)]
pub struct Session {
    /// Connection number.
    pub conn: u64,
    /// The sending IP.
    pub ip: IpAddr,
    /// Messages accepted on this connection.
    pub messages: u32,
    /// A reply every transaction on this connection gets at that phase (a reputation tier or an
    /// incident override drawn at connect).
    pub forced: Option<(Phase, Answer)>,
    /// STARTTLS done.
    pub tls: bool,
}

/// Times messages were accepted from one IP, in order, with a cursor per rate window to the
/// first time inside it: time never goes back, so a cursor only moves forward, and counting a
/// window (per recipient) does not search an hour of times.
#[derive(Debug, Default)]
struct Accepted {
    times: VecDeque<i64>,
    /// Times dropped from the front so far (cursors count from the first time ever kept).
    dropped: usize,
    cursors: Vec<usize>,
}

impl Accepted {
    fn push(&mut self, t: i64) {
        self.times.push_back(t);
    }

    /// How many times are after `now - window_ms`: window `k`'s count at `now`, which must not
    /// be earlier than at the window's last count.
    fn count(&mut self, k: usize, now: i64, window_ms: i64) -> usize {
        if self.cursors.len() <= k {
            self.cursors.resize(k + 1, self.dropped);
        }
        let c = &mut self.cursors[k];
        *c = (*c).max(self.dropped);
        while self
            .times
            .get(*c - self.dropped)
            .is_some_and(|t| *t <= now - window_ms)
        {
            *c += 1;
        }
        self.dropped + self.times.len() - *c
    }

    /// Drops the times at or before `now - window_ms`.
    fn trim(&mut self, now: i64, window_ms: i64) {
        let before = self.times.len();
        trim_window(&mut self.times, now, window_ms);
        self.dropped += before - self.times.len();
    }
}

fn trim_window(q: &mut VecDeque<i64>, now: i64, window_ms: i64) {
    while q.front().is_some_and(|t| *t <= now - window_ms) {
        q.pop_front();
    }
}

/// Day number of a Unix-ms time (for per-day counts).
fn day(now: i64) -> i64 {
    now.div_euclid(86_400_000)
}

/// `s` in ASCII lower case, copied only when it has an upper-case letter.
fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        s.to_ascii_lowercase().into()
    } else {
        s.into()
    }
}

impl Engine {
    /// A provider playing `profile`.
    pub fn new(profile: Profile) -> Engine {
        Engine {
            profile: Arc::new(profile),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// Adds an incident override.
    pub fn add_override(&self, o: Override) {
        self.with(|s| s.overrides.push(o));
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<Event> {
        self.with(|s| s.events.clone())
    }

    /// Everything recorded so far, taken out (the record starts again empty).
    pub fn take_events(&self) -> Vec<Event> {
        self.with(|s| std::mem::take(&mut s.events))
    }

    /// The mailbox state of `rcpt`: named addresses (`unknown-*`, `full-*`, `disabled-*`) are always
    /// in that state; others are drawn from the address with the profile's shares.
    pub fn mailbox(&self, rcpt: &str) -> Mailbox {
        let local = rcpt
            .rsplit_once('@')
            .map_or(rcpt, |(l, _)| l)
            .to_ascii_lowercase();
        for (prefix, state) in [
            ("unknown-", Mailbox::Unknown),
            ("full-", Mailbox::Full),
            ("disabled-", Mailbox::Disabled),
        ] {
            if local.starts_with(prefix) {
                return state;
            }
        }
        if local.starts_with("ok-") {
            return Mailbox::Ok;
        }
        let m = &self.profile.mailboxes;
        let x = draw(&[b"mailbox", rcpt.to_ascii_lowercase().as_bytes()]);
        if x < m.unknown {
            Mailbox::Unknown
        } else if x < m.unknown + m.full {
            Mailbox::Full
        } else if x < m.unknown + m.full + m.disabled {
            Mailbox::Disabled
        } else {
            Mailbox::Ok
        }
    }

    fn reputation(&self, st: &mut IpState, now: i64) -> f64 {
        let r = &self.profile.reputation;
        let cur = st.reputation.unwrap_or(r.initial);
        let hours = (now - st.rep_updated_ms).max(0) as f64 / 3_600_000.0;
        let v = if st.reputation.is_some() {
            (cur + hours * r.recovery_per_hour).min(100.0)
        } else {
            cur
        };
        st.reputation = Some(v);
        st.rep_updated_ms = now;
        v
    }

    /// Takes `pen` points off `st`'s score, scaled down when the IP sends above the profile's
    /// volume reference (the same complaint rate costs the same whatever the volume).
    fn penalize(&self, st: &mut IpState, pen: f64, now: i64) {
        let reference = self.profile.reputation.volume_reference;
        let vol = st.volume(now);
        let scale = if vol > reference && reference > 0.0 {
            reference / vol
        } else {
            1.0
        };
        let v = self.reputation(st, now);
        st.reputation = Some((v - pen * scale).max(0.0));
    }

    /// The current reputation score of `ip`.
    pub fn reputation_of(&self, ip: IpAddr, now: i64) -> f64 {
        self.with(|s| {
            let st = s.ips.entry(ip).or_default();
            self.reputation(st, now)
        })
    }

    /// Lowers `ip`'s reputation for a complaint.
    pub fn complaint(&self, ip: IpAddr, now: i64) {
        let pen = self.profile.reputation.complaint_penalty;
        self.with(|s| {
            let st = s.ips.entry(ip).or_default();
            self.penalize(st, pen, now);
        });
    }

    /// A new connection from `ip`: the greeting to send, or a refusal (connection limit, connect
    /// rate, a banner-phase override or reputation tier).
    pub fn connect(&self, ip: IpAddr, now: i64) -> (Session, Result<String, Answer>) {
        let p = self.profile.clone();
        self.with(|s| {
            s.next_conn += 1;
            let conn = s.next_conn;
            let mut session = Session {
                conn,
                ip,
                messages: 0,
                forced: None,
                tls: false,
            };
            let active: Vec<Override> = s
                .overrides
                .iter()
                .filter(|o| o.from_ms <= now && now < o.until_ms)
                .cloned()
                .collect();
            let st = s.ips.entry(ip).or_default();
            st.open += 1;
            let open = st.open;
            let mut refusal: Option<Answer> = None;
            if let (Some(max), Some(r)) = (p.limits.connections, &p.limits.on_connections) {
                if open > max {
                    refusal = Some(Answer::from(r, ip, "", ""));
                }
            }
            if refusal.is_none() {
                if let (Some(w), Some(r)) = (&p.limits.connect_rate, &p.limits.on_connect_rate) {
                    trim_window(&mut st.connects, now, w.duration().as_millis() as i64);
                    if st.connects.len() as u64 >= w.count {
                        refusal = Some(Answer::from(r, ip, "", ""));
                    }
                }
            }
            st.connects.push_back(now);
            if refusal.is_none() {
                let rep = self.reputation(st, now);
                for t in &p.reputation.tiers {
                    if rep < t.below && draw(&[b"tier", &conn.to_le_bytes()]) < t.share {
                        let a = Answer::from(&t.response, ip, "", "");
                        if t.response.at == Phase::Banner {
                            refusal = Some(a);
                        } else {
                            session.forced = Some((t.response.at, a));
                        }
                        break;
                    }
                }
            }
            for o in &active {
                if refusal.is_some() || session.forced.is_some() {
                    break;
                }
                if draw(&[b"override", &conn.to_le_bytes()]) < o.share {
                    let a = Answer::from(&o.response, ip, "", "");
                    if o.response.at == Phase::Banner {
                        refusal = Some(a);
                    } else {
                        session.forced = Some((o.response.at, a));
                    }
                }
            }
            s.events.push(Event {
                t_ms: now,
                ip,
                conn,
                kind: EventKind::Connect { open },
            });
            let greeting = match refusal {
                Some(a) => {
                    s.events.push(Event {
                        t_ms: now,
                        ip,
                        conn,
                        kind: EventKind::Refused(Box::new(Refusal {
                            phase: Phase::Banner,
                            rcpt: None,
                            reply: a.reply.clone(),
                        })),
                    });
                    Err(a)
                }
                None => Ok(format!(
                    "220 {}",
                    p.banner.replace("{queue_id}", &format!("{conn:x}"))
                )),
            };
            (session, greeting)
        })
    }

    /// The connection closed.
    pub fn disconnect(&self, session: &Session, now: i64) {
        self.with(|s| {
            if let Some(st) = s.ips.get_mut(&session.ip) {
                st.open = st.open.saturating_sub(1);
            }
            s.events.push(Event {
                t_ms: now,
                ip: session.ip,
                conn: session.conn,
                kind: EventKind::Disconnect,
            });
        });
    }

    fn refused(
        &self,
        session: &Session,
        now: i64,
        phase: Phase,
        rcpt: Option<&str>,
        a: Answer,
    ) -> Answer {
        self.with(|s| {
            s.events.push(Event {
                t_ms: now,
                ip: session.ip,
                conn: session.conn,
                kind: EventKind::Refused(Box::new(Refusal {
                    phase,
                    rcpt: rcpt.map(str::to_string),
                    reply: a.reply.clone(),
                })),
            })
        });
        a
    }

    /// The forced answer of this connection if it acts at `phase` (EHLO-phase ones act at MAIL).
    fn forced(&self, session: &Session, phase: Phase, rcpt: &str) -> Option<Answer> {
        let (at, a) = session.forced.as_ref()?;
        let at = if *at == Phase::Ehlo { Phase::Mail } else { *at };
        let at = if at == Phase::Data {
            Phase::EndOfData
        } else {
            at
        };
        (at == phase).then(|| Answer {
            reply: a.reply.replace("{rcpt}", rcpt),
            disconnect: a.disconnect,
        })
    }

    /// MAIL FROM: the messages-per-connection cap, and overrides that act at MAIL.
    pub fn mail(&self, session: &Session, now: i64) -> Result<(), Answer> {
        let p = &self.profile;
        if let (Some(max), Some(r)) = (
            p.limits.messages_per_connection,
            &p.limits.on_messages_per_connection,
        ) {
            if session.messages >= max {
                let a = Answer::from(r, session.ip, "", "");
                return Err(self.refused(session, now, Phase::Mail, None, a));
            }
        }
        if let Some(a) = self.forced(session, Phase::Mail, "") {
            return Err(self.refused(session, now, Phase::Mail, None, a));
        }
        Ok(())
    }

    /// RCPT TO: forced answers, message-rate windows, greylisting, the mailbox state.
    pub fn rcpt(
        &self,
        session: &Session,
        mail_from: &str,
        rcpt: &str,
        now: i64,
    ) -> Result<(), Answer> {
        let p = self.profile.clone();
        let sender_domain = mail_from.rsplit_once('@').map_or("", |(_, d)| d);
        if let Some(a) = self.forced(session, Phase::Rcpt, rcpt) {
            return Err(self.refused(session, now, Phase::Rcpt, Some(rcpt), a));
        }
        if p.tls.required && !session.tls {
            if let Some(r) = &p.tls.on_missing {
                let a = Answer::from(r, session.ip, rcpt, sender_domain);
                return Err(self.refused(session, now, Phase::Rcpt, Some(rcpt), a));
            }
        }
        let rate_hit = self.with(|s| {
            let st = s.ips.entry(session.ip).or_default();
            let mut hit = false;
            for (k, w) in p.limits.message_rates.iter().enumerate() {
                let ms = w.duration().as_millis() as i64;
                let n = st.accepted.count(k, now, ms) as u64;
                if n >= w.count {
                    hit = true;
                }
            }
            let longest = p
                .limits
                .message_rates
                .iter()
                .map(|w| w.duration().as_millis() as i64)
                .max()
                .unwrap_or(0);
            st.accepted.trim(now, longest);
            hit
        });
        if rate_hit {
            if let Some(r) = &p.limits.on_message_rate {
                let a = Answer::from(r, session.ip, rcpt, sender_domain);
                return Err(self.refused(session, now, Phase::Rcpt, Some(rcpt), a));
            }
        }
        if let Some(g) = p.greylisting.as_ref().filter(|g| g.enabled) {
            let delay = mta::config::values::parse_interval(&g.delay)
                .map_or(300_000, |d| d.as_millis() as i64);
            let key = (
                session.ip,
                mail_from.to_ascii_lowercase(),
                rcpt.to_ascii_lowercase(),
            );
            let first = self.with(|s| *s.greylist.entry(key).or_insert(now));
            if now - first < delay {
                let a = Answer::from(&g.on_greylisted, session.ip, rcpt, sender_domain);
                return Err(self.refused(session, now, Phase::Rcpt, Some(rcpt), a));
            }
        }
        let m = &p.mailboxes;
        let bad = match self.mailbox(rcpt) {
            Mailbox::Ok => None,
            Mailbox::Unknown => Some(&m.on_unknown),
            Mailbox::Full => Some(&m.on_full),
            Mailbox::Disabled => Some(&m.on_disabled),
        };
        if let Some(r) = bad {
            if self.mailbox(rcpt) == Mailbox::Unknown {
                let pen = p.reputation.unknown_user_penalty;
                self.with(|s| {
                    let st = s.ips.entry(session.ip).or_default();
                    self.penalize(st, pen, now);
                });
            }
            let a = Answer::from(r, session.ip, rcpt, sender_domain);
            return Err(self.refused(session, now, Phase::Rcpt, Some(rcpt), a));
        }
        Ok(())
    }

    /// End of data: size, authentication rules (the caller says what SPF/DKIM/DMARC gave), then
    /// acceptance, which counts against the IP's message-rate windows.
    pub fn end_of_data(
        &self,
        session: &mut Session,
        msg: &DataFacts<'_>,
        now: i64,
    ) -> Result<String, Answer> {
        let p = self.profile.clone();
        let sender_domain = lower(msg.mail_from.rsplit_once('@').map_or("", |(_, d)| d));
        if let Some(a) = self.forced(session, Phase::EndOfData, "") {
            return Err(self.refused(session, now, Phase::EndOfData, None, a));
        }
        if msg.size > p.max_message_bytes() {
            let a = Answer::from(&p.on_too_large, session.ip, "", &sender_domain);
            return Err(self.refused(session, now, Phase::EndOfData, None, a));
        }
        let a = &p.auth;
        if a.require_spf_or_dkim && !msg.spf_pass && !msg.dkim_pass {
            if let Some(r) = &a.on_unauthenticated {
                let ans = Answer::from(r, session.ip, "", &sender_domain);
                return Err(self.refused(session, now, Phase::EndOfData, None, ans));
            }
        }
        let today = self.with(|s| {
            let d = day(now);
            let c = match s.domain_day.get_mut(sender_domain.as_ref()) {
                Some(c) => c,
                None => s
                    .domain_day
                    .entry(sender_domain.to_string())
                    .or_insert((d, 0)),
            };
            if c.0 != d {
                *c = (d, 0);
            }
            c.1 += u64::from(msg.rcpts);
            c.1
        });
        if a.bulk_threshold_per_day.is_some_and(|t| today > t) {
            let fails = (a.bulk_require_spf_and_dkim && !(msg.spf_pass && msg.dkim_pass))
                || (a.bulk_require_dmarc && !msg.dmarc_pass)
                || (a.bulk_require_one_click_unsubscribe
                    && msg.subscribed
                    && !msg.one_click_unsubscribe);
            if fails {
                if let Some(r) = &a.on_bulk_failure {
                    let ans = Answer::from(r, session.ip, "", &sender_domain);
                    return Err(self.refused(session, now, Phase::EndOfData, None, ans));
                }
            }
        }
        session.messages += 1;
        let conn = session.conn;
        self.with(|s| {
            let st = s.ips.entry(session.ip).or_default();
            for _ in 0..msg.rcpts {
                st.accepted.push(now);
            }
            st.add_volume(msg.rcpts, now);
            s.events.push(Event {
                t_ms: now,
                ip: session.ip,
                conn,
                kind: EventKind::Accepted {
                    rcpts: msg.rcpts,
                    dkim_pass: msg.dkim_pass && !msg.dkim_assumed,
                    tls: session.tls,
                },
            });
        });
        Ok(p.accepted
            .replace("{queue_id}", &format!("{conn:x}{:x}", session.messages)))
    }
}

/// What the server found about a message at end of data.
#[derive(Debug, Clone, Copy)]
pub struct DataFacts<'a> {
    /// Envelope sender.
    pub mail_from: &'a str,
    /// Accepted recipients.
    pub rcpts: u32,
    /// Size in bytes.
    pub size: u64,
    /// SPF passed for the envelope sender.
    pub spf_pass: bool,
    /// A DKIM signature verified.
    pub dkim_pass: bool,
    /// DMARC passed with alignment.
    pub dmarc_pass: bool,
    /// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` with an https List-Unsubscribe.
    pub one_click_unsubscribe: bool,
    /// The message is marketing or subscribed mail (it has `List-Unsubscribe`, `List-Id` or
    /// `Precedence: bulk|list`): the one-click rule applies to it. Gmail and Yahoo exempt
    /// transactional mail from that rule.
    pub subscribed: bool,
    /// DKIM was taken as passing without a signature (`--no-dkim` benchmarks): the rules treat the
    /// message as signed, the event record says it was not verified.
    pub dkim_assumed: bool,
}

#[cfg(test)]
mod tests {
    use super::Accepted;
    use std::collections::VecDeque;

    /// The cursors count what a bisection of all kept times counts, through pushes, trims to the
    /// longest window and times that jump or stand still.
    #[test]
    fn window_counts_match_a_search_of_the_times() {
        let windows = [60_000i64, 3_600_000, 1_000];
        let mut acc = Accepted::default();
        let mut reference: VecDeque<i64> = VecDeque::new();
        let mut now = 0i64;
        let mut x = 12345u64;
        for step in 0..50_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            now += match (x >> 33) % 10 {
                0 => 0,
                1 => 200_000,
                _ => (x >> 40) as i64 % 700,
            };
            for (k, ms) in windows.iter().enumerate() {
                let want = reference.len() - reference.partition_point(|t| *t <= now - ms);
                assert_eq!(acc.count(k, now, *ms), want, "window {k} at step {step}");
            }
            if !(x >> 20).is_multiple_of(3) {
                acc.push(now);
                reference.push_back(now);
            }
            acc.trim(now, 3_600_000);
            while reference.front().is_some_and(|t| *t <= now - 3_600_000) {
                reference.pop_front();
            }
            assert_eq!(acc.times, reference);
        }
    }
}
