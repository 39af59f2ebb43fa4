//! The relay benchmark: N small messages injected over S concurrent SMTP sessions into `mta run`
//! (durable spool, fsync before every 250), delivered to a sink on another loopback address; and
//! beside it the same injection straight into the sink (the harness's ceiling).
//! While mail flows, a prober asks the management API (`/api/v1/status` and `/api/v1/queues`) every
//! 20 ms and reports its latency percentiles (the target: p99 under 50 ms at full speed).
//! `cargo bench -p mta --bench relay` (RELAY_N and RELAY_SESSIONS override 20000 and 20).

#[path = "sink.rs"]
mod sink;

use mta::net::{LiveNet, Net};
use mta::smtp::client::{Client, Timeouts};
use mta::smtp::server::{serve, ServerOptions};
use sink::Sink;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn inject(to: SocketAddr, n: u64, sessions: u64) {
    let body = format!(
        "From: a@sender.test\r\nTo: b@dest.test\r\nSubject: bench\r\n\r\n{}",
        "x".repeat(70)
            .repeat(28)
            .chars()
            .collect::<Vec<_>>()
            .chunks(70)
            .map(|c| c.iter().collect::<String>() + "\r\n")
            .collect::<String>()
    );
    let body = Arc::new(body);
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let body = body.clone();
        let count = n / sessions + u64::from(s < n % sessions);
        tasks.push(tokio::spawn(async move {
            let conn = LiveNet.connect(None, to).await.expect("connect");
            let mut c = Client::connect(conn.stream, Timeouts::default())
                .await
                .expect("greeting")
                .expect("220");
            c.ehlo("bench.test").await.expect("ehlo");
            for _ in 0..count {
                let t = c
                    .send(
                        "a@sender.test",
                        &["b@dest.test".to_string()],
                        body.as_bytes(),
                    )
                    .await
                    .expect("send");
                assert!(t.outcome(0).is_positive(), "{}", t.outcome(0));
            }
            c.quit().await;
        }));
    }
    for t in tasks {
        t.await.expect("session");
    }
}

async fn sink(ip: &str) -> (SocketAddr, Arc<AtomicU64>) {
    let mut l = LiveNet
        .listen(format!("{ip}:0").parse().expect("addr"))
        .await
        .expect("listen");
    let at = l.local_addr();
    let got = Arc::new(AtomicU64::new(0));
    let h = Sink(got.clone());
    tokio::spawn(async move {
        while let Ok(c) = l.accept().await {
            let mut h = h.clone();
            tokio::spawn(async move { serve(c.stream, &mut h, &ServerOptions::default()).await });
        }
    });
    (at, got)
}

fn main() {
    let n: u64 = std::env::var("RELAY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let sessions: u64 = std::env::var("RELAY_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // Ceiling: straight into the sink.
        let (direct, got) = sink("127.0.0.81").await;
        let t0 = Instant::now();
        inject(direct, n, sessions).await;
        let ceiling = n as f64 / t0.elapsed().as_secs_f64();
        assert_eq!(got.load(Ordering::Relaxed), n);
        // Through `mta run`.
        let (sink_at, got) = sink("127.0.0.82").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.80:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
        let listen: SocketAddr = format!("127.0.0.80:{port}").parse().expect("addr");
        let mport = std::net::TcpListener::bind("127.0.0.80:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
        let mgmt = format!("127.0.0.80:{mport}");
        let cfg = format!(
            "host-name bench.test\nsmtp-listener {listen}\nhttp-mgmt-port {mgmt}\n<source 127.0.0.0/8>\n    always-allow-relaying yes\n</source>\n<domain *>\n    smtp-hosts [{}]:{}\n    use-starttls no\n    max-smtp-out 20\n</domain>\n<spool {}>\n</spool>\n<acct-file {}>\n    records d\n</acct-file>\n",
            sink_at.ip(),
            sink_at.port(),
            dir.path().join("spool").display(),
            dir.path().join("acct.csv").display()
        );
        let path = dir.path().join("mta.conf");
        std::fs::write(&path, cfg).expect("config");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mta")).args(["run", "--config"]).arg(&path).env("RUST_LOG", "error").spawn().expect("mta");
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let prober = {
            let done = done.clone();
            let base = format!("http://{mgmt}");
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut i = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let path = if i.is_multiple_of(2) { "/api/v1/status" } else { "/api/v1/queues" };
                    i += 1;
                    let t = Instant::now();
                    match agent.get(&format!("{base}{path}")).call().and_then(|mut r| r.body_mut().read_to_string()) {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (lat, errors)
            })
        };
        let t0 = Instant::now();
        inject(listen, n, sessions).await;
        let accepted = t0.elapsed();
        while got.load(Ordering::Relaxed) < n && t0.elapsed() < Duration::from_secs(600) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let total = t0.elapsed();
        done.store(true, Ordering::Relaxed);
        let (mut lat, errors) = prober.join().expect("prober");
        lat.sort();
        let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
        println!("relay: {n} messages of ~2 KB over {sessions} sessions");
        println!("  straight into the sink (ceiling): {ceiling:.0} msg/s");
        println!("  through mta run, accepted (spooled, fsynced): {:.0} msg/s", n as f64 / accepted.as_secs_f64());
        println!("  through mta run, end to end (delivered to the sink): {:.0} msg/s ({} of {n} delivered)", got.load(Ordering::Relaxed) as f64 / total.as_secs_f64(), got.load(Ordering::Relaxed));
        println!("  management API while relaying: {} requests, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {errors} errors", lat.len(), pct(0.5), pct(0.99), lat.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0));
    });
}
