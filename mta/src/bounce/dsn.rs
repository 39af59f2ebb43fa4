//! Building the RFC 3464 DSN the MTA sends to the envelope sender when recipients fail (5xx or
//! expiry) or are delayed, in PowerMTA's shape: `multipart/report; report-type=delivery-status`
//! with a human-readable part ("Hello, this is the mail server on HOST."), a `message/delivery-status`
//! part carrying PowerMTA's `X-PowerMTA-VirtualMTA` / `X-PowerMTA-BounceCategory` extension fields,
//! and a `text/rfc822-headers` part with the original headers. The output is a pure function of the
//! inputs: the caller passes the clock and a seed for the boundary and Message-ID.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::classify::Category;

/// The per-recipient `Action` of a DSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    /// Permanent failure (5xx reply or expiry).
    Failed,
    /// Transient failure; the MTA keeps trying.
    Delayed,
}

impl DsnAction {
    /// `failed` or `delayed`.
    pub fn as_str(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
        }
    }
}

/// One recipient to report in a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The recipient address (envelope RCPT TO).
    pub recipient: String,
    /// The ORCPT value, if the client gave one.
    pub original_recipient: Option<String>,
    /// Failed or delayed.
    pub action: DsnAction,
    /// The enhanced status, e.g. `5.1.1` or `4.4.7`.
    pub status: String,
    /// The remote MTA's host name, if a connection was made.
    pub remote_mta: Option<String>,
    /// The remote reply (`550 5.1.1 …`) or the local reason (`connection refused`).
    pub diagnostic: String,
    /// The bounce category.
    pub category: Category,
    /// When the last delivery attempt was made.
    pub last_attempt: Option<SystemTime>,
    /// For delayed recipients: until when the MTA will retry.
    pub will_retry_until: Option<SystemTime>,
}

/// Everything a DSN is built from.
#[derive(Debug, Clone)]
pub struct DsnRequest<'a> {
    /// The reporting MTA's host name (`Reporting-MTA: dns; HOST`, `From: MAILER-DAEMON@HOST`).
    pub reporting_host: &'a str,
    /// The virtual MTA that handled the message, if any (`X-PowerMTA-VirtualMTA`).
    pub virtual_mta: Option<&'a str>,
    /// The original envelope sender; empty (`<>`) means no DSN is built.
    pub envelope_sender: &'a str,
    /// The ENVID of the original transaction, if any.
    pub envelope_id: Option<&'a str>,
    /// When the original message arrived.
    pub arrival: SystemTime,
    /// The current time (the DSN's `Date`).
    pub now: SystemTime,
    /// A unique token (e.g. the spool id) for the boundary and the Message-ID.
    pub seed: &'a str,
    /// The original message (or just its header section); only the headers are included.
    pub original: &'a [u8],
    /// The recipients to report.
    pub recipients: &'a [DsnRecipient],
}

/// A DSN ready to be queued: envelope and the message bytes (CRLF line endings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// The envelope sender of the DSN: always empty (the null sender `<>`).
    pub envelope_from: String,
    /// The envelope recipient: the original message's envelope sender.
    pub envelope_to: String,
    /// The DSN's Message-ID, with angle brackets.
    pub message_id: String,
    /// The message.
    pub bytes: Vec<u8>,
}

/// Builds the DSN, or `None` if the original envelope sender is null (never bounce a bounce) or
/// there is no recipient to report.
pub fn build_dsn(req: &DsnRequest<'_>) -> Option<Dsn> {
    let sender = clean(req.envelope_sender);
    let sender = sender
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    if sender.is_empty() || req.recipients.is_empty() {
        return None;
    }
    let host = clean(req.reporting_host);
    let host = if host.trim().is_empty() {
        "localhost".to_string()
    } else {
        host.trim().to_string()
    };
    let seed_token: String = req
        .seed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(64)
        .collect();
    let seed_token = if seed_token.is_empty() {
        "dsn".to_string()
    } else {
        seed_token
    };
    let message_id = format!("<{seed_token}.dsn@{host}>");

    let human = human_part(&host, req.recipients);
    let status = status_part(req, &host);
    let headers = original_headers(req.original);
    let eight_bit = !headers.is_ascii();

    let mut boundary = format!("=_mtasim-dsn-{seed_token}");
    while human.contains(&boundary) || status.contains(&boundary) || headers.contains(&boundary) {
        boundary.push('_');
    }
    let any_failed = req.recipients.iter().any(|r| r.action == DsnAction::Failed);

    let mut m = String::new();
    let _ = write!(
        m,
        "From: Mail Delivery Subsystem <MAILER-DAEMON@{host}>\r\n"
    );
    let _ = write!(m, "To: <{sender}>\r\n");
    let subject = if any_failed {
        "Delivery report"
    } else {
        "Delivery report (delayed)"
    };
    let _ = write!(m, "Subject: {subject}\r\n");
    let _ = write!(m, "Date: {}\r\n", rfc5322_date(req.now));
    let _ = write!(m, "Message-ID: {message_id}\r\n");
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    let _ = write!(
        m,
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    );
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    let _ = write!(
        m,
        "--{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{human}\r\n"
    );
    let _ = write!(
        m,
        "--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{status}\r\n"
    );
    let _ = write!(
        m,
        "--{boundary}\r\nContent-Type: text/rfc822-headers{}\r\n\r\n{headers}\r\n",
        if eight_bit {
            "; charset=utf-8\r\nContent-Transfer-Encoding: 8bit"
        } else {
            ""
        }
    );
    let _ = write!(m, "--{boundary}--\r\n");
    Some(Dsn {
        envelope_from: String::new(),
        envelope_to: sender.to_string(),
        message_id,
        bytes: m.into_bytes(),
    })
}

/// Replaces CR, LF and other control characters (header injection) with spaces.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn human_part(host: &str, recipients: &[DsnRecipient]) -> String {
    let mut t = String::new();
    let _ = write!(t, "Hello, this is the mail server on {host}.\r\n\r\n");
    t.push_str("This is an automatic report on a message you sent earlier. The recipients\r\n");
    t.push_str("listed below were affected. A machine-readable delivery status report and\r\n");
    t.push_str("the headers of your original message are attached.\r\n\r\n");
    for r in recipients {
        let what = match r.action {
            DsnAction::Failed => "delivery failed; will not continue trying",
            DsnAction::Delayed => "delivery delayed; will continue trying",
        };
        let _ = write!(t, "  <{}>  {what}\r\n", clean(&r.recipient));
        if !r.diagnostic.is_empty() {
            for line in fold(&clean(&r.diagnostic), 72) {
                let _ = write!(t, "      {line}\r\n");
            }
        }
    }
    t
}

fn status_part(req: &DsnRequest<'_>, host: &str) -> String {
    let mut s = String::new();
    let _ = write!(s, "Reporting-MTA: dns; {host}\r\n");
    if let Some(v) = req.virtual_mta.map(clean).filter(|v| !v.trim().is_empty()) {
        let _ = write!(s, "X-PowerMTA-VirtualMTA: {}\r\n", v.trim());
    }
    if let Some(e) = req.envelope_id.map(clean).filter(|v| !v.trim().is_empty()) {
        let _ = write!(s, "Original-Envelope-Id: {}\r\n", e.trim());
    }
    let _ = write!(s, "Arrival-Date: {}\r\n", rfc5322_date(req.arrival));
    for r in req.recipients {
        s.push_str("\r\n");
        let _ = write!(
            s,
            "Final-Recipient: rfc822; {}\r\n",
            clean(&r.recipient).trim()
        );
        if let Some(o) = &r.original_recipient {
            let o = clean(o);
            let o = o.trim();
            if o.contains(';') {
                let _ = write!(s, "Original-Recipient: {o}\r\n");
            } else {
                let _ = write!(s, "Original-Recipient: rfc822; {o}\r\n");
            }
        }
        let _ = write!(s, "Action: {}\r\n", r.action.as_str());
        let status = clean(&r.status);
        let status = if status.trim().is_empty() {
            match r.action {
                DsnAction::Failed => "5.0.0".to_string(),
                DsnAction::Delayed => "4.0.0".to_string(),
            }
        } else {
            status.trim().to_string()
        };
        let _ = write!(s, "Status: {status}\r\n");
        if let Some(mta) = r
            .remote_mta
            .as_deref()
            .map(clean)
            .filter(|m| !m.trim().is_empty())
        {
            let _ = write!(s, "Remote-MTA: dns; {}\r\n", mta.trim());
        }
        let diag = clean(&r.diagnostic);
        let diag = diag.trim();
        if !diag.is_empty() {
            let b = diag.as_bytes();
            let typed = if b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit) {
                format!("smtp; {diag}")
            } else {
                format!("X-mtasim; {diag}")
            };
            let lines = fold(&format!("Diagnostic-Code: {typed}"), 76);
            let _ = write!(s, "{}\r\n", lines.join("\r\n "));
        }
        let _ = write!(s, "X-PowerMTA-BounceCategory: {}\r\n", r.category.as_str());
        if let Some(t) = r.last_attempt {
            let _ = write!(s, "Last-Attempt-Date: {}\r\n", rfc5322_date(t));
        }
        if let Some(t) = r.will_retry_until {
            let _ = write!(s, "Will-Retry-Until: {}\r\n", rfc5322_date(t));
        }
    }
    s
}

/// Splits `text` at spaces into lines of at most `width` characters (longer words stay whole).
fn fold(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

/// The header section of `original` with CRLF line endings (no trailing blank line).
fn original_headers(original: &[u8]) -> String {
    // Only the header section is decoded (a body can be megabytes).
    let text = String::from_utf8_lossy(&original[..header_end(original)]).replace("\r\n", "\n");
    text.split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

/// Where the header section ends: at the LF before the first empty line (LF, or CR LF), else the
/// end. (A CR before that LF stays; the caller trims line ends.)
fn header_end(b: &[u8]) -> usize {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &b[from..]) {
        let lf = from + i;
        if matches!(&b[lf + 1..], [b'\n', ..] | [b'\r', b'\n', ..]) {
            return lf;
        }
        from = lf + 1;
    }
    b.len()
}

/// Formats a time as an RFC 5322 date in UTC: `Mon, 23 Nov 2026 10:15:01 +0000`.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let wd = WD[days.rem_euclid(7) as usize];
    let mon = MON[(m as usize).saturating_sub(1).min(11)];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The header section is found on the bytes as it was on the whole decoded message
        /// (CRLF and bare LF line ends, stray CRs, invalid UTF-8).
        #[test]
        fn header_section_found_on_bytes(parts in proptest::collection::vec(
            proptest::sample::select(vec!["\r\n", "\n", "\r", "H: v", "\u{e9}", "\u{ff}", "x"]), 0..24),
            bad in proptest::bool::ANY,
        ) {
            let mut original: Vec<u8> = parts.concat().into_bytes();
            if bad {
                original.insert(original.len() / 2, 0xff);
            }
            let whole = String::from_utf8_lossy(&original).replace("\r\n", "\n");
            let head = whole.find("\n\n").map_or(whole.as_str(), |p| &whole[..p]);
            let expected = head
                .split('\n')
                .map(|l| l.trim_end_matches('\r'))
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("\r\n")
                + "\r\n";
            proptest::prop_assert_eq!(original_headers(&original), expected);
        }
    }
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_428_901);
        assert_eq!(rfc5322_date(t), "Mon, 23 Nov 2026 10:15:01 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc5322_date(leap), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn folding() {
        assert_eq!(fold("a b c", 3), vec!["a b", "c"]);
        assert_eq!(fold("", 10), vec![""]);
    }
}
