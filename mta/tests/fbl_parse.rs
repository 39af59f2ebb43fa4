//! Feedback reports in the forms providers send (fixtures/arf, written for these tests): each parses
//! to the right fields; a malformed one is unparseable with a reason; a report we build is read by
//! Python's `email` package as a multipart/report with a message/feedback-report part.

use mta::fbl::{build_arf, parse, ArfInput};
use std::path::Path;
use std::process::Command;

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/arf")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn standard_arf() {
    let r = parse(&fixture("rfc5965-abuse.eml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.format, "arf");
    assert_eq!(r.feedback_type, "abuse");
    assert_eq!(r.user_agent, "SomeGenerator/1.0");
    assert_eq!(r.original_mail_from, "bounces@sender.test");
    assert_eq!(r.original_rcpt_to, "reader@isp.example");
    assert_eq!(r.reporting_mta, "mail.isp.example");
    assert_eq!(r.source_ip, "127.0.0.2");
    assert_eq!(r.reported_domain, vec!["sender.test".to_string()]);
    assert_eq!(
        r.message_id.as_deref(),
        Some("<8787KJKJ3K4J3K4J3K4J3.mail@sender.test>")
    );
    assert_eq!(r.job_id.as_deref(), Some("weekly-2026-10"));
    assert!(r.arrival_date.is_some());
}

#[test]
fn microsoft_jmrp_without_a_report_part() {
    let r = parse(&fixture("outlook-jmrp.eml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.format, "jmrp");
    assert_eq!(r.feedback_type, "abuse");
    assert_eq!(r.original_rcpt_to, "complainer@hotmail.example");
    assert_eq!(r.original_mail_from, "bounces@sender.test");
    assert_eq!(r.reporting_mta, "hotmail.example");
    assert_eq!(r.message_id.as_deref(), Some("<offer-42@sender.test>"));
    assert_eq!(r.job_id.as_deref(), Some("offers-nov"));
}

#[test]
fn yahoo_cfl_with_headers_only() {
    let r = parse(&fixture("yahoo-cfl.eml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (r.format.as_str(), r.feedback_type.as_str()),
        ("arf", "abuse")
    );
    assert_eq!(r.user_agent, "Yahoo!-Mail-Feedback/2.0");
    assert_eq!(r.original_rcpt_to, "yuser@yahoo.example");
    assert_eq!(r.source_ip, "127.0.0.3");
    assert_eq!(r.message_id.as_deref(), Some("<w-77@sender.test>"));
    assert_eq!(r.job_id.as_deref(), Some("weekly-47"));
}

#[test]
fn aol_redacted_recipient_is_unknown_but_the_message_is_matched() {
    let r = parse(&fixture("aol-redacted.eml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.original_rcpt_to, "", "redacted");
    assert_eq!(r.message_id.as_deref(), Some("<a-9@sender.test>"));
    assert_eq!(r.job_id.as_deref(), Some("weekly-47"));
    assert_eq!(r.reporting_mta, "mail.aol.example");
}

#[test]
fn malformed_report_is_unparseable_with_a_reason() {
    let e = parse(&fixture("malformed.eml")).err();
    let reason = e.map(|e| e.0).unwrap_or_default();
    assert!(
        reason.contains("no message/feedback-report part"),
        "{reason}"
    );
    let rec = mta::fbl::unparseable_record(
        &mta::fbl::Unparseable(reason.clone()),
        "reports@broken.example",
        1,
    );
    assert_eq!(rec.feedback_type, "unparseable");
    assert_eq!(rec.dsn_diag, reason);
}

#[test]
fn built_reports_are_read_by_python_email() {
    let arf = build_arf(&ArfInput {
        feedback_type: "abuse",
        user_agent: "mtasim-provider/1.0",
        reporting_mta: "mx.yahoo.test",
        original_mail_from: "bounces@sender.test",
        original_rcpt_to: "someone@yahoo.test",
        source_ip: "127.0.0.2".parse().ok(),
        arrival_date: 1_790_000_000,
        original:
            "From: a@sender.test\r\nTo: someone@yahoo.test\r\nMessage-ID: <x1@sender.test>\r\n\r\n",
        from: "fbl@yahoo.test",
        to: "fbl@sender.test",
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("arf.eml");
    std::fs::write(&path, &arf).unwrap_or_else(|e| panic!("{e}"));
    let script = r#"
import email, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
assert m.get_content_type() == 'multipart/report', m.get_content_type()
assert m.get_param('report-type') == 'feedback-report'
parts = [p.get_content_type() for p in m.walk()]
assert 'message/feedback-report' in parts, parts
fr = [p for p in m.walk() if p.get_content_type() == 'message/feedback-report'][0]
payload = fr.get_payload()
text = payload if isinstance(payload, str) else ''.join(str(x) for x in payload)
fields = {}
for line in text.replace('\r\n', '\n').split('\n'):
    if ':' in line:
        k, v = line.split(':', 1)
        fields[k.strip().lower()] = v.strip()
assert fields.get('feedback-type') == 'abuse', fields
assert 'someone@yahoo.test' in fields.get('original-rcpt-to', ''), fields
print('ok', parts)
"#;
    match Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
    {
        Ok(out) => assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("ok"),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            assert!(
                std::env::var("REQUIRE_ORACLES").as_deref() != Ok("1"),
                "python3: {e}"
            );
            eprintln!("skipping: python3 not available ({e})");
        }
    }
    // And our parser reads it back.
    let r = parse(arf.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.original_rcpt_to, "someone@yahoo.test");
}
