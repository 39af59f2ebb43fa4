//! Service and product notifications: Exchange / Office 365 NDRs (2003 to today), Gmail, Google
//! Groups, Amazon SES JSON notifications (bounce and delivery types). Markers after sisimai's
//! Lhost::Exchange2003, Lhost::Exchange2007, Lhost::Gmail, Lhost::GoogleGroups, Lhost::AmazonSES.

use super::{find_address, mta_text::remote_host, Hit};

fn to_hits(v: Vec<(String, String, Option<String>)>) -> Vec<Hit> {
    v.into_iter()
        .map(|(rcpt, diag, remote)| Hit {
            remote,
            ..Hit::new(rcpt, diag)
        })
        .collect()
}

/// Exchange: "Diagnostic information for administrators" (2007 and later), "Delivery has failed
/// to these recipients", or Exchange 2003's "did not reach the following recipient(s):" list
/// (`addr on DATE` then indented reason lines).
pub(super) fn exchange(text: &str) -> Vec<Hit> {
    let hits = to_hits(exchange_modern(text));
    if !hits.is_empty() {
        return hits;
    }
    exchange2003(text)
}

fn exchange2003(text: &str) -> Vec<Hit> {
    let mut out: Vec<Hit> = Vec::new();
    let mut in_list = false;
    for line in text.lines() {
        let t = line.trim();
        if t.contains("did not reach the following recipient")
            || t.contains("could not be reached:")
        {
            in_list = true;
            continue;
        }
        if !in_list || t.is_empty() {
            continue;
        }
        if super::is_original_marker(t) || t.starts_with("---") {
            // The original, or another report's section (a transcript heading).
            break;
        }
        let first = t.split_whitespace().next().unwrap_or("");
        if let Some(a) = x400_smtp_address(t) {
            out.push(Hit::new(a, String::new()));
            continue;
        }
        if first.contains('@') && t.contains(" on ") {
            if let Some(a) = find_address(first) {
                out.push(Hit::new(a, String::new()));
                continue;
            }
        }
        if let Some(last) = out.last_mut() {
            // The MTS-ID and its wrapped tail, the wrapped time of the "on <date>" line.
            if t.starts_with("The MTS-ID")
                || t.starts_with(';')
                || !t.chars().any(char::is_alphabetic)
            {
                continue;
            }
            if !last.diag.is_empty() {
                last.diag.push(' ');
            }
            last.diag.push_str(t);
        }
    }
    out
}

/// The Internet address in an X.400 O/R address line of Exchange's IMS
/// (`c=US;a= ;p=Org;o=Site;dda:SMTP=user@example.com; on <date>`; also `RFC-822=`).
fn x400_smtp_address(line: &str) -> Option<String> {
    let lower = line.to_ascii_lowercase();
    if !lower.starts_with("c=") {
        return None;
    }
    ["smtp=", "rfc-822=", "rfc822="].iter().find_map(|k| {
        let p = lower.find(k)? + k.len();
        let value = line[p..].split([';', ' ']).next()?;
        find_address(value)
    })
}

fn exchange_modern(text: &str) -> Vec<(String, String, Option<String>)> {
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

fn gmail_tuples(text: &str) -> Vec<(String, String, Option<String>)> {
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
            // The address stands on one of the next lines (a bounded look: a line of its own).
            let next = lines
                .iter()
                .skip(i + 1)
                .filter(|x| !x.trim().is_empty())
                .take(3);
            if let Some(a) = next.into_iter().find_map(|x| find_address(x)) {
                rcpts.push(a);
            }
        }
    }
    let mut diag = String::new();
    let mut remote = None;
    let markers = [
        "The error that the other server returned was:",
        "The response from the remote server was:",
        "The response was:",
        "Technical details of permanent failure:",
        "Technical details of temporary failure:",
    ];
    let start = markers
        .iter()
        .find_map(|m| lines.iter().position(|l| l.contains(m)).map(|i| (i, *m)));
    if let Some((i, marker)) = start {
        // The reply may follow the marker on the same line.
        let tail = lines[i]
            .split_once(marker)
            .map(|(_, r)| r.trim())
            .unwrap_or("");
        diag.push_str(tail);
        for l in &lines[i + 1..] {
            let t = l.trim();
            if super::is_original_marker(t) {
                break;
            }
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

/// Gmail's "Delivery Status Notification (Failure)" text ("(Delay)": delayed).
pub(super) fn gmail(text: &str) -> Vec<Hit> {
    let delayed = text.contains("has been delayed") || text.contains("THIS IS A WARNING MESSAGE");
    let mut hits = to_hits(gmail_tuples(text));
    for h in &mut hits {
        h.delayed = delayed;
        h.command = gmail_state_command(&h.diag).map(str::to_string);
    }
    hits
}

/// The SMTP command behind Gmail's "(state N)" suffix (older Gmail bounces); the table after
/// sisimai's Lhost::Gmail (states 8, 9 and 12 are AUTH, not reported).
fn gmail_state_command(diag: &str) -> Option<&'static str> {
    let p = diag.rfind("(state ")?;
    let n = diag[p + 7..].split(')').next()?.trim();
    match n {
        "6" => Some("MAIL"),
        "13" => Some("EHLO"),
        "14" => Some("RCPT"),
        "15" | "17" | "18" => Some("DATA"),
        _ => None,
    }
}

/// Google Groups' notice that a post was refused (the group may not exist, or the sender may not
/// post to it), in any language; the group is named in `X-Failed-Recipients`. The diagnostic is
/// the notice's meaning in English.
pub(super) const GOOGLE_GROUPS_DIAG: &str = "Google Groups: the group you tried to contact may not exist, or you may not have permission to post messages to the group";

/// An Amazon SES notification in JSON (directly, or as the `Message` string of an SNS
/// notification): the `bounce.bouncedRecipients` of a Bounce; `None` if the text is not one.
/// A Delivery notification has no failed recipient (`Some` of an empty list).
pub(super) fn amazon_ses(text: &str) -> Option<Vec<Hit>> {
    let start = text.find('{')?;
    if !text.contains("notificationType") && !text.contains("eventType") {
        return None;
    }
    let end = text.rfind('}')?;
    let json = text.get(start..=end)?;
    // Notifications sent as mail are often wrapped at 76 columns, inside strings too.
    let parse = |j: &str| {
        serde_json::from_str::<serde_json::Value>(j)
            .ok()
            .or_else(|| serde_json::from_str(&j.replace('\n', "")).ok())
    };
    let mut v = parse(json)?;
    if let Some(inner) = v.get("Message").and_then(|m| m.as_str()) {
        v = parse(inner)?;
    }
    let kind = v
        .get("notificationType")
        .or_else(|| v.get("eventType"))
        .and_then(|k| k.as_str())?;
    if !kind.eq_ignore_ascii_case("bounce") {
        return Some(Vec::new());
    }
    let bounce = v.get("bounce")?;
    let remote = bounce
        .get("reportingMTA")
        .and_then(|r| r.as_str())
        .map(|r| {
            r.trim_start_matches("dsn;")
                .trim_start_matches("dns;")
                .trim()
                .to_string()
        });
    let transient = bounce.get("bounceType").and_then(|t| t.as_str()) == Some("Transient");
    let recipients = bounce.get("bouncedRecipients")?.as_array()?;
    let hits = recipients
        .iter()
        .filter_map(|r| {
            let addr = find_address(r.get("emailAddress")?.as_str()?)?;
            let s = |k: &str| r.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            let mut diag = s("diagnosticCode");
            if diag.is_empty() {
                diag = bounce
                    .get("bounceSubType")
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
                    .to_string();
            }
            Some(Hit {
                status: Some(s("status")).filter(|x| !x.is_empty()),
                remote: remote.clone(),
                delayed: transient && s("action") == "delayed",
                ..Hit::new(addr, diag)
            })
        })
        .collect();
    Some(hits)
}

/// Mimecast's "[Postmaster] Email Delivery Failure" text: the address on a `-- ` line after
/// "…following address could not be delivered:" / "…addressed to email address :", then
/// "The problem appears to be :" and "Additional information follows :", each with its `-- `
/// lines. The additional information (the remote reply) is the diagnostic, else the problem
/// line. After sisimai's Lhost::Mimecast (one notice per failed recipient).
pub(super) fn mimecast(text: &str) -> Option<Vec<Hit>> {
    if !text.contains("The problem appears to be :") {
        return None;
    }
    #[derive(PartialEq)]
    enum Part {
        None,
        Address,
        Problem,
        Info,
    }
    let mut part = Part::None;
    let (mut rcpt, mut problem, mut info) = (None, String::new(), String::new());
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("If you sent the email to multiple recipients") {
            break;
        }
        let lower = t.to_ascii_lowercase();
        if lower.ends_with("could not be delivered:") || lower.ends_with("email address :") {
            part = Part::Address;
            continue;
        }
        if t.starts_with("The problem appears to be") {
            part = Part::Problem;
            continue;
        }
        if t.starts_with("Additional information follows") {
            part = Part::Info;
            continue;
        }
        let Some(v) = t.strip_prefix("-- ") else {
            if t.is_empty() {
                continue;
            }
            if part == Part::Info && !info.is_empty() {
                // A wrapped continuation of the reply ends at the next paragraph.
                part = Part::None;
            }
            continue;
        };
        let v = v.trim();
        match part {
            Part::Address if rcpt.is_none() => rcpt = find_address(v),
            Part::Problem if problem.is_empty() => problem = v.to_string(),
            Part::Info => {
                if !info.is_empty() {
                    info.push(' ');
                }
                info.push_str(v);
            }
            _ => {}
        }
    }
    let rcpt = rcpt?;
    let diag = if info.is_empty() { problem } else { info };
    Some(vec![Hit::new(rcpt, diag)])
}
