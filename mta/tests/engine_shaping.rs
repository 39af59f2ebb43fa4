//! The engine on the simulated network and paused clock, against scripted receiving servers:
//! `disable-source-ip` with `reenable-after` from an `smtp-pattern-list`, `queue-to`, and
//! `retry-recipients-after` for recipients deferred while others of the transaction were taken, and
//! more: signing, expiry, limits, backoff, MX fallback, a body that cannot be read at DATA.

mod common;

use mta::acct::{Record, RecordType};
use mta::clock::Clock;
use mta::dns::{Mx, StaticResolver};
use mta::engine::Engine;
use mta::net::{Net, SimNet};
use mta::smtp::io::Data;
use mta::smtp::server::{serve, Handler, Outcome, ServerOptions};
use mta::smtp::{MailFrom, RcptTo, Reply};
use mta::spool::{Envelope, MemorySpool, Recipient};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const START_MS: i64 = 1_780_000_000_000;

/// The DKIM key the signing tests configure.
const RSA_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fixtures/keys/rsa2048-pkcs8.pem"
);

/// What the scripted server saw: (time ms, source IP, server IP, recipient, reply code).
type Log = Arc<Mutex<Vec<(i64, IpAddr, IpAddr, String, u16)>>>;

/// Decides the RCPT reply from (source ip, recipient, how many times it was seen before).
type Rule = Arc<dyn Fn(IpAddr, &str, usize) -> Reply + Send + Sync>;

/// A server whose RCPT reply is decided by `rule(source ip, recipient, attempt number)`.
#[derive(Clone)]
struct Scripted {
    log: Log,
    peer: IpAddr,
    local: IpAddr,
    clock: Clock,
    rule: Rule,
    /// Connections open now and the most seen at once.
    open: Arc<(AtomicUsize, AtomicUsize)>,
    counted: bool,
    /// DKIM-Signature of every message body received (empty when unsigned).
    bodies: Arc<Mutex<Vec<String>>>,
    /// Every message body received, as received.
    full: Arc<Mutex<Vec<Vec<u8>>>>,
    /// The first this many DATA are deferred.
    defer_data: usize,
    /// Messages taken on this connection; pushed to `per_conn` when it closes.
    msgs: usize,
    per_conn: Arc<Mutex<Vec<usize>>>,
    /// Connections open at each RCPT: (time ms, open).
    rcpt_open: Arc<Mutex<Vec<(i64, usize)>>>,
    /// A banner other than 220, per server address.
    banners: Arc<Mutex<std::collections::BTreeMap<IpAddr, Reply>>>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        if self.counted {
            self.open.0.fetch_sub(1, Ordering::SeqCst);
            if let Ok(mut v) = self.per_conn.lock() {
                v.push(self.msgs);
            }
        }
    }
}

impl Handler for Scripted {
    fn connect(&mut self) -> Outcome {
        let now = self.open.0.fetch_add(1, Ordering::SeqCst) + 1;
        self.open.1.fetch_max(now, Ordering::SeqCst);
        self.counted = true;
        let banner = self
            .banners
            .lock()
            .ok()
            .and_then(|b| b.get(&self.local).cloned());
        Outcome::reply(banner.unwrap_or_else(|| Reply::new(220, "", "scripted ESMTP")))
    }
    fn mail(&mut self, _: &MailFrom<String>) -> Outcome {
        Outcome::ok("2.1.0", "Ok")
    }
    fn rcpt(&mut self, to: &RcptTo<String>) -> Outcome {
        let n = self
            .log
            .lock()
            .map(|l| l.iter().filter(|e| e.3 == to.address).count())
            .unwrap_or(0);
        let r = (self.rule)(self.peer, &to.address, n);
        if let Ok(mut v) = self.rcpt_open.lock() {
            v.push((self.clock.now_ms(), self.open.0.load(Ordering::SeqCst)));
        }
        if let Ok(mut l) = self.log.lock() {
            l.push((
                self.clock.now_ms(),
                self.peer,
                self.local,
                to.address.clone(),
                r.code,
            ));
        }
        Outcome::reply(r)
    }
    async fn message(&mut self, d: Data) -> Outcome {
        let sig = mta::engine::header(&d.body, "DKIM-Signature").unwrap_or_default();
        if let Ok(mut f) = self.full.lock() {
            f.push(d.body.to_vec());
        }
        let n = self
            .bodies
            .lock()
            .map(|mut b| {
                b.push(sig);
                b.len()
            })
            .unwrap_or(0);
        if n <= self.defer_data {
            return Outcome::reply(Reply::new(451, "4.3.0", "try again later"));
        }
        self.msgs += 1;
        Outcome::ok("2.0.0", "Ok")
    }
    fn reset(&mut self) {}
}

struct World {
    engine: Arc<Engine>,
    net: SimNet,
    bodies: Arc<Mutex<Vec<String>>>,
    full: Arc<Mutex<Vec<Vec<u8>>>>,
    open: Arc<(AtomicUsize, AtomicUsize)>,
    log: Log,
    records: Arc<Mutex<Vec<Record>>>,
    per_conn: Arc<Mutex<Vec<usize>>>,
    rcpt_open: Arc<Mutex<Vec<(i64, usize)>>>,
    banners: Arc<Mutex<std::collections::BTreeMap<IpAddr, Reply>>>,
    dns: StaticResolver,
}

async fn world(config: &str, servers: &[(&str, &str)], rule: Rule) -> World {
    world_with(config, servers, rule, 0).await
}

async fn world_with(
    config: &str,
    servers: &[(&str, &str)],
    rule: Rule,
    defer_data: usize,
) -> World {
    world_spooled(config, servers, rule, defer_data, MemorySpool::default()).await
}

async fn world_spooled(
    config: &str,
    servers: &[(&str, &str)],
    rule: Rule,
    defer_data: usize,
    spool: MemorySpool,
) -> World {
    let cfg = Arc::new(
        mta::config::load_str("test.conf", config)
            .into_result()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let clock = Clock::starting_at(START_MS);
    let net = SimNet::new();
    let dns = StaticResolver::default();
    let log: Log = Arc::default();
    let open: Arc<(AtomicUsize, AtomicUsize)> = Arc::default();
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let full: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let per_conn: Arc<Mutex<Vec<usize>>> = Arc::default();
    let rcpt_open: Arc<Mutex<Vec<(i64, usize)>>> = Arc::default();
    let banners: Arc<Mutex<std::collections::BTreeMap<IpAddr, Reply>>> = Arc::default();
    for (domain, ip) in servers {
        let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{e}"));
        let host = format!("mx.{domain}");
        dns.edit(|z| {
            z.mx.insert(
                domain.to_string(),
                vec![Mx {
                    preference: 10,
                    host: host.clone(),
                }],
            );
            z.ip.insert(host.clone(), vec![ip]);
        });
        let mut l = net
            .listen(SocketAddr::new(ip, 25))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let base = Scripted {
            log: log.clone(),
            peer: ip,
            local: ip,
            clock,
            rule: rule.clone(),
            open: open.clone(),
            counted: false,
            bodies: bodies.clone(),
            full: full.clone(),
            defer_data,
            msgs: 0,
            per_conn: per_conn.clone(),
            rcpt_open: rcpt_open.clone(),
            banners: banners.clone(),
        };
        tokio::spawn(async move {
            while let Ok(c) = l.accept().await {
                let mut h = base.clone();
                h.peer = c.peer.ip();
                tokio::spawn(
                    async move { serve(c.stream, &mut h, &ServerOptions::default()).await },
                );
            }
        });
    }
    let (engine, records) = common::run_engine(cfg, spool, net.clone(), dns.clone(), clock, true);
    World {
        engine,
        net,
        bodies,
        full,
        open,
        log,
        records,
        per_conn,
        rcpt_open,
        banners,
        dns,
    }
}

/// A config with one vMTA `v` on 127.0.0.2 for everything: `head` (pattern lists) before it,
/// `domain_star` inside `<domain *>`.
fn single_ip_config(head: &str, domain_star: &str) -> String {
    format!(
        "{head}<source 0/0>\n    default-virtual-mta v\n</source>\n<virtual-mta v>\n    smtp-source-host 127.0.0.2 a.sender.test\n</virtual-mta>\n<domain *>\n{domain_star}</domain>\n"
    )
}

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        mail_from: "bounces@sender.test".into(),
        rcpts: rcpts
            .iter()
            .map(|r| Recipient {
                address: r.to_string(),
                orcpt: None,
                done: false,
            })
            .collect(),
        vmta: Some("v".into()),
        pool: None,
        job_id: None,
        env_id: None,
        source_ip: None,
        received_ms: START_MS,
        size: 100,
        message_id: None,
        dot_free: false,
    }
}

async fn submit(w: &World, rcpts: &[&str]) {
    let src = w
        .engine
        .config()
        .source_settings(Some(IpAddr::from([127, 0, 0, 9])), None);
    let body = b"From: a@sender.test\r\nSubject: t\r\n\r\nhi\r\n".to_vec();
    w.engine
        .accept(envelope(rcpts), body, &src, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The first record that `pick` takes, with every record for the failure message.
fn first(w: &World, what: &str, pick: impl Fn(&Record) -> bool) -> Record {
    let recs = w.records.lock().map(|v| v.clone()).unwrap_or_default();
    recs.iter()
        .find(|r| pick(r))
        .cloned()
        .unwrap_or_else(|| panic!("no {what}: {recs:?}"))
}

fn count(w: &World, ty: RecordType) -> usize {
    w.records
        .lock()
        .map(|v| v.iter().filter(|r| r.ty == Some(ty)).count())
        .unwrap_or(0)
}

const TSS04: &str = "[TSS04] Messages from 127.0.0.2 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes";

#[tokio::test(start_paused = true)]
async fn disable_source_ip_takes_the_address_out_until_reenable_after() {
    let cfg = "
<smtp-pattern-list yahoo-errors>
    reply /TSS04/ mode=backoff, disable-source-ip, reenable-after=30m
</smtp-pattern-list>
<source 0/0>
    default-virtual-mta v
</source>
<virtual-mta v>
    smtp-source-host 127.0.0.2 a.sender.test
    smtp-source-host 127.0.0.3 b.sender.test
</virtual-mta>
<domain *>
    use-starttls no
    retry-after 1m
    backoff-retry-after 1m
    smtp-pattern-list yahoo-errors
    max-smtp-out 1
</domain>
";
    // 127.0.0.2 is in trouble with this provider for the whole test; 127.0.0.3 is fine.
    let w = world(
        cfg,
        &[("yahoo.test", "127.0.0.50")],
        Arc::new(|ip, _, _| {
            if ip == IpAddr::from([127, 0, 0, 2]) {
                Reply::new(421, "4.7.0", TSS04)
            } else {
                Reply::new(250, "2.1.5", "Ok")
            }
        }),
    )
    .await;
    for i in 0..4 {
        submit(&w, &[&format!("u{i}@yahoo.test")]).await;
        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
    }
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let log = w.log.lock().map(|l| l.clone()).unwrap_or_default();
    let from_a: Vec<i64> = log
        .iter()
        .filter(|e| e.1 == IpAddr::from([127, 0, 0, 2]))
        .map(|e| e.0 - START_MS)
        .collect();
    assert!(
        !from_a.is_empty(),
        "the first connection uses 127.0.0.2: {log:?}"
    );
    // After each TSS04, 127.0.0.2 is not used again for 30 minutes.
    for pair in from_a.windows(2) {
        assert!(
            pair[1] - pair[0] >= 30 * 60_000,
            "127.0.0.2 used again {} s after it was disabled: {from_a:?}",
            (pair[1] - pair[0]) / 1000
        );
    }
    assert!(
        from_a.len() >= 2,
        "127.0.0.2 comes back after reenable-after: {from_a:?}"
    );
    assert_eq!(
        count(&w, RecordType::Delivered),
        4,
        "127.0.0.3 delivered all"
    );
    let ip = w
        .engine
        .vmta_views()
        .into_iter()
        .find(|v| v.name == "v")
        .map(|v| v.source_ips)
        .unwrap_or_default();
    assert_eq!(ip.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn queue_to_puts_a_domain_into_another_queue() {
    let cfg = "
<source 0/0>
    default-virtual-mta v
</source>
<virtual-mta v>
    smtp-source-host 127.0.0.2 a.sender.test
</virtual-mta>
<domain *>
    use-starttls no
</domain>
<domain aol.test>
    queue-to yahoo.test
</domain>
";
    let w = world(
        cfg,
        &[("yahoo.test", "127.0.0.50"), ("aol.test", "127.0.0.60")],
        Arc::new(|_, _, _| Reply::new(250, "2.1.5", "Ok")),
    )
    .await;
    submit(&w, &["x@aol.test", "y@yahoo.test"]).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let log = w.log.lock().map(|l| l.clone()).unwrap_or_default();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log.iter().all(|e| e.2 == IpAddr::from([127, 0, 0, 50])),
        "aol.test mail goes to yahoo.test's MX: {log:?}"
    );
    let recs = w.records.lock().map(|v| v.clone()).unwrap_or_default();
    let queues: Vec<&str> = recs
        .iter()
        .filter(|r| r.ty == Some(RecordType::Delivered))
        .map(|r| r.queue.as_str())
        .collect();
    assert_eq!(queues, vec!["yahoo.test/v", "yahoo.test/v"], "{recs:?}");
}

#[tokio::test(start_paused = true)]
async fn recipients_deferred_beside_accepted_ones_wait_retry_recipients_after() {
    let cfg = &single_ip_config(
        "",
        r"
    use-starttls no
    retry-after 20m
    retry-recipients-after 3m
",
    );
    // "busy@" is deferred on its first try; everyone else is taken.
    let w = world(
        cfg,
        &[("gmail.test", "127.0.0.50")],
        Arc::new(|_, rcpt, n| {
            if rcpt.starts_with("busy") && n == 0 {
                Reply::new(
                    450,
                    "4.2.1",
                    "The user you are trying to contact is receiving mail too quickly. Please resend your message at a later time.",
                )
            } else {
                Reply::new(250, "2.1.5", "Ok")
            }
        }),
    )
    .await;
    submit(&w, &["busy@gmail.test", "ok@gmail.test"]).await;
    // A message whose only recipient is deferred follows retry-after instead.
    submit(&w, &["busy2@gmail.test"]).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let log = w.log.lock().map(|l| l.clone()).unwrap_or_default();
    let times = |who: &str| -> Vec<i64> {
        log.iter()
            .filter(|e| e.3 == who)
            .map(|e| e.0 - START_MS)
            .collect()
    };
    let busy = times("busy@gmail.test");
    assert_eq!(busy.len(), 2, "{log:?}");
    assert_eq!(
        busy[1] - busy[0],
        3 * 60_000,
        "retry-recipients-after: {busy:?}"
    );
    let busy2 = times("busy2@gmail.test");
    assert_eq!(busy2.len(), 2, "{log:?}");
    assert_eq!(busy2[1] - busy2[0], 20 * 60_000, "retry-after: {busy2:?}");
    assert_eq!(count(&w, RecordType::Delivered), 3);
}

#[tokio::test(start_paused = true)]
async fn total_max_smtp_out_caps_every_queue_together() {
    let cfg = "
total-max-smtp-out 3
<source 0/0>
    default-virtual-mta v
</source>
<virtual-mta v>
    smtp-source-host 127.0.0.2 a.sender.test
</virtual-mta>
<domain *>
    use-starttls no
    max-smtp-out 10
    max-msg-per-connection 1
</domain>
";
    let w = world(
        cfg,
        &[("a.test", "127.0.0.50"), ("b.test", "127.0.0.60")],
        Arc::new(|_, _, _| Reply::new(250, "2.1.5", "Ok")),
    )
    .await;
    for i in 0..200 {
        let d = if i % 2 == 0 { "a.test" } else { "b.test" };
        submit(&w, &[&format!("u{i}@{d}")]).await;
    }
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(count(&w, RecordType::Delivered), 200);
    let most = w.open.1.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&most),
        "at most 3 connections at once over both queues, saw {most}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_message_is_signed_once_whatever_the_retries() {
    let cfg = single_ip_config(
        &format!("domain-key s1,sender.test,{RSA_KEY}\n"),
        "    use-starttls no\n    dkim-sign yes\n    retry-after 1m\n",
    );
    let w = world_with(
        &cfg,
        &[("gmail.test", "127.0.0.50")],
        Arc::new(|_, _, _| Reply::new(250, "2.1.5", "Ok")),
        2,
    )
    .await;
    submit(&w, &["x@gmail.test"]).await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(count(&w, RecordType::Delivered), 1);
    let sigs = w.bodies.lock().map(|b| b.clone()).unwrap_or_default();
    assert_eq!(sigs.len(), 3, "two deferred attempts and the delivery");
    assert!(
        sigs[0].contains("d=sender.test") && sigs[0].contains("s=s1"),
        "{sigs:?}"
    );
    assert!(
        sigs.iter().all(|s| *s == sigs[0]),
        "the same signature every time: {sigs:?}"
    );
    let made = w
        .engine
        .stats
        .lock()
        .map(|s| s.dkim_signatures)
        .unwrap_or(0);
    assert_eq!(made, 1, "signed once");
}

#[tokio::test(start_paused = true)]
async fn expiry_against_a_host_that_always_defers_bounces_with_a_dsn() {
    let cfg = &single_ip_config(
        "",
        r"
    use-starttls no
    retry-after 30s
    bounce-after 2m
",
    );
    // gmail.test always says 451; sender.test (the envelope sender's domain) takes the DSN.
    let w = world(
        cfg,
        &[("gmail.test", "127.0.0.50"), ("sender.test", "127.0.0.60")],
        Arc::new(|_, rcpt, _| {
            if rcpt.ends_with("@gmail.test") {
                Reply::new(451, "4.3.0", "try again later")
            } else {
                Reply::new(250, "2.1.5", "Ok")
            }
        }),
    )
    .await;
    submit(&w, &["x@gmail.test"]).await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    let bounce = first(&w, "bounce", |r| r.ty == Some(RecordType::Bounced));
    assert_eq!(bounce.bounce_cat, "message-expired");
    assert!(
        bounce.dsn_diag.contains("try again later"),
        "{}",
        bounce.dsn_diag
    );
    assert!(
        bounce.time_logged - START_MS >= 120_000,
        "not before bounce-after"
    );
    assert!(
        bounce.time_logged - START_MS < 200_000,
        "soon after bounce-after"
    );
    let dsn = first(&w, "DSN delivered to the sender", |r| {
        r.ty == Some(RecordType::Delivered) && r.rcpt == "bounces@sender.test"
    });
    assert_eq!(dsn.orig, "", "DSNs go out with the null sender");
    assert!(
        count(&w, RecordType::Transient) >= 3,
        "retried every 30 s until then"
    );
}

/// The most events in any window of `window_ms` (half-open) over sorted times.
fn max_in_window(times: &[i64], window_ms: i64) -> usize {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= window_ms {
            lo += 1;
        }
        best = best.max(hi + 1 - lo);
    }
    best
}

fn rcpt_times(w: &World) -> Vec<i64> {
    let mut t: Vec<i64> = w
        .log
        .lock()
        .map(|l| l.iter().map(|e| e.0 - START_MS).collect())
        .unwrap_or_default();
    t.sort_unstable();
    t
}

#[tokio::test(start_paused = true)]
async fn connections_messages_per_connection_and_rate_hold_against_a_sink() {
    let cfg = &single_ip_config(
        "",
        r"
    use-starttls no
    max-smtp-out 3
    max-msg-per-connection 7
    max-msg-rate 120/m
",
    );
    let w = world(
        cfg,
        &[("sink.test", "127.0.0.60")],
        Arc::new(|_, _, _| Reply::new(250, "2.1.5", "Ok")),
    )
    .await;
    for i in 0..3000 {
        submit(&w, &[&format!("r{i}@sink.test")]).await;
    }
    tokio::time::sleep(Duration::from_secs(20 * 60)).await;
    let times = rcpt_times(&w);
    assert!(
        w.open.1.load(Ordering::SeqCst) <= 3,
        "never more than max-smtp-out connections: {}",
        w.open.1.load(Ordering::SeqCst)
    );
    assert!(
        w.open.1.load(Ordering::SeqCst) == 3,
        "the queue uses the connections it may"
    );
    let per_conn = w.per_conn.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(
        per_conn.len() > 100,
        "connections closed: {}",
        per_conn.len()
    );
    assert!(
        per_conn.iter().all(|&n| n <= 7),
        "max-msg-per-connection: {:?}",
        per_conn.iter().max()
    );
    // The rate: never more than 120 in any minute, and over 18 minutes of steady sending within
    // 5% of 120/m.
    assert!(
        max_in_window(&times, 60_000) <= 120,
        "burst over max-msg-rate: {} in a minute",
        max_in_window(&times, 60_000)
    );
    let steady = times
        .iter()
        .filter(|&&t| (60_000..19 * 60_000).contains(&t))
        .count() as f64;
    let want = 120.0 * 18.0;
    assert!(
        (steady - want).abs() <= want * 0.05,
        "{steady} recipients in 18 minutes, want {want} +- 5%"
    );
}

#[tokio::test(start_paused = true)]
async fn tss04_puts_the_queue_in_backoff_at_once_and_it_returns_on_time() {
    let cfg = &single_ip_config(
        r"
<smtp-pattern-list y>
    reply /\[TSS04\]/ mode=backoff
</smtp-pattern-list>
",
        r"
    use-starttls no
    max-smtp-out 4
    max-msg-rate 600/m
    retry-after 1m
    backoff-max-smtp-out 1
    backoff-max-msg-rate 30/m
    backoff-retry-after 1m
    backoff-to-normal-after 10m
    smtp-pattern-list y
",
    );
    // The sink answers TSS04 from minute 2 to minute 4.
    let start = tokio::time::Instant::now();
    let w = world(
        cfg,
        &[("yahoo.test", "127.0.0.61")],
        Arc::new(move |_, _, _| {
            let m = start.elapsed().as_secs() / 60;
            if (2..4).contains(&m) {
                Reply::new(421, "4.7.0", TSS04)
            } else {
                Reply::new(250, "2.1.5", "Ok")
            }
        }),
    )
    .await;
    for i in 0..4000 {
        submit(&w, &[&format!("r{i}@yahoo.test")]).await;
    }
    let mode = |w: &World| {
        w.engine
            .queue_views()
            .into_iter()
            .find(|q| q.domain == "yahoo.test")
            .map(|q| (q.mode, q.mode_reply.unwrap_or_default()))
            .unwrap_or_default()
    };
    tokio::time::sleep(Duration::from_secs(3 * 60)).await;
    let (m, reply) = mode(&w);
    assert_eq!(m, "backoff");
    assert!(reply.contains("[TSS04]"), "{reply}");
    // The queue says since when and because of which reply, not merely its last error.
    let v = w.engine.queue_views();
    let q = v.iter().find(|q| q.domain == "yahoo.test");
    let waiting = q.map(|q| q.waiting.clone()).unwrap_or_default();
    let since = q.and_then(|q| q.backoff_since_ms).unwrap_or(0) - START_MS;
    assert!((120_000..121_000).contains(&since), "{since}");
    assert!(
        waiting.starts_with("backoff since 2026-05-28 20:28:")
            && waiting.contains(&format!("because 421 4.7.0 {TSS04}; ")),
        "{waiting}"
    );
    // backoff-to-normal-after 10m, jittered by up to 10%: still in backoff at 2m + 8.9m ...
    tokio::time::sleep(Duration::from_secs(7 * 60 + 54)).await;
    assert_eq!(mode(&w).0, "backoff");
    // ... and back to normal by 2m + 11m.
    tokio::time::sleep(Duration::from_secs(2 * 60 + 6)).await;
    assert_eq!(mode(&w).0, "normal");
    tokio::time::sleep(Duration::from_secs(10 * 60)).await;

    let log = w.log.lock().map(|l| l.clone()).unwrap_or_default();
    let first_tss = log
        .iter()
        .filter(|e| e.4 == 421)
        .map(|e| e.0 - START_MS)
        .min()
        .unwrap_or_else(|| panic!("no TSS04 given"));
    assert!((120_000..121_000).contains(&first_tss), "{first_tss}");
    let tss_count = log.iter().filter(|e| e.4 == 421).count();
    let times = rcpt_times(&w);
    let before = times.iter().filter(|&&t| t < first_tss).count();
    assert!(
        before >= 1140,
        "600/m for two minutes before the incident: {before}"
    );
    // From the first TSS04 on, the backoff limits hold: one connection, 30 a minute.
    let open = w.rcpt_open.lock().map(|v| v.clone()).unwrap_or_default();
    let in_backoff: Vec<i64> = times
        .iter()
        .copied()
        .filter(|&t| t > first_tss && t < 2 * 60_000 + 9 * 60_000)
        .collect();
    assert!(
        max_in_window(&in_backoff, 60_000) <= 30,
        "backoff-max-msg-rate 30/m: {} in a minute ({tss_count} TSS04 replies)",
        max_in_window(&in_backoff, 60_000)
    );
    assert!(
        in_backoff.len() >= 200,
        "the queue keeps sending slowly in backoff: {}",
        in_backoff.len()
    );
    let over: Vec<&(i64, usize)> = open
        .iter()
        .filter(|(t, n)| *t - START_MS > first_tss && *t - START_MS < 11 * 60_000 && *n > 1)
        .collect();
    assert!(
        over.is_empty(),
        "backoff-max-smtp-out 1: {:?}",
        &over[..over.len().min(5)]
    );
    // Back at full speed afterwards, and nothing lost.
    let after = times.iter().filter(|&&t| t >= 13 * 60_000).count();
    assert!(after >= 500, "normal rate again: {after}");
    assert_eq!(count(&w, RecordType::Delivered), 4000);
}

#[tokio::test(start_paused = true)]
async fn skip_mx_moves_on_to_the_next_mx_host_after_a_refusing_banner() {
    let cfg = &single_ip_config(
        r"
<smtp-pattern-list common-errors>
    reply /(?-i)ESMTP not accepting messages/ skip-mx
</smtp-pattern-list>
",
        r"
    use-starttls no
    retry-after 1m
    smtp-pattern-list common-errors
",
    );
    let w = world(
        cfg,
        &[("two.test", "127.0.0.70"), ("spare.test", "127.0.0.71")],
        Arc::new(|_, _, _| Reply::new(250, "2.1.5", "Ok")),
    )
    .await;
    // two.test's first MX refuses at the banner; its second MX is spare.test's host.
    w.dns.edit(|z| {
        z.mx.insert(
            "two.test".into(),
            vec![
                Mx {
                    preference: 10,
                    host: "mx.two.test".into(),
                },
                Mx {
                    preference: 20,
                    host: "mx.spare.test".into(),
                },
            ],
        );
    });
    if let Ok(mut b) = w.banners.lock() {
        b.insert(
            IpAddr::from([127, 0, 0, 70]),
            Reply::new(554, "5.3.2", "mx.two.test ESMTP not accepting messages"),
        );
    }
    submit(&w, &["a@two.test"]).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        count(&w, RecordType::Delivered),
        1,
        "delivered through the second MX"
    );
    assert_eq!(
        count(&w, RecordType::Bounced),
        0,
        "a 5xx banner with skip-mx does not bounce"
    );
    let log = w.log.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(
        log.iter().all(|e| e.2 == IpAddr::from([127, 0, 0, 71])),
        "{log:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn bounce_queue_on_a_rcpt_reply_bounces_everything_waiting() {
    let cfg = &single_ip_config(
        r"
<smtp-pattern-list blocked>
    reply /sender blocked/ bounce-queue
</smtp-pattern-list>
",
        r"
    use-starttls no
    retry-after 1m
    max-smtp-out 1
    smtp-pattern-list blocked
",
    );
    let w = world(
        cfg,
        &[("blocked.test", "127.0.0.72")],
        Arc::new(|_, _, _| Reply::new(451, "4.7.1", "Service unavailable, sender blocked")),
    )
    .await;
    for i in 0..5 {
        submit(&w, &[&format!("r{i}@blocked.test")]).await;
    }
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    let bounced = w
        .records
        .lock()
        .map(|v| {
            v.iter()
                .filter(|r| r.ty == Some(RecordType::Bounced) && r.rcpt.ends_with("@blocked.test"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(bounced, 5, "the whole queue bounced (the DSNs aside)");
    let log = w.log.lock().map(|l| l.clone()).unwrap_or_default();
    assert_eq!(
        log.len(),
        1,
        "one RCPT was enough; nothing was retried: {log:?}"
    );
    assert_eq!(count(&w, RecordType::Transient), 0, "nothing was deferred");
}

/// `connection-idle-timeout`: a connection with nothing to send waits that long for more mail (it
/// is woken by mail queued meanwhile), then QUITs; without it every trickled message has its own
/// connection.
#[tokio::test(start_paused = true)]
async fn connection_idle_timeout_keeps_a_connection_for_trickled_mail() {
    for idle in [Some("30s"), None] {
        let star = match idle {
            Some(t) => format!("    use-starttls no\n    connection-idle-timeout {t}\n"),
            None => "    use-starttls no\n".to_string(),
        };
        let w = world(
            &single_ip_config("", &star),
            &[("sink.test", "127.0.0.61")],
            Arc::new(|_, _, _| Reply::new(250, "2.1.5", "Ok")),
        )
        .await;
        for i in 0..3 {
            submit(&w, &[&format!("r{i}@sink.test")]).await;
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        assert_eq!(count(&w, RecordType::Delivered), 3);
        let open_10s_after = w.open.0.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let open_40s_after = w.open.0.load(Ordering::SeqCst);
        let per_conn = w.per_conn.lock().map(|v| v.clone()).unwrap_or_default();
        match idle {
            Some(_) => {
                assert_eq!(open_10s_after, 1, "still open 10 s after the last message");
                assert_eq!(open_40s_after, 0, "closed once idle for 30 s");
                assert_eq!(per_conn, vec![3], "one connection carried all three");
            }
            None => {
                assert_eq!(open_10s_after + open_40s_after, 0);
                assert_eq!(per_conn, vec![1, 1, 1], "a connection per message");
            }
        }
    }
}

/// Messages taken in by the MTA's own SMTP server and relayed: one with dot-started lines (stuffed
/// on both hops) and one without (sent on without a dot-stuffing search) arrive as they were sent,
/// under the Received header, signed and unsigned alike.
#[tokio::test(start_paused = true)]
async fn relayed_bodies_with_and_without_dot_lines_arrive_intact() {
    // Relaying for the injecting client is a source setting, so not `single_ip_config`.
    let cfg = format!(
        "
domain-key s1,sender.test,{RSA_KEY}
<source 0/0>
    default-virtual-mta v
    always-allow-relaying yes
</source>
<virtual-mta v>
    smtp-source-host 127.0.0.2 a.sender.test
</virtual-mta>
<domain signed.test>
    dkim-sign yes
</domain>
<domain *>
    use-starttls no
</domain>
"
    );
    let w = world(
        &cfg,
        &[("plain.test", "127.0.0.50"), ("signed.test", "127.0.0.51")],
        Arc::new(|_, _, _| Reply::new(250, "2.1.5", "Ok")),
    )
    .await;
    let mta: SocketAddr = "127.0.0.1:25".parse().unwrap_or_else(|e| panic!("{e}"));
    let mut l = w.net.listen(mta).await.unwrap_or_else(|e| panic!("{e}"));
    let engine = w.engine.clone();
    tokio::spawn(async move {
        while let Ok(c) = l.accept().await {
            let mut h =
                mta::receive::session::InboundSession::new(engine.clone(), c.peer, c.local, None);
            tokio::spawn(async move { serve(c.stream, &mut h, &ServerOptions::default()).await });
        }
    });
    let from = "From: a@sender.test\r\nSubject: t\r\n\r\n";
    let bodies = [
        format!("{from}.leading dot\r\n..two dots\r\n.\r\nend\r\n"),
        format!("{from}no dot. at all.\r\n"),
    ];
    let conn = w
        .net
        .connect(
            Some("127.0.0.9".parse().unwrap_or_else(|e| panic!("{e}"))),
            mta,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = mta::smtp::client::Client::connect(conn.stream, Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|r| panic!("{r}"));
    c.ehlo("inject.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for domain in ["plain.test", "signed.test"] {
        for body in &bodies {
            let t = c
                .send("s@sender.test", &[format!("x@{domain}")], body.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(t.outcome(0).code, 250, "{t:?}");
        }
    }
    c.quit().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let got = w.full.lock().map(|f| f.clone()).unwrap_or_default();
    assert_eq!(got.len(), 4, "every message relayed");
    for body in &bodies {
        let arrived: Vec<&Vec<u8>> = got
            .iter()
            .filter(|g| g.ends_with(body.as_bytes()))
            .collect();
        assert_eq!(arrived.len(), 2, "{body:?} arrived on both routes: {got:?}");
        for g in arrived {
            assert!(g.starts_with(b"Received: ") || g.starts_with(b"DKIM-Signature: "));
        }
    }
    let signed = got
        .iter()
        .filter(|g| g.starts_with(b"DKIM-Signature: "))
        .count();
    assert_eq!(signed, 2, "the signed domain's two messages");
}

/// A spooled body is read only once the server has said 354; when it cannot be read then, the
/// session ends in the middle of DATA (the server takes nothing), the recipient gets a 451 4.3.0
/// transient record, and the message is retried and delivered once the body reads again.
#[tokio::test(start_paused = true)]
async fn a_body_unreadable_at_data_is_retried_not_lost() {
    let cfg = &single_ip_config("", "    use-starttls no\n    retry-after 30s\n");
    // A one-byte memory budget: every body goes to an overflow file under `parent`.
    let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let spool = MemorySpool::with_budget(1, parent.path()).unwrap_or_else(|e| panic!("{e}"));
    let ok: Rule = Arc::new(|_, _, _| Reply::new(250, "2.1.5", "Ok"));
    let w = world_spooled(cfg, &[("gmail.test", "127.0.0.50")], ok, 0, spool).await;
    submit(&w, &["x@gmail.test"]).await;
    // The overflow file, emptied before the first attempt (the engine has not run yet).
    let files: Vec<std::path::PathBuf> = walk(parent.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let kept = std::fs::read(&files[0]).unwrap_or_else(|e| panic!("{e}"));
    std::fs::File::options()
        .write(true)
        .open(&files[0])
        .and_then(|f| f.set_len(0))
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t = first(&w, "transient record", |r| {
        r.ty == Some(RecordType::Transient)
    });
    assert_eq!(
        (t.dsn_status.as_str(), t.bounce_cat.as_str()),
        ("4.3.0", "other"),
        "{t:?}"
    );
    assert!(
        t.dsn_diag.contains("message body unavailable"),
        "{}",
        t.dsn_diag
    );
    assert_eq!(
        w.log.lock().map(|l| l.len()).unwrap_or(0),
        1,
        "RCPT was given"
    );
    assert!(
        w.full.lock().map(|f| f.is_empty()).unwrap_or(false),
        "nothing taken"
    );
    // The body reads again: the retry delivers it, once.
    std::fs::write(&files[0], &kept).unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(count(&w, RecordType::Delivered), 1);
    assert_eq!(count(&w, RecordType::Bounced), 0);
    let full = w.full.lock().map(|f| f.clone()).unwrap_or_default();
    assert_eq!(full.len(), 1);
    assert!(
        full[0].ends_with(b"Subject: t\r\n\r\nhi\r\n"),
        "{:?}",
        String::from_utf8_lossy(&full[0])
    );
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
