//! Every bounce fixture parses to the expected recipients, statuses and categories.

use std::path::{Path, PathBuf};

use mta::bounce::{
    classify_files_report, parse, BounceFormat, Category, Classifier, ReportOptions,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/bounces")
}

fn load(name: &str) -> mta::bounce::BounceReport {
    let raw = std::fs::read(fixtures().join(name)).expect("fixture exists");
    parse(&raw, &Classifier::default()).expect("fixture parses")
}

/// (recipient, status, category) triples of a report.
fn triples(r: &mta::bounce::BounceReport) -> Vec<(String, String, Category)> {
    r.recipients
        .iter()
        .map(|x| (x.recipient.clone(), x.status.clone(), x.category))
        .collect()
}

fn t(a: &str, s: &str, c: Category) -> (String, String, Category) {
    (a.to_string(), s.to_string(), c)
}

#[test]
fn standard_dsn_single() {
    let r = load("dsn-failed-single.eml");
    assert_eq!(r.format, Some(BounceFormat::Dsn));
    assert_eq!(r.reporting_mta.as_deref(), Some("mx1.receiver.test"));
    assert_eq!(
        r.arrival_date.as_deref(),
        Some("Mon, 23 Nov 2026 10:14:58 +0000")
    );
    assert_eq!(
        triples(&r),
        vec![t("alice@receiver.test", "5.1.1", Category::BadMailbox)]
    );
    let a = &r.recipients[0];
    assert_eq!(a.original_recipient.as_deref(), Some("Alice@Receiver.test"));
    assert_eq!(a.action, "failed");
    assert_eq!(a.remote_mta.as_deref(), Some("store3.receiver.test"));
    assert_eq!(
        a.diagnostic,
        "smtp; 550 5.1.1 <alice@receiver.test>: Recipient address rejected: User unknown in local recipient table"
    );
    assert_eq!(
        a.last_attempt_date.as_deref(),
        Some("Mon, 23 Nov 2026 10:15:01 +0000")
    );
    assert_eq!(
        r.original_message_id.as_deref(),
        Some("<job42.rcpt1@sender.test>")
    );
    assert_eq!(
        r.original_headers.get("x-job-id").map(String::as_str),
        Some("job-42")
    );
    assert_eq!(
        r.original_headers.get("x-virtual-mta").map(String::as_str),
        Some("vmta-pool-a")
    );
}

#[test]
fn dsn_multiple_recipients_without_diagnostic_skips_delivered() {
    let r = load("dsn-multi-no-diag.eml");
    assert_eq!(
        triples(&r),
        vec![
            t("bob@receiver.test", "5.2.2", Category::QuotaIssues),
            t("carol@receiver.test", "5.1.1", Category::BadMailbox),
            t("erin@receiver.test", "5.2.1", Category::InactiveMailbox),
        ]
    );
    assert_eq!(r.recipients[0].diagnostic, "");
    assert_eq!(
        r.original_message_id.as_deref(),
        Some("<digest-7@sender.test>")
    );
    assert_eq!(
        r.original_headers.get("x-job-id").map(String::as_str),
        Some("digest-7")
    );
}

#[test]
fn dsn_delayed() {
    let r = load("dsn-delayed.eml");
    assert_eq!(
        triples(&r),
        vec![t("frank@yahoo.test", "4.7.0", Category::PolicyRelated)]
    );
    assert_eq!(r.recipients[0].action, "delayed");
    assert!(r.recipients[0]
        .diagnostic
        .contains("[TSS04] Messages from 127.0.0.9 temporarily deferred"));
    assert!(r.recipients[0]
        .diagnostic
        .contains("4.16.55.1; see https://postmaster.yahooinc.com/error-codes"));
}

#[test]
fn dsn_lf_only() {
    let raw = std::fs::read(fixtures().join("dsn-lf-only.eml")).expect("fixture");
    assert!(!raw.contains(&b'\r'), "the fixture must stay LF-only");
    let r = load("dsn-lf-only.eml");
    assert_eq!(
        triples(&r),
        vec![t("gina@receiver.test", "5.2.2", Category::QuotaIssues)]
    );
    assert_eq!(r.reporting_mta.as_deref(), Some("lf.receiver.test"));
}

#[test]
fn powermta_dsn() {
    let r = load("powermta-dsn.eml");
    assert_eq!(r.virtual_mta.as_deref(), Some("vmta-a"));
    assert_eq!(r.reporting_mta.as_deref(), Some("mta1.sender.test"));
    assert_eq!(
        triples(&r),
        vec![t("henry@gmail.test", "5.7.1", Category::SpamRelated)]
    );
    assert_eq!(
        r.recipients[0].remote_mta.as_deref(),
        Some("gmail-smtp-in.l.google.test (127.0.0.30)")
    );
    assert_eq!(
        r.original_headers.get("x-job-id").map(String::as_str),
        Some("spring-sale")
    );
}

#[test]
fn postfix_transcript() {
    let r = load("postfix-transcript.eml");
    assert_eq!(r.format, Some(BounceFormat::Postfix));
    assert_eq!(r.reporting_mta.as_deref(), Some("smtp.receiver.test"));
    assert_eq!(
        triples(&r),
        vec![
            t("ivan@faraway.test", "5.1.1", Category::BadMailbox),
            t("judy@nowhere.test", "5.0.0", Category::BadDomain),
        ]
    );
    assert_eq!(
        r.recipients[0].remote_mta.as_deref(),
        Some("mx.faraway.test")
    );
    assert!(r.recipients[0]
        .diagnostic
        .ends_with("(in reply to RCPT TO command)"));
    assert_eq!(
        r.original_message_id.as_deref(),
        Some("<pf-orig-3@sender.test>")
    );
    assert_eq!(
        r.original_headers.get("x-job-id").map(String::as_str),
        Some("pf-job-3")
    );
}

#[test]
fn exim() {
    let r = load("exim.eml");
    assert_eq!(r.format, Some(BounceFormat::Exim));
    assert_eq!(
        triples(&r),
        vec![t("kate@remote.test", "5.2.2", Category::QuotaIssues)]
    );
    assert_eq!(
        r.recipients[0].diagnostic,
        "552 5.2.2 Mailbox full: quota exceeded for this user"
    );
    assert_eq!(
        r.recipients[0].remote_mta.as_deref(),
        Some("mx2.remote.test")
    );
    assert_eq!(
        r.original_message_id.as_deref(),
        Some("<exim-orig-1@sender.test>")
    );
}

#[test]
fn exim_two_recipients_expiry_and_content() {
    let r = load("exim-multi.eml");
    assert_eq!(
        triples(&r),
        vec![
            t("sam@stale.test", "5.0.0", Category::MessageExpired),
            t("tina@strict.test", "5.7.1", Category::ContentRelated),
        ]
    );
    assert_eq!(r.recipients[0].diagnostic, "retry timeout exceeded");
    assert_eq!(
        r.recipients[1].remote_mta.as_deref(),
        Some("mx.strict.test")
    );
    assert_eq!(
        r.original_headers.get("x-job-id").map(String::as_str),
        Some("exim-job-2")
    );
}

#[test]
fn sendmail() {
    let r = load("sendmail.eml");
    assert_eq!(r.format, Some(BounceFormat::Sendmail));
    assert_eq!(
        triples(&r),
        vec![t("leo@old.test", "5.7.1", Category::RelayingIssues)]
    );
    assert_eq!(r.recipients[0].remote_mta.as_deref(), Some("mx.old.test"));
}

#[test]
fn qmail() {
    let r = load("qmail.eml");
    assert_eq!(r.format, Some(BounceFormat::Qmail));
    assert_eq!(
        triples(&r),
        vec![
            t("mona@deep.test", "5.1.1", Category::BadMailbox),
            t("nick@deep.test", "5.1.1", Category::BadMailbox),
        ]
    );
    assert!(r.recipients[0]
        .diagnostic
        .starts_with("550 5.1.1 <mona@deep.test>... No such user"));
    assert_eq!(
        r.original_headers.get("x-job-id").map(String::as_str),
        Some("qm-job")
    );
}

#[test]
fn exchange() {
    let r = load("exchange-ndr.eml");
    assert_eq!(r.format, Some(BounceFormat::Exchange));
    assert_eq!(r.reporting_mta.as_deref(), Some("DM6PR01MB.contoso.test"));
    assert_eq!(
        triples(&r),
        vec![t("olga@contoso.test", "5.1.10", Category::BadMailbox)]
    );
    assert_eq!(
        r.recipients[0].remote_mta.as_deref(),
        Some("mx.contoso.test")
    );
    assert!(r.recipients[0]
        .diagnostic
        .starts_with("550 5.1.10 RESOLVER.ADR.RecipientNotFound"));
    assert_eq!(
        r.original_message_id.as_deref(),
        Some("<ex-orig-5@sender.test>")
    );
}

#[test]
fn gmail() {
    let r = load("gmail-dsn.eml");
    assert_eq!(r.format, Some(BounceFormat::Gmail));
    assert_eq!(
        triples(&r),
        vec![t("paul@gmail.test", "5.1.1", Category::BadMailbox)]
    );
    assert!(r.recipients[0].diagnostic.ends_with("- gsmtp"));
    assert_eq!(
        r.original_message_id.as_deref(),
        Some("<gm-orig@sender.test>")
    );
}

#[test]
fn yahoo() {
    let r = load("yahoo.eml");
    assert_eq!(r.format, Some(BounceFormat::Yahoo));
    assert_eq!(
        triples(&r),
        vec![t("quinn@yahoo.test", "5.0.0", Category::InactiveMailbox)]
    );
    assert!(r.recipients[0].diagnostic.starts_with("554 30 Sorry"));
}

#[test]
fn non_bounce_has_no_recipients() {
    let r = load("not-a-bounce.eml");
    assert_eq!(r.format, None);
    assert!(r.recipients.is_empty());
    assert!(r
        .reason
        .as_deref()
        .is_some_and(|s| s.contains("not a recognised bounce")));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(parse(b"", &Classifier::default()).is_err());
    // Whatever mail-parser makes of binary junk, no recipient comes out of it.
    let junk = parse(b"\x00\x01\x02 no headers", &Classifier::default());
    assert!(junk.map_or(true, |r| r.recipients.is_empty() && r.reason.is_some()));
}

#[test]
fn report_over_all_fixtures() {
    let dir = fixtures();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    paths.sort();
    let (text, ok) = classify_files_report(
        &paths,
        &Classifier::default(),
        ReportOptions {
            json: false,
            explain: false,
        },
    );
    assert!(ok);
    let prefix = format!("{}/", dir.display());
    let text = text.replace(&prefix, "");
    insta::assert_snapshot!("classify_report_text", text);
    let (json, _) = classify_files_report(
        &paths,
        &Classifier::default(),
        ReportOptions {
            json: true,
            explain: false,
        },
    );
    let json = json.replace(&prefix, "");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(text.lines().count()));
}

#[test]
fn report_flags_unreadable_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.eml");
    let (text, ok) = classify_files_report(
        &[missing],
        &Classifier::default(),
        ReportOptions {
            json: false,
            explain: false,
        },
    );
    assert!(!ok);
    assert!(text.contains("cannot read"));
}
