//! Property tests: the bounce parser and the classifier never panic, whatever the input.

use std::sync::OnceLock;

use proptest::prelude::*;

use mta::bounce::{parse, BounceReport, Classifier, ParseError};

fn classifier() -> &'static Classifier {
    static C: OnceLock<Classifier> = OnceLock::new();
    C.get_or_init(Classifier::default)
}

fn fixture_bytes() -> &'static [Vec<u8>] {
    static F: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    F.get_or_init(load_fixtures)
}

fn load_fixtures() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/bounces");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    names.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// A result that says something: recipients, a reason for having none, or an error message.
fn noted(r: &Result<BounceReport, ParseError>) -> bool {
    match r {
        Ok(rep) => {
            !rep.recipients.is_empty()
                || rep.reason.as_deref().is_some_and(|s| !s.trim().is_empty())
        }
        Err(e) => !e.to_string().trim().is_empty(),
    }
}

/// A DSN with one recipient block, wrapped in `depth` levels of multipart/mixed.
fn generated_dsn(rcpt: &str, action: &str, status: &str, diag: &str, depth: usize) -> Vec<u8> {
    let mut m = String::from(
        "From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\n",
    );
    for i in 0..depth {
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"w{i}\"\r\n\r\n--w{i}\r\n"
        ));
    }
    m.push_str(&format!("Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nThe mail system\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {diag}\r\n\r\n--B--\r\n"));
    for i in (0..depth).rev() {
        m.push_str(&format!("--w{i}--\r\n"));
    }
    m.into_bytes()
}

/// Lines text bounces are made of: each format's markers, address lines, reply lines.
const TEXT_PIECES: &[&str] = &[
    "Hi. This is the qmail-send program at mx.example.net.",
    "This is the mail system at host mx.example.net.",
    "This message was created automatically by mail delivery software.",
    "The following address(es) failed:",
    "   ----- The following addresses had permanent fatal errors -----",
    "   ----- Transcript of session follows -----",
    "Delivery has failed to these recipients or groups:",
    "Diagnostic information for administrators:",
    "Sorry, we were unable to deliver your message to the following address.",
    "Delivery to the following recipient failed permanently:",
    "The response from the remote server was:",
    "Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'",
    "<user@example.com>:",
    "<user@example.com>: host mx.example.com[192.0.2.1] said: 550 5.1.1 unknown",
    "  user@example.com",
    "    SMTP error from remote mail server after RCPT TO:<user@example.com>:",
    "    host mx.example.com [192.0.2.1]",
    "Remote host said: 550 5.1.1 mailbox unavailable",
    "... while talking to mx.example.com.:",
    "<<< 550 5.1.1 <user@example.com>... User unknown",
    "    (reason: 550 5.1.1 User unknown)",
    "#550 5.1.1 RESOLVER.ADR.RecipNotFound; not found ##",
    "------ This is a copy of the message, including all the headers. ------",
    "--- Below this line is a copy of the message.",
    "Message-ID: <x@example.org>",
    "X-Job-Id: 42",
    "",
    "  ",
    "<",
    ">:",
    "@",
    "a@b.c",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let c = classifier();
        if let Ok(r) = parse(&bytes, c) {
            // No recipient without an address-like value or with an empty status.
            for fr in &r.recipients {
                prop_assert!(!fr.status.is_empty());
            }
        }
    }

    #[test]
    fn mutated_fixtures_never_panic(idx in 0usize..64, cut in 0usize..8192, junk in proptest::collection::vec(any::<u8>(), 0..64), at in 0usize..8192) {
        let all = fixture_bytes();
        prop_assume!(!all.is_empty());
        let mut b = all[idx % all.len()].clone();
        let cut = cut.min(b.len());
        b.truncate(b.len() - cut / 2);
        let at = at.min(b.len());
        b.splice(at..at, junk);
        let _ = parse(&b, classifier());
    }

    #[test]
    fn classifier_never_panics(reply in "\\PC{0,300}", status in "[0-9.]{0,8}") {
        let c = classifier();
        let a = c.classify_reply(&reply);
        let b = c.classify_status(&status, &reply);
        prop_assert!(!a.matched_text.is_empty());
        prop_assert!(b.matched_text.contains(&status));
    }

    #[test]
    fn generated_dsns_never_panic(
        rcpt in prop_oneof!["[a-z]{1,8}@[a-z]{1,8}\\.example", "\\PC{0,40}"],
        action in prop_oneof![Just("failed".to_string()), Just("delayed".to_string()), "\\PC{0,12}"],
        status in prop_oneof!["[245]\\.[0-9]{1,3}\\.[0-9]{1,3}", "[0-9. ]{0,10}", "\\PC{0,10}"],
        diag in "\\PC{0,200}",
        depth in 0usize..40,
        cut in proptest::option::of(0usize..4000),
        noise in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut m = generated_dsn(&rcpt, &action, &status, &diag, depth);
        let whole = cut.is_none() && noise.is_empty();
        if let Some(c) = cut {
            m.truncate(c.min(m.len()));
        }
        let at = m.len() / 2;
        m.splice(at..at, noise);
        let r = parse(&m, classifier());
        prop_assert!(noted(&r));
        // Whole, with a plain address and a failed action: the recipient is found.
        let plain = rcpt.ends_with(".example") && !rcpt.contains(' ');
        if whole && plain && action == "failed" {
            let rep = r.as_ref().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(rep.recipients.len(), 1, "{:?}", rep.reason);
            prop_assert_eq!(&rep.recipients[0].recipient, &rcpt);
        }
    }

    #[test]
    fn text_bounces_never_panic(
        picks in proptest::collection::vec(
            prop_oneof![
                4 => (0..TEXT_PIECES.len()).prop_map(|i| TEXT_PIECES[i].to_string()),
                1 => "\\PC{0,80}",
            ],
            0..60,
        ),
        subject in prop_oneof![Just("Delivery Status Notification (Failure)".to_string()), "\\PC{0,30}"],
        html in any::<bool>(),
    ) {
        let body = picks.join("\r\n");
        let ct = if html { "text/html" } else { "text/plain" };
        let m = format!("From: MAILER-DAEMON@mx.example.net\r\nSubject: {subject}\r\nContent-Type: {ct}\r\n\r\n{body}\r\n");
        let r = parse(m.as_bytes(), classifier());
        prop_assert!(noted(&r));
        if let Ok(rep) = &r {
            for fr in &rep.recipients {
                prop_assert!(!fr.status.is_empty());
            }
        }
    }
}
