//! Plain-text bounces of the common MTAs: Postfix, Exim (and MXLogic), Sendmail (V8 and V5,
//! Zoho, Biglobe), qmail (and its relatives), Yahoo. Markers after sisimai's Lhost::Postfix,
//! Lhost::Exim, Lhost::Sendmail, Lhost::V5sendmail and Lhost::qmail.

use super::{command_in, find_address, is_original_marker, services, BounceFormat, Hit, Input};
use crate::bounce::classify::{find_enhanced_status, SmtpReply};

/// The format a text bounce's markers name, if any (the first of [`detect_all`]).
pub(super) fn detect(input: &Input<'_>) -> Option<BounceFormat> {
    detect_all(input).into_iter().next()
}

/// Every format whose markers a text bounce carries, strongest first (a bounce may quote another
/// product's report: an Exchange NDR with a Sendmail transcript heading).
pub(super) fn detect_all(input: &Input<'_>) -> Vec<BounceFormat> {
    let mut out = Vec::new();
    let mut rest = FORMATS.to_vec();
    while let Some(f) = detect_among(input, &rest) {
        out.push(f);
        rest.retain(|x| *x != f);
    }
    out
}

/// The formats [`detect_all`] tells apart by markers.
const FORMATS: &[BounceFormat] = &[
    BounceFormat::Qmail,
    BounceFormat::Postfix,
    BounceFormat::Exim,
    BounceFormat::Sendmail,
    BounceFormat::Exchange,
    BounceFormat::Yahoo,
    BounceFormat::Dragonfly,
    BounceFormat::GoogleGroups,
    BounceFormat::Gmail,
];

/// The first format among `allowed` whose markers the bounce carries.
fn detect_among(input: &Input<'_>, allowed: &[BounceFormat]) -> Option<BounceFormat> {
    let text = &input.text;
    let ok = |f: BounceFormat| allowed.contains(&f);
    let has = |s: &str| text.contains(s);
    let subject = input.subject;
    if ok(BounceFormat::Qmail)
        && (has("qmail-send program")
            || has("wasn't able to deliver your message to the following addresses"))
    {
        Some(BounceFormat::Qmail)
    } else if ok(BounceFormat::Postfix)
        && (has("This is the mail system at host") || has("This is the Postfix program at host"))
    {
        Some(BounceFormat::Postfix)
    } else if ok(BounceFormat::Exim)
        && (has("created automatically by mail delivery software")
            || has("The following address(es) failed:")
            || has("not yet been delivered to one or more of its"))
    {
        Some(BounceFormat::Exim)
    } else if ok(BounceFormat::Sendmail)
        && (has("Transcript of session follows")
            || has("The following addresses had")
            || has("had permanent fatal errors"))
    {
        Some(BounceFormat::Sendmail)
    } else if ok(BounceFormat::Exchange)
        && (has("Delivery has failed to these recipients or groups")
            || has("Diagnostic information for administrators")
            || has("did not reach the following recipient")
            || has("could not be reached:"))
    {
        Some(BounceFormat::Exchange)
    } else if ok(BounceFormat::Yahoo)
        && has("unable to deliver your message to the following address")
    {
        Some(BounceFormat::Yahoo)
    } else if ok(BounceFormat::Dragonfly) && has("This is the DragonFly Mail Agent") {
        Some(BounceFormat::Dragonfly)
    } else if ok(BounceFormat::GoogleGroups)
        && has("Google Groups")
        && input.from.contains("google")
    {
        Some(BounceFormat::GoogleGroups)
    } else if ok(BounceFormat::Gmail)
        && (has("Address not found")
            || has("Delivery to the following recipient failed")
            || subject.starts_with("Delivery Status Notification"))
    {
        Some(BounceFormat::Gmail)
    } else {
        None
    }
}

/// Runs the parser of format `f`.
pub(super) fn parse_format(f: BounceFormat, input: &Input<'_>) -> Vec<Hit> {
    let text = input.human;
    match f {
        BounceFormat::Qmail | BounceFormat::Postfix | BounceFormat::Yahoo => angle_blocks(text, f),
        BounceFormat::Exim => exim(text, &input.failed_header),
        BounceFormat::Sendmail => sendmail(text),
        BounceFormat::Exchange => services::exchange(&input.text),
        BounceFormat::Gmail => services::gmail(&input.text),
        BounceFormat::Dragonfly => dragonfly(text),
        _ => Vec::new(),
    }
}

/// The reporting host named in the human part (Postfix's "This is the mail system at host …",
/// Exchange's "Generating server:").
pub(super) fn reporting_mta(human: &str) -> Option<String> {
    human.lines().find_map(|l| {
        let t = l.trim();
        t.strip_prefix("Generating server:")
            .or_else(|| t.strip_prefix("This is the mail system at host "))
            .or_else(|| t.strip_prefix("This is the Postfix program at host "))
            .map(|h| h.trim().trim_end_matches('.').trim().to_string())
    })
}

/// The `<addr>:` block shape of qmail, Postfix's transcript and Yahoo: an address line ending in `:`
/// (possibly followed by text) and indented or following lines up to a blank line.
fn angle_blocks(text: &str, format: BounceFormat) -> Vec<Hit> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    let stop = |l: &str| is_original_marker(l) || l.starts_with("--- ");
    while let Some(line) = lines.next() {
        if stop(line) {
            break;
        }
        // Recipient lines start in column 0; indented `<addr>:` lines continue a diagnostic.
        let t = line;
        // qmail relatives (and qmail in HTML) may write the address bare: "user@example.com".
        let bare = (format == BounceFormat::Qmail)
            .then(|| find_address(t).filter(|a| t.trim().trim_end_matches(':') == a))
            .flatten();
        let (addr, mut diag) = if let Some(a) = bare {
            (a, String::new())
        } else {
            if !t.starts_with('<') {
                continue;
            }
            let Some(close) = t.find(">:") else { continue };
            let Some(addr) = t.get(..close + 1).and_then(find_address) else {
                continue;
            };
            (addr, t[close + 2..].trim().to_string())
        };
        while let Some(next) = lines.peek() {
            if next.trim().is_empty() && diag.is_empty() && format == BounceFormat::Qmail {
                // qmail relatives leave a blank line between the address and its reason.
                lines.next();
                continue;
            }
            let next_bare = format == BounceFormat::Qmail
                && find_address(next).is_some_and(|a| next.trim().trim_end_matches(':') == a);
            if next.trim().is_empty() || next.starts_with('<') || next_bare || stop(next) {
                break;
            }
            if !diag.is_empty() {
                diag.push(' ');
            }
            diag.push_str(next.trim());
            lines.next();
        }
        let command = command_in(&diag).map(str::to_string);
        if let Some(p) = diag.find("Remote host said:") {
            diag = diag[p + "Remote host said:".len()..].trim().to_string();
        } else if format == BounceFormat::Postfix {
            diag = super::after_said(&diag).to_string();
        }
        let remote = remote_host(t).or_else(|| remote_host(&diag));
        out.push(Hit {
            remote,
            command,
            ..Hit::new(addr, diag)
        });
    }
    out
}

/// `host mx.example.com[192.0.2.1] said: …` (Postfix) or `Remote host mx.example.com said:` forms.
pub(super) fn remote_host(diag: &str) -> Option<String> {
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

/// Exim: "The following address(es) failed:" then an address line and indented detail lines.
/// A delivery named without an address ("save to …" / "generated by …" with no address in
/// either) takes its address from `failed` (the bounce's `X-Failed-Recipients`, in list order).
fn exim(text: &str, failed: &[String]) -> Vec<Hit> {
    let mut out: Vec<Hit> = Vec::new();
    let mut in_list = false;
    let mut delayed = false;
    let mut gap = false;
    let mut reason_next = false;
    let mut generated = false;
    for line in text.lines() {
        if is_original_marker(line) || line.starts_with("Included is a copy") {
            break;
        }
        if line.contains("failed:")
            || line.contains("could not be delivered")
            || line.contains("not yet been delivered is:")
            || line.contains("not yet been delivered to the following address")
            || line.contains("incorrectly constructed:")
        {
            in_list = true;
            delayed |= line.contains("not yet been delivered");
            continue;
        }
        if line.trim().is_empty() {
            gap = true;
            continue;
        }
        if line.contains("The following text was generated during the delivery attempt") {
            generated = true;
            in_list = false;
            continue;
        }
        let trimmed = line.trim_start();
        if generated && !trimmed.starts_with("------") && !trimmed.starts_with("generated by") {
            // The transport's own output (a pipe or a local delivery) explains the failure.
            if let Some(last) = out.last_mut() {
                if !last.diag.is_empty() {
                    last.diag.push(' ');
                }
                last.diag.push_str(line.trim());
            }
            continue;
        }
        if !in_list {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let t = line.trim();
        if t.to_ascii_lowercase().ends_with("reason:") {
            // 1&1 / GMX: "For the following reason:" / "Reason:" then the reason.
            reason_next = true;
            continue;
        }
        // "host mx.example[192.0.2.1]: reason" may follow the list at column 0 (delay warnings).
        let host_line = t.starts_with("host ") && !out.is_empty();
        if indent == 0 && gap && !line.contains('@') && !reason_next && !host_line {
            // A paragraph after the list ("No action is required on your part.").
            in_list = false;
            continue;
        }
        gap = false;
        reason_next = false;
        if indent <= 2 {
            let first = t.split_whitespace().next().unwrap_or("");
            // Deliveries named without an address; "(generated from addr)" follows.
            let local = t.starts_with("pipe to |")
                || t.starts_with("save to ")
                || t == "an undisclosed address";
            let addr = if first.contains('@') {
                find_address(first)
            } else if local {
                Some(find_address(t).unwrap_or_default())
            } else {
                None
            };
            if let Some(a) = addr {
                let rest = if local { "" } else { t[first.len()..].trim() };
                out.push(Hit {
                    delayed,
                    ..Hit::new(a, rest.trim_start_matches(':').trim().to_string())
                });
                continue;
            }
        }
        let Some(last) = out.last_mut() else { continue };
        let generated_from = t
            .strip_prefix("(generated from ")
            .or_else(|| t.strip_prefix("(ultimately generated from "));
        if let (Some(g), true) = (generated_from, last.rcpt.is_empty()) {
            last.rcpt = find_address(g).unwrap_or_default();
            continue;
        }
        if let Some(g) = t.strip_prefix("generated by ") {
            // "save to /var/mail/x" / "generated by user@example.org": the address.
            if last.rcpt.is_empty() {
                last.rcpt = find_address(g).unwrap_or_default();
            }
            continue;
        }
        if !last.diag.is_empty() {
            last.diag.push(' ');
        }
        last.diag.push_str(t);
        if last.remote.is_none() && t.starts_with("host ") {
            last.remote = remote_host(t);
        }
    }
    let named: Vec<String> = out
        .iter()
        .filter(|h| !h.rcpt.is_empty())
        .map(|h| h.rcpt.to_ascii_lowercase())
        .collect();
    let mut rest = failed
        .iter()
        .filter(|a| !named.contains(&a.to_ascii_lowercase()));
    if rest.clone().count() == out.len() - named.len() {
        for h in out.iter_mut().filter(|h| h.rcpt.is_empty()) {
            h.rcpt = rest.next().cloned().unwrap_or_default();
        }
    }
    out.retain(|h| !h.rcpt.is_empty());
    for r in &mut out {
        r.command = command_in(&r.diag).map(str::to_string);
        if r.diag.starts_with("(ultimately generated from") {
            if let Some((_, rest)) = r.diag.split_once(')') {
                r.diag = rest.trim().to_string();
            }
        }
        // Keep the remote reply: "SMTP error from remote mail server after RCPT TO:<x>: 550 …".
        if let Some(p) = r.diag.find("SMTP error from remote") {
            let rest = &r.diag[p..];
            let status_at = find_enhanced_status(rest).and_then(|s| rest.find(s));
            if let Some(q) = super::reply_start(rest).or(status_at) {
                r.diag = rest[q..].trim().to_string();
            } else if let Some(q) = rest.find(">:") {
                r.diag = rest[q + 2..].trim().to_string();
            }
            r.diag = super::after_said(&r.diag).to_string();
        }
    }
    out
}

/// Sendmail: "----- The following addresses had permanent fatal errors -----", then the
/// transcript; V5 sendmail has only the transcript ("554 <addr>... reason", ">>> RCPT To:<addr>").
fn sendmail(text: &str) -> Vec<Hit> {
    let mut out: Vec<Hit> = Vec::new();
    let mut section = 0; // 1 = address list, 2 = transcript
    let mut remote: Option<String> = None;
    let mut replies: Vec<(String, Option<String>)> = Vec::new();
    let mut transcript: Vec<Hit> = Vec::new();
    let mut last_cmd: Option<String> = None;
    let mut pending: Option<(String, Option<String>)> = None;
    for line in text.lines() {
        let t = line.trim();
        if t.contains("The following addresses had") || t.contains("had permanent fatal errors") {
            section = 1;
            continue;
        }
        if t.contains("Transcript of session follows") {
            section = 2;
            continue;
        }
        if t.contains("Non-delivered information") {
            section = 3;
            continue;
        }
        if is_original_marker(t) || t.starts_with("-----") {
            section = 0;
            continue;
        }
        match section {
            1 => {
                if let Some(reason) = t.strip_prefix("(reason:") {
                    if let Some(last) = out.last_mut() {
                        last.diag = reason.trim_end_matches(')').trim().to_string();
                    }
                } else if let Some(a) = find_address(t) {
                    let t = t.trim_start_matches('>').trim();
                    let rest = t.split_once(['>', ' ']).map(|(_, r)| r).unwrap_or("");
                    let rest = rest.trim().trim_start_matches("...").trim();
                    out.push(Hit::new(a, rest.trim_matches(['[', ']']).to_string()));
                } else if let Some(last) = out.last_mut() {
                    if last.diag.is_empty() && !t.is_empty() {
                        last.diag = t.to_string();
                    }
                }
            }
            2 => {
                if let Some(p) = t.to_ascii_lowercase().find("while talking to ") {
                    remote = Some(t[p + 17..].trim_end_matches([':', '.']).to_string());
                    pending = None;
                } else if let Some(c) = t.strip_prefix(">>>") {
                    last_cmd = command_in(&format!(">>> {}", c.trim())).map(str::to_string);
                    if let Some(a) = c
                        .to_ascii_lowercase()
                        .find("rcpt to:")
                        .and_then(|_| find_address(c))
                    {
                        transcript.push(Hit {
                            remote: remote.clone(),
                            command: Some("RCPT".into()),
                            ..Hit::new(a, String::new())
                        });
                    }
                } else if let Some(r) = t.strip_prefix("<<<") {
                    replies.push((r.trim().to_string(), last_cmd.clone()));
                    match transcript.last_mut() {
                        Some(h) if h.diag.is_empty() => h.diag = r.trim().to_string(),
                        _ => pending = Some((r.trim().to_string(), last_cmd.clone())),
                    }
                } else if SmtpReply::parse(t).code.is_some_and(|c| c >= 400) {
                    // "554 <addr>... reason" names the recipient.
                    let body = t.get(4..).unwrap_or("");
                    if let Some(a) = body.starts_with('<').then(|| find_address(body)).flatten() {
                        // The remote reply just before it is the cause ("<<< 550 …").
                        let (diag, command) = pending.take().unwrap_or((t.to_string(), None));
                        transcript.push(Hit {
                            remote: remote.clone(),
                            command,
                            ..Hit::new(a, diag)
                        });
                    }
                    replies.push((t.to_string(), None));
                }
            }
            3 if !t.is_empty() => replies.push((t.to_string(), None)),
            _ => {}
        }
    }
    if out.is_empty() {
        return transcript;
    }
    for r in &mut out {
        if r.diag.is_empty() || SmtpReply::parse(&r.diag).code.is_none() {
            let lower = r.rcpt.to_ascii_lowercase();
            let mine = replies
                .iter()
                .find(|x| x.0.to_ascii_lowercase().contains(&lower))
                .or_else(|| replies.iter().find(|x| x.0.starts_with('5')))
                .or(replies.first());
            if let Some((reply, cmd)) = mine {
                r.diag = reply.clone();
                r.command = cmd.clone();
            }
        }
        r.remote = remote.clone();
    }
    out
}

/// DragonFly Mail Agent: "There was an error delivering your mail to <addr>." then either
/// "HOST [IP] did not like our RCPT TO:" and the reply, or the agent's own reason ("DNS lookup
/// failure: …", "Could not deliver for the last N seconds. Giving up."). After sisimai's
/// Lhost::DragonFly.
fn dragonfly(text: &str) -> Vec<Hit> {
    let mut out: Vec<Hit> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(p) = t.find("delivering your mail to ") {
            if let Some(a) = find_address(&t[p..]) {
                out.push(Hit::new(a, String::new()));
            }
            continue;
        }
        let Some(h) = out.last_mut() else { continue };
        if t.is_empty() {
            if !h.diag.is_empty() {
                break;
            }
            continue;
        }
        if let Some(p) = t.find(" did not like our ") {
            h.command = command_in(&t[p..]).map(str::to_string);
            h.remote = t[..p].split_whitespace().next().map(str::to_string);
            continue;
        }
        if !h.diag.is_empty() {
            h.diag.push(' ');
        }
        h.diag.push_str(t);
    }
    out
}
