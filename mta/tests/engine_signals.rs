//! Connection-level replies on the simulated network and paused clock (issue 24): a `421` after
//! some messages, or at the banner beside open connections, ends that connection and the queue goes
//! on; refusals at every attempt still defer the queue; an expired recipient quotes its own last
//! reply; and the queue view says why a queue waits and until when.

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
const CAP_REPLY: &str = "Max message per connection reached, closing transmission channel";

/// How the provider behaves.
#[derive(Clone, Default)]
struct Rules {
    /// 421 at MAIL once this many messages went over the connection (0: no cap).
    per_conn: usize,
    /// 421 at the banner when this many connections are already open (0: no limit).
    max_open: usize,
    /// 421 at the banner always.
    refuse_all: bool,
    /// RCPT reply per recipient local part prefix: `d` defers (450 then 451 by recipient), else 250.
    defer_prefix: Option<&'static str>,
}

#[derive(Clone)]
struct Provider {
    rules: Rules,
    open: Arc<AtomicUsize>,
    /// Every connection: (time ms, refused at the banner).
    conns: Arc<Mutex<Vec<(i64, bool)>>>,
    /// Every accepted message: time ms.
    accepted: Arc<Mutex<Vec<i64>>>,
    /// Messages taken per connection, as connections close.
    per_conn: Arc<Mutex<Vec<usize>>>,
    /// Every message body taken.
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    clock: Clock,
    msgs: usize,
    counted: bool,
}

impl Drop for Provider {
    fn drop(&mut self) {
        if self.counted {
            self.open.fetch_sub(1, Ordering::SeqCst);
            if let Ok(mut v) = self.per_conn.lock() {
                v.push(self.msgs);
            }
        }
    }
}

impl Handler for Provider {
    fn connect(&mut self) -> Outcome {
        let now = self.clock.now_ms();
        let open = self.open.fetch_add(1, Ordering::SeqCst);
        self.counted = true;
        let refuse =
            self.rules.refuse_all || (self.rules.max_open > 0 && open >= self.rules.max_open);
        if let Ok(mut c) = self.conns.lock() {
            c.push((now, refuse));
        }
        if refuse {
            return Outcome::close(Reply::new(421, "4.7.0", "too many connections, try later"));
        }
        Outcome::reply(Reply::new(220, "", "provider ESMTP"))
    }
    fn mail(&mut self, _: &MailFrom<String>) -> Outcome {
        if self.rules.per_conn > 0 && self.msgs >= self.rules.per_conn {
            return Outcome::close(Reply::new(421, "", CAP_REPLY));
        }
        Outcome::ok("2.1.0", "Ok")
    }
    fn rcpt(&mut self, to: &RcptTo<String>) -> Outcome {
        match self.rules.defer_prefix {
            Some(p) if to.address.starts_with(p) => {
                let code = if to.address.contains("one") { 450 } else { 451 };
                let why = format!("deferred {} for now", to.address);
                Outcome::reply(Reply::new(code, "4.2.0", why))
            }
            _ => Outcome::ok("2.1.5", "Ok"),
        }
    }
    async fn message(&mut self, d: Data) -> Outcome {
        self.msgs += 1;
        if let Ok(mut b) = self.bodies.lock() {
            b.push(d.body.to_vec());
        }
        if let Ok(mut a) = self.accepted.lock() {
            a.push(self.clock.now_ms());
        }
        Outcome::ok("2.0.0", "Ok").after(Duration::from_millis(200))
    }
    fn reset(&mut self) {}
}

struct World {
    engine: Arc<Engine>,
    provider: Provider,
    records: Arc<Mutex<Vec<Record>>>,
}

async fn world(domain_star: &str, rules: Rules) -> World {
    let config = format!(
        "<source 0/0>\n    default-virtual-mta v\n</source>\n<virtual-mta v>\n    smtp-source-host 127.0.0.2 a.sender.test\n</virtual-mta>\n<domain *>\n{domain_star}</domain>\n"
    );
    let cfg = mta::config::load_str("test.conf", &config)
        .into_result()
        .unwrap_or_else(|e| panic!("{e}"));
    let clock = Clock::starting_at(START_MS);
    let net = SimNet::new();
    let dns = StaticResolver::default();
    let ip: IpAddr = [127, 100, 7, 1].into();
    dns.edit(|z| {
        let mx = Mx {
            preference: 10,
            host: "mx.provider.test".into(),
        };
        z.mx.insert("provider.test".into(), vec![mx.clone()]);
        // DSNs to the sender go to the same server.
        z.mx.insert("sender.test".into(), vec![mx]);
        z.ip.insert("mx.provider.test".into(), vec![ip]);
    });
    let provider = Provider {
        rules,
        open: Arc::default(),
        conns: Arc::default(),
        accepted: Arc::default(),
        per_conn: Arc::default(),
        bodies: Arc::default(),
        clock,
        msgs: 0,
        counted: false,
    };
    let mut l = net
        .listen(SocketAddr::new(ip, 25))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = provider.clone();
    tokio::spawn(async move {
        while let Ok(c) = l.accept().await {
            let mut h = base.clone();
            tokio::spawn(async move { serve(c.stream, &mut h, &ServerOptions::default()).await });
        }
    });
    let (engine, records) = common::run_engine(
        Arc::new(cfg),
        MemorySpool::default(),
        net,
        dns,
        clock,
        false,
    );
    World {
        engine,
        provider,
        records,
    }
}

async fn submit(w: &World, rcpt: &str) {
    let env = Envelope {
        mail_from: "bounces@sender.test".into(),
        rcpts: vec![Recipient {
            address: rcpt.to_string(),
            orcpt: None,
            done: false,
        }],
        vmta: Some("v".into()),
        pool: None,
        job_id: None,
        env_id: None,
        source_ip: None,
        received_ms: w.engine.now_ms(),
        size: 100,
        message_id: None,
        dot_free: false,
    };
    let src = w
        .engine
        .config()
        .source_settings(Some(IpAddr::from([127, 0, 0, 9])), None);
    let body = b"From: a@sender.test\r\nSubject: t\r\n\r\nhi\r\n".to_vec();
    w.engine
        .accept(env, body, &src, None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `n` messages, one recipient each, `u0@provider.test` and on.
async fn submit_many(w: &World, n: usize) {
    for i in 0..n {
        submit(w, &format!("u{i}@provider.test")).await;
    }
}

/// Every connection the provider saw: (time ms, refused at the banner).
fn connections(w: &World) -> Vec<(i64, bool)> {
    w.provider
        .conns
        .lock()
        .map(|c| c.clone())
        .unwrap_or_default()
}

fn records(w: &World, ty: RecordType) -> Vec<Record> {
    let v = w.records.lock().map(|v| v.clone()).unwrap_or_default();
    v.into_iter().filter(|r| r.ty == Some(ty)).collect()
}

fn queue(w: &World) -> mta::engine::QueueView {
    let views = w.engine.queue_views();
    views
        .into_iter()
        .find(|q| q.name == "provider.test/v")
        .unwrap_or_else(|| panic!("no queue provider.test/v"))
}

#[tokio::test(start_paused = true)]
async fn a_per_connection_cap_closes_one_connection_not_the_queue() {
    let rules = Rules {
        per_conn: 5,
        ..Rules::default()
    };
    let w = world("    max-smtp-out 2\n    retry-after 10m\n", rules).await;
    submit_many(&w, 40).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let delivered = records(&w, RecordType::Delivered).len();
    assert_eq!(
        delivered, 40,
        "all delivered within a minute, not after retry-after 10m"
    );
    let t = records(&w, RecordType::Transient);
    // The same close after 5 messages twice in a row is the server's cap: after that, connections
    // end with QUIT after 5 and no recipient is turned away.
    assert_eq!(t.len(), 2, "the cap was hit twice, then learned: {t:?}");
    let per_conn = w
        .provider
        .per_conn
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    assert!(per_conn.iter().all(|n| *n <= 5), "{per_conn:?}");
    assert!(t.iter().all(|r| r.dsn_diag.contains(CAP_REPLY)), "{t:?}");
    assert!(
        records(&w, RecordType::TransientQueue).is_empty(),
        "the queue was never deferred"
    );
    // Each recipient the cap turned away went out again within seconds, not retry-after.
    let d = records(&w, RecordType::Delivered);
    for r in &t {
        let again = d.iter().find(|x| x.rcpt == r.rcpt).map(|x| x.time_logged);
        let wait = again.map(|a| a - r.time_logged);
        assert!(
            wait.is_some_and(|ms| ms <= 15_000),
            "{} waited {wait:?} ms",
            r.rcpt
        );
    }
    let v = queue(&w);
    assert_eq!(v.waiting_kind, "empty", "{v:?}");
}

#[tokio::test(start_paused = true)]
async fn a_refusal_beside_open_connections_lowers_the_ceiling_and_the_queue_goes_on() {
    let rules = Rules {
        max_open: 2,
        ..Rules::default()
    };
    let w = world("    max-smtp-out 6\n    retry-after 10m\n", rules).await;
    submit_many(&w, 300).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(records(&w, RecordType::Delivered).len(), 300);
    assert!(
        records(&w, RecordType::TransientQueue).is_empty(),
        "never deferred as a queue"
    );
    let conns = connections(&w);
    let refused = conns.iter().filter(|c| c.1).count();
    assert!(refused > 0, "the limit was reached: {conns:?}");
    // After a refusal the queue keeps to what it has open (a minute), then probes again.
    assert!(refused <= 8, "{refused} refusals in two minutes: {conns:?}");
}

#[tokio::test(start_paused = true)]
async fn refusals_at_every_attempt_still_defer_the_queue_for_retry_after() {
    let rules = Rules {
        refuse_all: true,
        ..Rules::default()
    };
    let w = world("    max-smtp-out 1\n    retry-after 10m\n", rules).await;
    submit_many(&w, 3).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let conns = connections(&w);
    // Refused at 0 s, then after 5, 10 and 20 s (±50%): the fourth is past 30 s of refusals in a
    // row with nothing open, and the queue waits.
    assert_eq!(
        conns.len(),
        4,
        "refusals for 30 s, then the queue waits: {conns:?}"
    );
    let gaps: Vec<i64> = conns.windows(2).map(|p| p[1].0 - p[0].0).collect();
    assert!(
        gaps[0] >= 2_500 && gaps[1] >= 5_000 && gaps[2] >= 10_000,
        "reconnect delays grow: {gaps:?}"
    );
    let tq = records(&w, RecordType::TransientQueue);
    assert_eq!(tq.len(), 3, "a tq record per waiting message: {tq:?}");
    let v = queue(&w);
    assert_eq!(v.waiting_kind, "retry", "{v:?}");
    assert!(
        v.waiting
            .contains("retry after 421 4.7.0 too many connections"),
        "{v:?}"
    );
    let next = v.next_attempt_ms.unwrap_or(0) - w.engine.now_ms();
    assert!(
        (8 * 60_000..=10 * 60_000).contains(&next),
        "next attempt in {next} ms"
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    let later = connections(&w).len();
    assert!(later > 4, "tried again after retry-after");
}

#[tokio::test(start_paused = true)]
async fn an_expired_recipient_quotes_its_own_last_reply() {
    let rules = Rules {
        defer_prefix: Some("d-"),
        ..Rules::default()
    };
    let w = world("    retry-after 10m\n    bounce-after 1h\n", rules).await;
    submit(&w, "d-one@provider.test").await;
    submit(&w, "d-two@provider.test").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let v = queue(&w);
    assert_eq!(v.waiting_kind, "retry", "{v:?}");
    assert!(v.waiting.starts_with("retry after 45"), "{v:?}");
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    let mut b = records(&w, RecordType::Bounced);
    b.retain(|r| r.queue == "provider.test/v");
    assert_eq!(b.len(), 2, "{b:?}");
    for r in &b {
        assert_eq!(r.bounce_cat, "message-expired");
        let own = format!("deferred {} for now", r.rcpt);
        assert!(
            r.dsn_diag.contains(&own),
            "{} quotes {}",
            r.rcpt,
            r.dsn_diag
        );
        // ... and so does the DSN the sender gets.
        let bodies = w
            .provider
            .bodies
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default();
        let dsn = bodies
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .find(|b| b.contains(&format!("Final-Recipient: rfc822; {}", r.rcpt)))
            .unwrap_or_else(|| panic!("no DSN for {}", r.rcpt));
        assert!(dsn.contains(&own), "the DSN for {} quotes: {dsn}", r.rcpt);
    }
}
