//! Reading SMTP replies inside bounce text: where a reply starts, the command it answered, the
//! status it carries.

use crate::bounce::classify::{find_enhanced_status, strip_diag_type, SmtpReply};

/// The SMTP command a reply answered, from the words a bounce uses around it: Postfix's
/// "(in reply to RCPT TO command)", Exim's "after RCPT TO:", DragonFly's "did not like our RCPT TO",
/// a Sendmail transcript's ">>> RCPT To:", "SMTP:RCPT host".
pub(crate) fn command_in(text: &str) -> Option<&'static str> {
    const PREFIXES: &[&str] = &[
        "in reply to ",
        "after ",
        "our final ",
        "our ",
        ">>> ",
        "<<< ",
        "smtp:",
        "response to ",
        "following ",
        "[",
    ];
    const COMMANDS: &[(&str, &str)] = &[
        ("rcpt", "RCPT"),
        ("mail from", "MAIL"),
        ("mail_from", "MAIL"),
        ("end of data", "DATA"),
        ("data", "DATA"),
        ("ehlo", "EHLO"),
        ("helo", "HELO"),
        ("initial connection", "CONN"),
        ("connect", "CONN"),
    ];
    // qmail-remote's own sentences (qmail 1.03 qmail-remote.c).
    const QMAIL: &[(&str, &str)] = &[
        ("but greeting failed", "CONN"),
        ("but my name was rejected", "HELO"),
        ("but sender was rejected", "MAIL"),
        ("does not like recipient", "RCPT"),
        ("failed on data command", "DATA"),
        ("failed after i sent the message", "DATA"),
    ];
    let lower = text.to_ascii_lowercase();
    if let Some((_, cmd)) = QMAIL.iter().find(|(s, _)| lower.contains(s)) {
        return Some(cmd);
    }
    for p in PREFIXES {
        let mut from = 0;
        while let Some(i) = lower[from..].find(p) {
            let at = from + i + p.len();
            let rest = &lower[at..];
            for (word, cmd) in COMMANDS {
                if let Some(tail) = rest.strip_prefix(word) {
                    let after = tail.chars().next();
                    if after.is_none_or(|c| !c.is_ascii_alphabetic()) {
                        return Some(cmd);
                    }
                }
            }
            from = at;
        }
    }
    None
}

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
