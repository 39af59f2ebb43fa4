//! Classification rules: edge cases, PowerMTA-shaped status rules, config rules taking precedence
//! over the defaults, report formats. The corpus of real reply lines is tests/bounce_corpus.rs.

use mta::bounce::classify::{Category, Classifier, RuleOrigin, DEFAULT_RULES};
use mta::bounce::{classify_reply_report, ReportOptions};

fn cat(reply: &str) -> Category {
    Classifier::default().classify_reply(reply).category
}

fn check(cases: &[(&str, Category)]) {
    let c = Classifier::default();
    let mut bad = Vec::new();
    for (reply, want) in cases {
        let got = c.classify_reply(reply);
        if got.category != *want {
            bad.push(format!(
                "{reply}\n   want {want}, got {} via {:?}",
                got.category, got.origin
            ));
        }
    }
    assert!(bad.is_empty(), "misclassified:\n{}", bad.join("\n"));
}

use Category::*;

/// Edge cases beside the corpus (fixtures/bounce-corpus/replies.tsv holds the real reply lines):
/// wordings without a status, odd codes, our own texts.
#[test]
fn categories_from_common_mta_texts() {
    check(&[
        ("550 5.1.8 Access denied", InvalidSender),
        (
            "554 5.7.1 Message rejected: virus found (Eicar-Test-Signature)",
            VirusRelated,
        ),
        ("550 5.7.0 Message contains malware", VirusRelated),
        ("550 5.6.1 Unsupported media type", ContentRelated),
        ("DNS lookup failed: NXDOMAIN for nowhere.test", BadDomain),
        ("450 4.2.2 Over quota", QuotaIssues),
        (
            "550 5.7.1 Message rejected as spam by Content Filtering",
            SpamRelated,
        ),
        ("451 4.3.0 Temporary local problem", BadConfiguration),
        ("599 9.9.9 weird", Other),
    ]);
}

#[test]
fn plain_status_rules_follow_pmta_stock_shapes() {
    let c = Classifier::default();
    for (status, want) in [
        ("5.1.1", BadMailbox),
        ("5.1.3", BadMailbox),
        ("5.1.2", BadDomain),
        ("5.1.7", InvalidSender),
        ("5.2.1", InactiveMailbox),
        ("5.2.2", QuotaIssues),
        ("5.3.4", ContentRelated),
        ("4.4.1", NoAnswerFromHost),
        ("4.4.2", BadConnection),
        ("4.4.7", MessageExpired),
        ("5.5.3", PolicyRelated),
        ("5.5.4", ProtocolErrors),
        ("5.6.3", ContentRelated),
        ("5.7.1", PolicyRelated),
        ("5.7.7", ContentRelated),
        ("2.0.0", Success),
    ] {
        assert_eq!(
            c.classify_status(status, "").category,
            want,
            "status {status}"
        );
    }
    // An empty status is taken from the diagnostic.
    let got = c.classify_status("", "smtp; 550 5.2.2 zzz");
    assert_eq!((got.status.as_str(), got.category), ("5.2.2", QuotaIssues));
    assert_eq!(got.matched_text, "5.2.2; smtp; 550 5.2.2 zzz");
}

#[test]
fn config_rules_come_before_defaults() {
    let cfg = "<bounce-category-patterns>\n  /likely unsolicited/ policy-related\n  /^5\\.1\\.1;/ other\n  /(?-i)CaseSensitive/ virus-related\n</bounce-category-patterns>\n";
    let loaded = mta::config::load_str("test.conf", cfg);
    assert_eq!(
        loaded.config.bounce_category_patterns.len(),
        3,
        "{:?}",
        loaded.diagnostics
    );
    let c = Classifier::from_config(&loaded.config).expect("classifier");
    assert_eq!(c.len(), 3 + DEFAULT_RULES.len());
    let spam =
        "550 5.7.1 Our system has detected that this message is likely unsolicited mail. - gsmtp";
    assert_eq!(cat(spam), SpamRelated);
    let got = c.classify_reply(spam);
    assert_eq!(
        (got.category, got.origin),
        (PolicyRelated, RuleOrigin::Config(0))
    );
    assert_eq!(c.classify_reply("550 5.1.1 no such user").category, Other);
    assert_eq!(
        c.classify_reply("550 5.1.1 no such user").origin,
        RuleOrigin::Config(1)
    );
    // `(?-i)` makes a rule case-sensitive.
    assert_eq!(c.classify_reply("550 CaseSensitive").category, VirusRelated);
    assert_ne!(c.classify_reply("550 casesensitive").category, VirusRelated);
    // Rules not written in the config fall through to the defaults.
    assert_eq!(
        c.classify_reply("552 5.2.2 mailbox full").category,
        QuotaIssues
    );
}

#[test]
fn unknown_category_in_rules_is_an_error() {
    let rule = mta::config::model::CategoryRule {
        pattern: mta::config::values::Pattern::new("x").expect("regex"),
        category: "nonsense".into(),
        span: mta::config::Span::new(&std::sync::Arc::from("t.conf"), 1, 1),
    };
    assert!(Classifier::with_rules(&[rule]).is_err());
}

#[test]
fn reply_report_formats() {
    let c = Classifier::default();
    let text = classify_reply_report(
        "550 5.1.1 user unknown",
        &c,
        ReportOptions {
            json: false,
            explain: false,
        },
    );
    assert!(
        text.starts_with("5.1.1\tbad-mailbox\tdefault rule "),
        "{text}"
    );
    let json = classify_reply_report(
        "552 5.2.2 over quota",
        &c,
        ReportOptions {
            json: true,
            explain: false,
        },
    );
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["category"], "quota-issues");
    assert_eq!(v["status"], "5.2.2");
}

#[test]
fn every_default_rule_documents_its_source() {
    for r in DEFAULT_RULES.iter() {
        assert!(r.source.len() > 10, "rule {} lacks a source", r.regex);
    }
}

/// One code path: a permanent reply the MTA gets at RCPT/DATA (its `b` record) and the same reply
/// quoted by a remote bounce for that command (an `rb` record) get the same category, for every
/// 5xx line of the real-reply corpus.
#[test]
fn synchronous_and_bounced_replies_agree() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/bounce-corpus/replies.tsv");
    let text = std::fs::read_to_string(&path).expect("replies.tsv");
    let c = Classifier::default();
    let mut n = 0;
    let mut bad = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(reply) = line.split('\t').nth(1) else {
            continue;
        };
        if !reply.starts_with('5') {
            continue;
        }
        for command in ["RCPT", "DATA"] {
            let status = mta::bounce::classify::SmtpReply::parse(reply).status();
            let sync = c.classify_sync_reply(&status, reply, command);
            let bounced = c.classify_failure(&mta::bounce::Failure {
                status: &status,
                diagnostic: &format!("smtp; {reply}"),
                command: Some(command),
                gave_up: true,
            });
            n += 1;
            if sync.category != bounced.category {
                bad.push(format!(
                    "{command} {reply}: sync {} bounce {}",
                    sync.category, bounced.category
                ));
            }
        }
    }
    assert!(n > 200, "{n} replies compared");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
