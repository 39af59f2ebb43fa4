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
use crate::queue::{select, PoolCursors, Queue, QueueKey, Waiting};
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

mod accept;
mod manage;
mod outcome;
mod plan;
mod session;
mod signals;
mod waiting;
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
    /// Why `not_before_ms` is set.
    not_before_why: waiting::NotBefore,
    /// The provider's connection-level signals: refusals in a row, reconnect delays per address.
    signals: crate::shaping::Reconnect,
    /// The reply that put the whole queue on hold (`held_until_ms`).
    held_by: Option<String>,
    /// Why the queue sent nothing more at the scheduler's last pass.
    blocked: waiting::Blocked,
}

impl QueueState {
    fn new(key: &QueueKey, qs: QueueSettings) -> QueueState {
        QueueState {
            queue: Queue::new(key.clone(), qs.clone()),
            shaper: Shaper::new(&key.to_string(), qs),
            last_error: None,
            not_before_ms: 0,
            paused: false,
            opened: 0,
            arrivals: Arc::new(Notify::new()),
            not_before_why: waiting::NotBefore::RollupFull,
            signals: Default::default(),
            held_by: None,
            blocked: Default::default(),
        }
    }
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
    /// The last reply of each recipient deferred so far: what its expiry quotes.
    last_reply: BTreeMap<u32, Reply>,
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
    monitor: Arc<crate::monitor::Monitor>,
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

pub use crate::headers::{header, headers};

/// The final reply of a message past `bounce-after`, quoting its last error.
fn expired_reply(last: &Reply) -> Reply {
    Reply::new(554, "4.4.7", format!("message expired; last error: {last}"))
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
            monitor: Arc::new(crate::monitor::Monitor::new(now)),
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
