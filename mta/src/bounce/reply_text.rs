//! Reading an SMTP reply as bounces and DSNs quote it: its basic code, enhanced status and text,
//! the first enhanced status in a diagnostic, a DSN diagnostic's type prefix (`smtp;`), and the
//! command a reply answered as the bounce's words say.

/// A parsed SMTP reply line: basic code, enhanced status, text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// The three-digit code, if the reply starts with one.
    pub code: Option<u16>,
    /// The enhanced status code (`class.subject.detail`), if present.
    pub enhanced: Option<String>,
    /// The whole reply text, whitespace-normalised (multi-line replies joined with spaces).
    pub text: String,
}

impl SmtpReply {
    /// Parses `550 5.1.1 text`, `550-5.1.1 text` (multi-line joined), `550 text` or free text.
    pub fn parse(reply: &str) -> SmtpReply {
        let mut text = String::new();
        for line in reply.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            // Continuation lines `550-5.1.1 more` repeat code and status: keep only their text.
            let stripped = if !text.is_empty() {
                strip_code_prefix(line)
            } else {
                line
            };
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(stripped);
        }
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let code = basic_code(&text);
        let after_code = match code {
            Some(_) => text.get(4..).unwrap_or("").trim_start(),
            None => text.as_str(),
        };
        let enhanced = find_enhanced_prefix(after_code).map(str::to_string);
        SmtpReply {
            code,
            enhanced,
            text,
        }
    }

    /// The enhanced status, else one derived from the basic code (`550` gives `5.0.0`), else empty.
    pub fn status(&self) -> String {
        if let Some(e) = &self.enhanced {
            return e.clone();
        }
        match self.code {
            Some(c) if (200..600).contains(&c) => format!("{}.0.0", c / 100),
            _ => String::new(),
        }
    }
}

fn strip_code_prefix(line: &str) -> &str {
    let b = line.as_bytes();
    if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && (b[3] == b'-' || b[3] == b' ') {
        let rest = line[4..].trim_start();
        match find_enhanced_prefix(rest) {
            Some(e) => rest[e.len()..].trim_start(),
            None => rest,
        }
    } else {
        line
    }
}

/// The three-digit code at the start of `text` (followed by space, `-` or end), if any.
fn basic_code(text: &str) -> Option<u16> {
    let b = text.as_bytes();
    if b.len() >= 3
        && b[..3].iter().all(u8::is_ascii_digit)
        && (b.len() == 3 || b[3] == b' ' || b[3] == b'-')
    {
        text[..3].parse().ok()
    } else {
        None
    }
}

/// An enhanced status code `d.d{1,3}.d{1,3}` at the start of `s` (class 2, 4 or 5).
fn find_enhanced_prefix(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b.is_empty() || !matches!(b[0], b'2' | b'4' | b'5') || b.get(1) != Some(&b'.') {
        return None;
    }
    let mut i = 2;
    let start2 = i;
    while i < b.len() && b[i].is_ascii_digit() && i - start2 < 3 {
        i += 1;
    }
    if i == start2 || b.get(i) != Some(&b'.') {
        return None;
    }
    i += 1;
    let start3 = i;
    while i < b.len() && b[i].is_ascii_digit() && i - start3 < 3 {
        i += 1;
    }
    if i == start3
        || b.get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'.')
    {
        return None;
    }
    Some(&s[..i])
}

/// Finds the first enhanced status code anywhere in `text` (word-bounded), e.g. in a diagnostic.
pub fn find_enhanced_status(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    for i in 0..b.len() {
        // Only ASCII digits start a code, which also keeps `i` on a char boundary.
        if !matches!(b[i], b'2' | b'4' | b'5') {
            continue;
        }
        if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.') {
            continue;
        }
        if let Some(s) = find_enhanced_prefix(&text[i..]) {
            return Some(s);
        }
    }
    None
}

/// The SMTP command a reply answered, from the words a bounce uses around it: Postfix's
/// "(in reply to RCPT TO command)", Exim's "after RCPT TO:", DragonFly's "did not like our RCPT TO",
/// a Sendmail transcript's ">>> RCPT To:", "SMTP:RCPT host", qmail's "Connected to X but sender
/// was rejected", Postfix's "refused to talk to me". After "after " the command word must end the
/// phrase or be followed by `TO`/`FROM`/`command`/punctuation ("call after data review" names none).
pub fn command_in(text: &str) -> Option<&'static str> {
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
        // Postfix: the server refused the connection ("host X refused to talk to me: 421 ...").
        ("refused to talk to me", "CONN"),
    ];
    let lower = text.to_ascii_lowercase();
    if let Some((_, cmd)) = QMAIL.iter().find(|(s, _)| lower.contains(s)) {
        return Some(cmd);
    }
    for p in PREFIXES {
        let mut from = 0;
        while let Some(i) = lower[from..].find(p) {
            let at = from + i + p.len();
            let rest = lower[at..]
                .strip_prefix("pipelined ")
                .unwrap_or(&lower[at..]);
            for (word, cmd) in COMMANDS {
                if let Some(tail) = rest.strip_prefix(word) {
                    let after = tail.chars().next();
                    let ends = after.is_none_or(|c| !c.is_ascii_alphabetic());
                    if ends && (*p != "after " || names_a_step(tail)) {
                        return Some(cmd);
                    }
                }
            }
            from = at;
        }
    }
    None
}

/// After "after COMMAND": the phrase ends there, or goes on as a command does (`TO`, `FROM`,
/// `command`, punctuation), not into other words.
fn names_a_step(tail: &str) -> bool {
    match tail.strip_prefix(' ') {
        None => true,
        Some(rest) => {
            let word = rest
                .split(|c: char| !c.is_ascii_alphabetic())
                .next()
                .unwrap_or("");
            word.is_empty() || matches!(word, "to" | "from" | "command")
        }
    }
}

/// Strips a DSN diagnostic type prefix such as `smtp;` or `X-Postfix;`.
pub fn strip_diag_type(diag: &str) -> &str {
    let t = diag.trim_start();
    if let Some(semi) = t.find(';') {
        let head = &t[..semi];
        if !head.is_empty()
            && head.len() <= 20
            && head
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'/'))
        {
            return t[semi + 1..].trim_start();
        }
    }
    t
}
