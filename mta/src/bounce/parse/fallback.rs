//! The general reading of a bounce no format parser claimed (DragonFly, OpenSMTPD, Domino, IMail,
//! InterScan, MailFoundry, MailMarshal, m-FILTER, the Japanese carriers and the many unnamed
//! MTAs): failed addresses in the human part's recipient lines, and the remote reply near them.
//! Also tells auto-replies apart from bounces.

use super::{after_said, command_in, find_address, reply_start, Hit, Input};

mod context;

/// Phrases after which a bounce names a failed recipient (on the same or the next line).
const LEADS: &[&str] = &[
    "rcpt to:",
    "delivering your mail to",
    "deliver message to",
    "deliver your message to",
    "delivered to:",
    "not delivered to",
    "wasn't delivered to",
    "your message to ",
    "following message to ",
    "could not be delivered to",
    "undeliverable to",
    "failed to deliver to",
    "delivery to the following recipient",
    "returned permanent errors:",
    "rejected recipient",
    "recipient:",
    "address:",
    "unknown user:",
    "userid:",
    "user:",
    "following address",
    "following recipient",
    "following addresses",
    "addressed to",
    "的メールアドレス",
];

/// Header names that start the quoted original message in a human part.
fn is_quoted_header(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    [
        "from:",
        "to:",
        "cc:",
        "reply-to:",
        "return-path:",
        "sender:",
        "received:",
        "message-id:",
        "subject:",
        "date:",
    ]
    .iter()
    .any(|h| lower.starts_with(h))
}

/// True if the message says it is a bounce: a mailer-daemon/postmaster sender, or failure words
/// in the subject or the human part.
pub(super) fn looks_like_bounce(input: &Input<'_>) -> bool {
    let from = input.from.as_str();
    if [
        "mailer-daemon",
        "mailer_daemon",
        "postmaster",
        "post_master",
        "mail-daemon",
        "mdaemon",
    ]
    .iter()
    .any(|m| from.starts_with(m))
    {
        return true;
    }
    let words = [
        "undeliver",
        "delivery",
        "failure",
        "failed",
        "returned",
        "error",
        "could not",
        "rejected",
        "not delivered",
        "unable to deliver",
        "エラー",
        "配信",
    ];
    let subject = input.subject.to_lowercase();
    let human = input.human.to_lowercase();
    words.iter().any(|w| subject.contains(w)) || words.iter().take(9).any(|w| human.contains(w))
}

/// True if the sender is a mail system or the subject says delivery failed (stricter than
/// [`looks_like_bounce`]).
pub(super) fn surely_bounce(input: &Input<'_>) -> bool {
    let from = input.from.as_str();
    let daemon = [
        "mailer-daemon",
        "mailer_daemon",
        "postmaster",
        "post_master",
        "mail-daemon",
    ]
    .iter()
    .any(|m| from.starts_with(m));
    let subject = input.subject.to_lowercase();
    daemon
        || [
            "undeliver",
            "returned mail",
            "delivery fail",
            "failure notice",
            "delivery status",
            "mail delivery",
            "delivery failure",
            "not delivered",
            "could not be delivered",
            "mail system error",
            "returned to sender",
        ]
        .iter()
        .any(|w| subject.contains(w))
}

/// True for vacation / out-of-office replies (RFC 3834 `Auto-Submitted: auto-replied` with an
/// away subject, `X-Autoreply`, `X-Autorespond`, `Precedence: auto_reply`).
pub(super) fn is_auto_reply(msg: &mail_parser::Message<'_>, input: &Input<'_>) -> bool {
    let header = |n: &str| msg.header_raw(n).map(|v| v.trim().to_ascii_lowercase());
    if header("X-Autoreply").is_some() || header("X-Autorespond").is_some() {
        return true;
    }
    if header("Precedence").is_some_and(|p| p.contains("auto_reply")) {
        return true;
    }
    let subject = input.subject.to_lowercase();
    let away = [
        "out of office",
        "out of the office",
        "autoreply",
        "auto-reply",
        "automatic reply",
        "vacation",
        "abwesenheit",
        "absence",
        "不在",
    ]
    .iter()
    .any(|w| subject.contains(w));
    let auto = header("Auto-Submitted").is_some_and(|v| !v.starts_with("no"));
    away && (auto || !surely_bounce(input))
}

/// True if a text bounce says the reporting MTA keeps trying ("THIS IS A WARNING MESSAGE ONLY",
/// "Delivery attempts will continue to be made for 5 day(s)", "We will continue to try to deliver
/// your message"): a delay notice, not a final failure.
pub(super) fn says_still_trying(human: &str) -> bool {
    if human.contains("THIS IS A WARNING MESSAGE ONLY") {
        return true;
    }
    let lower = human
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    [
        "delivery attempts will continue",
        "will continue to attempt delivery",
        "will continue to try to deliver",
        "will continue trying to deliver",
        "will keep trying to deliver",
        "will retry delivery",
        "you do not need to resend",
        "you do not need to re-send",
        "only a temporary failure",
        "will be retried for",
        "we'll retry",
        "this is just a warning",
        "this is only a warning",
    ]
    .iter()
    .any(|p| lower.contains(p))
}

/// Hits for recipients the bounce names in a header (`X-Failed-Recipients`), with the diagnostic
/// the human part gives.
pub(super) fn with_recipients(input: &Input<'_>, rcpts: &[String]) -> Vec<Hit> {
    let scanned = scan(input);
    // The text lists other recipients, each with the server's reply, and none of the given
    // ones: the text is the report (the header was copied from another notice).
    if !scanned.is_empty()
        && !scanned
            .iter()
            .any(|h| rcpts.iter().any(|r| h.rcpt.eq_ignore_ascii_case(r)))
        && scanned
            .iter()
            .all(|h| super::reply_start(&h.diag) == Some(0))
    {
        return scanned;
    }
    let fallback = reply_in(input.human).unwrap_or_else(|| first_sentence(input.human));
    rcpts
        .iter()
        .map(|r| {
            scanned
                .iter()
                .find(|h| h.rcpt.eq_ignore_ascii_case(r))
                .cloned()
                .unwrap_or_else(|| Hit {
                    command: command_in(input.human).map(str::to_string),
                    ..Hit::new(r.clone(), fallback.clone())
                })
        })
        .collect()
}

/// The first non-empty lines of the human part (the bounce's own explanation), at most 300 chars.
pub(super) fn first_sentence(human: &str) -> String {
    let mut out = String::new();
    let readable = |l: &&str| l.chars().any(char::is_alphanumeric) && !l.contains('\u{fffd}');
    for l in human.lines().map(str::trim).filter(readable) {
        if out.len() > 200 || l.starts_with("---") {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(l);
    }
    out.chars().take(300).collect()
}

/// A remote reply in `text`: the first line that starts a 4xx/5xx reply (after a prefix such as
/// `<<< ` or `... said: `), with its continuation lines.
pub(super) fn reply_in(text: &str) -> Option<String> {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim();
        if out.is_empty() {
            if let Some(p) = reply_start(t) {
                out.push_str(&t[p..]);
            }
        } else if t.is_empty() || reply_start(t) != Some(0) || t.len() < 4 {
            break;
        } else {
            out.push(' ');
            out.push_str(t);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The address a recipient line names, and the text after it on that line.
fn candidate(line: &str) -> Option<(String, String)> {
    let t = line.trim().trim_start_matches(['*', '-', '•']).trim();
    // "undeliverable  to addr": runs of blanks read as one.
    let collapsed = t.split_whitespace().collect::<Vec<_>>().join(" ");
    let t = collapsed.as_str();
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("to:") || lower.starts_with("from:") || lower.starts_with("cc:") {
        return None;
    }
    // "<addr>: reason", "<addr>", "addr: reason", "addr [reason]", "554 <addr>... reason".
    let body = match reply_start(t) {
        Some(0) => t.get(4..).unwrap_or("").trim_start(),
        _ => t,
    };
    let first = body.split_whitespace().next().unwrap_or("");
    if first.contains('@') && (body.starts_with('<') || !first.contains('<')) {
        // "name <addr>: reason": the angle-bracketed address is the recipient.
        let head = body.split(": ").next().unwrap_or("");
        let angled = head
            .rfind('<')
            .filter(|p| *p > 0)
            .and_then(|p| find_address(&head[p..]));
        if let Some(a) = angled.or_else(|| find_address(first)) {
            let rest = body[first.len()..]
                .trim()
                .trim_start_matches(['.', ':'])
                .trim();
            let rest = if reply_start(t) == Some(0) { t } else { rest };
            return Some((a, rest.to_string()));
        }
    }
    for lead in LEADS {
        if let Some(p) = lower.find(lead) {
            let after = t.get(p + lead.len()..).unwrap_or("");
            if let Some(a) = find_address(after).filter(|a| !names_sender(after, a)) {
                if !lead.ends_with(':') {
                    // "Your message wasn't delivered to X because …": the whole sentence.
                    return Some((a, t.to_string()));
                }
                let q = after.find(&a).map(|q| q + a.len()).unwrap_or(0);
                let rest = after[q..]
                    .trim()
                    .trim_start_matches(['>', '.', ':', ' '])
                    .trim();
                return Some((a, rest.to_string()));
            }
        }
    }
    // "Unknown user: addr" and other "reason: addr" lines.
    if let Some((before, after)) = t.rsplit_once(": ") {
        let contact = [
            "contact", "support", "help", "admin", "reply", "sender", "from",
        ]
        .iter()
        .any(|w| before.to_ascii_lowercase().contains(w));
        if let Some(a) = find_address(after)
            .filter(|a| after.trim().trim_matches(['<', '>']) == a)
            .filter(|_| !contact)
        {
            return Some((a, before.trim().to_string()));
        }
    }
    None
}

/// Failed recipients in the human part: recipient lines (see [`candidate`]) not naming the
/// bounce's own sender or recipient; each with the text after it, its continuation lines, or
/// else the remote reply the human part quotes.
pub(super) fn scan(input: &Input<'_>) -> Vec<Hit> {
    let lines: Vec<&str> = input.human.lines().collect();
    let mut out: Vec<Hit> = Vec::new();
    let mut prevs: Vec<Option<&str>> = Vec::new();
    let mut positions: Vec<usize> = Vec::new();
    let mut lead_pending = false;
    for (i, line) in lines.iter().enumerate() {
        if is_quoted_header(line) && !out.is_empty() {
            break;
        }
        let found = candidate(line).or_else(|| {
            // A lead phrase at the end of the previous line ("was not delivered to:").
            lead_pending
                .then(|| {
                    find_address(line.trim()).filter(|a| line.trim().trim_matches(['<', '>']) == a)
                })
                .flatten()
                .map(|a| (a, String::new()))
        });
        let lower = line.to_ascii_lowercase();
        lead_pending = LEADS.iter().any(|l| {
            lower.trim_end().ends_with(l.trim_end_matches(':')) || lower.trim_end().ends_with(l)
        });
        let Some((addr, rest)) = found else { continue };
        let a = addr.to_ascii_lowercase();
        if input.exclude.contains(&a) {
            continue;
        }
        if let Some(h) = out.iter_mut().find(|h| h.rcpt.eq_ignore_ascii_case(&a)) {
            // Named again further on ("<addr>... Deferred: …" in a transcript, an error-detail
            // section "---- addr" over its reason lines): keep its reason.
            if h.diag.is_empty() {
                h.diag = if rest.is_empty() {
                    context::lines_after(&lines, i)
                } else {
                    rest
                };
            }
            continue;
        }
        let whole = line.trim();
        let mut diag = if rest.starts_with('(') && !whole.starts_with('<') {
            whole.to_string()
        } else {
            rest
        };
        for next in lines.iter().skip(i + 1) {
            let t = next.trim();
            let other = candidate(next).is_some_and(|(b, _)| !b.eq_ignore_ascii_case(&addr));
            if t.is_empty()
                || other
                || is_quoted_header(next)
                || t.starts_with("---")
                || is_heading(t)
            {
                break;
            }
            if !diag.is_empty() {
                diag.push(' ');
            }
            diag.push_str(t);
        }
        // "------- Failure Reasons --------" / "User not listed ..." / "addr": the line before.
        let prev = lines[..i]
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .filter(|p| !p.starts_with("--") && !p.ends_with(':') && !is_quoted_header(p));
        if says_nothing(&diag, &addr) {
            // "<addr>" alone, "(Originally addressed to addr)": the sentence around it.
            diag = context::around(&lines, i).unwrap_or_default();
        }
        prevs.push(prev);
        positions.push(i);
        out.push(Hit::new(addr, diag));
    }
    for (h, prev) in out.iter_mut().zip(prevs) {
        if let (true, Some(p)) = (h.diag.is_empty(), prev) {
            h.diag = p.to_string();
        }
        if h.diag.is_empty() {
            // The bounce's "… due to the following reason:" paragraph.
            h.diag = context::reason_paragraph(&lines).unwrap_or_default();
        }
    }
    let reply = reply_in(input.human);
    let command = command_in(input.human).or_else(|| smtp_command_section(input.human));
    let explanation = first_sentence(input.human);
    let single = out.len() == 1;
    for (h, i) in out.iter_mut().zip(&positions) {
        let said = after_said(&h.diag);
        h.diag = match reply_start(said) {
            Some(p) => said[p..].to_string(),
            None => said.trim_start_matches("because:").trim().to_string(),
        };
        let has_code = reply_start(&h.diag).is_some();
        if !has_code && (single || h.diag.is_empty()) {
            if let Some(r) = &reply {
                h.diag = r.clone();
            } else if h.diag.is_empty() {
                h.diag = explanation.clone();
            }
        }
        if h.diag.is_empty() {
            // Nothing else: the heading over the recipient list.
            h.diag = context::heading_before(&lines, *i).unwrap_or_default();
        }
        h.command = command_in(&h.diag).or(command).map(str::to_string);
        h.remote = super::mta_text::remote_host(&h.diag);
    }
    out
}

/// True if `addr` is named in `text` as a sender ("… not accepting mail from addr"), not as a
/// recipient.
fn names_sender(text: &str, addr: &str) -> bool {
    let Some(p) = text.find(addr) else {
        return false;
    };
    let before = text[..p]
        .trim_end()
        .trim_end_matches(['<', '"', '\''])
        .trim_end()
        .to_ascii_lowercase();
    before.ends_with(" from") || before.ends_with("from:") || before.ends_with("sender")
}

/// True for a line that introduces a list ("The following recipients did not receive your
/// message:"), not one that explains a failure.
fn is_heading(t: &str) -> bool {
    let lower = t.to_ascii_lowercase();
    lower.ends_with(':')
        && LEADS
            .iter()
            .any(|l| lower.contains(l.trim_end_matches(':')))
}

/// True if a recipient line's text says nothing but the address: `<addr>`, `"addr" <addr>`,
/// `(Originally addressed to addr)`.
fn says_nothing(diag: &str, addr: &str) -> bool {
    let lower = diag
        .to_ascii_lowercase()
        .replace(&addr.to_ascii_lowercase(), " ");
    lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .all(|w| {
            [
                "originally",
                "was",
                "addressed",
                "to",
                "recipient",
                "smtp",
                "rfc822",
            ]
            .contains(&w)
        })
}

/// m-FILTER's "-------SMTP command" section: the command on the next line.
fn smtp_command_section(human: &str) -> Option<&'static str> {
    let p = human.find("SMTP command")?;
    let next = human[p..].lines().nth(1)?.trim().to_ascii_uppercase();
    ["RCPT", "MAIL", "DATA", "EHLO", "HELO"]
        .into_iter()
        .find(|c| next.starts_with(c))
}
