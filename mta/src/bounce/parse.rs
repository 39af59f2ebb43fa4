//! Bounce message parsing: RFC 3464 DSNs and the common non-standard formats (Postfix transcript,
//! Exim, Sendmail, qmail, Exchange/Office 365 NDRs, Gmail, Yahoo). Each failed recipient comes out
//! with its status, diagnostic text and bounce category.

use std::collections::BTreeMap;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::Serialize;
use thiserror::Error;

use crate::acct::{Record, RecordType};

use super::classify::{
    find_enhanced_status, strip_diag_type, Category, Classifier, Failure, SmtpReply,
};

/// Which bounce shape a message was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BounceFormat {
    /// RFC 3464 `multipart/report; report-type=delivery-status`.
    Dsn,
    /// Postfix's plain-text "This is the mail system at host …" form.
    Postfix,
    /// Exim's "This message was created automatically by mail delivery software".
    Exim,
    /// Sendmail's "----- Transcript of session follows -----".
    Sendmail,
    /// qmail's "Hi. This is the qmail-send program".
    Qmail,
    /// Exchange / Office 365 NDR ("Delivery has failed to these recipients or groups").
    Exchange,
    /// Gmail's "Delivery Status Notification (Failure)" / "Address not found".
    Gmail,
    /// Yahoo's "Sorry, we were unable to deliver your message".
    Yahoo,
}

impl BounceFormat {
    /// A short lowercase name (`dsn`, `postfix`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            BounceFormat::Dsn => "dsn",
            BounceFormat::Postfix => "postfix",
            BounceFormat::Exim => "exim",
            BounceFormat::Sendmail => "sendmail",
            BounceFormat::Qmail => "qmail",
            BounceFormat::Exchange => "exchange",
            BounceFormat::Gmail => "gmail",
            BounceFormat::Yahoo => "yahoo",
        }
    }
}

/// One recipient reported as failed (or delayed) by a bounce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedRecipient {
    /// The failed address (`Final-Recipient` without its `rfc822;` type).
    pub recipient: String,
    /// `Original-Recipient`, when given.
    pub original_recipient: Option<String>,
    /// Enhanced status (`5.1.1`); derived from the diagnostic when the bounce gives none.
    pub status: String,
    /// The diagnostic text (`Diagnostic-Code` value, or the remote server's reply).
    pub diagnostic: String,
    /// `failed` or `delayed` (non-DSN formats are always `failed`).
    pub action: String,
    /// The remote MTA that refused the message, if known.
    pub remote_mta: Option<String>,
    /// `Last-Attempt-Date`, if given.
    pub last_attempt_date: Option<String>,
    /// The bounce category assigned by the classifier.
    pub category: Category,
    /// The category the reporting MTA itself gave (`X-PowerMTA-BounceCategory`), if any.
    pub reported_category: Option<String>,
    /// The SMTP command the remote reply answered (`RCPT`, `DATA`, ...), when the bounce says.
    pub command: Option<String>,
}

/// What a bounce message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct BounceReport {
    /// The recognised format; `None` if the message is not a bounce.
    pub format: Option<BounceFormat>,
    /// The MTA that generated the bounce (`Reporting-MTA` without `dns;`).
    pub reporting_mta: Option<String>,
    /// `Arrival-Date` of the DSN.
    pub arrival_date: Option<String>,
    /// `X-PowerMTA-VirtualMTA` of the DSN.
    pub virtual_mta: Option<String>,
    /// The failed recipients, in the order they appear.
    pub recipients: Vec<FailedRecipient>,
    /// The Message-ID of the original message, when its headers are included.
    pub original_message_id: Option<String>,
    /// Tracking headers of the original message (see [`TRACKING_HEADER_PREFIXES`]), lowercased names.
    pub original_headers: BTreeMap<String, String>,
    /// Why no recipient was found, when `recipients` is empty.
    pub reason: Option<String>,
}

impl BounceReport {
    /// One `rb` (remote bounce) accounting record per failed recipient, logged at `time_logged`
    /// (Unix ms): rcpt, orcpt, dsnAction/Status/Diag/Mta, bounceCat, format, dsnReportingMta, vmta,
    /// jobId (from the original's `X-Job-Id`) and the original's tracking headers.
    pub fn to_records(&self, time_logged: i64) -> Vec<Record> {
        self.recipients
            .iter()
            .map(|r| Record {
                ty: Some(RecordType::RemoteBounce),
                time_logged,
                rcpt: r.recipient.clone(),
                orcpt: r.original_recipient.clone().unwrap_or_default(),
                dsn_action: r.action.clone().into(),
                dsn_status: r.status.clone(),
                dsn_diag: r.diagnostic.clone(),
                dsn_mta: r.remote_mta.clone().unwrap_or_default(),
                bounce_cat: r.category.as_str().to_string(),
                format: self.format.map(|f| f.as_str()).unwrap_or("").to_string(),
                dsn_reporting_mta: self.reporting_mta.clone().unwrap_or_default(),
                vmta: self.virtual_mta.clone().unwrap_or_default(),
                job_id: self
                    .original_headers
                    .get("x-job-id")
                    .cloned()
                    .unwrap_or_default(),
                headers: self
                    .original_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                ..Record::default()
            })
            .collect()
    }
}

/// Errors that stop parsing altogether.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The input has no RFC 5322 header section.
    #[error("not an e-mail message: no header section found")]
    NotAMessage,
    /// The input is larger than [`MAX_BOUNCE_SIZE`].
    #[error("bounce message too large ({0} bytes)")]
    TooLarge(usize),
}

/// Largest bounce accepted (bounces carry at most the original message; 50 MB).
pub const MAX_BOUNCE_SIZE: usize = 50 * 1024 * 1024;

/// Original-message headers copied into [`BounceReport::original_headers`] (prefix match, lowercase).
pub const TRACKING_HEADER_PREFIXES: &[&str] = &[
    "x-job",
    "x-virtual-mta",
    "x-mtasim",
    "x-campaign",
    "x-track",
    "x-envelope-id",
];

/// Parses a bounce message and classifies each failed recipient.
pub fn parse(raw: &[u8], classifier: &Classifier) -> Result<BounceReport, ParseError> {
    if raw.len() > MAX_BOUNCE_SIZE {
        return Err(ParseError::TooLarge(raw.len()));
    }
    let msg = MessageParser::default()
        .parse(raw)
        .ok_or(ParseError::NotAMessage)?;
    if msg.headers().is_empty() {
        return Err(ParseError::NotAMessage);
    }
    let mut report = BounceReport::default();

    // The original message (message/rfc822 or text/rfc822-headers part), whatever the format.
    let mut texts: Vec<String> = Vec::new();
    let mut dsn_body: Option<String> = None;
    for part in &msg.parts {
        let is_ct = |t: &str, s: &str| part.is_content_type(t, s);
        if is_ct("message", "delivery-status") || is_ct("message", "global-delivery-status") {
            if dsn_body.is_none() {
                dsn_body = Some(String::from_utf8_lossy(part.contents()).into_owned());
            }
        } else if is_ct("text", "rfc822-headers") || matches!(part.body, PartType::Message(_)) {
            if report.original_message_id.is_none() && report.original_headers.is_empty() {
                original_from_headers(part.contents(), &mut report);
            }
        } else if let PartType::Text(t) = &part.body {
            if !is_ct("text", "html") {
                texts.push(t.to_string());
            }
        } else if let PartType::Html(h) = &part.body {
            texts.push(strip_html(h));
        }
    }

    if let Some(body) = dsn_body {
        report.format = Some(BounceFormat::Dsn);
        parse_dsn_fields(&body, classifier, &mut report);
        if report.recipients.is_empty() {
            report.reason =
                Some("delivery-status part lists no failed or delayed recipient".into());
        }
        return Ok(report);
    }

    let text = texts.join("\n").replace("\r\n", "\n");
    let subject = msg.subject().unwrap_or("");
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or("")
        .to_string();
    let Some(format) = detect_format(&text, subject) else {
        report.reason = Some(format!(
            "not a recognised bounce (subject `{}`, from `{}`)",
            subject.chars().take(80).collect::<String>(),
            from
        ));
        return Ok(report);
    };
    report.format = Some(format);
    let found = match format {
        BounceFormat::Qmail | BounceFormat::Postfix | BounceFormat::Yahoo => {
            angle_blocks(&text, format)
        }
        BounceFormat::Exim => exim(&text),
        BounceFormat::Sendmail => sendmail(&text),
        BounceFormat::Exchange => exchange(&text),
        BounceFormat::Gmail => gmail(&text),
        BounceFormat::Dsn => Vec::new(),
    };
    if format == BounceFormat::Exchange {
        report.reporting_mta = text.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Generating server:")
                .map(|h| h.trim().to_string())
        });
    }
    if format == BounceFormat::Postfix {
        report.reporting_mta = text.lines().find_map(|l| {
            l.trim()
                .strip_prefix("This is the mail system at host ")
                .map(|h| h.trim_end_matches('.').trim().to_string())
        });
    }
    for (rcpt, diag, remote) in found {
        report
            .recipients
            .push(recipient_from_text(rcpt, diag, remote, classifier));
    }
    if report.original_message_id.is_none() && report.original_headers.is_empty() {
        original_from_text(&text, &mut report);
    }
    if report.recipients.is_empty() {
        report.reason = Some(format!(
            "recognised as {} but no failed recipient found",
            format.as_str()
        ));
    }
    Ok(report)
}

fn recipient_from_text(
    rcpt: String,
    diag: String,
    remote_mta: Option<String>,
    classifier: &Classifier,
) -> FailedRecipient {
    let diag = diag.split_whitespace().collect::<Vec<_>>().join(" ");
    let status = status_from_diag(&diag, "5.0.0");
    let category = classifier
        .classify_failure(&Failure {
            status: &status,
            diagnostic: &diag,
            command: None,
            gave_up: true,
        })
        .category;
    FailedRecipient {
        recipient: rcpt,
        original_recipient: None,
        status,
        diagnostic: diag,
        action: "failed".into(),
        remote_mta,
        last_attempt_date: None,
        category,
        reported_category: None,
        command: None,
    }
}

/// The enhanced status in a diagnostic, else one derived from an SMTP code in it, else `default`.
fn status_from_diag(diag: &str, default: &str) -> String {
    let body = strip_diag_type(diag);
    if let Some(s) = find_enhanced_status(body) {
        return s.to_string();
    }
    // A basic code somewhere (e.g. "Remote host said: 554 delivery error").
    for (i, w) in body.split_whitespace().enumerate() {
        let r = SmtpReply::parse(w);
        if let Some(c) = r.code {
            if (400..600).contains(&c) && (i == 0 || w.len() == 3) {
                return r.status();
            }
        }
    }
    default.to_string()
}

/// Splits header-like text into unfolded `(lowercase name, value)` fields.
pub fn header_fields(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(' ') {
                out.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
    }
    out
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Drops an RFC 3464 type prefix (`rfc822;`, `dns;`) and angle brackets.
fn typed_value(v: &str) -> String {
    strip_diag_type(v)
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_string()
}

fn parse_dsn_fields(body: &str, classifier: &Classifier, report: &mut BounceReport) {
    let norm = body.replace("\r\n", "\n");
    let blocks: Vec<Vec<(String, String)>> = norm
        .split("\n\n")
        .map(header_fields)
        .filter(|f| !f.is_empty())
        .collect();
    for fields in &blocks {
        let is_rcpt = field(fields, "final-recipient").is_some()
            || field(fields, "original-recipient").is_some();
        if !is_rcpt {
            // Per-message fields: the first block that has them wins.
            if let (None, Some(v)) = (&report.reporting_mta, field(fields, "reporting-mta")) {
                report.reporting_mta = Some(typed_value(v));
            }
            if let (None, Some(v)) = (&report.arrival_date, field(fields, "arrival-date")) {
                report.arrival_date = Some(v.to_string());
            }
            if let (None, Some(v)) = (&report.virtual_mta, field(fields, "x-powermta-virtualmta")) {
                report.virtual_mta = Some(v.to_string());
            }
            continue;
        }
        let action = field(fields, "action")
            .unwrap_or("failed")
            .to_ascii_lowercase();
        if !(action.starts_with("failed") || action.starts_with("delayed")) {
            continue;
        }
        let original = field(fields, "original-recipient").map(typed_value);
        let recipient = field(fields, "final-recipient")
            .map(typed_value)
            .or_else(|| original.clone())
            .unwrap_or_default();
        let diagnostic = field(fields, "diagnostic-code").unwrap_or("").to_string();
        let default_status = if action.starts_with("delayed") {
            "4.0.0"
        } else {
            "5.0.0"
        };
        let status = match field(fields, "status") {
            Some(s) => match find_enhanced_status(s) {
                Some(e) => e.to_string(),
                None => s.split_whitespace().next().unwrap_or("").to_string(),
            },
            None => status_from_diag(&diagnostic, default_status),
        };
        let command = field(fields, "x-smtp-command")
            .or_else(|| field(fields, "x-postfix-command"))
            .map(str::to_string);
        let category = classifier
            .classify_failure(&Failure {
                status: &status,
                diagnostic: &diagnostic,
                command: command.as_deref(),
                gave_up: action.starts_with("failed"),
            })
            .category;
        report.recipients.push(FailedRecipient {
            recipient,
            original_recipient: original,
            status,
            diagnostic,
            action: action.split_whitespace().next().unwrap_or("").to_string(),
            remote_mta: field(fields, "remote-mta").map(typed_value),
            last_attempt_date: field(fields, "last-attempt-date").map(str::to_string),
            category,
            reported_category: field(fields, "x-powermta-bouncecategory").map(str::to_string),
            command,
        });
    }
}

fn original_from_headers(raw: &[u8], report: &mut BounceReport) {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let head = text.split("\n\n").next().unwrap_or("");
    collect_original(&header_fields(head), report);
}

fn collect_original(fields: &[(String, String)], report: &mut BounceReport) {
    for (name, value) in fields {
        if name == "message-id" && report.original_message_id.is_none() {
            report.original_message_id = Some(value.trim().to_string());
        } else if TRACKING_HEADER_PREFIXES.iter().any(|p| name.starts_with(p)) {
            report
                .original_headers
                .entry(name.clone())
                .or_insert_with(|| value.trim().to_string());
        }
    }
}

/// Markers after which non-DSN bounces quote the original message.
const ORIGINAL_MARKERS: &[&str] = &[
    "------ This is a copy of the message",
    "----- Original message -----",
    "--- Below this line is a copy of the message.",
    "----- Original message headers -----",
    "Original message headers:",
    "----- Message header follows -----",
    "----- Original Message -----",
];

fn original_from_text(text: &str, report: &mut BounceReport) {
    let Some(pos) = ORIGINAL_MARKERS.iter().filter_map(|m| text.find(m)).min() else {
        return;
    };
    let after = &text[pos..];
    let rest = after.split_once('\n').map(|(_, r)| r).unwrap_or("");
    let rest = rest.trim_start_matches('\n');
    let head = rest.split("\n\n").next().unwrap_or("");
    // Quoted headers may be indented (Exim, Exchange): undo a common indent.
    let dedented: String = head
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    collect_original(&header_fields(&dedented), report);
}

fn detect_format(text: &str, subject: &str) -> Option<BounceFormat> {
    let has = |s: &str| text.contains(s);
    if has("qmail-send program") {
        Some(BounceFormat::Qmail)
    } else if has("This is the mail system at host") {
        Some(BounceFormat::Postfix)
    } else if has("created automatically by mail delivery software") {
        Some(BounceFormat::Exim)
    } else if has("Transcript of session follows") || has("had permanent fatal errors") {
        Some(BounceFormat::Sendmail)
    } else if has("Delivery has failed to these recipients or groups")
        || has("Diagnostic information for administrators")
    {
        Some(BounceFormat::Exchange)
    } else if has("unable to deliver your message to the following address") {
        Some(BounceFormat::Yahoo)
    } else if has("Address not found")
        || has("Delivery to the following recipient failed")
        || subject.starts_with("Delivery Status Notification")
    {
        Some(BounceFormat::Gmail)
    } else {
        None
    }
}

/// An e-mail address in `s`: the first `local@domain` token, brackets and punctuation removed.
pub fn find_address(s: &str) -> Option<String> {
    for token in s.split(|c: char| {
        c.is_whitespace() || matches!(c, '<' | '>' | '(' | ')' | '\'' | '"' | ',' | '[' | ']')
    }) {
        let t = token.trim_matches(|c: char| matches!(c, '.' | ':' | ';'));
        if let Some((local, domain)) = t.split_once('@') {
            if !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && domain
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
            {
                return Some(t.to_string());
            }
        }
    }
    None
}

/// The `<addr>:` block shape of qmail, Postfix's transcript and Yahoo: an address line ending in `:`
/// (possibly followed by text) and indented or following lines up to a blank line.
fn angle_blocks(text: &str, format: BounceFormat) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    let stop = |l: &str| ORIGINAL_MARKERS.iter().any(|m| l.contains(m)) || l.starts_with("--- ");
    while let Some(line) = lines.next() {
        if stop(line) {
            break;
        }
        // Recipient lines start in column 0; indented `<addr>:` lines continue a diagnostic.
        let t = line;
        if !t.starts_with('<') {
            continue;
        }
        let Some(close) = t.find(">:") else { continue };
        let Some(addr) = find_address(&t[..close + 1]) else {
            continue;
        };
        let mut diag = t[close + 2..].trim().to_string();
        while let Some(next) = lines.peek() {
            if next.trim().is_empty() || next.starts_with('<') || stop(next) {
                break;
            }
            if !diag.is_empty() {
                diag.push(' ');
            }
            diag.push_str(next.trim());
            lines.next();
        }
        if format == BounceFormat::Yahoo || format == BounceFormat::Qmail {
            if let Some(p) = diag.find("Remote host said:") {
                diag = diag[p + "Remote host said:".len()..].trim().to_string();
            }
        }
        let remote = remote_host(&diag);
        out.push((addr, diag, remote));
    }
    out
}

/// `host mx.example.com[192.0.2.1] said: …` (Postfix) or `Remote host mx.example.com said:` forms.
fn remote_host(diag: &str) -> Option<String> {
    let p = diag.find("host ")?;
    let rest = &diag[p + 5..];
    let word = rest.split_whitespace().next()?;
    let name = word.split('[').next()?.trim_end_matches([':', '.']);
    if name.contains('.') && !name.contains('@') {
        Some(name.to_string())
    } else {
        None
    }
}

fn exim(text: &str) -> Vec<(String, String, Option<String>)> {
    let mut out: Vec<(String, String, Option<String>)> = Vec::new();
    let mut in_list = false;
    for line in text.lines() {
        if ORIGINAL_MARKERS.iter().any(|m| line.contains(m)) {
            break;
        }
        if line.contains("failed:") || line.contains("could not be delivered") {
            in_list = true;
            continue;
        }
        if !in_list || line.trim().is_empty() {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if indent <= 2 && !t.contains(' ') {
            if let Some(a) = find_address(t) {
                out.push((a, String::new(), None));
                continue;
            }
        }
        if indent > 2 {
            if let Some(last) = out.last_mut() {
                if !last.1.is_empty() {
                    last.1.push(' ');
                }
                last.1.push_str(t);
                if last.2.is_none() && t.starts_with("host ") {
                    last.2 = remote_host(t);
                }
            }
        }
    }
    for r in &mut out {
        // Keep the remote reply: "SMTP error from remote mail server after RCPT TO:<x>: 550 …".
        if let Some(p) = r.1.find("SMTP error from remote mail server") {
            let rest = &r.1[p..];
            if let Some(q) = rest.find(">:") {
                r.1 = rest[q + 2..].trim().to_string();
            } else if let Some(q) = rest.find(": ") {
                r.1 = rest[q + 2..].trim().to_string();
            }
        }
    }
    out
}

fn sendmail(text: &str) -> Vec<(String, String, Option<String>)> {
    let mut out: Vec<(String, String, Option<String>)> = Vec::new();
    let mut section = 0; // 1 = address list, 2 = transcript
    let mut remote: Option<String> = None;
    let mut replies: Vec<String> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.contains("had permanent fatal errors") {
            section = 1;
            continue;
        }
        if t.contains("Transcript of session follows") {
            section = 2;
            continue;
        }
        if ORIGINAL_MARKERS.iter().any(|m| t.contains(m)) || t.starts_with("-----") {
            section = 0;
            continue;
        }
        match section {
            1 => {
                if let Some(reason) = t.strip_prefix("(reason:") {
                    if let Some(last) = out.last_mut() {
                        last.1 = reason.trim_end_matches(')').trim().to_string();
                    }
                } else if let Some(a) = find_address(t) {
                    out.push((a, String::new(), None));
                }
            }
            2 => {
                if let Some(p) = t.find("while talking to ") {
                    remote = Some(
                        t[p + 17..]
                            .trim_end_matches(':')
                            .trim_end_matches('.')
                            .to_string(),
                    );
                } else if let Some(r) = t.strip_prefix("<<<") {
                    replies.push(r.trim().to_string());
                } else if SmtpReply::parse(t).code.is_some_and(|c| c >= 400) {
                    replies.push(t.to_string());
                }
            }
            _ => {}
        }
    }
    for r in &mut out {
        if r.1.is_empty() {
            let mine = replies
                .iter()
                .find(|x| x.to_ascii_lowercase().contains(&r.0.to_ascii_lowercase()))
                .or_else(|| replies.iter().find(|x| x.starts_with('5')))
                .or(replies.first());
            r.1 = mine.cloned().unwrap_or_default();
        }
        r.2 = remote.clone();
    }
    out
}

fn exchange(text: &str) -> Vec<(String, String, Option<String>)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<(String, String, Option<String>)> = Vec::new();
    // "Diagnostic information for administrators": an address line, optionally the remote host's
    // name, then "Remote Server returned '…'" (or the older `#550 5.1.1 … ##` form).
    if let Some(start) = lines
        .iter()
        .position(|l| l.contains("Diagnostic information for administrators"))
    {
        let mut current: Option<(String, Option<String>)> = None;
        for l in &lines[start + 1..] {
            let t = l.trim();
            if t.starts_with("Original message headers") {
                break;
            }
            if t.starts_with("Generating server:") {
                continue;
            }
            let returned = if let Some(p) = t.find("Remote Server returned") {
                Some(
                    t[p + "Remote Server returned".len()..]
                        .trim()
                        .trim_matches('\'')
                        .trim(),
                )
            } else if t.starts_with('#') && t.ends_with("##") {
                Some(t.trim_matches('#').trim())
            } else {
                None
            };
            if let Some(diag) = returned {
                if let Some((a, host)) = current.take() {
                    out.push((a, diag.to_string(), host));
                }
            } else if let Some((_, host)) = current.as_mut() {
                if host.is_none() && !t.is_empty() && !t.contains(' ') && t.contains('.') {
                    *host = Some(t.to_string());
                }
            } else if let Some(a) = find_address(t) {
                current = Some((a, None));
            }
        }
    }
    if out.is_empty() {
        // Only the human part: addresses under "Delivery has failed to these recipients or groups".
        if let Some(start) = lines
            .iter()
            .position(|l| l.contains("Delivery has failed to these recipients"))
        {
            for l in &lines[start + 1..] {
                if l.trim().is_empty() && !out.is_empty() {
                    break;
                }
                if let Some(a) = find_address(l) {
                    out.push((a, l.trim().to_string(), None));
                }
            }
        }
    }
    out
}

fn gmail(text: &str) -> Vec<(String, String, Option<String>)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rcpts: Vec<String> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let lead = [
            "wasn't delivered to ",
            "problem delivering your message to ",
        ]
        .iter()
        .find_map(|m| l.find(m).map(|p| p + m.len()));
        if let Some(p) = lead {
            if let Some(a) = find_address(&l[p..]) {
                rcpts.push(a);
            }
        } else if l.contains("Delivery to the following recipient") {
            if let Some(a) = lines[i + 1..].iter().find_map(|x| find_address(x)) {
                rcpts.push(a);
            }
        }
    }
    let mut diag = String::new();
    let mut remote = None;
    if let Some(i) = lines.iter().position(|l| {
        l.contains("The response from the remote server was:")
            || l.contains("The response was:")
            || l.contains("Technical details of permanent failure:")
    }) {
        for l in &lines[i + 1..] {
            let t = l.trim();
            if t.is_empty() {
                if diag.is_empty() {
                    continue;
                }
                break;
            }
            if !diag.is_empty() {
                diag.push(' ');
            }
            diag.push_str(t);
        }
    }
    if let Some(p) = diag.find("Remote server returned ") {
        diag = diag[p + 23..].trim().to_string();
    }
    if let Some(l) = lines
        .iter()
        .find(|l| l.contains("Remote-MTA") || l.contains("remote server "))
    {
        remote = remote_host(l);
    }
    rcpts
        .into_iter()
        .map(|r| (r, diag.clone(), remote.clone()))
        .collect()
}

fn strip_html(h: &str) -> String {
    let mut out = String::with_capacity(h.len());
    let mut in_tag = false;
    for c in h.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace("&#39;", "'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfolds_fields() {
        let f = header_fields("Diagnostic-Code: smtp; 550 5.1.1\n  user unknown\nStatus: 5.1.1");
        assert_eq!(
            f[0],
            (
                "diagnostic-code".into(),
                "smtp; 550 5.1.1 user unknown".into()
            )
        );
        assert_eq!(f[1], ("status".into(), "5.1.1".into()));
    }

    #[test]
    fn finds_addresses() {
        assert_eq!(
            find_address("<bob@example.com>:").as_deref(),
            Some("bob@example.com")
        );
        assert_eq!(find_address("  x (x@ex.org)").as_deref(), Some("x@ex.org"));
        assert_eq!(find_address("no address here"), None);
    }

    #[test]
    fn status_from_text() {
        assert_eq!(status_from_diag("smtp; 550 5.2.2 full", "5.0.0"), "5.2.2");
        assert_eq!(status_from_diag("554 delivery error", "5.0.0"), "5.0.0");
        assert_eq!(status_from_diag("451 try later", "5.0.0"), "4.0.0");
        assert_eq!(status_from_diag("no code", "5.0.0"), "5.0.0");
    }
}
