//! `acct-backlog-limit`: while the accounting log cannot be written (here its directory turned into
//! a file, refused as a full disk would), the MTA keeps the records and, once the backlog reaches the
//! limit, refuses new mail with 451 4.3.0; when the destination is writable again the kept records
//! are written in order and mail is taken again.

mod common;

use common::{count, free_port, spawn_mta, start_sink, stop, wait_for, wait_listening};
use std::net::SocketAddr;
use std::time::Duration;

/// Sends one message to `rcpt`; returns the outcome for it (code, text).
async fn send(at: SocketAddr, rcpt: &str) -> (u16, String) {
    common::send_one(at, [127, 0, 0, 162], rcpt).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_is_refused_while_the_accounting_backlog_is_full() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sink_at, _sink) = start_sink("127.0.0.161").await;
    let smtp: SocketAddr = format!("127.0.0.160:{}", free_port("127.0.0.160"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let blocker = dir.path().join("acct");
    std::fs::create_dir(&blocker).unwrap_or_else(|e| panic!("{e}"));
    let acct = blocker.join("acct.csv");
    let cfg = format!(
        "host-name mta.test\nsmtp-listener {smtp}\nacct-backlog-limit 1\n<source 127.0.0.0/8>\n    always-allow-relaying yes\n</source>\n<domain *>\n    smtp-hosts [{}]:{}\n    use-starttls no\n</domain>\n<spool {}>\n</spool>\n<acct-file {}>\n    records r,d\n</acct-file>\n",
        sink_at.ip(),
        sink_at.port(),
        dir.path().join("spool").display(),
        acct.display()
    );
    let path = dir.path().join("mta.conf");
    std::fs::write(&path, cfg).unwrap_or_else(|e| panic!("{e}"));
    let mta = spawn_mta(&path);
    wait_listening(smtp).await;
    // The config was valid at start; now the log's directory turns into a file (files are opened
    // on their first record), so no record can be written.
    std::fs::remove_dir(&blocker).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&blocker, b"not a directory").unwrap_or_else(|e| panic!("{e}"));
    // The first message is taken; its `r` record cannot be written and waits.
    assert_eq!(send(smtp, "one@dest.test").await.0, 250);
    // Now one record waits: the limit is reached.
    let (code, text) = send(smtp, "two@dest.test").await;
    assert_eq!(code, 451, "{text}");
    assert!(
        text.contains("4.3.0") && text.contains("Accounting log cannot be written"),
        "{text}"
    );
    // The destination comes back: the MTA's periodic flush writes the backlog, mail flows again.
    std::fs::remove_file(&blocker).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(&blocker).unwrap_or_else(|e| panic!("{e}"));
    let mut taken = None;
    for _ in 0..100 {
        let (code, text) = send(smtp, "three@dest.test").await;
        if code == 250 {
            taken = Some(text);
            break;
        }
        assert_eq!(code, 451, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        taken.is_some(),
        "mail was still refused 10 s after the log became writable"
    );
    wait_for(&acct, "d", 2).await;
    let text = std::fs::read_to_string(&acct).unwrap_or_default();
    let seen: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let rcpt = f.iter().find(|x| x.ends_with("@dest.test"))?;
            Some((f[0].to_string(), rcpt.to_string()))
        })
        .collect();
    let has = |ty: &str, r: &str| seen.iter().any(|(t, x)| t == ty && x == r);
    assert!(
        has("r", "one@dest.test") && has("d", "one@dest.test"),
        "{seen:?}"
    );
    assert!(
        has("r", "three@dest.test") && has("d", "three@dest.test"),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|(_, x)| x == "two@dest.test"),
        "the refused message left no record: {seen:?}"
    );
    // The kept record comes first, in its order.
    assert_eq!(
        seen.first().map(|(t, x)| (t.as_str(), x.as_str())),
        Some(("r", "one@dest.test"))
    );
    assert_eq!(count(&acct, "r"), 2);
    stop(mta);
}
