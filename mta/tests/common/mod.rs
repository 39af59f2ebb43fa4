//! Helpers shared by the tests that run `mta run` as its own process on loopback: a sink SMTP
//! server, free ports, starting and stopping the binary, injecting mail, reading the accounting CSV;
//! and by the tests that run the engine in process on the simulated network ([`run_engine`]).
#![allow(dead_code)]

use mta::net::{LiveNet, Net};
use mta::smtp::client::{Client, Timeouts};
use mta::smtp::io::Data;
use mta::smtp::server::{serve, Handler, Outcome, ServerOptions};
use mta::smtp::{MailFrom, RcptTo, Reply};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A sink: accepts (or defers) everything, remembering Message-IDs and the peers they came from.
#[derive(Clone, Default)]
pub struct Sink {
    pub seen: Arc<Mutex<BTreeMap<String, u32>>>,
    pub peers: Arc<Mutex<Vec<IpAddr>>>,
    pub defer: Arc<AtomicBool>,
    pub peer: Option<IpAddr>,
}

impl Handler for Sink {
    fn connect(&mut self) -> Outcome {
        if let (Some(p), Ok(mut v)) = (self.peer, self.peers.lock()) {
            v.push(p);
        }
        Outcome::reply(Reply::new(220, "", "sink ESMTP"))
    }
    fn mail(&mut self, _: &MailFrom<String>) -> Outcome {
        Outcome::ok("2.1.0", "Ok")
    }
    fn rcpt(&mut self, to: &RcptTo<String>) -> Outcome {
        if to.address.starts_with("unknown") {
            return Outcome::reply(Reply::new(
                550,
                "5.1.1",
                "The email account that you tried to reach does not exist.",
            ));
        }
        if self.defer.load(Ordering::SeqCst) {
            return Outcome::reply(Reply::new(451, "4.3.0", "try later"));
        }
        Outcome::ok("2.1.5", "Ok")
    }
    async fn message(&mut self, d: Data) -> Outcome {
        let id = mta::engine::header(&d.body, "Message-ID").unwrap_or_default();
        if let Ok(mut s) = self.seen.lock() {
            *s.entry(id).or_insert(0) += 1;
        }
        Outcome::ok("2.0.0", "Ok: queued")
    }
    fn reset(&mut self) {}
}

pub async fn start_sink(ip: &str) -> (SocketAddr, Sink) {
    let mut l = LiveNet
        .listen(format!("{ip}:0").parse().unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let at = l.local_addr();
    let sink = Sink::default();
    let s2 = sink.clone();
    tokio::spawn(async move {
        loop {
            let Ok(c) = l.accept().await else { break };
            let mut h = Sink {
                peer: Some(c.peer.ip()),
                ..s2.clone()
            };
            tokio::spawn(async move { serve(c.stream, &mut h, &ServerOptions::default()).await });
        }
    });
    (at, sink)
}

pub fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind(format!("{ip}:0"))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// The MTA process; killed if a test fails before stopping it.
pub struct Mta(pub Option<Child>);

impl Drop for Mta {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn spawn_mta(config: &Path) -> Mta {
    Mta(Some(
        Command::new(env!("CARGO_BIN_EXE_mta"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}")),
    ))
}

pub async fn wait_listening(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("mta did not start listening on {addr}");
}

pub async fn inject(addr: SocketAddr, from: usize, count: usize) {
    let conn = LiveNet
        .connect(
            Some("127.0.0.31".parse().unwrap_or_else(|e| panic!("{e}"))),
            addr,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = Client::connect(conn.stream, Timeouts::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|r| panic!("{r}"));
    c.ehlo("injector.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for i in from..from + count {
        let body = format!("From: news@sender.test\r\nTo: u{i}@dest.test\r\nMessage-ID: <m{i}@sender.test>\r\nSubject: {i}\r\n\r\nhello {i}\r\n");
        let t = c
            .send(
                "bounces@sender.test",
                &[format!("u{i}@dest.test")],
                body.as_bytes(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.outcome(0).code, 250, "{:?}", t.outcome(0));
    }
    c.quit().await;
}

pub fn count(acct: &Path, ty: &str) -> usize {
    std::fs::read_to_string(acct)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(',').next() == Some(ty))
        .count()
}

pub async fn wait_for(acct: &Path, ty: &str, n: usize) {
    for _ in 0..600 {
        if count(acct, ty) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(acct).unwrap_or_default();
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("b,"))
        .take(2)
        .collect();
    panic!(
        "only {} `{ty}` records of {n}; r={} d={} t={} tq={} b={}; last: {tail:#?}",
        count(acct, ty),
        count(acct, "r"),
        count(acct, "d"),
        count(acct, "t"),
        count(acct, "tq"),
        count(acct, "b")
    );
}

pub fn stop(mut mta: Mta) -> Option<i32> {
    let mut child = mta.0.take()?;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().ok().and_then(|s| s.code())
}

/// An SMTP client connected from `src` to `at`, past the banner and EHLO.
pub async fn client(at: SocketAddr, src: [u8; 4], helo: &str) -> Client {
    let conn = LiveNet
        .connect(Some(src.into()), at)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = Client::connect(conn.stream, Timeouts::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|r| panic!("banner {r}"));
    c.ehlo(helo).await.unwrap_or_else(|e| panic!("{e}"));
    c
}

/// Sends one small message from `src` to `rcpt` in a session of its own; returns the outcome for
/// the recipient (its RCPT refusal, or the reply to the end of DATA): code and text.
pub async fn send_one(at: SocketAddr, src: [u8; 4], rcpt: &str) -> (u16, String) {
    let mut c = client(at, src, "injector.test").await;
    let body = format!("From: a@sender.test\r\nTo: {rcpt}\r\nSubject: s\r\n\r\nhi\r\n");
    let t = c
        .send("bounces@sender.test", &[rcpt.to_string()], body.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.quit().await;
    let r = t.outcome(0);
    (r.code, r.to_string())
}

/// An engine in process over the simulated network, memory spool and static DNS: scheduled until
/// the test ends, every record it writes collected.
pub fn run_engine(
    config: Arc<mta::config::Config>,
    spool: mta::spool::MemorySpool,
    net: mta::net::SimNet,
    dns: mta::dns::StaticResolver,
    clock: mta::clock::Clock,
    dkim_signing: bool,
) -> (Arc<mta::engine::Engine>, Arc<Mutex<Vec<mta::acct::Record>>>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Box<mta::acct::Record>>();
    let engine = mta::engine::Engine::new(mta::engine::Parts {
        config,
        spool: Arc::new(mta::spool::Spool::Memory(spool)),
        acct: Arc::new(mta::acct::Accounting::new(&[])),
        net: Arc::new(net),
        dns: Arc::new(dns),
        clock,
        tap: Some(tx),
        dkim_signing,
        monitor_on_tap: false,
    });
    let records: Arc<Mutex<Vec<mta::acct::Record>>> = Arc::default();
    let r2 = records.clone();
    tokio::spawn(async move {
        while let Some(r) = rx.recv().await {
            if let Ok(mut v) = r2.lock() {
                v.push(*r);
            }
        }
    });
    tokio::spawn(engine.clone().run(std::future::pending()));
    (engine, records)
}
