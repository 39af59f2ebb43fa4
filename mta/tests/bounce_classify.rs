//! Classification of real reply texts (reference part B, RFC 3463, common MTA wording) and config
//! rules taking precedence over the defaults.

use mta::bounce::classify::{Category, Classifier, RuleOrigin, DEFAULT_RULES};
use mta::bounce::classify_reply_report;

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

#[test]
fn gmail_reference_texts() {
    check(&[
        ("421 4.7.28 Gmail has detected an unusual rate of unsolicited email originating from your IP address 127.0.0.9. To protect our users from spam, email sent from your IP address has been temporarily rate limited. - gsmtp", PolicyRelated),
        ("421 4.7.0 This message is suspicious due to the very low reputation of the sending IP address. - gsmtp", PolicyRelated),
        ("421 4.7.0 Try again later, closing connection. - gsmtp", PolicyRelated),
        ("450 4.2.1 The user you are trying to contact is receiving email too quickly. Please resend your message at a later time. - gsmtp", PolicyRelated),
        ("550 5.1.1 The email account that you tried to reach does not exist. Please double-check the recipient's email address for typos or unnecessary spaces. - gsmtp", BadMailbox),
        ("452 4.2.2 The recipient's inbox is out of storage space. - gsmtp", QuotaIssues),
        ("552 5.2.2 The recipient's inbox is out of storage space and inactive. - gsmtp", QuotaIssues),
        ("550 5.2.1 The email account that you tried to reach is inactive. - gsmtp", InactiveMailbox),
        ("550 5.7.26 This email has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM. - gsmtp", PolicyRelated),
        ("550 5.7.26 Unauthenticated email from sender.test is not accepted due to domain's DMARC policy. - gsmtp", PolicyRelated),
        ("421 4.7.27 Your email has been rate limited because SPF authentication didn't pass for this message. - gsmtp", PolicyRelated),
        ("550 5.7.27 This mail has been blocked because SPF authentication didn't pass for this message. - gsmtp", PolicyRelated),
        ("421 4.7.30 Your email has been rate limited because DKIM authentication didn't pass for this message. - gsmtp", PolicyRelated),
        ("421 4.7.0 TLS required for RCPT domain, closing connection. - gsmtp", PolicyRelated),
        ("421 4.7.29 Your email has been rate limited because this message wasn't sent over a TLS connection. - gsmtp", PolicyRelated),
        ("550 5.7.29 This mail has been blocked because this message wasn't sent over a TLS connection. - gsmtp", PolicyRelated),
        ("550 5.7.25 The IP address sending this message doesn't have a PTR record setup. - gsmtp", PolicyRelated),
        ("552 5.3.4 Your message exceeded Google's message size limits. - gsmtp", ContentRelated),
        ("550 5.7.1 Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked. - gsmtp", SpamRelated),
    ]);
}

#[test]
fn yahoo_reference_texts() {
    check(&[
        ("421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", PolicyRelated),
        ("421 4.7.0 [TS01] Messages from 192.0.2.25 temporarily deferred", PolicyRelated),
        ("421 4.7.0 [GL01] Message from 192.0.2.25 temporarily deferred", PolicyRelated),
        ("553 5.7.2 [TSS09] All messages from 192.0.2.25 will be permanently deferred; Retrying will NOT succeed.", PolicyRelated),
        ("553 5.7.1 [BL23] Connections not accepted from IP addresses on Spamhaus XBL", PolicyRelated),
        ("554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [-5] - mta123.mail.bf1.yahoo.com", BadMailbox),
        ("554 30 Sorry, your message to x@yahoo.com cannot be delivered. This mailbox is disabled (554.30)", InactiveMailbox),
        ("550 5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo requires all senders to authenticate with either SPF or DKIM.", PolicyRelated),
        ("554 Message not allowed - [PH01] Email not accepted for policy reasons.", PolicyRelated),
        ("421 Max message per connection reached, closing transmission channel", PolicyRelated),
        ("450 User is receiving mail too quickly", PolicyRelated),
    ]);
}

#[test]
fn outlook_reference_texts() {
    check(&[
        ("421 RP-001 The mail server IP connecting to Outlook.com server has exceeded the rate limit allowed. Reason for rate limitation is related to IP/domain reputation.", PolicyRelated),
        ("421 RP-002 The mail server IP connecting to Outlook.com server has exceeded the rate limit allowed on this connection.", PolicyRelated),
        ("421 RP-003 The mail server IP connecting to Outlook.com server has exceeded the connection limit allowed.", PolicyRelated),
        ("451 4.7.650 The mail server [127.0.0.9] has been temporarily rate limited due to IP reputation. For e-mail delivery information, see https://postmaster.live.com (S775)", PolicyRelated),
        ("451 4.7.500 Server busy. Please try again later from [127.0.0.9]. (AS761)", PolicyRelated),
        ("550 5.7.1 Unfortunately, messages from [127.0.0.9] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).", PolicyRelated),
        ("550 SC-001 (BAY004-MC1F9) Unfortunately, messages from 127.0.0.9 weren't sent. Mail rejected by Outlook.com for policy reasons.", PolicyRelated),
        ("550 DY-001 (COL0-MC5-F28) Unfortunately, messages from 127.0.0.9 weren't sent.", PolicyRelated),
        ("550 OU-001 (SNT004-MC1F43) Unfortunately, messages from 127.0.0.9 weren't sent.", PolicyRelated),
        ("550 SC-004 Mail rejected by Outlook.com because of a high number of complaints", PolicyRelated),
        ("550 5.7.515 Access denied, sending domain sender.test does not meet the required authentication level.", PolicyRelated),
        ("550 5.5.0 Requested action not taken: mailbox unavailable", BadMailbox),
        ("552 5.2.2 mailbox full", QuotaIssues),
        ("552 5.3.4 Message size exceeds fixed maximum message size", ContentRelated),
    ]);
}

/// Exchange Online NDR codes (Microsoft's public "Email non-delivery reports and SMTP errors in
/// Exchange Online" table; reply wording as listed there).
#[test]
fn exchange_online_texts() {
    check(&[
        ("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", BadMailbox),
        ("550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", BadMailbox),
        ("550 5.4.1 Relay Access Denied", RelayingIssues),
        ("550 5.1.8 Access denied, bad outbound sender", InvalidSender),
        ("550 5.4.14 Hop count exceeded - possible mail loop ATTR34", RoutingErrors),
        ("554 5.4.14 Routing loop detected", RoutingErrors),
        ("550 5.4.300 Message expired", MessageExpired),
        ("450 4.4.7 Message expired", MessageExpired),
        ("550 5.2.121 Recipient's per hour message receive limit from specific sender exceeded", PolicyRelated),
        ("550 5.2.122 Recipient's per hour message receive limit exceeded", PolicyRelated),
        ("550 5.1.90 Your message can't be sent because you've reached your daily limit for message recipients", PolicyRelated),
        ("451 4.7.500 Access denied, please try again later", PolicyRelated),
        ("550 5.0.350 Requested action not taken: policy violation detected (AS345)", PolicyRelated),
        ("550 5.6.11 SMTPSEND.BareLinefeedsAreIllegal; message contains bare linefeeds", ContentRelated),
        ("550 5.7.1 Delivery not authorized, message refused", PolicyRelated),
        ("452 4.5.3 Too many recipients", PolicyRelated),
    ]);
}

#[test]
fn icloud_reference_texts() {
    check(&[
        ("421 4.7.1 Messages to x@icloud.com deferred due to excessive volume. Try again later - https://support.apple.com/en-us/HT204137", PolicyRelated),
        ("550 5.7.1 [CS01] Message rejected due to local policy", SpamRelated),
        ("552 5.2.2 <x@icloud.com>: user is over quota", QuotaIssues),
        ("550 5.1.1 <x@icloud.com>: inactive email address", InactiveMailbox),
        ("554 5.7.1 [HME1] This message was blocked for failing both SPF and DKIM authentication checks", PolicyRelated),
        ("550 5.7.1 Mail from IP 127.0.0.9 was rejected due to listing in Spamhaus SBL.", PolicyRelated),
    ]);
}

#[test]
fn categories_from_common_mta_texts() {
    check(&[
        ("554 5.7.1 <x@y.test>: Relay access denied", RelayingIssues),
        ("550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain", RelayingIssues),
        ("550 5.7.1 Relaying denied", RelayingIssues),
        ("553 5.1.8 <bad@nowhere.test>: Sender address rejected: Domain not found", InvalidSender),
        ("501 5.1.7 Bad sender address syntax", InvalidSender),
        ("550 5.1.8 Access denied", InvalidSender),
        ("554 5.7.1 Message rejected: virus found (Eicar-Test-Signature)", VirusRelated),
        ("550 5.7.0 Message contains malware", VirusRelated),
        ("554 5.6.0 Message is not RFC 5322 compliant", ContentRelated),
        ("550 5.6.1 Unsupported media type", ContentRelated),
        ("451 4.4.7 Message delayed too long, giving up", MessageExpired),
        ("554 5.4.7 Delivery time expired", MessageExpired),
        ("connect to mx.example.test[127.0.0.5]:25: Connection refused", BadConnection),
        ("lost connection with mx.example.test[127.0.0.5] while sending RCPT TO", BadConnection),
        ("conversation with mx.example.test[127.0.0.5] timed out while receiving the initial server greeting", NoAnswerFromHost),
        ("Host or domain name not found. Name service error for name=nowhere.test type=MX: Host not found", BadDomain),
        ("DNS lookup failed: NXDOMAIN for nowhere.test", BadDomain),
        ("556 5.1.10 Recipient address has null MX", BadDomain),
        ("550 5.1.2 Bad destination system address", BadDomain),
        ("550 5.1.1 <x@y.test>: Recipient address rejected: User unknown in local recipient table", BadMailbox),
        ("550 No such user here", BadMailbox),
        ("552 5.2.2 Quota exceeded (mailbox for user is full)", QuotaIssues),
        ("450 4.2.2 Over quota", QuotaIssues),
        ("550 5.2.1 Mailbox disabled, not accepting messages", InactiveMailbox),
        ("554 5.4.6 Hop count exceeded - possible mail loop", RoutingErrors),
        ("550 5.4.4 Unable to route", RoutingErrors),
        ("503 5.5.1 Bad sequence of commands", ProtocolErrors),
        ("500 5.5.2 Syntax error, command unrecognized", ProtocolErrors),
        ("452 4.5.3 Too many recipients", PolicyRelated),
        ("554 5.3.5 System incorrectly configured", BadConfiguration),
        ("250 2.0.0 OK queued as 12345", Success),
        ("550 5.7.1 Message rejected as spam by Content Filtering", SpamRelated),
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
    let text = classify_reply_report("550 5.1.1 user unknown", &c, false);
    assert!(
        text.starts_with("5.1.1\tbad-mailbox\tdefault rule "),
        "{text}"
    );
    let json = classify_reply_report("552 5.2.2 over quota", &c, true);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["category"], "quota-issues");
    assert_eq!(v["status"], "5.2.2");
}

#[test]
fn every_default_rule_documents_its_source() {
    for r in DEFAULT_RULES {
        assert!(r.source.len() > 10, "rule {} lacks a source", r.regex);
    }
}
