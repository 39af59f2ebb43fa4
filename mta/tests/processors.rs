//! The bounce and feedback-loop processors of a running `mta run`: an ARF report and a DSN sent by
//! SMTP to the configured addresses become `f` and `rb` accounting records and are not delivered
//! onward; with `suppress-after complaint` the complainer is refused afterwards.

mod common;

use common::{count, free_port, spawn_mta, start_sink, stop, wait_for, wait_listening};
use std::net::SocketAddr;
use std::path::Path;

async fn send(at: SocketAddr, from: &str, rcpt: &str, body: &[u8]) -> u16 {
    let mut c = common::client(at, [127, 0, 0, 122], "isp.example").await;
    let t = c
        .send(from, &[rcpt.to_string()], body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    c.quit().await;
    t.outcome(0).code
}

fn fixture(p: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(p);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn lines(acct: &Path, ty: &str) -> Vec<String> {
    std::fs::read_to_string(acct)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(',').next() == Some(ty))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_bounces_become_records() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sink_at, sink) = start_sink("127.0.0.121").await;
    let smtp: SocketAddr = format!("127.0.0.120:{}", free_port("127.0.0.120"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let acct = dir.path().join("acct.csv");
    let cfg = format!(
        "host-name mta.sender.test
smtp-listener {smtp}
suppress-after complaint
<source 127.0.0.0/8>
    always-allow-relaying yes
</source>
<bounce-processor>
    <address-list>
        domain bounces.sender.test
    </address-list>
</bounce-processor>
<feedback-loop-processor>
    <address-list>
        address fbl@sender.test
    </address-list>
</feedback-loop-processor>
<domain *>
    smtp-hosts [{}]:{}
    use-starttls no
</domain>
<spool {}>
</spool>
<acct-file {}>
    records r,d,b,f,rb
</acct-file>
",
        sink_at.ip(),
        sink_at.port(),
        dir.path().join("spool").display(),
        acct.display()
    );
    let path = dir.path().join("mta.conf");
    std::fs::write(&path, cfg).unwrap_or_else(|e| panic!("{e}"));
    let mta = spawn_mta(&path);
    wait_listening(smtp).await;
    for f in ["rfc5965-abuse.eml", "outlook-jmrp.eml", "malformed.eml"] {
        let code = send(smtp, "", "fbl@sender.test", &fixture(&format!("arf/{f}"))).await;
        assert_eq!(code, 250, "{f}");
    }
    let code = send(
        smtp,
        "",
        "b-123@bounces.sender.test",
        &fixture("bounces/dsn-failed-single.eml"),
    )
    .await;
    assert_eq!(code, 250);
    wait_for(&acct, "f", 3).await;
    wait_for(&acct, "rb", 1).await;
    let f = lines(&acct, "f");
    assert!(
        f.iter()
            .any(|l| l.contains("reader@isp.example") && l.contains("abuse")),
        "{f:#?}"
    );
    assert!(
        f.iter()
            .any(|l| l.contains("complainer@hotmail.example") && l.contains("jmrp")),
        "{f:#?}"
    );
    assert!(
        f.iter()
            .any(|l| l.contains("unparseable") && l.contains("no message/feedback-report part")),
        "{f:#?}"
    );
    let rb = lines(&acct, "rb");
    assert!(
        rb.iter()
            .any(|l| l.contains("alice@receiver.test") && l.contains("bad-mailbox")),
        "{rb:#?}"
    );
    // Nothing went onward and nothing was queued for the processors' mail.
    assert_eq!(count(&acct, "r"), 0);
    assert!(sink.seen.lock().map(|s| s.is_empty()).unwrap_or(false));
    // The complainer is suppressed now.
    let body = b"From: a@sender.test\r\nTo: reader@isp.example\r\nSubject: again\r\n\r\nhi\r\n";
    assert_eq!(
        send(smtp, "bounces@sender.test", "reader@isp.example", body).await,
        550
    );
    assert_eq!(
        send(smtp, "bounces@sender.test", "other@isp.example", body).await,
        250
    );
    wait_for(&acct, "d", 1).await;
    assert_eq!(stop(mta), Some(0));
}
