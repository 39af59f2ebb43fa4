//! The DSN builder: shape, determinism, no bounce to a bounce, and the output read back by our
//! parser, by mail-parser and (when python3 is present) by Python's `email` package.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mail_parser::{MessageParser, MimeHeaders};
use mta::bounce::{build_dsn, parse, Category, Classifier, DsnAction, DsnRecipient, DsnRequest};

const ORIGINAL: &[u8] = b"Message-ID: <orig-1@sender.test>\r\nFrom: News <news@sender.test>\r\nTo: a@receiver.test\r\nSubject: Offers\r\nX-Job-Id: job-7\r\n\r\nBody line that must not be copied.\r\n";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn recipients() -> Vec<DsnRecipient> {
    vec![
        DsnRecipient {
            recipient: "a@receiver.test".into(),
            original_recipient: Some("rfc822; A@Receiver.test".into()),
            action: DsnAction::Failed,
            status: "5.1.1".into(),
            remote_mta: Some("mx.receiver.test".into()),
            diagnostic: "550 5.1.1 The email account that you tried to reach does not exist. Please double-check the recipient's email address for typos or unnecessary spaces. - gsmtp".into(),
            category: Category::BadMailbox,
            last_attempt: Some(at(1_795_428_901)),
            will_retry_until: None,
        },
        DsnRecipient {
            recipient: "b@slow.test".into(),
            original_recipient: None,
            action: DsnAction::Failed,
            status: "4.4.7".into(),
            remote_mta: None,
            diagnostic: "connection refused".into(),
            category: Category::MessageExpired,
            last_attempt: None,
            will_retry_until: None,
        },
    ]
}

fn request<'a>(rcpts: &'a [DsnRecipient], sender: &'a str) -> DsnRequest<'a> {
    DsnRequest {
        reporting_host: "mta1.sender.test",
        virtual_mta: Some("vmta-a"),
        envelope_sender: sender,
        envelope_id: Some("env-42"),
        arrival: at(1_795_428_000),
        now: at(1_795_429_000),
        seed: "spool-000123",
        original: ORIGINAL,
        recipients: rcpts,
    }
}

#[test]
fn no_dsn_for_null_sender_or_no_recipient() {
    let r = recipients();
    assert!(build_dsn(&request(&r, "")).is_none());
    assert!(build_dsn(&request(&r, "<>")).is_none());
    assert!(build_dsn(&request(&[], "news@sender.test")).is_none());
}

#[test]
fn dsn_shape_and_determinism() {
    let r = recipients();
    let dsn = build_dsn(&request(&r, "<news@sender.test>")).expect("dsn");
    assert_eq!(dsn.envelope_from, "");
    assert_eq!(dsn.envelope_to, "news@sender.test");
    assert_eq!(dsn.message_id, "<spool-000123.dsn@mta1.sender.test>");
    let again = build_dsn(&request(&r, "<news@sender.test>")).expect("dsn");
    assert_eq!(dsn, again);
    let text = String::from_utf8(dsn.bytes.clone()).expect("utf8");
    for needle in [
        "From: Mail Delivery Subsystem <MAILER-DAEMON@mta1.sender.test>\r\n",
        "To: <news@sender.test>\r\n",
        "Date: Mon, 23 Nov 2026 10:16:40 +0000\r\n",
        "Hello, this is the mail server on mta1.sender.test.",
        "Reporting-MTA: dns; mta1.sender.test\r\n",
        "X-PowerMTA-VirtualMTA: vmta-a\r\n",
        "Original-Envelope-Id: env-42\r\n",
        "Arrival-Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n",
        "Original-Recipient: rfc822; A@Receiver.test\r\n",
        "X-PowerMTA-BounceCategory: bad-mailbox\r\n",
        "Last-Attempt-Date: Mon, 23 Nov 2026 10:15:01 +0000\r\n",
        "Diagnostic-Code: X-mtasim; connection refused\r\n",
        "Content-Type: text/rfc822-headers\r\n",
        "X-Job-Id: job-7\r\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(
        !text.contains("Body line"),
        "only the headers of the original are included"
    );
    // Every line ends in CRLF and stays within the 998-octet limit.
    assert!(!text.replace("\r\n", "").contains('\n'));
    assert!(text.split("\r\n").all(|l| l.len() <= 998));
}

#[test]
fn header_injection_is_neutralised() {
    let mut r = recipients();
    r[0].diagnostic = "550 bad\r\nBcc: victim@else.test".into();
    let dsn = build_dsn(&request(&r, "news@sender.test\r\nBcc: x@y.test")).expect("dsn");
    let text = String::from_utf8(dsn.bytes).expect("utf8");
    assert!(!text.contains("\r\nBcc:"));
}

#[test]
fn our_parser_reads_our_dsn() {
    let r = recipients();
    let dsn = build_dsn(&request(&r, "news@sender.test")).expect("dsn");
    let rep = parse(&dsn.bytes, &Classifier::default()).expect("parses");
    assert_eq!(rep.reporting_mta.as_deref(), Some("mta1.sender.test"));
    assert_eq!(rep.virtual_mta.as_deref(), Some("vmta-a"));
    assert_eq!(
        rep.original_message_id.as_deref(),
        Some("<orig-1@sender.test>")
    );
    assert_eq!(
        rep.original_headers.get("x-job-id").map(String::as_str),
        Some("job-7")
    );
    let got: Vec<_> = rep
        .recipients
        .iter()
        .map(|x| {
            (
                x.recipient.as_str(),
                x.status.as_str(),
                x.category,
                x.action.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a@receiver.test", "5.1.1", Category::BadMailbox, "failed"),
            ("b@slow.test", "4.4.7", Category::MessageExpired, "failed"),
        ]
    );
    // The folded Diagnostic-Code unfolds to the original text.
    assert_eq!(
        rep.recipients[0].diagnostic,
        format!("smtp; {}", r[0].diagnostic)
    );
    assert_eq!(
        rep.recipients[0].remote_mta.as_deref(),
        Some("mx.receiver.test")
    );
}

#[test]
fn mail_parser_reads_our_dsn() {
    let r = recipients();
    let dsn = build_dsn(&request(&r, "news@sender.test")).expect("dsn");
    let msg = MessageParser::default()
        .parse(&dsn.bytes)
        .expect("mail-parser parses");
    assert_eq!(msg.subject(), Some("Delivery report"));
    assert_eq!(msg.message_id(), Some("spool-000123.dsn@mta1.sender.test"));
    let ct = msg.content_type().expect("content type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let kinds: Vec<String> = msg.parts[1..]
        .iter()
        .filter_map(|p| p.content_type())
        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")))
        .collect();
    assert_eq!(
        kinds,
        vec![
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
}

const PY: &str = r#"
import sys, email
from email import policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.compat32)
assert m.get_content_type() == 'multipart/report', m.get_content_type()
print('report-type', m.get_param('report-type'))
print('defects', len(m.defects))
parts = m.get_payload()
print('parts', ' '.join(p.get_content_type() for p in parts))
ds = parts[1].get_payload()
print('per-message', ds[0]['Reporting-MTA'])
for b in ds[1:]:
    diag = ' '.join((b['Diagnostic-Code'] or '').split())
    print('rcpt', b['Final-Recipient'], '|', b['Action'], '|', b['Status'], '|', b['X-PowerMTA-BounceCategory'], '|', diag)
"#;

#[test]
fn python_email_reads_our_dsn() {
    let require = std::env::var("REQUIRE_ORACLES").is_ok_and(|v| v == "1");
    let child = Command::new("python3")
        .arg("-c")
        .arg(PY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                !require,
                "python3 required (REQUIRE_ORACLES=1) but not runnable: {e}"
            );
            eprintln!("python3 not available: skipping the Python oracle");
            return;
        }
    };
    let r = recipients();
    let dsn = build_dsn(&request(&r, "news@sender.test")).expect("dsn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&dsn.bytes)
        .expect("write");
    let out = child.wait_with_output().expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!(
        "report-type delivery-status\n\
         defects 0\n\
         parts text/plain message/delivery-status text/rfc822-headers\n\
         per-message dns; mta1.sender.test\n\
         rcpt rfc822; a@receiver.test | failed | 5.1.1 | bad-mailbox | smtp; {}\n\
         rcpt rfc822; b@slow.test | failed | 4.4.7 | message-expired | X-mtasim; connection refused\n",
        r[0].diagnostic
    );
    assert_eq!(stdout, expected);
}

#[test]
fn delayed_dsn() {
    let r = vec![DsnRecipient {
        recipient: "c@yahoo.test".into(),
        original_recipient: None,
        action: DsnAction::Delayed,
        status: "4.7.0".into(),
        remote_mta: Some("mta5.am0.yahoodns.test".into()),
        diagnostic: "421 4.7.0 [TSS04] Messages from 127.0.0.9 temporarily deferred due to unexpected volume or user complaints".into(),
        category: Category::PolicyRelated,
        last_attempt: Some(at(1_795_428_901)),
        will_retry_until: Some(at(1_795_774_501)),
    }];
    let dsn = build_dsn(&request(&r, "news@sender.test")).expect("dsn");
    let text = String::from_utf8(dsn.bytes.clone()).expect("utf8");
    assert!(text.contains("Subject: Delivery report (delayed)\r\n"));
    assert!(text.contains("Action: delayed\r\n"));
    assert!(text.contains("Will-Retry-Until: Fri, 27 Nov 2026 10:15:01 +0000\r\n"));
    let rep = parse(&dsn.bytes, &Classifier::default()).expect("parses");
    assert_eq!(rep.recipients.len(), 1);
    assert_eq!(rep.recipients[0].action, "delayed");
    assert_eq!(rep.recipients[0].category, Category::PolicyRelated);
}
