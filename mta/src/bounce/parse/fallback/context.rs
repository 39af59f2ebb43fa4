//! The bounce's own explanation around a recipient line that says nothing but the address: the
//! sentence the address is set in, the lines of its paragraph and the short paragraph after it,
//! the "… for the following reason:" paragraph, the list's heading.

use super::{find_address, is_quoted_header};

/// At most this many lines are taken from either side of a recipient line.
const MAX_LINES: usize = 3;
/// A following paragraph longer than this is not a recipient's reason.
const MAX_NEXT: usize = 200;

fn blank(l: &str) -> bool {
    l.trim().is_empty()
}

/// A line that closes the explanation: a heading, a separator (`----`, `****`), a quoted header,
/// undecodable text.
fn stops(l: &str) -> bool {
    let t = l.trim();
    t.ends_with(':')
        || t.starts_with("--")
        || t.starts_with("==")
        || !t.chars().any(char::is_alphanumeric)
        || t.contains('\u{fffd}')
        || is_quoted_header(t)
}

/// A paragraph of closing boilerplate ("Please contact …", "If you …", "Thank you").
fn boilerplate(l: &str) -> bool {
    let first = l
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    [
        "please",
        "if",
        "you",
        "for",
        "thank",
        "thanks",
        "best",
        "regards",
        "sincerely",
        "note",
    ]
    .contains(&first.trim_matches(|c: char| !c.is_alphanumeric()))
}

/// The explanation around the recipient line `lines[i]`, if the bounce gives one.
pub(super) fn around(lines: &[&str], i: usize) -> Option<String> {
    broken_sentence(lines, i).or_else(|| paragraph(lines, i))
}

/// "Delivery of email to this address" / "addr" / "has been postponed due to a full mailbox.":
/// a sentence the address line interrupts (the line before does not end it, the line after
/// goes on in lowercase).
fn broken_sentence(lines: &[&str], i: usize) -> Option<String> {
    let before = lines[..i].iter().rev().find(|l| !blank(l))?.trim();
    // "Your message to:" may open the sentence; a list heading does not.
    if before.ends_with(['.', '!', '?', ';'])
        || super::is_heading(before)
        || (stops(before) && !before.ends_with(':'))
    {
        return None;
    }
    let after: Vec<&str> = lines[i + 1..]
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .take(MAX_LINES)
        .collect();
    if !after.first()?.starts_with(|c: char| c.is_lowercase()) {
        return None;
    }
    let mut out = format!("{before} {}", lines[i].trim());
    for l in after {
        if stops(l) {
            break;
        }
        out.push(' ');
        out.push_str(l);
        if l.ends_with('.') {
            break;
        }
    }
    Some(out)
}

/// The lines of the recipient line's paragraph before it ("Your message has encountered delivery
/// problems to local user x."), then the short paragraph after it ("User not known").
fn paragraph(lines: &[&str], i: usize) -> Option<String> {
    let mut before: Vec<&str> = lines[..i]
        .iter()
        .rev()
        .take_while(|l| !blank(l) && !stops(l) && find_address(l).is_none())
        .take(MAX_LINES)
        .map(|l| l.trim())
        .collect();
    before.reverse();
    let mut j = i + 1;
    while j < lines.len() && !blank(lines[j]) {
        j += 1;
    }
    while j < lines.len() && blank(lines[j]) {
        j += 1;
    }
    let next: Vec<&str> = lines[j.min(lines.len())..]
        .iter()
        .take_while(|l| !blank(l))
        .map(|l| l.trim())
        .collect();
    let next_ok = !next.is_empty()
        && next.len() <= MAX_LINES
        && next.iter().map(|l| l.len()).sum::<usize>() <= MAX_NEXT
        && !next.iter().any(|l| stops(l) || find_address(l).is_some())
        && !boilerplate(next[0]);
    let mut parts = before;
    if next_ok {
        // "Reason: …": the label is not part of the reason.
        parts.extend(next.iter().enumerate().map(|(k, l)| {
            match k {
                0 => l
                    .get(..7)
                    .filter(|h| h.eq_ignore_ascii_case("reason:"))
                    .map_or(*l, |_| l[7..].trim_start()),
                _ => l,
            }
        }));
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// The paragraph after a heading that announces the reason ("This message was undeliverable due
/// to the following reason:").
pub(super) fn reason_paragraph(lines: &[&str]) -> Option<String> {
    if let Some(out) = reason_field(lines) {
        return Some(out);
    }
    let p = lines.iter().position(|l| {
        // "… due to the following reason:", "Reason for the failure:", "The reason it is …:".
        let t = l.trim().to_ascii_lowercase();
        t.ends_with(':')
            && t.split(|c: char| !c.is_alphanumeric())
                .any(|w| w.starts_with("reason"))
    })?;
    let text: Vec<&str> = lines[p + 1..]
        .iter()
        .skip_while(|l| blank(l))
        .take_while(|l| !blank(l) && !stops(l) && find_address(l).is_none())
        .map(|l| l.trim())
        .collect();
    let out = text.join(" ");
    (!out.is_empty()).then(|| out.chars().take(300).collect())
}

/// The heading over the recipient list `lines[i]` belongs to ("The following recipients did not
/// receive your message:").
pub(super) fn heading_before(lines: &[&str], i: usize) -> Option<String> {
    // "Did not reach the following recipient: addr": the heading is on the recipient's line.
    let own = find_address(lines[i])
        .and_then(|a| lines[i].find(&a))
        .map(|p| lines[i][..p].trim().trim_end_matches(['<', '"', '\'', ' ']))
        .filter(|h| super::is_heading(h));
    if let Some(h) = own {
        return Some(h.trim_start_matches(['-', '*', '=', ' ']).to_string());
    }
    lines[..i]
        .iter()
        .rev()
        .take(10)
        .map(|l| l.trim())
        .find(|l| !l.is_empty() && find_address(l).is_none())
        .filter(|l| super::is_heading(l))
        .map(|l| l.trim_start_matches(['-', '*', '=', ' ']).to_string())
}

/// The lines right under `lines[i]` (up to a blank line, a heading or a separator), joined.
pub(super) fn lines_after(lines: &[&str], i: usize) -> String {
    lines[i + 1..]
        .iter()
        .take_while(|l| !blank(l) && !stops(l))
        .take(MAX_LINES)
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A "Reason: the email you sent … has been returned because …" paragraph: the text after the
/// label and the lines that go on with it.
fn reason_field(lines: &[&str]) -> Option<String> {
    let p = lines.iter().position(|l| {
        let t = l.trim();
        t.len() > 8
            && t.get(..7)
                .is_some_and(|h| h.eq_ignore_ascii_case("reason:"))
    })?;
    let mut out = lines[p].trim().get(7..).unwrap_or("").trim().to_string();
    for l in lines[p + 1..]
        .iter()
        .take_while(|l| !blank(l) && !stops(l))
        .take(MAX_LINES)
    {
        out.push(' ');
        out.push_str(l.trim());
    }
    Some(out.chars().take(300).collect())
}
