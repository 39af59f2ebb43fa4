//! Unit tests of the classifier: set order, conditions, reply parsing, verdict cache.
use super::*;

fn rules(list: &[(&str, &str)]) -> Vec<CategoryRule> {
    list.iter()
        .map(|(p, c)| CategoryRule {
            pattern: Pattern::new(p).expect("a valid pattern"),
            category: c.to_string(),
            span: crate::config::diag::Span {
                file: "t.conf".into(),
                line: 1,
                col: 1,
            },
        })
        .collect()
}

/// Config rules `regex` takes run as one set, a look-around rule on its own in its place:
/// the first matching rule in config order still wins, case rules included.
#[test]
fn set_and_fancy_config_rules_keep_their_order() {
    let c = Classifier::with_rules(&rules(&[
        ("user (?!unknown)", "bad-mailbox"),
        ("user", "policy-related"),
        ("(?-i)QUOTA", "quota-issues"),
        ("quota", "spam-related"),
        ("", "no-answer-from-host"),
    ]))
    .expect("a classifier");
    let in_set: Vec<_> = c.rules.iter().map(|r| r.in_set).collect();
    assert_eq!(in_set, [None, Some(0), Some(1), Some(2), None]);
    let cat = |t: &str| c.classify_reply(t).category;
    assert_eq!(cat("550 5.1.1 user gone"), Category::BadMailbox);
    assert_eq!(cat("550 5.1.1 user unknown"), Category::PolicyRelated);
    assert_eq!(cat("452 4.2.2 USER UNKNOWN"), Category::PolicyRelated);
    assert_eq!(cat("452 4.2.2 QUOTA exceeded"), Category::QuotaIssues);
    assert_eq!(cat("452 4.2.2 Quota exceeded"), Category::SpamRelated);
    // Neither a config rule nor a default: the catch-all.
    assert_eq!(
        Classifier::default().classify_reply("451 zzz").category,
        Category::Other
    );
    assert_eq!(cat("451 zzz"), Category::NoAnswerFromHost);
}

/// A diagnostic is matched with its white space collapsed, whether or not it needed it.
#[test]
fn white_space_is_collapsed_before_matching() {
    let c = Classifier::with_rules(&rules(&[("^5\\.0\\.0; over quota$", "quota-issues")]))
        .expect("a classifier");
    for text in ["over quota", "  over \t quota \r\n", "over\u{a0}quota"] {
        let got = c.classify_status("5.0.0", text);
        assert_eq!(got.matched_text, "5.0.0; over quota", "{text:?}");
        assert_eq!(got.category, Category::QuotaIssues, "{text:?}");
    }
}

#[test]
fn reply_parsing() {
    let r = SmtpReply::parse("550-5.1.1 first\r\n550 5.1.1 second");
    assert_eq!(r.code, Some(550));
    assert_eq!(r.enhanced.as_deref(), Some("5.1.1"));
    assert_eq!(r.text, "550-5.1.1 first second");
    let r = SmtpReply::parse("554 delivery error: dd");
    assert_eq!(r.status(), "5.0.0");
    assert_eq!(SmtpReply::parse("connection refused").status(), "");
}

#[test]
fn remembered_verdicts_are_the_rules_verdicts() {
    let c = Classifier::default();
    let texts = [
        "550 5.1.1 <a@b>: user unknown",
        "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred",
        "452 4.2.2 mailbox full",
        "something else entirely",
    ];
    let first: Vec<Classification> = texts.iter().map(|t| c.classify_reply(t)).collect();
    let again: Vec<Classification> = texts.iter().map(|t| c.classify_reply(t)).collect();
    assert_eq!(first, again);
    let fresh: Vec<Classification> = texts
        .iter()
        .map(|t| Classifier::default().classify_reply(t))
        .collect();
    assert_eq!(first, fresh);
    assert_eq!(first[0].category, Category::BadMailbox);
    assert_eq!(first[2].category, Category::QuotaIssues);
}

#[test]
fn enhanced_search() {
    assert_eq!(
        find_enhanced_status("smtp; 550 5.7.26 blocked"),
        Some("5.7.26")
    );
    assert_eq!(find_enhanced_status("version 1.5.2.3 here"), None);
    assert_eq!(find_enhanced_status("no code"), None);
}

#[test]
fn all_defaults_compile_and_names_round_trip() {
    let c = Classifier::default();
    assert_eq!(c.len(), DEFAULT_RULES.len());
    for cat in ALL_CATEGORIES {
        assert_eq!(cat.as_str().parse::<Category>(), Ok(cat));
    }
    assert!(ALL_CATEGORIES
        .iter()
        .map(|c| c.as_str())
        .eq(crate::config::model::BOUNCE_CATEGORIES.iter().copied()));
}

#[test]
fn set_order_equals_sequential_order() {
    let c = Classifier::default();
    let seq: Vec<Pattern> = DEFAULT_RULES
        .iter()
        .map(|d| Pattern::new(d.regex).expect("default rules are valid config regexes"))
        .collect();
    for text in [
        "550 5.1.1 user unknown",
        "550 5.7.1 likely unsolicited mail",
        "421 4.7.0 [TSS04] temporarily deferred",
        "451 4.4.7 expired",
        "connection refused",
        "250 2.0.0 ok",
        "599 9.9.9 weird",
        "552 5.2.2 over quota",
    ] {
        let got = c.classify_reply(text);
        // A reply with no command and no expiry: the rules without conditions, in order.
        let want = seq
            .iter()
            .zip(DEFAULT_RULES.iter())
            .position(|(p, d)| d.when.holds(Situation::default()) && p.is_match(&got.matched_text))
            .map_or(RuleOrigin::Fallback, RuleOrigin::Default);
        assert_eq!(got.origin, want, "{text}");
    }
}

/// The command answered and an expiry change the verdict only through the rules that say so.
#[test]
fn command_and_expiry_conditions() {
    let c = Classifier::default();
    let f = |status, diagnostic, command, gave_up| {
        c.classify_failure(&Failure {
            status,
            diagnostic,
            command,
            gave_up,
        })
        .category
    };
    // A bare 550: unknown user to RCPT, the sender to MAIL, a block at connect.
    assert_eq!(f("", "550 no", Some("RCPT"), true), Category::BadMailbox);
    assert_eq!(f("", "550 no", Some("MAIL"), true), Category::InvalidSender);
    // "Does not exist" is about the sender when MAIL FROM drew it, the recipient after RCPT TO.
    let gone = "553 5.1.0 a.example does not exist";
    assert_eq!(f("", gone, Some("MAIL"), true), Category::InvalidSender);
    assert_eq!(f("", gone, Some("RCPT"), true), Category::BadMailbox);
    assert_eq!(f("", "554 go", Some("CONN"), true), Category::PolicyRelated);
    assert_eq!(f("", "550 no", None, true), Category::Other);
    // The command read from Postfix's words when the bounce gives no field.
    let said = "host x[192.0.2.1] said: 550 no (in reply to RCPT TO command)";
    assert_eq!(f("5.0.0", said, None, true), Category::BadMailbox);
    // An expired message: the last reply's reason where there is one, else message-expired.
    assert_eq!(
        f("4.2.2", "452 4.2.2 mailbox full", None, true),
        Category::QuotaIssues
    );
    assert_eq!(
        f("4.0.0", "451 temporary failure", None, true),
        Category::MessageExpired
    );
    // A delay notice naming no cause: the message waits to expire (sisimai); a reply: other.
    assert_eq!(
        f("4.0.0", "451 temporary failure", None, false),
        Category::MessageExpired
    );
    let reply = c.classify_status("4.0.0", "451 temporary failure");
    assert_eq!(reply.category, Category::Other);
    let timeout = "connect to x[192.0.2.1]:25: Connection timed out";
    assert_eq!(f("4.4.1", timeout, None, true), Category::MessageExpired);
    assert_eq!(f("4.4.1", timeout, None, false), Category::NoAnswerFromHost);
    let tss = "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred";
    assert_eq!(f("4.7.0", tss, None, true), Category::PolicyRelated);
}

/// `describe` names the table line, regex and source of a built-in rule.
#[test]
fn describe_names_the_rule() {
    let c = Classifier::default();
    let got = c.classify_reply("550 5.1.1 user unknown");
    let text = c.describe(got.origin);
    assert!(text.starts_with("built-in rules.tsv line "), "{text}");
    assert!(
        text.contains("user unknown") && text.contains("source: "),
        "{text}"
    );
    assert_eq!(c.describe(RuleOrigin::Fallback), "no rule matched");
}

#[test]
fn diag_type_strip() {
    assert_eq!(strip_diag_type("smtp; 550 x"), "550 x");
    assert_eq!(
        strip_diag_type("X-Postfix; host not found"),
        "host not found"
    );
    assert_eq!(strip_diag_type("550 5.1.1 a; b"), "550 5.1.1 a; b");
}

/// A synchronous reply is not a delay notice: a 4.x.x naming no cause stays `other` (or what its
/// status names), never `message-expired`; the command still counts.
#[test]
fn sync_replies_are_not_delay_notices() {
    let c = Classifier::default();
    let sync = |st, d, cmd| c.classify_sync_reply(st, d, cmd).category;
    let delay = |st, d| {
        c.classify_failure(&Failure {
            status: st,
            diagnostic: d,
            command: Some("RCPT"),
            gave_up: false,
        })
        .category
    };
    assert_eq!(
        sync("4.0.0", "451 Requested action aborted", "RCPT"),
        Category::Other
    );
    assert_eq!(
        delay("4.0.0", "451 Requested action aborted"),
        Category::MessageExpired
    );
    let lookup = "451 4.3.0 Temporary lookup failure";
    assert_eq!(sync("4.3.0", lookup, "RCPT"), Category::BadConfiguration);
    assert_eq!(sync("", "550 no", "RCPT"), Category::BadMailbox);
    assert_eq!(sync("", "550 no", "MAIL"), Category::InvalidSender);
    assert_eq!(sync("", "554 go", "CONN"), Category::PolicyRelated);
    let timeout = "421 4.4.1 Connection timed out";
    assert_eq!(sync("", timeout, "CONN"), Category::NoAnswerFromHost);
}

/// Only the first 16 KB of a diagnostic are read, cut on a character boundary: a huge text costs
/// no more than that, and the words at its head still decide.
#[test]
fn huge_diagnostics_are_read_in_their_head() {
    let c = Classifier::default();
    let text = format!("550 5.1.1 user unknown {}", "é".repeat(20_000));
    let got = c.classify_status("", &text);
    assert_eq!(got.category, Category::BadMailbox);
    assert!(got.matched_text.len() <= "5.1.1; ".len() + MAX_TEXT);
    assert!(got.matched_text.len() > MAX_TEXT - 2);
}
