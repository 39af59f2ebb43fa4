//! Reading SMTP replies inside bounce text: where a reply starts, the command it answered, the
//! status it carries.

use crate::bounce::classify::{find_enhanced_status, strip_diag_type, SmtpReply};
pub(crate) use crate::bounce::reply_text::command_in;

/// The enhanced status in a diagnostic, else one derived from an SMTP code in it, else `default`.
pub(crate) fn status_from_diag(diag: &str, default: &str) -> String {
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

/// The remote reply in a diagnostic that quotes it after "said:" / "failed with:" /
/// "did not like our …:" / "responded with failure:".
pub(crate) fn after_said(diag: &str) -> &str {
    for m in [
        " said:",
        "failed with:",
        "responded with failure:",
        "did not like our",
    ] {
        if let Some(p) = diag.find(m) {
            let rest = &diag[p + m.len()..];
            let rest = if m == "did not like our" {
                rest.split_once(':').map(|(_, r)| r).unwrap_or(rest)
            } else {
                rest
            };
            return rest.trim();
        }
    }
    diag
}

/// Byte offset in `line` where a 4xx/5xx SMTP reply starts: at the start, or after `<<< `,
/// `: `, `] ` (e.g. `host x[1.2.3.4]: 550 ...`).
pub(crate) fn reply_start(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    for i in 0..b.len().saturating_sub(2) {
        let code = matches!(b[i], b'4' | b'5')
            && b[i + 1].is_ascii_digit()
            && b[i + 2].is_ascii_digit()
            && (i + 3 == b.len() || matches!(b[i + 3], b' ' | b'-'));
        if !code {
            continue;
        }
        if i == 0 {
            return Some(0);
        }
        if !matches!(b[i - 1], b' ' | b'<' | b'(') {
            continue;
        }
        // Bounded look-back (linear time): the text just before the code, spaces dropped.
        let mut j = i;
        while j > 0 && b[j - 1] == b' ' && i - j < 8 {
            j -= 1;
        }
        let before = &b[j.saturating_sub(5)..j];
        if before.ends_with(b":")
            || before.ends_with(b"<<<")
            || before.ends_with(b"]")
            || before.ends_with(b"reply")
        {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_from_text() {
        assert_eq!(status_from_diag("smtp; 550 5.2.2 full", "5.0.0"), "5.2.2");
        assert_eq!(status_from_diag("554 delivery error", "5.0.0"), "5.0.0");
        assert_eq!(status_from_diag("451 try later", "5.0.0"), "4.0.0");
        assert_eq!(status_from_diag("no code", "5.0.0"), "5.0.0");
    }
}
