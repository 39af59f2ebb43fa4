//! `mta run` as its own process on loopback: messages injected over SMTP are spooled, delivered
//! from the vMTA's source address to a sink found through `smtp-hosts`, and accounted; a kill -9
//! mid-run loses nothing; swaks (an independent client) is accepted too.

mod common;

use common::*;
use mta::net::{LiveNet, Net};
use mta::smtp::client::{Client, Timeouts};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn write_config(dir: &Path, listen: SocketAddr, sink: SocketAddr) -> std::path::PathBuf {
    let cfg = format!(
        "host-name mta.test\nsmtp-listener {listen}\n<source 127.0.0.0/8>\n    always-allow-relaying yes\n    default-virtual-mta v1\n</source>\n<virtual-mta v1>\n    smtp-source-host 127.0.0.32 v1.mta.test\n</virtual-mta>\n<domain *>\n    smtp-hosts [{}]:{}\n    use-starttls no\n    retry-after 1s\n    max-smtp-out 5\n    bounce-after 1h\n</domain>\n<spool {}>\n</spool>\n<acct-file {}>\n    records r,d,b,t,tq\n    record-fields * *,header_Message-ID\n</acct-file>\n",
        sink.ip(),
        sink.port(),
        dir.join("spool").display(),
        dir.join("acct.csv").display()
    );
    let p = dir.join("mta.conf");
    std::fs::write(&p, cfg).unwrap_or_else(|e| panic!("{e}"));
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_from_the_vmta_address_and_accounts_every_message() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sink_at, sink) = start_sink("127.0.0.33").await;
    let listen: SocketAddr = format!("127.0.0.30:{}", free_port("127.0.0.30"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = write_config(dir.path(), listen, sink_at);
    let child = spawn_mta(&cfg);
    wait_listening(listen).await;
    let mut tasks = Vec::new();
    for s in 0..5 {
        tasks.push(tokio::spawn(inject(listen, s * 40, 40)));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let acct = dir.path().join("acct.csv");
    wait_for(&acct, "d", 200).await;
    assert_eq!(stop(child), Some(0), "SIGTERM ends the MTA cleanly");
    assert_eq!(count(&acct, "r"), 200);
    assert_eq!(count(&acct, "d"), 200);
    let seen = sink.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len(), 200);
    assert!(
        seen.values().all(|n| *n == 1),
        "each message delivered once"
    );
    let peers = sink.peers.lock().map(|p| p.clone()).unwrap_or_default();
    assert!(
        !peers.is_empty() && peers.iter().all(|p| p.to_string() == "127.0.0.32"),
        "delivered from the vMTA's source address: {peers:?}"
    );
    let text = std::fs::read_to_string(&acct).unwrap_or_default();
    let header = text.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("type,timeLogged,") && header.contains(",header_Message-ID,"),
        "{header}"
    );
    let d = text
        .lines()
        .find(|l| l.starts_with("d,"))
        .unwrap_or_default();
    assert!(
        d.contains("127.0.0.32") && d.contains("v1") && d.contains("smtp;250 2.0.0 Ok: queued"),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sink_at, sink) = start_sink("127.0.0.43").await;
    sink.defer.store(true, Ordering::SeqCst);
    let listen: SocketAddr = format!("127.0.0.40:{}", free_port("127.0.0.40"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = write_config(dir.path(), listen, sink_at);
    let first = spawn_mta(&cfg);
    wait_listening(listen).await;
    inject(listen, 0, 100).await;
    let acct = dir.path().join("acct.csv");
    wait_for(&acct, "t", 20).await;
    drop(first); // SIGKILL
                 // Accepted before the kill: every message's 250 came after its fsync.
    sink.defer.store(false, Ordering::SeqCst);
    let child = spawn_mta(&cfg);
    wait_listening(listen).await;
    wait_for(&acct, "d", 100).await;
    assert_eq!(stop(child), Some(0));
    let seen = sink.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(
        seen.len(),
        100,
        "every accepted message delivered after the restart"
    );
    assert!(seen.values().all(|n| *n == 1));
    assert_eq!(count(&acct, "d"), 100);
}

/// Injects messages `from..to` over `sessions` concurrent sessions; returns the Message-IDs that
/// got their 250 (a session that breaks stops there).
async fn inject_counted(addr: SocketAddr, ids: Vec<usize>, sessions: usize) -> Vec<usize> {
    let mut tasks = Vec::new();
    for chunk in ids.chunks(ids.len().div_ceil(sessions).max(1)) {
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let Ok(conn) = LiveNet
                .connect(Some([127, 0, 0, 31].into()), addr)
                .await
            else {
                return acked;
            };
            let Ok(Ok(mut c)) = Client::connect(conn.stream, Timeouts::default()).await else {
                return acked;
            };
            if c.ehlo("injector.test").await.is_err() {
                return acked;
            }
            for i in chunk {
                let body = format!("From: news@sender.test\r\nTo: u{i}@dest.test\r\nMessage-ID: <m{i}@sender.test>\r\nSubject: {i}\r\n\r\nhello {i}\r\n");
                match c
                    .send("bounces@sender.test", &[format!("u{i}@dest.test")], body.as_bytes())
                    .await
                {
                    Ok(t) if t.outcome(0).code == 250 => acked.push(i),
                    _ => break,
                }
            }
            c.quit().await;
            acked
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all
}

/// `d` records per Message-ID (the accounting's `header_Message-ID` column).
fn delivered_ids(acct: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(acct).unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    let col = header
        .iter()
        .position(|h| *h == "header_Message-ID")
        .unwrap_or_else(|| panic!("no header_Message-ID column: {header:?}"));
    let mut m = BTreeMap::new();
    for l in lines.filter(|l| l.starts_with("d,")) {
        if let Some(id) = l.split(',').nth(col) {
            *m.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    m
}

/// 10,000 messages through `mta run`, killed with SIGKILL while it receives and delivers, then
/// restarted; the injector re-sends what it had no 250 for. Every acknowledged message is delivered
/// and has its `d` record; a message is delivered twice only when the kill fell between the sink's
/// 250 and our record (or between our fsync and the client seeing our 250).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_survive_a_kill_9() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sink_at, sink) = start_sink("127.0.0.45").await;
    let listen: SocketAddr = format!("127.0.0.44:{}", free_port("127.0.0.44"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = write_config(dir.path(), listen, sink_at);
    let acct = dir.path().join("acct.csv");
    let first = spawn_mta(&cfg);
    wait_listening(listen).await;
    let injector = tokio::spawn(inject_counted(listen, (0..N).collect(), 10));
    // Kill once deliveries are well under way (and injection most likely still running).
    wait_for(&acct, "d", 1500).await;
    drop(first); // SIGKILL
    let acked = injector.await.unwrap_or_default();
    assert!(
        acked.len() < N,
        "the kill interrupted the injection ({} acked)",
        acked.len()
    );
    let second = spawn_mta(&cfg);
    wait_listening(listen).await;
    let acked_set: std::collections::BTreeSet<usize> = acked.iter().copied().collect();
    let rest: Vec<usize> = (0..N).filter(|i| !acked_set.contains(i)).collect();
    let again = inject_counted(listen, rest.clone(), 10).await;
    assert_eq!(again.len(), rest.len(), "the restarted MTA takes the rest");
    for _ in 0..1200 {
        if delivered_ids(&acct).len() >= N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stop(second), Some(0));
    let ids = delivered_ids(&acct);
    let missing: Vec<usize> = (0..N)
        .filter(|i| !ids.contains_key(&format!("<m{i}@sender.test>")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} messages without a d record: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let twice = ids.values().filter(|n| **n > 1).count();
    assert!(twice <= 100, "{twice} messages delivered twice");
    assert_eq!(count(&acct, "b"), 0);
    let seen = sink.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len(), N, "the sink got every message");
    // Every delivery the sink saw has its record, except those the kill cut between the two.
    let seen_total: u32 = seen.values().sum();
    let recorded: usize = ids.values().sum();
    assert!(
        (seen_total as usize).saturating_sub(recorded) <= 100,
        "sink saw {seen_total} deliveries, {recorded} recorded"
    );
    eprintln!(
        "10,000 messages: {} acked before the kill, {twice} delivered twice, {} deliveries seen",
        acked.len(),
        seen_total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_is_accepted_with_pipelining() {
    if Command::new("swaks").arg("--version").output().is_err() {
        assert!(
            std::env::var("REQUIRE_ORACLES").is_err(),
            "REQUIRE_ORACLES=1 but swaks is missing"
        );
        eprintln!("skipping: swaks not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sink_at, sink) = start_sink("127.0.0.53").await;
    let listen: SocketAddr = format!("127.0.0.50:{}", free_port("127.0.0.50"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = write_config(dir.path(), listen, sink_at);
    let child = spawn_mta(&cfg);
    wait_listening(listen).await;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("swaks")
            .args([
                "--server",
                &listen.ip().to_string(),
                "--port",
                &listen.port().to_string(),
                "--from",
                "a@sender.test",
                "--to",
                "b@dest.test",
                "--header",
                "Message-Id: <swaks-1@sender.test>",
                "--pipeline",
            ])
            .output()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("250 2.0.0 Ok: queued as"), "{text}");
    let acct = dir.path().join("acct.csv");
    wait_for(&acct, "d", 1).await;
    assert_eq!(stop(child), Some(0));
    let seen = sink.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.values().sum::<u32>(), 1, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_bounce_is_accounted_and_the_sender_gets_a_dsn() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sink_at, sink) = start_sink("127.0.0.63").await;
    let listen: SocketAddr = format!("127.0.0.60:{}", free_port("127.0.0.60"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = write_config(dir.path(), listen, sink_at);
    let child = spawn_mta(&cfg);
    wait_listening(listen).await;
    let conn = LiveNet
        .connect(None, listen)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = Client::connect(conn.stream, Timeouts::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|r| panic!("{r}"));
    c.ehlo("injector.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let body = b"From: news@sender.test\r\nTo: unknown-1@dest.test\r\nMessage-ID: <bounce-me@sender.test>\r\nSubject: x\r\n\r\nhi\r\n";
    let t = c
        .send(
            "bounces@sender.test",
            &["unknown-1@dest.test".to_string()],
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.outcome(0).code, 250);
    c.quit().await;
    let acct = dir.path().join("acct.csv");
    wait_for(&acct, "d", 1).await;
    assert_eq!(stop(child), Some(0));
    let text = std::fs::read_to_string(&acct).unwrap_or_default();
    let b = text
        .lines()
        .find(|l| l.starts_with("b,"))
        .unwrap_or_default();
    assert!(
        b.contains(",bad-mailbox,") && b.contains("smtp;550 5.1.1 The email account"),
        "{b}"
    );
    let d = text
        .lines()
        .find(|l| l.starts_with("d,"))
        .unwrap_or_default();
    assert!(
        d.starts_with("d,") && d.contains(",,bounces@sender.test,"),
        "the DSN goes from <> to the sender: {d}"
    );
    assert_eq!(count(&acct, "r"), 2, "the message and its DSN");
    let seen = sink.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len(), 1, "only the DSN reached the sink: {seen:?}");
}

/// `total-max-smtp-in`: sessions over the cap are refused with 421 4.3.2 until one ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_sessions_are_capped_by_total_max_smtp_in() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sink_at, _sink) = start_sink("127.0.0.47").await;
    let listen: SocketAddr = format!("127.0.0.46:{}", free_port("127.0.0.46"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = write_config(dir.path(), listen, sink_at);
    let text = std::fs::read_to_string(&cfg).unwrap_or_default();
    std::fs::write(&cfg, format!("total-max-smtp-in 2\n{text}")).unwrap_or_else(|e| panic!("{e}"));
    let mta = spawn_mta(&cfg);
    wait_listening(listen).await;
    // wait_listening's probe connection may still hold a slot for a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    async fn banner(addr: SocketAddr) -> (tokio::net::TcpStream, String) {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or(0);
        (s, String::from_utf8_lossy(&buf[..n]).to_string())
    }
    let (mut a, ba) = banner(listen).await;
    let (_b, bb) = banner(listen).await;
    assert!(ba.starts_with("220") && bb.starts_with("220"), "{ba} {bb}");
    let (_c, bc) = banner(listen).await;
    assert!(
        bc.starts_with("421 4.3.2"),
        "the third session is refused: {bc}"
    );
    a.write_all(b"QUIT\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut rest = Vec::new();
    let _ = a.read_to_end(&mut rest).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_d, bd) = banner(listen).await;
    assert!(bd.starts_with("220"), "a slot is free again: {bd}");
    assert_eq!(stop(mta), Some(0));
}

/// Password guessing across sessions: after 10 failed AUTH attempts from one address within 10
/// minutes, even the right password is refused from it; another address still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_lock_out_the_address_across_sessions() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let listen: SocketAddr = format!("127.0.0.48:{}", free_port("127.0.0.48"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = format!(
        "host-name mta.test\nsmtp-listener {listen}\n<smtp-user alice>\n    password s3cret\n</smtp-user>\n<source 127.0.0.0/8>\n    allow-auth yes\n    allow-unencrypted-plain-auth yes\n</source>\n<spool {}>\n</spool>\n",
        dir.path().join("spool").display()
    );
    let path = dir.path().join("mta.conf");
    std::fs::write(&path, cfg).unwrap_or_else(|e| panic!("{e}"));
    let mta = spawn_mta(&path);
    wait_listening(listen).await;
    // AUTH PLAIN alice / wrong and alice / s3cret.
    let wrong = "AUTH PLAIN AGFsaWNlAHdyb25n\r\n";
    let right = "AUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n";
    async fn session(src: [u8; 4], listen: SocketAddr, auths: &[&str]) -> String {
        let conn = LiveNet
            .connect(Some(src.into()), listen)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut s = conn.stream;
        let mut script = String::from("EHLO c\r\n");
        for a in auths {
            script.push_str(a);
        }
        script.push_str("QUIT\r\n");
        let mut out = Vec::new();
        // One command at a time (AUTH is not pipelined).
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap_or(0);
        out.extend_from_slice(&buf[..n]);
        for line in script.split_inclusive("\r\n") {
            if s.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).to_string()
    }
    for _ in 0..5 {
        let t = session([127, 0, 0, 49], listen, &[wrong, wrong]).await;
        assert!(t.contains("535 5.7.8"), "{t}");
    }
    let locked = session([127, 0, 0, 49], listen, &[right]).await;
    assert!(!locked.contains("235"), "locked out: {locked}");
    assert!(locked.contains("535 5.7.8"), "{locked}");
    let other = session([127, 0, 0, 50], listen, &[right]).await;
    assert!(
        other.contains("235 2.7.0"),
        "another address is not affected: {other}"
    );
    assert_eq!(stop(mta), Some(0));
}

/// `log-file` gets the same log lines as stderr, appended (created if missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_receives_the_log() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let listen: SocketAddr = format!("127.0.0.30:{}", free_port("127.0.0.30"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let sink: SocketAddr = "127.0.0.33:9".parse().unwrap_or_else(|e| panic!("{e}"));
    let cfg = write_config(dir.path(), listen, sink);
    let log = dir.path().join("mta.log");
    std::fs::write(&log, "earlier line\n").unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&cfg).unwrap_or_default();
    std::fs::write(&cfg, format!("log-file {}\n{text}", log.display()))
        .unwrap_or_else(|e| panic!("{e}"));
    let child = Mta(Some(
        Command::new(env!("CARGO_BIN_EXE_mta"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{e}")),
    ));
    wait_listening(listen).await;
    assert_eq!(stop(child), Some(0));
    let got = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        got.starts_with("earlier line\n"),
        "appended, not truncated: {got}"
    );
    let listening = format!("listening addr={listen}");
    assert!(got.contains(&listening), "{got}");
    assert!(got.contains("shutting down"), "{got}");
    assert!(!got.contains('\x1b'), "no colour codes in the file: {got}");
    // A missing directory makes `mta run` refuse to start, naming the line.
    let bad = dir.path().join("bad.conf");
    std::fs::write(
        &bad,
        format!(
            "log-file {}/no/such/dir/mta.log\n{text}",
            dir.path().display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.conf:1:1: log-file") && err.contains("no/such/dir/mta.log"),
        "{err}"
    );
}
