//! Bounce message parsing. Each failed recipient comes out with its status, the remote reply (or
//! the bounce's own reason), the SMTP command it answered and its bounce category.
//!
//! Formats, one module per family: `dsn` (RFC 3464, also broken and in text parts),
//! `mta_text` (Postfix, Exim, Sendmail, qmail, DragonFly, Yahoo), `services` (Exchange, Gmail,
//! Google Groups, Amazon SES JSON), `fallback` (recipient lines of any other bounce,
//! `X-Failed-Recipients`, the quoted original's `To`; auto-replies). ARF reports are told apart.

use std::collections::BTreeMap;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use serde::Serialize;
use thiserror::Error;

use crate::acct::{Record, RecordType};

use super::classify::{
    find_enhanced_status, strip_diag_type, Category, Classifier, Failure, RuleOrigin,
};

mod dsn;
mod fallback;
mod fields;
mod mta_text;
mod original;

pub(crate) use fields::{field, strip_html, typed_value};
pub use fields::{find_address, header_fields};
mod reply;

pub(crate) use original::is_original_marker;
use original::{human_end, original_from_headers, original_from_text};

pub(crate) use reply::{after_said, command_in, reply_start, status_from_diag};
mod services;

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
    /// RFC 3464 fields written into a text part (broken MIME, Amazon WorkMail, Messaging Server).
    DsnText,
    /// DragonFly Mail Agent's "There was an error delivering your mail to".
    Dragonfly,
    /// Google Groups' "the group you tried to contact may not exist" notice.
    GoogleGroups,
    /// Amazon SES JSON notifications (bounce or delivery), directly or through SNS.
    AmazonSes,
    /// A bounce read by the general fallback (recipient lines, `X-Failed-Recipients`).
    Generic,
    /// An ARF feedback report (`report-type=feedback-report`): not a bounce.
    Feedback,
    /// A vacation / out-of-office auto-reply: not a bounce.
    AutoReply,
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
            BounceFormat::DsnText => "dsn-text",
            BounceFormat::Dragonfly => "dragonfly",
            BounceFormat::GoogleGroups => "google-groups",
            BounceFormat::AmazonSes => "amazon-ses",
            BounceFormat::Generic => "generic",
            BounceFormat::Feedback => "feedback",
            BounceFormat::AutoReply => "auto-reply",
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
    /// The rule that decided it ([`Classifier::describe`] names it).
    pub rule: RuleOrigin,
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

/// One recipient a text-format parser found, before classification.
#[derive(Debug, Clone, Default)]
pub(crate) struct Hit {
    /// The failed address.
    pub rcpt: String,
    /// The remote reply or the bounce's own explanation.
    pub diag: String,
    /// The remote MTA, if named.
    pub remote: Option<String>,
    /// The SMTP command the reply answered, if the bounce says.
    pub command: Option<String>,
    /// An enhanced status the bounce states apart from the diagnostic.
    pub status: Option<String>,
    /// `delayed` for warnings; `failed` otherwise.
    pub delayed: bool,
    /// DSN `Original-Recipient`.
    pub original: Option<String>,
    /// DSN `Last-Attempt-Date`.
    pub last_attempt: Option<String>,
    /// DSN `X-PowerMTA-BounceCategory`.
    pub reported_category: Option<String>,
}

impl Hit {
    /// A hit for `rcpt` with diagnostic `diag` and nothing else known.
    pub fn new(rcpt: String, diag: String) -> Hit {
        Hit {
            rcpt,
            diag,
            ..Hit::default()
        }
    }
}

/// The message pieces every format parser reads.
pub(crate) struct Input<'a> {
    /// The text/plain (and stripped text/html) parts, joined, LF line ends.
    pub text: String,
    /// The human-readable part of `text`: up to where the original message is quoted.
    pub human: &'a str,
    /// The bounce's Subject.
    pub subject: &'a str,
    /// The bounce's From address (lowercase).
    pub from: String,
    /// Addresses that are not failed recipients: the bounce's From/To, the original's From.
    pub exclude: Vec<String>,
    /// The `To` addresses of the quoted original message.
    pub original_to: Vec<String>,
    /// The addresses of the bounce's `X-Failed-Recipients` header (Exim, Gmail, Google Groups).
    pub failed_header: Vec<String>,
    /// True if the quoted message is itself a bounce (then its `To` is not a failed recipient).
    pub nested_bounce: bool,
}

/// Parses a bounce message and classifies each failed recipient.
pub fn parse(raw: &[u8], classifier: &Classifier) -> Result<BounceReport, ParseError> {
    parse_at(raw, classifier, 0)
}

/// True if a quoted message's head says it is itself a bounce (a bounce forwarded as an
/// attachment).
fn is_bounce_head(raw: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&raw[..raw.len().min(4096)]).to_ascii_lowercase();
    let head = head.split("\n\n").next().unwrap_or("");
    head.contains("report-type=delivery-status")
        || head.contains("from: mail delivery")
        || head
            .lines()
            .any(|l| l.starts_with("from:") && l.contains("mailer-daemon"))
}

/// [`parse`] of a message found `depth` levels deep in another (forwarded bounces).
fn parse_at(raw: &[u8], classifier: &Classifier, depth: u8) -> Result<BounceReport, ParseError> {
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
    if let Some(ct) = msg.content_type() {
        let feedback = ct.c_type.eq_ignore_ascii_case("multipart")
            && ct
                .attribute("report-type")
                .is_some_and(|v| v.eq_ignore_ascii_case("feedback-report"));
        if feedback {
            report.format = Some(BounceFormat::Feedback);
            report.reason = Some("an ARF feedback (abuse) report, not a bounce".into());
            return Ok(report);
        }
    }

    let Parts {
        texts,
        dsn_body,
        mut original_to,
        nested,
    } = collect_parts(&msg, &mut report);
    let text = unquote(texts.join("\n").replace("\r\n", "\n"));
    let subject = msg.subject().unwrap_or("");
    let addr_of = |a: Option<&mail_parser::Address>| {
        a.and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let from = addr_of(msg.from());
    let mut exclude = vec![from.clone(), addr_of(msg.to())];
    exclude.retain(|a| !a.is_empty());
    let mut human_end = human_end(&text).min(MAX_HUMAN);
    while !text.is_char_boundary(human_end) {
        human_end -= 1;
    }
    if original_to.is_empty() {
        original_to = original::original_to(&text[human_end..]);
    }
    let failed_header = msg
        .header_values("X-Failed-Recipients")
        .filter_map(|v| v.as_text())
        .flat_map(|v| v.split(',').filter_map(find_address).collect::<Vec<_>>())
        .take(MAX_RECIPIENTS)
        .collect::<Vec<_>>();
    let input = Input {
        nested_bounce: nested.is_some(),
        original_to,
        failed_header,
        human: &text[..human_end],
        text: text.clone(),
        subject,
        from,
        exclude,
    };

    let mut hits = Vec::new();
    let mut format = None;
    if !dsn_body.trim().is_empty() {
        format = Some(BounceFormat::Dsn);
        hits = dsn::parse_fields(&dsn_body, &mut report);
    }
    if hits.is_empty() {
        if let Some((f, h)) = detect_and_parse(&input, &msg) {
            format = Some(f);
            hits = h;
        } else if let Some(f) = mta_text::detect(&input) {
            format = format.or(Some(f));
        }
    }
    if let (true, Some(inner), true) = (hits.is_empty(), nested, depth < 2) {
        // A bounce forwarded as an attachment: read the attached bounce.
        if let Ok(r) = parse_at(inner, classifier, depth + 1) {
            if !r.recipients.is_empty() {
                return Ok(r);
            }
        }
    }
    if format != Some(BounceFormat::Dsn) && fallback::says_still_trying(input.human) {
        // Delay warnings (Sendmail, Zoho, Gmail, gateways): the MTA keeps trying.
        hits.iter_mut().for_each(|h| h.delayed = true);
    }
    if format != Some(BounceFormat::Dsn) && hits.len() > MAX_RECIPIENTS {
        // Lines of free text read as recipients: past this many, the rest are noise, not a list.
        tracing::warn!(
            found = hits.len(),
            kept = MAX_RECIPIENTS,
            "bounce text names too many recipients; the rest are not read"
        );
        hits.truncate(MAX_RECIPIENTS);
    }
    let mut hits = dsn::fill_from_text(hits, &input);
    hits.retain(|h| !h.rcpt.is_empty());
    let mut seen = std::collections::HashSet::new();
    hits.retain(|h| seen.insert(h.rcpt.to_ascii_lowercase()));
    report.format = format;
    if report.reporting_mta.is_none() {
        report.reporting_mta = mta_text::reporting_mta(input.human);
    }
    for hit in hits {
        report.recipients.push(recipient_from_hit(hit, classifier));
    }
    if report.original_message_id.is_none() && report.original_headers.is_empty() {
        original_from_text(&input.text, &mut report);
    }
    if report.recipients.is_empty() {
        if fallback::is_auto_reply(&msg, &input) {
            report.format = Some(BounceFormat::AutoReply);
        }
        report.reason = Some(no_recipient_reason(report.format, &input));
    }
    Ok(report)
}

/// What the MIME parts of a bounce hold.
struct Parts<'m> {
    /// Text of the text parts (HTML stripped), in order.
    texts: Vec<String>,
    /// The delivery-status parts, joined.
    dsn_body: String,
    /// The `To` of the attached original message.
    original_to: Vec<String>,
    /// An attached message that is itself a bounce.
    nested: Option<&'m [u8]>,
}

/// Sorts the parts: delivery-status, the original message (its Message-ID and tracking headers go
/// into `report`), text.
fn collect_parts<'m>(msg: &'m mail_parser::Message<'m>, report: &mut BounceReport) -> Parts<'m> {
    let mut texts: Vec<String> = Vec::new();
    let mut dsn_body = String::new();
    let mut text_len = 0usize;
    let mut original_to = Vec::new();
    let mut nested: Option<&[u8]> = None;
    for part in msg.parts.iter().take(MAX_PARTS) {
        let is_ct = |t: &str, s: &str| part.is_content_type(t, s);
        if is_ct("message", "delivery-status") || is_ct("message", "global-delivery-status") {
            dsn_body.push_str(&String::from_utf8_lossy(part.contents()));
            dsn_body.push_str("\n\n");
        } else if is_ct("text", "rfc822-headers") || matches!(part.body, PartType::Message(_)) {
            if report.original_message_id.is_none() && report.original_headers.is_empty() {
                original_from_headers(part.contents(), report);
            }
            if original_to.is_empty() {
                original_to = original::original_to(&String::from_utf8_lossy(part.contents()));
            }
            if nested.is_none() && is_bounce_head(part.contents()) {
                nested = Some(part.contents());
            }
        } else if text_len < MAX_TEXT {
            let t = match &part.body {
                PartType::Text(t) if !is_ct("text", "html") => t.to_string(),
                PartType::Html(h) | PartType::Text(h) => strip_html(h),
                PartType::Binary(b) | PartType::InlineBinary(b) if texty(part) => {
                    String::from_utf8_lossy(b).into_owned()
                }
                _ => continue,
            };
            text_len += t.len();
            texts.push(t);
        }
    }
    Parts {
        texts,
        dsn_body,
        original_to,
        nested,
    }
}

/// A bounce forwarded with `> ` quoting (most lines quoted): one level of quoting removed.
fn unquote(text: String) -> String {
    let (mut quoted, mut total) = (0usize, 0usize);
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        total += 1;
        quoted += usize::from(l.starts_with('>'));
    }
    if total < 4 || quoted * 2 < total {
        return text;
    }
    text.lines()
        .map(|l| {
            l.strip_prefix("> ")
                .or_else(|| l.strip_prefix('>'))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The human part read for recipient lines is cut to this many bytes.
const MAX_HUMAN: usize = 256 * 1024;
/// At most this many failed recipients are read from a bounce's free text (a DSN's recipient
/// blocks are all read).
const MAX_RECIPIENTS: usize = 1000;

/// At most this many MIME parts are read.
const MAX_PARTS: usize = 64;
/// Text parts beyond this many bytes in all are not read.
const MAX_TEXT: usize = 1024 * 1024;

/// A non-text part whose bytes are text all the same (multipart bodies mail-parser left whole).
fn texty(part: &mail_parser::MessagePart) -> bool {
    match part.content_type() {
        None => true,
        Some(ct) => {
            let t = ct.c_type.to_ascii_lowercase();
            t == "text"
                || t == "multipart"
                || (t == "message" && !part.is_content_type("message", "rfc822"))
        }
    }
}

/// Runs the format parsers in turn: the ones recognised by markers first, then DSN fields in the
/// text, the `X-Failed-Recipients` header, and the general fallback.
fn detect_and_parse(
    input: &Input<'_>,
    msg: &mail_parser::Message<'_>,
) -> Option<(BounceFormat, Vec<Hit>)> {
    if let Some(hits) = services::amazon_ses(&input.text) {
        return Some((BounceFormat::AmazonSes, hits));
    }
    let hits = dsn::embedded(&input.text);
    if !hits.is_empty() {
        return Some((BounceFormat::DsnText, hits));
    }
    if let Some(hits) = services::mimecast(input.human) {
        return Some((BounceFormat::Generic, hits));
    }
    let formats = mta_text::detect_all(input);
    for f in &formats {
        let hits = mta_text::parse_format(*f, input);
        if !hits.is_empty() {
            return Some((*f, hits));
        }
    }
    let recognised = formats.first().copied();
    if !input.failed_header.is_empty() && !fallback::is_auto_reply(msg, input) {
        let mut hits = fallback::with_recipients(input, &input.failed_header);
        if recognised == Some(BounceFormat::GoogleGroups) {
            for h in &mut hits {
                h.diag = services::GOOGLE_GROUPS_DIAG.to_string();
            }
        }
        return Some((recognised.unwrap_or(BounceFormat::Generic), hits));
    }
    if fallback::looks_like_bounce(input) && !fallback::is_auto_reply(msg, input) {
        let hits = fallback::scan(input);
        if !hits.is_empty() {
            return Some((recognised.unwrap_or(BounceFormat::Generic), hits));
        }
        // Last resort: a bounce that names no recipient failed for the original's recipients.
        let to: Vec<String> = input
            .original_to
            .iter()
            .filter(|a| !input.exclude.contains(&a.to_ascii_lowercase()))
            .cloned()
            .collect();
        if !to.is_empty() && !input.nested_bounce && fallback::surely_bounce(input) {
            let hits = fallback::with_recipients(input, &to);
            return Some((recognised.unwrap_or(BounceFormat::Generic), hits));
        }
    }
    None
}

fn no_recipient_reason(format: Option<BounceFormat>, input: &Input<'_>) -> String {
    match format {
        Some(BounceFormat::AutoReply) => {
            "an auto-reply (vacation / out-of-office), not a bounce".into()
        }
        Some(BounceFormat::AmazonSes) => {
            "an Amazon SES notification that reports no bounced recipient (delivery or other notification type)".into()
        }
        Some(BounceFormat::Dsn) => {
            "delivery-status part lists no failed or delayed recipient with an address".into()
        }
        Some(f) => format!(
            "recognised as {} but no failed recipient found (no address in its recipient lines, no DSN fields, no X-Failed-Recipients)",
            f.as_str()
        ),
        None => format!(
            "not a recognised bounce: no bounce markers, DSN fields or failed-recipient lines (subject `{}`, from `{}`)",
            input.subject.chars().take(80).collect::<String>(),
            input.from
        ),
    }
}

fn recipient_from_hit(hit: Hit, classifier: &Classifier) -> FailedRecipient {
    let diag = hit.diag.split_whitespace().collect::<Vec<_>>().join(" ");
    let diag: String = diag.chars().take(MAX_DIAG).collect();
    let default = if hit.delayed { "4.0.0" } else { "5.0.0" };
    let status = hit
        .status
        .filter(|s| find_enhanced_status(s).is_some())
        .unwrap_or_else(|| status_from_diag(&diag, default));
    let command = hit
        .command
        .or_else(|| command_in(&diag).map(str::to_string));
    let class = classifier.classify_failure(&Failure {
        status: &status,
        diagnostic: &diag,
        command: command.as_deref(),
        gave_up: !hit.delayed,
    });
    FailedRecipient {
        recipient: hit.rcpt,
        original_recipient: hit.original,
        status,
        diagnostic: diag,
        action: if hit.delayed { "delayed" } else { "failed" }.into(),
        remote_mta: hit.remote,
        last_attempt_date: hit.last_attempt,
        category: class.category,
        rule: class.origin,
        reported_category: hit.reported_category,
        command,
    }
}

/// Diagnostics are cut to this many characters.
const MAX_DIAG: usize = 1000;

#[cfg(test)]
mod format_tests;
