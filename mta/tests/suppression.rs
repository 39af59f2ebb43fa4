//! `suppress-after hard-bounce`: a recipient that hard-bounced is refused at RCPT afterwards (also
//! after a restart), the operator lists, exports, adds and removes entries with `mta suppression`.

mod common;

use common::{count, free_port, spawn_mta, start_sink, stop, wait_for, wait_listening};
use std::net::SocketAddr;
use std::process::Command;

/// Sends one message to `rcpt`; returns the outcome for it (code, text).
async fn send(at: SocketAddr, rcpt: &str) -> (u16, String) {
    common::send_one(at, [127, 0, 0, 112], rcpt).await
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_bounces_are_suppressed_durably() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sink_at, _sink) = start_sink("127.0.0.111").await;
    let smtp: SocketAddr = format!("127.0.0.110:{}", free_port("127.0.0.110"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let mgmt: SocketAddr = format!("127.0.0.110:{}", free_port("127.0.0.110"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let acct = dir.path().join("acct.csv");
    let cfg = format!(
        "host-name mta.test\nsmtp-listener {smtp}\nhttp-mgmt-port {mgmt}\nsuppress-after hard-bounce,complaint\n<source 127.0.0.0/8>\n    always-allow-relaying yes\n</source>\n<domain *>\n    smtp-hosts [{}]:{}\n    use-starttls no\n</domain>\n<spool {}>\n</spool>\n<acct-file {}>\n    records r,d,b\n</acct-file>\n",
        sink_at.ip(),
        sink_at.port(),
        dir.path().join("spool").display(),
        acct.display()
    );
    let path = dir.path().join("mta.conf");
    std::fs::write(&path, cfg).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("http://{mgmt}");
    let mta = spawn_mta(&path);
    wait_listening(smtp).await;
    wait_listening(mgmt).await;
    // The sink says 550 5.1.1 to unknown* recipients: a hard bounce (bad-mailbox).
    assert_eq!(send(smtp, "unknown1@dest.test").await.0, 250);
    wait_for(&acct, "b", 1).await;
    let (code, text) = send(smtp, "Unknown1@dest.test").await;
    assert_eq!(code, 550, "{text}");
    assert!(
        text.contains("5.7.1") && text.contains("suppressed (hard-bounce: bad-mailbox 5.1.1)"),
        "{text}"
    );
    assert_eq!(
        send(smtp, "someone@dest.test").await.0,
        250,
        "others are fine"
    );
    let (code, out) = cli(&["suppression", "list", "--mgmt", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("unknown1@dest.test") && out.contains("1 addresses suppressed."),
        "{out}"
    );
    let (code, out) = cli(&[
        "suppression",
        "add",
        "vip@dest.test",
        "--note",
        "asked to stop",
        "--mgmt",
        &url,
    ]);
    assert_eq!((code, out.trim()), (0, "vip@dest.test suppressed."));
    assert_eq!(send(smtp, "vip@dest.test").await.0, 550);
    let (code, out) = cli(&["suppression", "export", "--mgmt", &url]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "address,reason,detail,since");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("unknown1@dest.test,hard-bounce,bad-mailbox 5.1.1,")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("vip@dest.test,manual,asked to stop,")),
        "{out}"
    );
    // Durable: after a restart the list is still in force.
    assert_eq!(stop(mta), Some(0));
    let mta = spawn_mta(&path);
    wait_listening(smtp).await;
    wait_listening(mgmt).await;
    assert_eq!(
        send(smtp, "unknown1@dest.test").await.0,
        550,
        "still suppressed after a restart"
    );
    let (code, out) = cli(&["suppression", "remove", "vip@dest.test", "--mgmt", &url]);
    assert_eq!(
        (code, out.trim()),
        (0, "vip@dest.test removed from the suppression list.")
    );
    assert_eq!(send(smtp, "vip@dest.test").await.0, 250);
    wait_for(&acct, "d", 2).await;
    assert_eq!(count(&acct, "b"), 1);
    assert_eq!(stop(mta), Some(0));
}
