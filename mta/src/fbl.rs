//! Feedback-loop reports: ARF (RFC 5965, through mail-auth's parser) and the common non-standard
//! forms, turned into `f` accounting records. Microsoft's JMRP sends the complained-about message as
//! a `message/rfc822` attachment with no `message/feedback-report` part; AOL redacts the recipient;
//! Yahoo's CFL is plain ARF. The original message (or its headers) gives the Message-ID and our
//! tracking headers (`X-Job`), so a complaint can be matched to what was sent. A report that cannot be
//! read is recorded as `unparseable` with the reason, never dropped.

use crate::acct::{Record, RecordType};
use mail_auth::report::{Feedback, FeedbackType};
use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::Serialize;

/// What one report says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `arf` or `jmrp`.
    pub format: String,
    /// `abuse`, `fraud`, `virus`, `not-spam`, `auth-failure`, `other`.
    pub feedback_type: String,
    /// `User-Agent` of the report.
    pub user_agent: String,
    /// `Original-Mail-From` (or the original's Return-Path / From).
    pub original_mail_from: String,
    /// `Original-Rcpt-To` (or the original's To); empty when redacted.
    pub original_rcpt_to: String,
    /// `Reporting-MTA` without its type (or the report's sender domain).
    pub reporting_mta: String,
    /// `Source-IP`.
    pub source_ip: String,
    /// `Reported-Domain` values.
    pub reported_domain: Vec<String>,
    /// `Arrival-Date` (Unix seconds).
    pub arrival_date: Option<i64>,
    /// Message-ID of the original message.
    pub message_id: Option<String>,
    /// `X-Job` of the original message.
    pub job_id: Option<String>,
}

/// Why a report could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unparseable feedback report: {0}")]
pub struct Unparseable(pub String);

fn feedback_type(t: FeedbackType) -> &'static str {
    match t {
        FeedbackType::Abuse => "abuse",
        FeedbackType::AuthFailure => "auth-failure",
        FeedbackType::Fraud => "fraud",
        FeedbackType::NotSpam => "not-spam",
        FeedbackType::Other => "other",
        FeedbackType::Virus => "virus",
    }
}

fn addr(s: &str) -> String {
    crate::bounce::parse::find_address(s).unwrap_or_else(|| s.trim().to_string())
}

/// Header `name` of a header block or message (unfolded).
fn header_of(text: &str, name: &str) -> Option<String> {
    crate::headers::header(text.as_bytes(), name)
}

/// A redacted or placeholder recipient (AOL and others) counts as unknown.
fn redacted(rcpt: &str) -> bool {
    let l = rcpt.to_ascii_lowercase();
    l.is_empty() || l.contains("redacted") || l.starts_with("xxx") || !l.contains('@')
}

fn from_original(r: &mut Report, original: &str) {
    r.message_id = header_of(original, "Message-ID");
    r.job_id = header_of(original, "X-Job").or_else(|| header_of(original, "X-Job-Id"));
    if r.original_rcpt_to.is_empty() {
        if let Some(to) =
            header_of(original, "X-HmXmrOriginalRecipient").or_else(|| header_of(original, "To"))
        {
            let a = addr(&to);
            if !redacted(&a) {
                r.original_rcpt_to = a;
            }
        }
    }
    if r.original_mail_from.is_empty() {
        if let Some(f) = header_of(original, "Return-Path").or_else(|| header_of(original, "From"))
        {
            r.original_mail_from = addr(&f);
        }
    }
}

/// Parses one feedback report.
pub fn parse(raw: &[u8]) -> Result<Report, Unparseable> {
    if let Ok(f) = Feedback::parse_rfc5322(raw) {
        let mut r = Report {
            format: "arf".into(),
            feedback_type: feedback_type(f.feedback_type()).into(),
            user_agent: f.user_agent().unwrap_or("").into(),
            original_mail_from: f.original_mail_from().map(addr).unwrap_or_default(),
            original_rcpt_to: f
                .original_rcpt_to()
                .map(addr)
                .filter(|a| !redacted(a))
                .unwrap_or_default(),
            reporting_mta: f
                .reporting_mta()
                .map(|m| m.split_once(';').map_or(m, |(_, h)| h).trim().to_string())
                .unwrap_or_default(),
            source_ip: f.source_ip().map(|i| i.to_string()).unwrap_or_default(),
            reported_domain: f.reported_domain().iter().map(|d| d.to_string()).collect(),
            arrival_date: f.arrival_date(),
            ..Report::default()
        };
        if let Some(o) = f.message().or(f.headers()) {
            from_original(&mut r, o);
        }
        return Ok(r);
    }
    // Not ARF: Microsoft JMRP and look-alikes carry the original as message/rfc822.
    let msg = MessageParser::new()
        .parse(raw)
        .ok_or_else(|| Unparseable("not a MIME message".into()))?;
    let original = msg.parts.iter().find_map(|p| match &p.body {
        PartType::Message(m) => Some(String::from_utf8_lossy(m.raw_message()).to_string()),
        PartType::Text(t) if p.is_content_type("text", "rfc822-headers") => Some(t.to_string()),
        _ => None,
    });
    let Some(original) = original else {
        return Err(Unparseable(
            "no message/feedback-report part and no attached original message".into(),
        ));
    };
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or("")
        .to_string();
    let mut r = Report {
        format: "jmrp".into(),
        feedback_type: "abuse".into(),
        reporting_mta: from
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .unwrap_or_default(),
        user_agent: msg
            .header_raw("X-Mailer")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        ..Report::default()
    };
    from_original(&mut r, &original);
    if r.original_rcpt_to.is_empty() && r.message_id.is_none() {
        return Err(Unparseable(
            "the attached message names neither its recipient nor its Message-ID".into(),
        ));
    }
    Ok(r)
}

impl Report {
    /// The `f` accounting record.
    pub fn to_record(&self, time_logged: i64) -> Record {
        let mut rec = Record::new(RecordType::Feedback, time_logged);
        rec.rcpt = self.original_rcpt_to.clone();
        rec.orig = self.original_mail_from.clone();
        rec.feedback_type = self.feedback_type.clone();
        rec.format = self.format.clone();
        rec.user_agent = self.user_agent.clone();
        rec.reporting_mta = self.reporting_mta.clone();
        rec.reported_domain = self.reported_domain.join(" ");
        rec.rep_source_ip = self.source_ip.clone();
        rec.job_id = self.job_id.clone().unwrap_or_default();
        if let Some(m) = &self.message_id {
            rec.headers.push(("Message-ID".into(), m.clone()));
        }
        rec
    }
}

/// The `f` record for a report that could not be read: feedbackType `unparseable`, the reason in
/// dsnDiag.
pub fn unparseable_record(e: &Unparseable, from: &str, time_logged: i64) -> Record {
    let mut rec = Record::new(RecordType::Feedback, time_logged);
    rec.orig = from.to_string();
    rec.feedback_type = "unparseable".into();
    rec.dsn_diag = e.0.clone();
    rec
}

/// What a provider puts in a complaint (for [`build_arf`]).
#[derive(Debug, Clone, Default)]
pub struct ArfInput<'a> {
    /// `abuse` and so on.
    pub feedback_type: &'a str,
    /// `User-Agent`.
    pub user_agent: &'a str,
    /// `Reporting-MTA` host.
    pub reporting_mta: &'a str,
    /// The envelope sender of the original.
    pub original_mail_from: &'a str,
    /// The complaining recipient (empty to redact).
    pub original_rcpt_to: &'a str,
    /// The address the original came from.
    pub source_ip: Option<std::net::IpAddr>,
    /// When the original arrived (Unix seconds).
    pub arrival_date: i64,
    /// The original message's headers (or all of it).
    pub original: &'a str,
    /// The report's From and To.
    pub from: &'a str,
    /// Where the report goes (the sender's FBL address).
    pub to: &'a str,
}

/// An RFC 5965 report (multipart/report; report-type=feedback-report) built with mail-auth.
pub fn build_arf(i: &ArfInput<'_>) -> Result<String, String> {
    let ft = match i.feedback_type {
        "abuse" => FeedbackType::Abuse,
        "fraud" => FeedbackType::Fraud,
        "virus" => FeedbackType::Virus,
        "not-spam" => FeedbackType::NotSpam,
        "auth-failure" => FeedbackType::AuthFailure,
        _ => FeedbackType::Other,
    };
    let mut f = Feedback::new(ft)
        .with_user_agent(i.user_agent)
        .with_version(1)
        .with_reporting_mta(format!("dns; {}", i.reporting_mta))
        .with_original_mail_from(i.original_mail_from)
        .with_arrival_date(i.arrival_date)
        .with_headers(i.original);
    if !i.original_rcpt_to.is_empty() {
        f = f.with_original_rcpt_to(i.original_rcpt_to);
    }
    if let Some(ip) = i.source_ip {
        f = f.with_source_ip(ip);
    }
    f.to_rfc5322(i.from, i.to, "Complaint about a message you sent")
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_reports_parse_back() {
        let original = "From: News <news@sender.test>\r\nTo: someone@yahoo.test\r\nMessage-ID: <m1@sender.test>\r\nX-Job: spring-sale\r\nSubject: Sale\r\n\r\n";
        let arf = build_arf(&ArfInput {
            feedback_type: "abuse",
            user_agent: "YahooFBL/1.0",
            reporting_mta: "mta1.yahoo.test",
            original_mail_from: "bounces@sender.test",
            original_rcpt_to: "someone@yahoo.test",
            source_ip: "127.0.0.2".parse().ok(),
            arrival_date: 1_790_000_000,
            original,
            from: "feedback@yahoo.test",
            to: "fbl@sender.test",
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let r = parse(arf.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.format, "arf");
        assert_eq!(r.feedback_type, "abuse");
        assert_eq!(r.user_agent, "YahooFBL/1.0");
        assert_eq!(r.original_rcpt_to, "someone@yahoo.test");
        assert_eq!(r.original_mail_from, "bounces@sender.test");
        assert_eq!(r.reporting_mta, "mta1.yahoo.test");
        assert_eq!(r.source_ip, "127.0.0.2");
        assert_eq!(r.message_id.as_deref(), Some("<m1@sender.test>"));
        assert_eq!(r.job_id.as_deref(), Some("spring-sale"));
        let rec = r.to_record(5);
        assert_eq!(rec.ty, Some(RecordType::Feedback));
        assert_eq!(rec.rcpt, "someone@yahoo.test");
    }
}
