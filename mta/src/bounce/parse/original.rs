//! The original message a bounce quotes: where the human part ends, its Message-ID and
//! tracking headers.

use super::{header_fields, BounceReport, TRACKING_HEADER_PREFIXES};

pub(super) fn original_from_headers(raw: &[u8], report: &mut BounceReport) {
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
    "------ This is a copy of your message",
    "----- Original message -----",
    "--- Below this line is a copy of the message.",
    "--- Original message follows.",
    "----- Original message headers -----",
    "Original message headers:",
    "----- Message header follows -----",
    "----- Original Message -----",
    "----- Unsent message follows -----",
    "Original message follows.",
    "Message headers follow.",
    "Included is a copy of the message header",
    "-------original message",
    "-------original mail info",
    "------- Returned Message --------",
    "Original Message:",
    "The header of the original message is following.",
];

/// True if `line` starts the quoted original message.
pub(crate) fn is_original_marker(line: &str) -> bool {
    ORIGINAL_MARKERS.iter().any(|m| line.contains(m))
}

/// Where the human-readable part of a text bounce ends: at an original-message marker, or at a
/// `Received:`/`Return-Path:` header line in column 0.
pub(super) fn human_end(text: &str) -> usize {
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if is_original_marker(line)
            || line.starts_with("Received: ")
            || line.starts_with("Return-Path: ")
        {
            return pos;
        }
        pos += line.len();
    }
    text.len()
}

pub(super) fn original_from_text(text: &str, report: &mut BounceReport) {
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

/// The `To` addresses of a quoted original message's header block (`head` starts at the
/// headers, or at an original-message marker line followed by them).
pub(super) fn original_to(head: &str) -> Vec<String> {
    let head = head.replace("\r\n", "\n");
    let mut rest = head.as_str();
    if rest.lines().next().is_some_and(is_original_marker) {
        rest = rest.split_once('\n').map(|(_, r)| r).unwrap_or("");
    }
    let block = rest
        .trim_start_matches('\n')
        .split("\n\n")
        .next()
        .unwrap_or("");
    let dedented: String = block
        .lines()
        .map(|l| l.trim_start())
        .collect::<Vec<_>>()
        .join("\n");
    header_fields(&dedented)
        .iter()
        .filter(|(n, _)| n == "to")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter_map(super::find_address)
                .collect::<Vec<_>>()
        })
        .take(10)
        .collect()
}
