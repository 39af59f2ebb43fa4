//! Python's smtplib and raw sockets against `mta run` on loopback (tests/python/smtp_clients.py):
//! EHLO extensions, a plain transaction, SIZE refusal, STARTTLS, relay refusal, pipelining, bare-LF
//! refusal, over-long lines. The accepted messages then reach the sink. Skipped when python3 is
//! missing, unless REQUIRE_ORACLES=1.

mod common;

use common::{free_port, spawn_mta, start_sink, stop, wait_for, wait_listening};
use std::net::SocketAddr;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_against_mta_run() {
    if Command::new("python3").arg("--version").output().is_err() {
        assert!(
            std::env::var("REQUIRE_ORACLES").as_deref() != Ok("1"),
            "REQUIRE_ORACLES=1 but python3 is missing"
        );
        eprintln!("skipping: python3 not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sink_at, sink) = start_sink("127.0.0.101").await;
    let listen: SocketAddr = format!("127.0.0.100:{}", free_port("127.0.0.100"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let acct = dir.path().join("acct.csv");
    let cfg = format!(
        "host-name mta.test\nsmtp-listener {listen}\nsmtp-server-tls-certificate auto\n<source 127.0.0.102/32>\n    always-allow-relaying yes\n    max-message-size 1M\n</source>\n<source 0/0>\n    always-allow-relaying no\n</source>\n<domain *>\n    smtp-hosts [{}]:{}\n    use-starttls no\n    retry-after 1s\n</domain>\n<spool {}>\n</spool>\n<acct-file {}>\n    records r,d,b\n</acct-file>\n",
        sink_at.ip(),
        sink_at.port(),
        dir.path().join("spool").display(),
        acct.display()
    );
    let path = dir.path().join("mta.conf");
    std::fs::write(&path, cfg).unwrap_or_else(|e| panic!("{e}"));
    let mta = spawn_mta(&path);
    wait_listening(listen).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/smtp_clients.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([
                script,
                &listen.ip().to_string(),
                &listen.port().to_string(),
                "127.0.0.102",
                "127.0.0.103",
            ])
            .output()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("\"ok\": true").count(), 9, "{stdout}");
    // Three recipients over plain and TLS transactions; nothing from the refused attempts.
    wait_for(&acct, "d", 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        common::count(&acct, "r"),
        3,
        "only the accepted mail is queued"
    );
    let seen = sink.seen.lock().map(|s| s.len()).unwrap_or(0);
    assert_eq!(seen, 2, "two messages (one with two recipients)");
    assert_eq!(stop(mta), Some(0));
}
