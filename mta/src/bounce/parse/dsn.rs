//! RFC 3464 delivery-status fields, in a `message/delivery-status` part or (broken variants) in a
//! text part: missing blank lines between recipients, no Final-Recipient, `Action: expired`,
//! quoted local parts, a pipe or file in place of the address.

use super::{
    command_in, field, find_address, find_enhanced_status, header_fields, typed_value,
    BounceReport, Hit, Input,
};

/// Per-recipient DSN field names (RFC 3464 section 2.3).
const RECIPIENT_FIELDS: &[&str] = &[
    "final-recipient",
    "original-recipient",
    "action",
    "status",
    "diagnostic-code",
    "remote-mta",
    "last-attempt-date",
    "x-actual-recipient",
];
/// Per-message DSN field names (RFC 3464 section 2.2) and PowerMTA's extension.
const MESSAGE_FIELDS: &[&str] = &[
    "reporting-mta",
    "arrival-date",
    "x-powermta-virtualmta",
    "received-from-mta",
];
/// Other fields kept with a recipient group.
const EXTRA_FIELDS: &[&str] = &[
    "x-smtp-command",
    "x-postfix-command",
    "x-powermta-bouncecategory",
];

/// Splits DSN text into field groups: at blank lines, and where a per-recipient field repeats
/// (DSNs that leave out the blank line between recipients).
fn groups(body: &str) -> Vec<Vec<(String, String)>> {
    let norm = body.replace("\r\n", "\n");
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    for block in norm.split("\n\n") {
        let mut current: Vec<(String, String)> = Vec::new();
        for (name, value) in header_fields(block) {
            let known = RECIPIENT_FIELDS.contains(&name.as_str())
                || MESSAGE_FIELDS.contains(&name.as_str())
                || EXTRA_FIELDS.contains(&name.as_str());
            if !known {
                continue;
            }
            let repeats = RECIPIENT_FIELDS.contains(&name.as_str())
                && current.iter().any(|(n, _)| *n == name);
            if repeats {
                out.push(std::mem::take(&mut current));
            }
            current.push((name, value));
        }
        if !current.is_empty() {
            out.push(current);
        }
    }
    out
}

/// A usable recipient address from a DSN address field: the type prefix, brackets and quotes
/// around the local part dropped; the address inside a pipe or route form; `None` if none.
fn dsn_address(v: &str) -> Option<String> {
    let t = typed_value(v);
    let t = t.replace("\"@", "@");
    let t = t.strip_prefix('"').unwrap_or(&t).to_string();
    if t.contains('@')
        && !t.contains(['|', ' ', ':', '/'])
        && find_address(&t).as_deref() == Some(t.as_str())
    {
        return Some(t);
    }
    // The whole field is one address whose domain is a single label (`user@mailhub`, a local
    // host: Postfix's local delivery after an alias expansion names it so). Free text needs a
    // dot in the domain to be read as an address; a DSN address field says what it holds.
    if let Some((local, domain)) = t.split_once('@') {
        if !local.is_empty()
            && !local.contains([' ', '|', ':', '/', '<', '>', '"'])
            && !domain.is_empty()
            && domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Some(t.clone());
        }
    }
    find_address(&t)
}

/// The failed or delayed recipients of DSN fields (per-message fields go into `report`).
pub(super) fn parse_fields(body: &str, report: &mut BounceReport) -> Vec<Hit> {
    let mut hits = Vec::new();
    for fields in groups(body) {
        let is_rcpt = field(&fields, "final-recipient").is_some()
            || field(&fields, "original-recipient").is_some();
        if !is_rcpt {
            // Per-message fields: the first block that has them wins.
            if let (None, Some(v)) = (&report.reporting_mta, field(&fields, "reporting-mta")) {
                report.reporting_mta = Some(typed_value(v));
            }
            if let (None, Some(v)) = (&report.arrival_date, field(&fields, "arrival-date")) {
                report.arrival_date = Some(v.to_string());
            }
            if let (None, Some(v)) = (&report.virtual_mta, field(&fields, "x-powermta-virtualmta"))
            {
                report.virtual_mta = Some(v.to_string());
            }
            continue;
        }
        if let Some(h) = group_hit(&fields) {
            hits.push(h);
        }
    }
    hits
}

fn group_hit(fields: &[(String, String)]) -> Option<Hit> {
    let action = field(fields, "action")
        .unwrap_or("failed")
        .to_ascii_lowercase();
    let delayed = action.starts_with("delayed");
    if !(action.starts_with("failed") || delayed || action.starts_with("expired")) {
        return None;
    }
    let original = field(fields, "original-recipient").and_then(dsn_address);
    let rcpt = field(fields, "final-recipient")
        .and_then(dsn_address)
        .or_else(|| original.clone())
        .or_else(|| field(fields, "x-actual-recipient").and_then(dsn_address))
        .unwrap_or_default();
    // A bare type ("Diagnostic-Code: SMTP;") says nothing: leave it to the text.
    // No Diagnostic-Code: a comment on the Status field says why (Sun/Oracle Messaging Server's
    // "Status: 5.0.0 (recipient reached disk quota)"), before the text is asked.
    let diag = field(fields, "diagnostic-code")
        .filter(|d| !super::strip_diag_type(d).trim().is_empty())
        .map(str::to_string)
        .or_else(|| field(fields, "status").and_then(status_comment))
        .unwrap_or_default();
    let status = field(fields, "status").and_then(|s| {
        find_enhanced_status(s)
            .map(str::to_string)
            .or_else(|| s.split_whitespace().next().map(str::to_string))
    });
    let command = field(fields, "x-smtp-command")
        .or_else(|| field(fields, "x-postfix-command"))
        .map(str::to_string);
    Some(Hit {
        rcpt,
        diag,
        remote: field(fields, "remote-mta").map(typed_value),
        command,
        status,
        delayed,
        original,
        last_attempt: field(fields, "last-attempt-date").map(str::to_string),
        reported_category: field(fields, "x-powermta-bouncecategory").map(str::to_string),
    })
}

/// The words of a Status field's comment (`5.0.0 (recipient reached disk quota)`), if any.
fn status_comment(status: &str) -> Option<String> {
    let (_, rest) = status.split_once('(')?;
    let words = rest.rsplit_once(')').map_or(rest, |(w, _)| w).trim();
    // RFC 3463's "other or undefined ... status" names no reason.
    let says = words.chars().filter(|c| c.is_alphabetic()).count() > 3
        && !words.to_ascii_lowercase().contains("other or undefined");
    says.then(|| words.to_string())
}

/// DSN fields written into a text part (broken MIME, WorkMail, Messaging Server, ...): the lines
/// from the first `Final-Recipient`/`Original-Recipient`/`Reporting-MTA` field on.
pub(super) fn embedded(text: &str) -> Vec<Hit> {
    let lower = text.to_ascii_lowercase();
    let start = [
        "\nreporting-mta:",
        "\nfinal-recipient:",
        "\noriginal-recipient:",
    ]
    .iter()
    .filter_map(|m| lower.find(m))
    .min();
    let Some(start) = start else {
        return Vec::new();
    };
    let mut scratch = BounceReport::default();
    parse_fields(&text[start..], &mut scratch)
}

/// Completes DSN hits from the human-readable part: an empty recipient takes the text's
/// recipient in the same position; a missing diagnostic or command is looked up in the
/// paragraph of the text that names the recipient (Postfix's "(in reply to RCPT TO command)").
pub(super) fn fill_from_text(mut hits: Vec<Hit>, input: &Input<'_>) -> Vec<Hit> {
    if hits.iter().any(|h| h.rcpt.is_empty()) {
        let mut text_hits = super::fallback::scan(input);
        if text_hits.is_empty() {
            // Addresses only: the diagnostic is looked up below.
            text_hits = input
                .failed_header
                .iter()
                .map(|a| Hit::new(a.clone(), String::new()))
                .collect();
        }
        for (i, h) in hits.iter_mut().enumerate() {
            if h.rcpt.is_empty() {
                if let Some(t) = text_hits.get(i) {
                    h.rcpt = t.rcpt.clone();
                    if h.diag.is_empty() {
                        h.diag = t.diag.clone();
                    }
                }
            }
        }
    }
    let single = hits.len() == 1;
    for h in &mut hits {
        if h.command.is_some() && !h.diag.is_empty() {
            continue;
        }
        let Some(para) = recipient_paragraph(input.human, &h.rcpt) else {
            if h.command.is_none() {
                h.command = transcript_command(input.human, &h.rcpt, single)
                    .or_else(|| command_in(input.human).filter(|_| single))
                    .map(str::to_string);
            }
            continue;
        };
        if h.command.is_none() {
            h.command = command_in(&para)
                .or_else(|| transcript_command(input.human, &h.rcpt, single))
                .map(str::to_string);
        }
        if h.diag.is_empty() {
            let rest = para.split_once(':').map(|(_, r)| r).unwrap_or("");
            if rest.chars().filter(|c| c.is_alphanumeric()).count() > 2 {
                h.diag = rest.split_whitespace().collect::<Vec<_>>().join(" ");
            }
        }
    }
    // Still no diagnostic: the human part's reply line naming the recipient, or its only reply.
    for h in hits.iter_mut().filter(|h| h.diag.is_empty()) {
        let lower = h.rcpt.to_ascii_lowercase();
        let named = input.human.lines().find(|l| {
            super::reply_start(l.trim()) == Some(0) && l.to_ascii_lowercase().contains(&lower)
        });
        if let Some(l) = named {
            h.diag = l.trim().to_string();
        } else if single {
            h.diag = super::fallback::reply_in(input.human).unwrap_or_default();
        }
        if h.command.is_none() {
            h.command = command_in(input.human).map(str::to_string);
        }
    }
    // A diagnostic holding only the first line of a multi-line reply ("550-5.7.1 …"): the
    // transcript in the human part quotes the whole reply.
    for h in &mut hits {
        if let Some(full) = whole_reply(input.human, &h.diag) {
            h.diag = full;
        }
    }
    // Still none: the text format's own line for that recipient, or the human part's
    // explanation of it.
    if hits.iter().any(|h| h.diag.is_empty()) {
        let mut scanned = super::mta_text::detect(input)
            .map(|f| super::mta_text::parse_format(f, input))
            .unwrap_or_default();
        scanned.retain(|t| !t.diag.is_empty());
        scanned.extend(super::fallback::scan(input));
        for h in hits.iter_mut().filter(|h| h.diag.is_empty()) {
            let mine = scanned
                .iter()
                .find(|t| t.rcpt.eq_ignore_ascii_case(&h.rcpt));
            h.diag = match mine {
                Some(t) => t.diag.clone(),
                None if single => super::fallback::first_sentence(input.human),
                None => String::new(),
            };
        }
    }
    hits
}

/// The whole multi-line reply whose first line `diag` holds (`550-…` with the continuation
/// mark), from the human part's transcript (`<<< 550-…` … `<<< 550 …`); `None` when `diag` is
/// not such a first line or the text does not quote it.
fn whole_reply(human: &str, diag: &str) -> Option<String> {
    let first = super::strip_diag_type(diag).trim();
    let b = first.as_bytes();
    if b.len() < 5 || !b[..3].iter().all(u8::is_ascii_digit) || b[3] != b'-' {
        return None;
    }
    let code = &first[..3];
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let want = squash(first);
    let mut lines = human
        .lines()
        .map(|l| l.trim().trim_start_matches("<<<").trim());
    lines.by_ref().find(|l| squash(l) == want)?;
    let mut out = want;
    for l in lines {
        let Some(rest) = l.strip_prefix(code) else {
            break;
        };
        out.push(' ');
        out.push_str(&squash(l));
        if !rest.starts_with('-') {
            return Some(out);
        }
    }
    None
}

/// The human part's paragraph about `rcpt`: the line that starts with it (`<rcpt>: …`,
/// `rcpt: …`) and the indented lines after it.
fn recipient_paragraph(human: &str, rcpt: &str) -> Option<String> {
    let mut lines = human.lines();
    let lower = rcpt.to_ascii_lowercase();
    let first = lines.by_ref().find(|l| {
        let t = l
            .trim_start()
            .trim_start_matches(['<', '"'])
            .to_ascii_lowercase();
        t.starts_with(&lower)
    })?;
    let mut out = first.trim().to_string();
    for l in lines {
        if !l.starts_with([' ', '\t']) || l.trim().is_empty() {
            break;
        }
        out.push(' ');
        out.push_str(l.trim());
    }
    Some(out)
}

/// In a Sendmail-style transcript, the `>>> COMMAND` sent before the first `<<<` reply that
/// names `rcpt` (or, for a bounce about one recipient, before its first 4xx/5xx reply).
fn transcript_command(human: &str, rcpt: &str, single: bool) -> Option<&'static str> {
    let lower = rcpt.to_ascii_lowercase();
    let mut last = None;
    let mut first_failure = None;
    for l in human.lines().map(str::trim) {
        if l.starts_with(">>>") {
            last = command_in(l);
        } else if let Some(r) = l.strip_prefix("<<<") {
            if r.to_ascii_lowercase().contains(&lower) {
                return last;
            }
            if first_failure.is_none() && matches!(r.trim_start().chars().next(), Some('4' | '5')) {
                first_failure = Some(last);
            }
        }
    }
    first_failure.flatten().filter(|_| single)
}
