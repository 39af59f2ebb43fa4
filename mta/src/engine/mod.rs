//! The running MTA: takes messages from `receive` into the spool and the queues, schedules
//! deliveries through the shaping gates, delivers over SMTP (MX look-up, source IP and EHLO name per
//! vMTA, opportunistic STARTTLS, DKIM), applies `smtp-pattern-list` actions, retries, expires and
//! bounces, and writes an accounting record for every step. The same code runs live and simulated;
//! only the `Net`, `Resolver` and `Clock` it is given differ.

use crate::acct::{Accounting, Record, RecordType};
use crate::clock::Clock;
use crate::config::model::{Config, PatternAction};
use crate::config::QueueSettings;
use crate::dns::{DnsError, Resolver};
use crate::net::Net;
use crate::queue::{select, Mode, PoolCursors, Queue, QueueKey, Waiting};
use crate::shaping::{match_reply, Shaper, VmtaGate};
use crate::smtp::client::{Client, ClientError, Timeouts};
use crate::smtp::Reply;
use crate::spool::{Envelope, MessageId, Spool};
use rustc_hash::FxBuildHasher;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

mod manage;
pub use manage::{
    mode_name, QueueSelector, QueueView, SourceIpView, VmtaView, AUTH_FAILURES_PER_IP,
    AUTH_WINDOW_MS,
};

/// The longest wait for a `max-msg-rate` slot that a session spends on an open connection; a
/// longer one closes it, and no connection is opened for a queue whose next slot is further off.
const RATE_WAIT_IN_SESSION_MS: i64 = 15_000;

/// What the engine needs from the outside world.
pub struct Parts {
    /// The configuration.
    pub config: Arc<Config>,
    /// The message store.
    pub spool: Arc<Spool>,
    /// Accounting destinations.
    pub acct: Arc<Accounting>,
    /// The network.
    pub net: Arc<dyn Net>,
    /// DNS.
    pub dns: Arc<dyn Resolver>,
    /// Time for records.
    pub clock: Clock,
    /// Every accounting record is also sent here (the simulator's expectations read them).
    pub tap: Option<mpsc::UnboundedSender<Box<Record>>>,
    /// DKIM signing as the config says (`true`), or never (`false`: throughput benchmarks that
    /// leave the signing cost out, `mtasim run --no-dkim`).
    pub dkim_signing: bool,
    /// The tap's reader feeds [`Engine::shared_monitor`] with the records instead of the engine
    /// (the simulator does it on its record thread, off the simulation's); ignored without a tap.
    pub monitor_on_tap: bool,
}

struct QueueState {
    queue: Queue<MessageId>,
    shaper: Shaper,
    last_error: Option<String>,
    /// No new connection before this (Unix ms): the MX rollup group was full.
    not_before_ms: i64,
    /// Paused by an operator: no new connections.
    paused: bool,
    /// Connections opened so far (rotates the vMTA's source addresses).
    opened: u64,
    /// Signalled when mail is queued: wakes connections idling under `connection-idle-timeout`.
    arrivals: Arc<Notify>,
}

struct MsgState {
    env: Envelope,
    remaining: u32,
    first_attempt_ms: Option<i64>,
    /// Pool per recipient index (for accounting).
    pools: BTreeMap<u32, String>,
    /// DKIM-Signature headers made for this message, by (domain, selector): a message is signed
    /// once, not again on each retry.
    signatures: BTreeMap<(String, String), Arc<String>>,
}

struct State {
    queues: BTreeMap<QueueKey, QueueState>,
    /// Messages in flight, looked up by id for every delivery (never walked in order: a hash map,
    /// one probe instead of a B-tree's descent through a large backlog).
    messages: HashMap<MessageId, MsgState, FxBuildHasher>,
    vmta_gates: BTreeMap<String, VmtaGate>,
    /// `total-max-smtp-out`: outbound connections of the whole MTA.
    total_gate: VmtaGate,
    /// Open connections per (vMTA, MX host set): domains that share MX hosts share the limits
    /// (MX rollup) unless `disable-mx-rollup`.
    rollup: BTreeMap<(String, String), u64>,
    /// Source IPs out of service, with when they come back (None: until enabled).
    disabled_ips: BTreeMap<IpAddr, Option<i64>>,
}

/// The MTA engine.
pub struct Engine {
    parts: Parts,
    state: Mutex<State>,
    wake: Notify,
    cursors: PoolCursors,
    keys: crate::dkim::KeyCache,
    classifier: std::sync::RwLock<Arc<crate::bounce::Classifier>>,
    /// The configuration in force (replaced by a reload).
    config: std::sync::RwLock<Arc<Config>>,
    /// Counters for status output.
    pub stats: Mutex<Stats>,
    monitor: Arc<crate::mgmt::Monitor>,
    /// `suppress-after` and the list it feeds.
    suppression: (crate::suppress::Policy, Arc<crate::suppress::List>),
    /// Recent AUTH failures per client address.
    auth_failures: Mutex<std::collections::HashMap<IpAddr, Vec<i64>>>,
    /// Merged settings per queue, for the config they were merged from (a reload swaps the
    /// config, and the first look-up after it starts a new cache).
    settings_cache: Mutex<(
        Arc<Config>,
        std::collections::HashMap<QueueKey, QueueSettings>,
    )>,
    /// Spent records: the engine's own after logging them, or the tap reader's given back.
    records: Arc<crate::acct::RecordPool>,
    /// Warnings that repeat per message, summarised with a count.
    repeats: crate::repeats::Repeats,
}

/// Running totals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Messages accepted.
    pub received: u64,
    /// Recipients delivered.
    pub delivered: u64,
    /// Recipients bounced.
    pub bounced: u64,
    /// Transient failures.
    pub deferred: u64,
    /// Connections opened.
    pub connections: u64,
    /// DKIM signatures made (once per message and key, whatever the retries).
    pub dkim_signatures: u64,
}

/// What the records of one delivery connection say about it, formatted once for all of them.
struct ConnText {
    /// Our source address (`dlvSourceIp`), empty if unknown.
    source_ip: String,
    /// The server's address (`dlvDestinationIp`), empty if none was reached.
    dest_ip: String,
    /// `dns;{domain} ({server address})` (`dsnMta`), empty if none was reached.
    dsn_mta: String,
    /// The server's ESMTP extensions (`dlvEsmtpAvailable`).
    esmtp: String,
}

impl ConnText {
    fn new(domain: &str, dlv_ip: Option<IpAddr>, dest: Option<SocketAddr>, esmtp: String) -> Self {
        ConnText {
            source_ip: dlv_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            dest_ip: dest.map(|d| d.ip().to_string()).unwrap_or_default(),
            dsn_mta: dest
                .map(|d| format!("dns;{domain} ({})", d.ip()))
                .unwrap_or_default(),
            esmtp,
        }
    }
}

/// A recipient's final or transient outcome, for one accounting record.
struct Outcome<'a> {
    ty: RecordType,
    reply: &'a Reply,
    category: &'static str,
    /// The delivery connection's side of the record, if a connection was tried.
    conn: Option<&'a ConnText>,
    /// Send a DSN to the sender if this is a bounce (not for operator deletes).
    notify: bool,
}

/// The first header field `name` of a message (matched case-insensitively), unfolded; CRLF or LF
/// line ends; the header section ends at the first empty line.
pub fn header(body: &[u8], name: &str) -> Option<String> {
    let [v] = headers(body, [name]);
    v
}

/// The first header field of each of `names`, as [`header`] finds one, in one pass over the
/// header section (which stops once every name is found).
pub fn headers<const N: usize>(body: &[u8], names: [&str; N]) -> [Option<String>; N] {
    let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut left = N;
    // The field whose folded continuation lines are being collected.
    let mut open: Option<usize> = None;
    let mut rest = body;
    while !rest.is_empty() && (left > 0 || open.is_some()) {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        // A line that is not UTF-8 is skipped and ends a folded field.
        if let Some(k) = open {
            if line.starts_with(b" ") || line.starts_with(b"\t") {
                match std::str::from_utf8(line) {
                    Ok(text) => {
                        if let Some(v) = found[k].as_mut() {
                            v.push(' ');
                            v.push_str(text.trim());
                        }
                    }
                    Err(_) => open = None,
                }
                continue;
            }
            open = None;
            if left == 0 {
                break;
            }
        }
        // The name is looked at first (as bytes when ASCII), the whole line only for a wanted
        // field: most fields are not wanted.
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let wanted = |n: &[u8]| {
            (0..N).find(|&k| found[k].is_none() && n.eq_ignore_ascii_case(names[k].as_bytes()))
        };
        let name = &line[..colon];
        let k = if name.is_ascii() {
            wanted(trim_white(name))
        } else {
            std::str::from_utf8(name)
                .ok()
                .and_then(|n| wanted(n.trim().as_bytes()))
        };
        let (Some(k), Ok(text)) = (k, std::str::from_utf8(line)) else {
            continue;
        };
        found[k] = Some(text[colon + 1..].trim().to_string());
        left -= 1;
        open = Some(k);
    }
    found
}

/// The final reply of a message past `bounce-after`, quoting its last error.
fn expired_reply(last: &Reply) -> Reply {
    Reply::new(554, "4.4.7", format!("message expired; last error: {last}"))
}

/// `bytes` without the ASCII characters `str::trim` removes at either end.
fn trim_white(bytes: &[u8]) -> &[u8] {
    let white = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r');
    let start = bytes.iter().position(|b| !white(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !white(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

impl Engine {
    /// An engine over `parts`; call [`Engine::recover`] and spawn [`Engine::run`].
    pub fn new(parts: Parts) -> Arc<Engine> {
        let classifier = crate::bounce::Classifier::from_config(&parts.config).unwrap_or_else(|e| {
            tracing::error!(%e, "bounce-category-patterns unusable; using the built-in rules only");
            crate::bounce::Classifier::default()
        });
        let now = parts.clock.now_ms();
        let total_out = total_max_smtp_out(&parts.config);
        let suppression = open_suppression(&parts.config);
        let config_at_start = parts.config.clone();
        Arc::new(Engine {
            repeats: crate::repeats::Repeats::default(),
            classifier: std::sync::RwLock::new(Arc::new(classifier)),
            config: std::sync::RwLock::new(parts.config.clone()),
            parts,
            state: Mutex::new(State {
                queues: BTreeMap::new(),
                messages: HashMap::default(),
                vmta_gates: BTreeMap::new(),
                total_gate: VmtaGate::new(Some(total_out)),
                rollup: BTreeMap::new(),
                disabled_ips: BTreeMap::new(),
            }),
            wake: Notify::new(),
            cursors: PoolCursors::default(),
            keys: crate::dkim::KeyCache::default(),
            stats: Mutex::new(Stats::default()),
            monitor: Arc::new(crate::mgmt::Monitor::new(now)),
            suppression,
            auth_failures: Mutex::default(),
            settings_cache: Mutex::new((config_at_start, Default::default())),
            records: Arc::default(),
        })
    }

    /// Where a tap's reader gives records back when done with them (see
    /// [`crate::acct::RecordPool`]): the engine builds its next records from them.
    pub fn record_pool(&self) -> Arc<crate::acct::RecordPool> {
        self.records.clone()
    }

    /// The configuration.
    pub fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The bounce classifier in force (built-in rules behind the config's patterns).
    pub fn classifier(&self) -> Arc<crate::bounce::Classifier> {
        match self.classifier.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The pool cursors (vMTA selection at reception).
    pub fn cursors(&self) -> &PoolCursors {
        &self.cursors
    }

    /// The category of a synchronous reply to `command` (`CONN` for a connection-level failure):
    /// the same classifier, and the same path, as the bounce processor's.
    fn category(&self, reply: &Reply, command: &str) -> &'static str {
        self.classifier()
            .classify_sync_reply(&reply.status(), &reply.to_string(), command)
            .category
            .as_str()
    }

    /// Now, Unix ms.
    pub fn now_ms(&self) -> i64 {
        self.parts.clock.now_ms()
    }

    /// Writes a record made outside the delivery path (the bounce and feedback processors).
    pub fn record(&self, rec: Record) {
        self.log(Box::new(rec));
    }

    fn log(&self, rec: Box<Record>) {
        self.parts.acct.log(&rec);
        if !(self.parts.monitor_on_tap && self.parts.tap.is_some()) {
            self.monitor.observe(&rec);
        }
        self.maybe_suppress(&rec);
        match &self.parts.tap {
            Some(tap) => {
                let _ = tap.send(rec);
            }
            None => self.records.put(rec),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        match self.state.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    fn queue_settings(&self, key: &QueueKey) -> QueueSettings {
        self.with_queue_settings(key, QueueSettings::clone)
    }

    /// Reads a queue's settings (as [`Engine::queue_settings`]) without copying them.
    fn with_queue_settings<R>(&self, key: &QueueKey, f: impl FnOnce(&QueueSettings) -> R) -> R {
        let cfg = self.config();
        let merge = || QueueSettings::from_effective(&cfg.domain_settings(&key.domain, key.vmta()));
        let Ok(mut cache) = self.settings_cache.lock() else {
            return f(&merge());
        };
        if !Arc::ptr_eq(&cache.0, &cfg) {
            *cache = (cfg.clone(), Default::default());
        }
        if let Some(qs) = cache.1.get(key) {
            return f(qs);
        }
        f(cache.1.entry(key.clone()).or_insert_with(merge))
    }

    /// Adds a stored message's unfinished recipients to their queues (`vmtas[i]` per recipient).
    pub fn enqueue(
        &self,
        id: MessageId,
        env: Envelope,
        vmtas: &[(Option<String>, Option<String>)],
        due_ms: i64,
    ) {
        let mut groups: BTreeMap<QueueKey, Vec<u32>> = BTreeMap::new();
        let mut pools = BTreeMap::new();
        for (i, r) in env.rcpts.iter().enumerate() {
            if r.done {
                continue;
            }
            let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d);
            let (vmta, pool) = match vmtas.get(i) {
                Some((v, p)) => (v.as_deref(), p.as_ref()),
                None => (env.vmta.as_deref(), env.pool.as_ref()),
            };
            if let Some(p) = pool {
                pools.insert(i as u32, p.clone());
            }
            // `queue-to` puts a domain's mail into another queue (sharing its limits and MX).
            let natural = QueueKey::new(domain, vmta);
            let key = match self.with_queue_settings(&natural, |qs| qs.queue_to.clone()) {
                Some(t) if !t.trim().is_empty() => QueueKey::new(t.trim(), vmta),
                _ => natural,
            };
            groups.entry(key).or_default().push(i as u32);
        }
        let remaining = groups.values().map(|v| v.len() as u32).sum();
        let received = env.received_ms;
        // Settings are looked up only for queues that do not exist yet (an existing queue keeps
        // its own, which a reload updates).
        let missing: Vec<bool> =
            self.with(|s| groups.keys().map(|k| !s.queues.contains_key(k)).collect());
        let settings: Vec<Option<QueueSettings>> = groups
            .keys()
            .zip(missing)
            .map(|(k, m)| m.then(|| self.queue_settings(k)))
            .collect();
        let plan = self.with(|s| {
            // The planner only needs waking when a queue may want another connection: a new or
            // unconnected queue, or one backed up beyond what its open connections take (as in
            // `plan`); otherwise the open connections pick the mail up (`arrivals`).
            let mut plan = false;
            s.messages.insert(
                id,
                MsgState {
                    env,
                    remaining,
                    first_attempt_ms: None,
                    pools,
                    signatures: BTreeMap::new(),
                },
            );
            for ((key, rcpts), qs) in groups.into_iter().zip(settings) {
                // Looked up before an entry is made, so an existing queue costs no key copy.
                let q = match s.queues.get_mut(&key) {
                    Some(q) => q,
                    None => {
                        // Created between the two looks (live mode): settings as usual.
                        let qs = qs.unwrap_or_else(|| self.queue_settings(&key));
                        s.queues.entry(key.clone()).or_insert(QueueState {
                            queue: Queue::new(key.clone(), qs.clone()),
                            shaper: Shaper::new(&key.to_string(), qs),
                            last_error: None,
                            not_before_ms: 0,
                            paused: false,
                            opened: 0,
                            arrivals: Arc::new(Notify::new()),
                        })
                    }
                };
                let max_rcpt = q
                    .queue
                    .settings
                    .max_rcpt_per_message
                    .unwrap_or(u64::MAX)
                    .max(1) as usize;
                q.arrivals.notify_waiters();
                for chunk in rcpts.chunks(max_rcpt) {
                    q.queue.push(
                        Waiting {
                            id,
                            rcpts: chunk.to_vec(),
                            received_ms: received,
                            attempts: 0,
                        },
                        due_ms,
                    );
                }
                let open = q.shaper.connections();
                plan |= open == 0 || q.queue.len() as u64 > open * 20;
            }
            plan
        });
        if plan {
            self.wake.notify_one();
        }
    }

    /// Picks vMTAs, stores the message durably, writes `r` records and queues it. Returns the id.
    pub async fn accept(
        &self,
        mut env: Envelope,
        body: Vec<u8>,
        source: &crate::config::effective::EffectiveSettings,
        local_ip: Option<IpAddr>,
    ) -> Result<MessageId, String> {
        // Mail whose records cannot be written is not taken: the backlog stays bounded.
        let backlog = self.parts.acct.pending();
        let limit = if backlog == 0 {
            usize::MAX // the usual case: no need to look the limit up
        } else {
            acct_backlog_limit(&self.config())
        };
        if backlog >= limit {
            return Err(format!(
                "{ACCT_BACKLOG}: {backlog} records wait for an accounting destination (acct-backlog-limit {limit}); {}",
                self.parts.acct.failure().unwrap_or_default()
            ));
        }
        let [x_vmta, x_job, x_campaign, message_id] = headers(
            &body,
            ["X-Virtual-MTA", "X-Job", "X-Campaign", "Message-ID"],
        );
        let job_id = x_job.clone();
        let headers: Vec<(String, String)> = [("X-Job", x_job), ("X-Campaign", x_campaign)]
            .into_iter()
            .filter_map(|(h, v)| v.map(|v| (h.to_string(), v)))
            .collect();
        let mut choices = Vec::with_capacity(env.rcpts.len());
        for r in &env.rcpts {
            let input = select::SelectInput {
                x_virtual_mta: x_vmta.as_deref(),
                mail_from: &env.mail_from,
                rcpt: &r.address,
                headers: &headers,
                local_ip,
            };
            let c = select::choose(&self.config(), source, &input, &self.cursors)?;
            choices.push((c.vmta, c.pool));
        }
        env.vmta = choices.first().and_then(|c| c.0.clone());
        env.pool = choices.first().and_then(|c| c.1.clone());
        env.message_id = message_id;
        if source.bool("process-x-job") {
            env.job_id = job_id;
        }
        env.size = body.len() as u64;
        let id = self
            .parts
            .spool
            .store(&env, body)
            .await
            .map_err(|e| e.to_string())?;
        let now = self.now_ms();
        for (i, r) in env.rcpts.iter().enumerate() {
            let mut rec = self.base_record(RecordType::Received, now, &env, i);
            rec.vmta = choices[i].0.clone().unwrap_or_default();
            rec.vmta_pool = choices[i].1.clone().unwrap_or_default();
            rec.orcpt = r.orcpt.clone().unwrap_or_default();
            self.log(rec);
        }
        if let Ok(mut st) = self.stats.lock() {
            st.received += 1;
        }
        self.enqueue(id, env, &choices, now);
        Ok(id)
    }

    fn base_record(&self, ty: RecordType, now: i64, env: &Envelope, i: usize) -> Box<Record> {
        // From a spent record: `clone_from` reuses its strings' buffers.
        let mut r = self.records.take(ty, now);
        r.orig.clone_from(&env.mail_from);
        if let Some(x) = env.rcpts.get(i) {
            r.rcpt.clone_from(&x.address);
        }
        r.time_queued = Some(env.received_ms);
        r.src_type = Cow::Borrowed("smtp");
        if let Some(ip) = &env.source_ip {
            r.src_mta.clone_from(ip);
            r.rcv_source_ip.clone_from(ip);
        }
        r.dlv_size = Some(env.size);
        if let Some(j) = &env.job_id {
            r.job_id.clone_from(j);
        }
        if let Some(e) = &env.env_id {
            r.env_id.clone_from(e);
        }
        if let Some(m) = &env.message_id {
            r.headers.push(("Message-ID".into(), m.clone()));
        }
        r
    }

    /// Writes the record for one recipient's outcome and, for final ones, marks it done.
    async fn finish(&self, key: &QueueKey, id: MessageId, rcpt: u32, o: Outcome<'_>) {
        let now = self.now_ms();
        let wants_dsn = o.ty == RecordType::Bounced && o.notify;
        // The record is built under the lock from the message's envelope; the envelope itself is
        // cloned only when a DSN needs it.
        let Some((mut rec, first, pool, env)) = self.with(|s| {
            s.messages.get(&id).map(|m| {
                let rec = self.base_record(o.ty, now, &m.env, rcpt as usize);
                let env = (wants_dsn && !m.env.mail_from.is_empty()).then(|| m.env.clone());
                (rec, m.first_attempt_ms, m.pools.get(&rcpt).cloned(), env)
            })
        }) else {
            return;
        };
        rec.time_first_attempt = first;
        // Written into the record's (possibly reused) buffers; writing to a String cannot fail.
        let _ = o.reply.write_status(&mut rec.dsn_status);
        let _ = write!(rec.dsn_diag, "smtp;{}", o.reply);
        rec.dsn_action = match o.ty {
            RecordType::Delivered => "relayed",
            RecordType::Bounced => "failed",
            _ => "delayed",
        }
        .into();
        if o.ty != RecordType::Delivered {
            rec.bounce_cat.clear();
            rec.bounce_cat.push_str(o.category);
        }
        rec.dlv_type = Cow::Borrowed("smtp");
        if let Some(c) = o.conn {
            rec.dlv_source_ip.clone_from(&c.source_ip);
            rec.dlv_destination_ip.clone_from(&c.dest_ip);
            rec.dsn_mta.clone_from(&c.dsn_mta);
            rec.dlv_esmtp_available.clone_from(&c.esmtp);
        }
        rec.vmta.clone_from(&key.vmta);
        let _ = write!(rec.queue, "{key}");
        rec.vmta_pool = pool.unwrap_or_default();
        self.log(rec);
        if let Ok(mut st) = self.stats.lock() {
            match o.ty {
                RecordType::Delivered => st.delivered += 1,
                RecordType::Bounced => st.bounced += 1,
                _ => st.deferred += 1,
            }
        }
        if let Some(env) = env {
            self.send_dsn(key, id, &env, rcpt, &o, now).await;
        }
        if matches!(o.ty, RecordType::Delivered | RecordType::Bounced) {
            // The record reaches the OS before the durable spool forgets the recipient (kill -9
            // safe); a memory spool forgets everything with the process anyway.
            if self.parts.spool.is_durable() {
                self.parts.acct.hand_over();
            }
            if let Err(e) = self.parts.spool.rcpt_done(id, rcpt).await {
                tracing::error!(%id, %e, "could not record a finished recipient");
            }
            let done = self.with(|s| match s.messages.get_mut(&id) {
                Some(m) => {
                    m.remaining = m.remaining.saturating_sub(1);
                    if m.remaining == 0 {
                        s.messages.remove(&id);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            });
            if done {
                if let Err(e) = self.parts.spool.message_done(id).await {
                    tracing::error!(%id, %e, "could not record a finished message");
                }
            }
        }
    }

    /// Builds the RFC 3464 DSN for a failed recipient and queues it to the envelope sender with the
    /// null sender (so a DSN's own failure never produces another one).
    async fn send_dsn(
        &self,
        key: &QueueKey,
        id: MessageId,
        env: &Envelope,
        rcpt: u32,
        o: &Outcome<'_>,
        now: i64,
    ) {
        // A sender in one of our own domains (a bounce domain our bounce processor reads): the `b`
        // record already says everything a DSN to ourselves would.
        let sender_domain = env
            .mail_from
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        if crate::receive::local_domains(&self.config()).contains(&sender_domain) {
            tracing::debug!(sender = %env.mail_from, "no DSN to a local bounce address");
            return;
        }
        let at = |ms: i64| std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
        let original = self.parts.spool.body(id).unwrap_or_default();
        let Some(r) = env.rcpts.get(rcpt as usize) else {
            return;
        };
        let recipients = [crate::bounce::dsn::DsnRecipient {
            recipient: r.address.clone(),
            original_recipient: r.orcpt.clone(),
            action: crate::bounce::dsn::DsnAction::Failed,
            status: o.reply.status(),
            remote_mta: o
                .conn
                .filter(|c| !c.dest_ip.is_empty())
                .map(|c| c.dest_ip.clone()),
            diagnostic: o.reply.to_string(),
            category: o.category.parse().unwrap_or_else(|_| {
                self.classifier()
                    .classify_status(&o.reply.status(), &o.reply.to_string())
                    .category
            }),
            last_attempt: Some(at(now)),
            will_retry_until: None,
        }];
        let host = self.host_name();
        let seed = format!("{id}.{rcpt}");
        let req = crate::bounce::dsn::DsnRequest {
            reporting_host: &host,
            virtual_mta: key.vmta(),
            envelope_sender: &env.mail_from,
            envelope_id: env.env_id.as_deref(),
            arrival: at(env.received_ms),
            now: at(now),
            seed: &seed,
            original: &original,
            recipients: &recipients,
        };
        let Some(dsn) = crate::bounce::dsn::build_dsn(&req) else {
            return;
        };
        let denv = Envelope {
            mail_from: String::new(),
            rcpts: vec![crate::spool::Recipient {
                address: dsn.envelope_to.clone(),
                orcpt: None,
                done: false,
            }],
            vmta: None,
            pool: None,
            job_id: None,
            env_id: None,
            source_ip: None,
            received_ms: now,
            size: dsn.bytes.len() as u64,
            message_id: Some(dsn.message_id.clone()),
            dot_free: crate::smtp::io::dot_free(&dsn.bytes),
        };
        match self.parts.spool.store(&denv, dsn.bytes).await {
            Ok(did) => {
                let rec = self.base_record(RecordType::Received, now, &denv, 0);
                self.log(rec);
                self.enqueue(did, denv, &[(None, None)], now);
            }
            Err(e) => tracing::error!(%e, "could not spool a DSN"),
        }
    }

    /// Messages still held (not every recipient finished).
    pub fn pending_messages(&self) -> usize {
        self.with(|s| s.messages.len())
    }

    /// Queue names with their mode changes (for reports and status).
    pub fn mode_history(&self) -> BTreeMap<String, Vec<crate::shaping::ModeChange>> {
        self.with(|s| {
            s.queues
                .iter()
                .map(|(k, q)| (k.to_string(), q.shaper.history.clone()))
                .collect()
        })
    }

    /// Waiting recipients per destination domain (summed over vMTAs).
    pub fn queue_depths(&self) -> BTreeMap<String, usize> {
        self.with(|s| {
            let mut m = BTreeMap::new();
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

    /// The scheduler: opens connections for queues with due recipients, as the shaping gates allow,
    /// and expires what is past `bounce-after`. Runs until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let now = self.now_ms();
            let (starts, expired, next) = self.plan(now);
            for (key, w, q_reply) in expired {
                let reply = q_reply.unwrap_or_else(|| {
                    Reply::new(554, "4.4.7", "message expired: bounce-after reached")
                });
                let reply = expired_reply(&reply);
                for r in &w.rcpts {
                    self.finish(
                        &key,
                        w.id,
                        *r,
                        Outcome {
                            ty: RecordType::Bounced,
                            reply: &reply,
                            category: "message-expired",
                            conn: None,
                            notify: true,
                        },
                    )
                    .await;
                }
            }
            for (key, src) in starts {
                let me = self.clone();
                // Boxed: the task then holds a pointer, not the whole connection state machine.
                tokio::spawn(Box::pin(async move { me.connection(key, src).await }));
            }
            let sleep_ms = next.map_or(60_000, |t| (t - now).clamp(1, 60_000));
            tokio::select! {
                biased;
                _ = &mut stop => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
            }
        }
    }

    /// Decides which connections to open now; returns them, the expired groups and the next time
    /// anything is due.
    #[allow(clippy::type_complexity)]
    fn plan(
        &self,
        now: i64,
    ) -> (
        Vec<(QueueKey, Option<(IpAddr, Option<String>)>)>,
        Vec<(QueueKey, Waiting<MessageId>, Option<Reply>)>,
        Option<i64>,
    ) {
        let cfg = self.config();
        self.with(|s| {
            let mut starts = Vec::new();
            let mut expired = Vec::new();
            let mut next: Option<i64> = None;
            let State {
                queues,
                vmta_gates,
                total_gate,
                disabled_ips,
                ..
            } = s;
            for (key, q) in queues.iter_mut() {
                q.shaper.tick(now);
                let gone = q.queue.take_expired(now);
                if !gone.is_empty() {
                    let last = q.last_error.as_deref().and_then(Reply::parse_line);
                    for w in gone {
                        expired.push((key.clone(), w, last.clone()));
                    }
                }
                let mut upd = |t: Option<i64>| {
                    if let Some(t) = t {
                        next = Some(next.map_or(t, |n: i64| n.min(t)));
                    }
                };
                upd(q.queue.next_expiry_ms());
                upd(q.shaper.backoff_until_ms());
                if q.not_before_ms > now {
                    upd(Some(q.not_before_ms));
                    continue;
                }
                if q.paused {
                    continue;
                }
                let Some(due) = q.queue.next_due_ms() else {
                    continue;
                };
                if due > now {
                    upd(Some(due));
                    continue;
                }
                // One new connection per queue per pass, up to the limits.
                let vmta_max = key
                    .vmta()
                    .and_then(|v| cfg.vmtas.get(v))
                    .and_then(|v| v.settings.get("max-smtp-out"))
                    .and_then(|st| match st.value {
                        crate::config::values::Value::Int(n) => Some(n),
                        _ => None,
                    });
                let gate = vmta_gates
                    .entry(key.vmta.clone())
                    .or_insert_with(|| VmtaGate::new(vmta_max));
                // Another connection only when the queue is backed up beyond what the open ones
                // will take (about 20 groups each), so that a trickle reuses one connection at a time.
                let queued = q.queue.len() as u64;
                if q.shaper.connections() > 0 && queued <= q.shaper.connections() * 20 {
                    continue;
                }
                // No connection before the message rate lets one through soon enough for a
                // session to wait for it: such a connection would QUIT at once, and reconnecting
                // like that trips the receiver's connection-rate limits.
                let wait = q.shaper.message_wait(now);
                if wait > RATE_WAIT_IN_SESSION_MS {
                    upd(Some(now.saturating_add(
                        (wait - RATE_WAIT_IN_SESSION_MS).min(3_600_000),
                    )));
                    continue;
                }
                if let Some(t) = all_sources_disabled(&cfg, key.vmta(), disabled_ips, now) {
                    // Every source address of the vMTA is out of service: wait for the first back.
                    upd(Some(t));
                    continue;
                }
                match q.shaper.open_connection(now) {
                    Ok(()) => {
                        // The whole MTA's limit, then the vMTA's.
                        let total_ok = total_gate.try_open();
                        if total_ok && gate.try_open() {
                            q.opened += 1;
                            let src = source_for(&cfg, key.vmta(), q.opened - 1, |ip| {
                                manage::ip_disabled(disabled_ips, ip, now)
                            });
                            starts.push((key.clone(), src));
                            upd(Some(now + 1));
                        } else {
                            if total_ok {
                                total_gate.close();
                            }
                            q.shaper.close_connection();
                            upd(Some(now + 1000));
                        }
                    }
                    Err(crate::shaping::Wait::Rate(ms)) => upd(Some(now + ms.min(3_600_000))),
                    Err(crate::shaping::Wait::Connections) => {}
                }
            }
            (starts, expired, next)
        })
    }

    fn release(&self, key: &QueueKey) {
        self.with(|s| {
            if let Some(q) = s.queues.get_mut(key) {
                q.shaper.close_connection();
            }
            if let Some(g) = s.vmta_gates.get_mut(&key.vmta) {
                g.close();
            }
            s.total_gate.close();
        });
        self.wake.notify_one();
    }

    /// Where to connect for a queue: `smtp-hosts` or MX (then A), in preference order.
    async fn targets(
        &self,
        key: &QueueKey,
        qs: &QueueSettings,
    ) -> Result<Vec<SocketAddr>, (Reply, bool)> {
        let port = qs.default_smtp_port;
        let mut hosts: Vec<(String, u16)> = Vec::new();
        if let Some(h) = &qs.smtp_hosts {
            for part in h.split([',', ';']).map(str::trim).filter(|p| !p.is_empty()) {
                if let Some(d) = part.strip_prefix("lookup-mx:") {
                    if let Ok(mx) = self.parts.dns.mx(d).await {
                        hosts.extend(mx.into_iter().map(|m| (m.host, port)));
                    }
                } else if let Some(rest) = part.strip_prefix('[') {
                    let (ip, p) = rest.split_once(']').unwrap_or((rest, ""));
                    let p = p
                        .strip_prefix(':')
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(port);
                    hosts.push((ip.to_string(), p));
                } else {
                    let (h, p) = part
                        .rsplit_once(':')
                        .and_then(|(h, p)| p.parse().ok().map(|p| (h, p)))
                        .unwrap_or((part, port));
                    hosts.push((h.to_string(), p));
                }
            }
        } else {
            match self.parts.dns.mx(&key.domain).await {
                Ok(mx) if mx.iter().any(|m| m.host.is_empty() || m.host == ".") => {
                    return Err((
                        Reply::new(
                            556,
                            "5.1.10",
                            format!("{} does not accept mail (null MX)", key.domain),
                        ),
                        true,
                    ))
                }
                Ok(mx) if !mx.is_empty() => hosts.extend(mx.into_iter().map(|m| (m.host, port))),
                Ok(_) | Err(DnsError::NoRecords(_)) => hosts.push((key.domain.clone(), port)),
                Err(DnsError::NxDomain(d)) => {
                    return Err((
                        Reply::new(550, "5.1.2", format!("domain {d} does not exist")),
                        true,
                    ))
                }
                Err(e) => return Err((Reply::new(451, "4.4.3", format!("DNS error: {e}")), false)),
            }
        }
        let mut out = Vec::new();
        for (h, p) in hosts {
            if let Ok(ip) = h.parse::<IpAddr>() {
                out.push(SocketAddr::new(ip, p));
                continue;
            }
            if let Ok(ips) = self.parts.dns.ip(&h).await {
                out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, p)));
            }
        }
        if out.is_empty() {
            return Err((
                Reply::new(
                    451,
                    "4.4.4",
                    format!("no address found for the mail hosts of {}", key.domain),
                ),
                qs.bounce_upon_no_mx,
            ));
        }
        Ok(out)
    }

    /// One outbound connection for `key`: delivers due recipients until the queue is empty, the
    /// per-connection limit is reached, or the server refuses.
    async fn connection(self: Arc<Self>, key: QueueKey, src: Option<(IpAddr, Option<String>)>) {
        if let Ok(mut st) = self.stats.lock() {
            st.connections += 1;
        }
        let qs = self.with(|s| s.queues.get(&key).map(|q| q.queue.settings.clone()));
        let Some(qs) = qs else {
            self.release(&key);
            return;
        };
        let targets = match self.targets(&key, &qs).await {
            Ok(t) => t,
            Err((reply, permanent)) => {
                self.fail_queue(&key, &reply, permanent, None, None).await;
                self.release(&key);
                return;
            }
        };
        // MX rollup: queues whose domains share mail hosts share one connection limit per vMTA.
        let rollup_key = (!qs.disable_mx_rollup).then(|| {
            let mut hosts: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
            hosts.sort();
            (key.vmta.clone(), hosts.join(","))
        });
        if let Some(rk) = &rollup_key {
            let now = self.now_ms();
            let admitted = self.with(|s| {
                let limit = s
                    .queues
                    .get(&key)
                    .map_or(qs.max_smtp_out, |q| q.shaper.max_connections());
                let n = s.rollup.entry(rk.clone()).or_insert(0);
                if *n >= limit {
                    if let Some(q) = s.queues.get_mut(&key) {
                        q.not_before_ms = now + 1000;
                    }
                    false
                } else {
                    *n += 1;
                    true
                }
            });
            if !admitted {
                self.release(&key);
                return;
            }
        }
        self.deliver_to(&key, &qs, src, targets).await;
        if let Some(rk) = rollup_key {
            self.with(|s| {
                if let Some(n) = s.rollup.get_mut(&rk) {
                    *n = n.saturating_sub(1);
                }
            });
        }
        self.release(&key);
    }

    /// Tries the targets in order until one takes the session.
    async fn deliver_to(
        &self,
        key: &QueueKey,
        qs: &QueueSettings,
        src: Option<(IpAddr, Option<String>)>,
        targets: Vec<SocketAddr>,
    ) {
        let key = key.clone();
        let (src_ip, helo) = match &src {
            Some((ip, h)) => (Some(*ip), h.clone()),
            None => (None, None),
        };
        let helo = helo.unwrap_or_else(|| self.host_name());
        let timeouts = Timeouts {
            greeting: qs.greeting_timeout.unwrap_or(Duration::from_secs(300)),
            command: Duration::from_secs(300),
            data: qs
                .data_send_timeout
                .unwrap_or(Duration::from_secs(180))
                .max(Duration::from_secs(60)),
        };
        let connect_timeout = qs.connect_timeout.unwrap_or(Duration::from_secs(120));
        let mut last_err: Option<Reply> = None;
        for dest in targets {
            let conn =
                match tokio::time::timeout(connect_timeout, self.parts.net.connect(src_ip, dest))
                    .await
                {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        last_err = Some(Reply::new(
                            421,
                            "4.4.1",
                            format!("connection to {dest} failed: {e}"),
                        ));
                        continue;
                    }
                    Err(_) => {
                        last_err = Some(Reply::new(
                            421,
                            "4.4.1",
                            format!("connection to {dest} timed out"),
                        ));
                        continue;
                    }
                };
            let dlv_ip = Some(conn.local.ip());
            match Client::connect(conn.stream, timeouts).await {
                Ok(Ok(mut client)) => {
                    if let Err(e) = client.ehlo(&helo).await {
                        last_err = Some(Reply::new(421, "4.4.2", format!("{e}")));
                        continue;
                    }
                    if qs.use_starttls && client.caps.starttls {
                        match client
                            .starttls(
                                &crate::smtp::client::opportunistic_tls(),
                                &key.domain,
                                &helo,
                            )
                            .await
                        {
                            Ok(Ok(c)) => client = c,
                            Ok(Err(b)) => {
                                let (c, _) = *b;
                                client = c;
                            }
                            Err(e) => {
                                last_err =
                                    Some(Reply::new(421, "4.7.0", format!("STARTTLS failed: {e}")));
                                continue;
                            }
                        }
                    } else if qs.require_starttls {
                        last_err = Some(Reply::new(
                            421,
                            "4.7.0",
                            format!("{dest} offers no STARTTLS and require-starttls is set"),
                        ));
                        continue;
                    }
                    self.session(&key, qs, client, dlv_ip, dest).await;
                    return;
                }
                Ok(Err(greeting)) => {
                    // A refusal at the banner: it may carry a pattern-list action.
                    let acted = self.apply_patterns(&key, &greeting, dlv_ip);
                    // A rule that defers (backoff, defer-queue, disable-source-ip) makes even a
                    // 5xx banner a reason to wait, not to bounce the queue.
                    if greeting.is_permanent() && !acted.skip_mx && !acted.defer_queue {
                        self.fail_queue(&key, &greeting, true, dlv_ip, Some(dest))
                            .await;
                        return;
                    }
                    last_err = Some(greeting);
                    if !acted.skip_mx {
                        break;
                    }
                }
                Err(e) => last_err = Some(Reply::new(421, "4.4.2", format!("{e}"))),
            }
        }
        let reply =
            last_err.unwrap_or_else(|| Reply::new(421, "4.4.1", "no mail host could be reached"));
        self.fail_queue(&key, &reply, false, src_ip, None).await;
    }

    fn host_name(&self) -> String {
        match self.config().global.get("host-name").map(|s| &s.value) {
            Some(crate::config::values::Value::Text(h)) => h.clone(),
            _ => "localhost".into(),
        }
    }

    /// Applies the queue's `smtp-pattern-list` to a reply: mode changes here; returns the other actions.
    fn apply_patterns(&self, key: &QueueKey, reply: &Reply, src: Option<IpAddr>) -> Acted {
        let now = self.now_ms();
        let text = reply.to_string();
        let cfg = self.config();
        self.with(|s| {
            let Some(q) = s.queues.get_mut(key) else {
                return Acted::default();
            };
            q.last_error = (!reply.is_positive()).then(|| text.clone());
            let Some(list) = q
                .queue
                .settings
                .smtp_pattern_list
                .as_deref()
                .and_then(|n| cfg.smtp_pattern_lists.get(n))
            else {
                return Acted::default();
            };
            let Some(rule) = match_reply(list, &text) else {
                return Acted::default();
            };
            q.shaper.apply_rule(now, rule, &text);
            q.queue.mode = q.shaper.mode();
            let mut a = Acted::default();
            for act in &rule.actions {
                match act {
                    PatternAction::SkipMx => a.skip_mx = true,
                    PatternAction::BounceQueue => a.bounce_queue = true,
                    PatternAction::BounceRcpt => a.bounce_rcpt = true,
                    PatternAction::DeferQueue => a.defer_queue = true,
                    PatternAction::ModeBackoff => a.defer_queue = true,
                    PatternAction::DisableSourceIp => {
                        // `reenable-after` on the same rule, else an hour (reference part A's example).
                        let after = rule
                            .actions
                            .iter()
                            .find_map(|x| match x {
                                PatternAction::ReenableAfter(d) => Some(*d),
                                _ => None,
                            })
                            .unwrap_or(Duration::from_secs(3600));
                        if let Some(ip) = src {
                            let until = now + after.as_millis() as i64;
                            if let Some(n) = self.repeats.note(&format!("disabled {key} {ip}")) {
                                tracing::warn!(queue = %key, %ip, reenable_in_s = after.as_secs(), reply = %text, times = n, "source IP disabled by smtp-pattern-list");
                            }
                            s.disabled_ips.insert(ip, Some(until));
                        }
                        a.defer_queue = true;
                    }
                    _ => {}
                }
            }
            a
        })
    }

    /// Fails every due group of a queue (connection-level failure): permanent ones bounce, others are
    /// retried (a `tq` record each).
    async fn fail_queue(
        &self,
        key: &QueueKey,
        reply: &Reply,
        permanent: bool,
        dlv_ip: Option<IpAddr>,
        dest: Option<SocketAddr>,
    ) {
        let now = self.now_ms();
        let acted = self.apply_patterns(key, reply, dlv_ip);
        let groups: Vec<Waiting<MessageId>> = self.with(|s| {
            let Some(q) = s.queues.get_mut(key) else {
                return Vec::new();
            };
            if acted.bounce_queue || permanent {
                return q.queue.drain_all();
            }
            let mut out = Vec::new();
            while let Some(w) = q.queue.pop_due(now) {
                out.push(w);
            }
            out
        });
        let conn = ConnText::new(&key.domain, dlv_ip, dest, String::new());
        let category = if permanent || acted.bounce_queue {
            self.category(reply, "CONN")
        } else if reply.enhanced.as_deref() == Some("4.4.1") {
            "no-answer-from-host"
        } else {
            self.category(reply, "CONN")
        };
        for w in groups {
            if permanent || acted.bounce_queue {
                for r in &w.rcpts {
                    self.finish(
                        key,
                        w.id,
                        *r,
                        Outcome {
                            ty: RecordType::Bounced,
                            reply,
                            category,
                            conn: Some(&conn),
                            notify: true,
                        },
                    )
                    .await;
                }
            } else {
                if let Some(r) = w.rcpts.first() {
                    self.finish(
                        key,
                        w.id,
                        *r,
                        Outcome {
                            ty: RecordType::TransientQueue,
                            reply,
                            category,
                            conn: Some(&conn),
                            notify: true,
                        },
                    )
                    .await;
                }
                self.requeue(key, w, now, reply).await;
            }
        }
    }

    async fn requeue(&self, key: &QueueKey, w: Waiting<MessageId>, now: i64, reply: &Reply) {
        self.requeue_after(key, w, now, reply, None).await
    }

    /// Puts a group back after a transient failure, after `delay` if given (else the queue's
    /// retry schedule); bounces it as expired if it is past `bounce-after`.
    async fn requeue_after(
        &self,
        key: &QueueKey,
        w: Waiting<MessageId>,
        now: i64,
        reply: &Reply,
        delay: Option<Duration>,
    ) {
        let expired = self.with(|s| {
            s.queues.get_mut(key).and_then(|q| match delay {
                Some(d) => q.queue.retry_in(w, now, d),
                None => q.queue.retry(w, now),
            })
        });
        if let Some(w) = expired {
            let r = expired_reply(reply);
            for x in &w.rcpts {
                self.finish(
                    key,
                    w.id,
                    *x,
                    Outcome {
                        ty: RecordType::Bounced,
                        reply: &r,
                        category: "message-expired",
                        conn: None,
                        notify: true,
                    },
                )
                .await;
            }
        }
    }

    /// Keeps an open connection with nothing to send: waits until the queue's next group is due,
    /// mail is queued or `idle` has passed since `idle_since`. False when the time is up (QUIT).
    /// `arrivals` is the queue's arrival signal, looked up on the session's first wait and kept
    /// (a queue and its signal live as long as the engine).
    async fn idle_wait(
        &self,
        key: &QueueKey,
        idle_since: &mut Option<i64>,
        arrivals: &mut Option<Arc<Notify>>,
        idle: Duration,
    ) -> bool {
        let now = self.now_ms();
        let deadline = idle_since
            .get_or_insert(now)
            .saturating_add(idle.as_millis() as i64);
        if now >= deadline {
            return false;
        }
        if arrivals.is_none() {
            *arrivals = self.with(|s| s.queues.get(key).map(|q| q.arrivals.clone()));
        }
        let Some(arrivals) = arrivals.as_ref() else {
            return false;
        };
        // Listening before looking, so that mail queued in between is not missed.
        let arrived = arrivals.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let (due, rate_wait) = self.with(|s| {
            s.queues.get_mut(key).map_or((None, 0), |q| {
                (q.queue.next_due_ms(), q.shaper.message_wait(now))
            })
        });
        // The next group, but not before the message rate lets it go.
        let until = due.map_or(deadline, |d| {
            d.max(now.saturating_add(rate_wait))
                .clamp(now + 1, deadline)
        });
        tokio::select! {
            _ = arrived => {}
            _ = tokio::time::sleep(Duration::from_millis((until - now) as u64)) => {}
        }
        true
    }

    /// Sends due groups over one open session.
    async fn session(
        &self,
        key: &QueueKey,
        qs: &QueueSettings,
        mut client: Client,
        dlv_ip: Option<IpAddr>,
        dest: SocketAddr,
    ) {
        let conn = ConnText::new(&key.domain, dlv_ip, Some(dest), client.caps.summary());
        let mut sent = 0u64;
        // Since when the connection has had nothing to send (`connection-idle-timeout`).
        let mut idle_since: Option<i64> = None;
        let mut arrivals = None;
        loop {
            if qs.max_msg_per_connection > 0 && sent >= qs.max_msg_per_connection {
                break;
            }
            let now = self.now_ms();
            // A recipient due now, if the rate allows it; a short rate wait keeps the connection
            // (rather than closing and reconnecting, which would trip connect-rate limits).
            let next: Result<Option<Waiting<MessageId>>, i64> = self.with(|s| {
                let Some(q) = s.queues.get_mut(key) else {
                    return Ok(None);
                };
                let Some(w) = q.queue.pop_due(now) else {
                    return Ok(None);
                };
                match q.shaper.attempt_recipients(now, w.rcpts.len() as u32) {
                    Ok(()) => Ok(Some(w)),
                    Err(wait) => {
                        let ms = match wait {
                            crate::shaping::Wait::Rate(ms) => ms,
                            crate::shaping::Wait::Connections => 1000,
                        };
                        q.queue.push(w, now + ms.min(3_600_000));
                        Err(ms)
                    }
                }
            });
            let next = match next {
                Ok(n) => n,
                Err(ms) if ms <= RATE_WAIT_IN_SESSION_MS => {
                    tokio::time::sleep(Duration::from_millis(ms.max(1) as u64)).await;
                    continue;
                }
                Err(_) => None,
            };
            let Some(w) = next else {
                match qs.connection_idle_timeout {
                    Some(idle)
                        if self
                            .idle_wait(key, &mut idle_since, &mut arrivals, idle)
                            .await =>
                    {
                        continue
                    }
                    _ => break,
                }
            };
            idle_since = None;
            let Some(a) = self.attempt_for(&w, now) else {
                continue;
            };
            // A body to sign is read now; otherwise only once the server asks for it, so a
            // transaction refused at MAIL or RCPT does not read a spilled body back.
            let signed = (qs.dkim_sign && self.parts.dkim_signing).then(|| {
                self.parts
                    .spool
                    .body(w.id)
                    .map(|body| self.maybe_sign(key, qs, w.id, a.pool.as_deref(), a.dot_free, body))
            });
            let result = match signed {
                Some(Err(e)) => Err(ClientError::Body(e.to_string())),
                Some(Ok((body, dot_free))) => {
                    let fetch = || Ok(body.clone());
                    client
                        .send_spooled(&a.mail_from, &a.rcpts, body.len(), &fetch, dot_free)
                        .await
                }
                None => {
                    let fetch = || self.parts.spool.body(w.id).map_err(|e| e.to_string());
                    client
                        .send_spooled(&a.mail_from, &a.rcpts, a.size, &fetch, a.dot_free)
                        .await
                }
            };
            let t = match result {
                Ok(t) => t,
                Err(e) => {
                    // The session ends here (a failed fetch leaves it in the middle of DATA).
                    let (reply, category) = match &e {
                        ClientError::Body(_) => (Reply::new(451, "4.3.0", format!("{e}")), "other"),
                        _ => (Reply::new(451, "4.4.2", format!("{e}")), "bad-connection"),
                    };
                    for r in &w.rcpts {
                        self.finish(
                            key,
                            w.id,
                            *r,
                            Outcome {
                                ty: RecordType::Transient,
                                reply: &reply,
                                category,
                                conn: Some(&conn),
                                notify: true,
                            },
                        )
                        .await;
                    }
                    self.requeue(key, w, self.now_ms(), &reply).await;
                    return;
                }
            };
            sent += 1;
            let mut retry: Vec<u32> = Vec::new();
            let mut stop = false;
            // A `bounce-queue` rule on a MAIL, RCPT or data reply: the whole queue bounces.
            let mut bounce_queue: Option<Reply> = None;
            for (i, r) in w.rcpts.iter().enumerate() {
                let reply = t.outcome(i);
                if reply.is_positive() {
                    let now = self.now_ms();
                    self.with(|s| {
                        if let Some(q) = s.queues.get_mut(key) {
                            q.shaper.delivered(now);
                            q.queue.mode = q.shaper.mode();
                        }
                    });
                    self.finish(
                        key,
                        w.id,
                        *r,
                        Outcome {
                            ty: RecordType::Delivered,
                            reply,
                            category: "",
                            conn: Some(&conn),
                            notify: true,
                        },
                    )
                    .await;
                    continue;
                }
                let acted = self.apply_patterns(key, reply, dlv_ip);
                let category = self.category(reply, t.command(i));
                if acted.bounce_queue {
                    bounce_queue = Some(reply.clone());
                }
                if reply.is_permanent()
                    || acted.bounce_queue
                    || (acted.bounce_rcpt && reply.is_transient())
                {
                    self.finish(
                        key,
                        w.id,
                        *r,
                        Outcome {
                            ty: RecordType::Bounced,
                            reply,
                            category,
                            conn: Some(&conn),
                            notify: true,
                        },
                    )
                    .await;
                } else {
                    self.finish(
                        key,
                        w.id,
                        *r,
                        Outcome {
                            ty: RecordType::Transient,
                            reply,
                            category,
                            conn: Some(&conn),
                            notify: true,
                        },
                    )
                    .await;
                    retry.push(*r);
                    if acted.defer_queue || reply.code == 421 {
                        stop = true;
                    }
                }
            }
            if !retry.is_empty() {
                let partial = retry.len() < w.rcpts.len();
                let again = Waiting {
                    id: w.id,
                    rcpts: retry,
                    received_ms: w.received_ms,
                    attempts: w.attempts,
                };
                let last = t.outcome(0).clone();
                // Recipients deferred one by one while others of the same transaction were
                // taken wait `retry-recipients-after` (reference part A: per-recipient 4xx hold);
                // when nothing was taken, or the server pushed back on the queue, the retry
                // schedule applies.
                let delay = if partial && !stop {
                    qs.retry_recipients_after
                } else {
                    None
                };
                self.requeue_after(key, again, self.now_ms(), &last, delay)
                    .await;
            }
            if let Some(r) = bounce_queue {
                self.fail_queue(key, &r, true, dlv_ip, Some(dest)).await;
                break;
            }
            if stop {
                // The server pushed back on the whole queue: hold the rest until the retry time.
                let now = self.now_ms();
                self.with(|s| {
                    if let Some(q) = s.queues.get_mut(key) {
                        let hold = now + q.shaper.retry_delay(1).as_millis() as i64;
                        q.queue.held_until_ms = Some(hold);
                    }
                });
                break;
            }
        }
        client.quit().await;
    }

    /// What one delivery attempt of `w` needs of its message (not the whole envelope, not the
    /// body); notes the first attempt's time.
    fn attempt_for(&self, w: &Waiting<MessageId>, now: i64) -> Option<Attempt> {
        self.with(|s| {
            let m = s.messages.get_mut(&w.id)?;
            m.first_attempt_ms.get_or_insert(now);
            let env = &m.env;
            Some(Attempt {
                mail_from: env.mail_from.clone(),
                rcpts: w
                    .rcpts
                    .iter()
                    .filter_map(|i| env.rcpts.get(*i as usize).map(|r| r.address.clone()))
                    .collect(),
                pool: env.pool.clone(),
                dot_free: env.dot_free,
                size: env.size as usize,
            })
        })
    }

    /// DKIM-signs the body of a queue that signs (the caller checks `dkim-sign yes` and that
    /// signing is on) when a key fits the author domain. Also says whether the body to send is
    /// dot-free ([`Envelope::dot_free`]).
    fn maybe_sign(
        &self,
        key: &QueueKey,
        qs: &QueueSettings,
        id: MessageId,
        pool: Option<&str>,
        dot_free: bool,
        body: Arc<Vec<u8>>,
    ) -> (Arc<Vec<u8>>, bool) {
        let Some(author) = crate::dkim::author_domain(&body) else {
            return (body, dot_free);
        };
        let cfg = &self.config();
        let Some(dk) = crate::dkim::select_key(cfg, key.vmta(), pool, &author) else {
            if let Some(n) = self.repeats.note(&format!("unsigned {key} {author}")) {
                tracing::warn!(queue = %key, %author, messages = n, "dkim-sign yes but no domain-key fits; sending unsigned (logged at the 1st, 10th, 100th ... message)");
            }
            return (body, dot_free);
        };
        let domain = if dk.domain == "*" {
            author.clone()
        } else {
            dk.domain.clone()
        };
        let cache_key = (domain.clone(), dk.selector.clone());
        let cached = self.with(|s| {
            s.messages
                .get(&id)
                .and_then(|m| m.signatures.get(&cache_key).cloned())
        });
        let signed = match cached {
            Some(h) => Ok(h),
            None => self
                .keys
                .get(&dk.path)
                .and_then(|k| {
                    crate::dkim::sign(
                        &body,
                        &k,
                        &domain,
                        &dk.selector,
                        crate::dkim::DEFAULT_HEADERS,
                        identity(qs.dkim_identity.as_deref(), &body, &domain).as_deref(),
                    )
                })
                .map(|h| {
                    let h = Arc::new(h);
                    if let Ok(mut st) = self.stats.lock() {
                        st.dkim_signatures += 1;
                    }
                    self.with(|s| {
                        if let Some(m) = s.messages.get_mut(&id) {
                            m.signatures.insert(cache_key, h.clone());
                        }
                    });
                    h
                }),
        };
        match signed {
            Ok(h) => {
                let mut out = Vec::with_capacity(h.len() + body.len());
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(&body);
                let dot_free = dot_free && crate::smtp::io::dot_free(h.as_bytes());
                (Arc::new(out), dot_free)
            }
            Err(e) => {
                tracing::error!(queue = %key, %e, "DKIM signing failed; sending unsigned");
                (body, dot_free)
            }
        }
    }

    /// Mode of a queue, if it exists.
    pub fn mode_of(&self, key: &QueueKey) -> Option<Mode> {
        self.with(|s| s.queues.get(key).map(|q| q.shaper.mode()))
    }
}

/// What a delivery attempt takes from its message's envelope.
struct Attempt {
    mail_from: String,
    /// The attempt's recipients' addresses.
    rcpts: Vec<String>,
    pool: Option<String>,
    dot_free: bool,
    /// The spooled body's length.
    size: usize,
}

#[derive(Default)]
struct Acted {
    skip_mx: bool,
    bounce_queue: bool,
    bounce_rcpt: bool,
    defer_queue: bool,
}

/// The DKIM `i=` for a message (`dkim-identity`): `sender-or-from` (the default) takes the Sender,
/// else the From address, when its domain is the signing domain or under it; an explicit address
/// or `@domain` is used as given when it is under the signing domain. `None` leaves `i=` out.
fn identity(setting: Option<&str>, body: &[u8], d: &str) -> Option<String> {
    let d = d.to_ascii_lowercase();
    let under = |a: &str| {
        let dom = a
            .rsplit_once('@')
            .map(|(_, x)| x.to_ascii_lowercase())
            .unwrap_or_default();
        dom == d || dom.ends_with(&format!(".{d}"))
    };
    let candidate = match setting.map(str::trim) {
        None | Some("") | Some("sender-or-from") => header(body, "Sender")
            .or_else(|| header(body, "From"))
            .and_then(|h| crate::bounce::parse::find_address(&h)),
        Some(explicit) => Some(explicit.to_string()),
    }?;
    under(&candidate).then_some(candidate)
}

/// The suppression policy and list of a config; an unusable list file is logged and the list is
/// kept in memory (the MTA still runs; check-config reports the file).
fn open_suppression(cfg: &Config) -> (crate::suppress::Policy, Arc<crate::suppress::List>) {
    let (policy, file) = match crate::suppress::from_config(cfg) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(%e, "suppression disabled");
            return (
                crate::suppress::Policy::default(),
                Arc::new(crate::suppress::List::in_memory()),
            );
        }
    };
    let list = match file {
        Some(p) => crate::suppress::List::open(&p).unwrap_or_else(|e| {
            tracing::error!(%e, "suppression list unusable; keeping it in memory");
            crate::suppress::List::in_memory()
        }),
        None => crate::suppress::List::in_memory(),
    };
    (policy, Arc::new(list))
}

/// How an [`Engine::accept`] error caused by the accounting backlog starts.
pub const ACCT_BACKLOG: &str = "accounting backlog";

/// `acct-backlog-limit` (ours): accounting lines that may wait for a destination that cannot take
/// them (a full disk, a dead pipe) before new mail is refused with 451 4.3.0.
fn acct_backlog_limit(cfg: &Config) -> usize {
    match cfg.global.get("acct-backlog-limit").map(|s| &s.value) {
        Some(crate::config::values::Value::Int(n)) => usize::try_from(*n).unwrap_or(usize::MAX),
        _ => crate::acct::DEFAULT_BACKLOG_LIMIT,
    }
}

/// `total-max-smtp-out` (PowerMTA's default is 1200 for its Enterprise license, 200 for Standard;
/// we take 1200).
fn total_max_smtp_out(cfg: &Config) -> u64 {
    match cfg.global.get("total-max-smtp-out").map(|s| &s.value) {
        Some(crate::config::values::Value::Int(n)) => *n,
        _ => 1200,
    }
}

/// When every source address of `vmta` is disabled at `now`: the time the first comes back (a
/// minute from now for those disabled until an operator enables them). `None` if one is usable.
fn all_sources_disabled(
    cfg: &Config,
    vmta: Option<&str>,
    disabled: &BTreeMap<IpAddr, Option<i64>>,
    now: i64,
) -> Option<i64> {
    let hosts = match vmta.and_then(|v| cfg.vmtas.get(v)) {
        Some(v) => &v.source_hosts,
        None => &cfg.source_hosts,
    };
    if hosts.is_empty() {
        return None;
    }
    let mut first: Option<i64> = None;
    for h in hosts {
        match disabled.get(&h.net.addr()) {
            Some(Some(t)) if *t > now => first = Some(first.map_or(*t, |f| f.min(*t))),
            Some(None) => first = Some(first.map_or(now + 60_000, |f| f.min(now + 60_000))),
            _ => return None,
        }
    }
    first
}

/// The source address (and EHLO name) for the `n`-th connection of a vMTA's queue, skipping
/// addresses that are out of service (if all are, the first is used: the operator's choice to
/// disable every address of a vMTA is better met by pausing its queues).
fn source_for(
    cfg: &Config,
    vmta: Option<&str>,
    n: u64,
    disabled: impl Fn(IpAddr) -> bool,
) -> Option<(IpAddr, Option<String>)> {
    let (hosts, vm_name) = match vmta.and_then(|v| cfg.vmtas.get(v)) {
        Some(v) => (&v.source_hosts, v.host_name.clone()),
        None => (&cfg.source_hosts, None),
    };
    if hosts.is_empty() {
        return None;
    }
    let usable: Vec<_> = hosts.iter().filter(|h| !disabled(h.net.addr())).collect();
    let h = if usable.is_empty() {
        &hosts[(n as usize) % hosts.len()]
    } else {
        usable[(n as usize) % usable.len()]
    };
    Some((h.net.addr(), h.host_name.clone().or(vm_name)))
}

#[cfg(test)]
mod identity_tests {
    use super::identity;

    #[test]
    fn dkim_identity_follows_sender_or_from_under_the_signing_domain() {
        let m = b"From: News <news@mail.example.com>\r\nSubject: x\r\n\r\nhi\r\n";
        assert_eq!(
            identity(None, m, "example.com").as_deref(),
            Some("news@mail.example.com")
        );
        let s = b"Sender: list@example.com\r\nFrom: a@other.test\r\n\r\nhi\r\n";
        assert_eq!(
            identity(Some("sender-or-from"), s, "example.com").as_deref(),
            Some("list@example.com")
        );
        assert_eq!(identity(None, m, "other.test"), None, "not under d=: no i=");
        assert_eq!(
            identity(Some("@example.com"), m, "example.com").as_deref(),
            Some("@example.com")
        );
    }
}

#[cfg(test)]
mod header_tests {
    use super::{header, headers};

    #[test]
    fn header_fields_are_found_in_one_pass() {
        let msg = b"Received: x\r\nx-job: j1\r\nSubject: a\r\n b\r\n\tc\r\nX-Job: j2\r\n\r\nList-Id: body\r\n";
        let [job, subject, list, missing] =
            headers(msg, ["X-Job", "subject", "List-Id", "Message-ID"]);
        assert_eq!(job.as_deref(), Some("j1"), "the first field wins");
        assert_eq!(
            subject.as_deref(),
            Some("a b c"),
            "folded lines are unfolded"
        );
        assert_eq!(list, None, "the header section ends at the empty line");
        assert_eq!(missing, None);
        assert_eq!(header(msg, "SUBJECT").as_deref(), Some("a b c"));
        assert_eq!(
            header(b"A: 1\nB: 2\n", "b").as_deref(),
            Some("2"),
            "LF line ends"
        );
        // Names are trimmed as `str::trim` trims; a line that is not UTF-8 is skipped and ends
        // the field being folded.
        let odd = b"\x0B X-Job \t: j3\r\nSubject: s\r\n \xff\r\n more\r\nList-Id: \xfe\r\n\xc2\xa0Message-ID\xc2\xa0: <m>\r\n\r\n";
        let [job, subject, list, id] = headers(odd, ["X-Job", "subject", "List-Id", "Message-ID"]);
        assert_eq!(job.as_deref(), Some("j3"));
        assert_eq!(subject.as_deref(), Some("s"));
        assert_eq!(list, None);
        assert_eq!(id.as_deref(), Some("<m>"));
    }
}
