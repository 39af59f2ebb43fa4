//! Bad input that once took the bounce parser time growing with the square of its size, and a
//! DSN block that names nobody. Each case is far under `MAX_BOUNCE_SIZE`; the time bounds are hang
//! detectors (generous, and sixty times larger in a debug build), not speed tests: the bench
//! `bounce_classify` measures speed.

use std::sync::OnceLock;
use std::time::Duration;

use mta::bounce::{parse, BounceReport, Classifier, ParseError};

fn classifier() -> &'static Classifier {
    static C: OnceLock<Classifier> = OnceLock::new();
    C.get_or_init(Classifier::default)
}

/// `release_secs` times five, sixty times `release_secs` in a debug build.
fn bound(release_secs: u64) -> Duration {
    Duration::from_secs(if cfg!(debug_assertions) {
        release_secs * 60
    } else {
        release_secs * 5
    })
}

/// Parses `raw` on its own thread; fails if there is no result within `limit`.
fn parse_within(what: &str, raw: Vec<u8>, limit: Duration) -> Result<BounceReport, ParseError> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(parse(&raw, classifier()));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|e| panic!("{what}: no result within {limit:?} ({e})"))
}

/// A Gmail-style bounce with `n` lead lines and no address after them: each lead line searched
/// every later line for an address (`parse.rs`, `gmail()`).
#[test]
fn gmail_lead_lines_without_address() {
    let n = 10_000;
    let mut m = String::from(
        "From: mailer-daemon@googlemail.com\r\nSubject: Delivery Status Notification (Failure)\r\n\r\n",
    );
    for _ in 0..n {
        m.push_str("Delivery to the following recipient failed permanently:\r\n");
    }
    let rep = parse_within("gmail lead lines", m.into_bytes(), bound(1)).expect("parses");
    assert!(rep.recipients.is_empty());
    assert!(rep.reason.is_some());
}

/// A Sendmail bounce with `n` failed addresses (no `(reason: …)` line) and `replies` transcript
/// replies naming other addresses: each recipient once searched every reply. (Free-text bounces
/// are read for at most 1,000 recipients.)
#[test]
fn sendmail_recipients_without_reason() {
    let n = 900;
    let replies = 8_000;
    let mut m = String::from("From: MAILER-DAEMON@mx.example.net\r\nSubject: Returned mail: see transcript for details\r\n\r\nThe original message was received at Mon, 7 Dec 2026 10:00:00 GMT\r\n\r\n   ----- The following addresses had permanent fatal errors -----\r\n");
    for i in 0..n {
        m.push_str(&format!("<user{i}@example.com>\r\n"));
    }
    m.push_str("\r\n   ----- Transcript of session follows -----\r\n");
    for i in 0..replies {
        m.push_str(&format!(
            "... while talking to mx.example.com.:\r\n>>> RCPT To:<other{i}@example.com>\r\n<<< 550 5.1.1 <other{i}@example.com>... User unknown\r\n"
        ));
    }
    let rep = parse_within("sendmail recipients", m.into_bytes(), bound(1)).expect("parses");
    assert_eq!(rep.recipients.len(), n);
}

/// `Final-Recipient: rfc822;` (or `<>`) names nobody: no recipient with an empty address, and a
/// reason saying why there is none.
#[test]
fn empty_final_recipient_is_not_a_recipient() {
    for value in ["rfc822;", "rfc822; <>", "<>"] {
        let m = format!("From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: {value}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n--B--\r\n");
        let rep = parse_within(value, m.into_bytes(), bound(1)).expect("parses");
        assert!(
            rep.recipients
                .iter()
                .all(|r| !r.recipient.trim().is_empty()),
            "{value}: a recipient without address"
        );
        assert!(
            !rep.recipients.is_empty() || rep.reason.is_some(),
            "{value}: neither a recipient nor a reason"
        );
    }
}
