//! SMTP replies: code, optional enhanced status (RFC 3463), text lines; wire encoding and parsing.

use std::borrow::Cow;
use std::fmt;

/// An SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// Enhanced status such as `5.1.1`, if the reply carries one.
    pub enhanced: Option<Enhanced>,
    /// Text lines (without code and enhanced status).
    pub lines: Lines,
}

/// A reply's text lines: one is kept inline (nearly every reply has one line, and a `Vec` was an
/// allocation per reply made or read), and a fixed text is not copied.
pub type Lines = smallvec::SmallVec<[Cow<'static, str>; 1]>;

/// An enhanced status code such as `5.1.1`, kept inline (most replies carry one; a String each
/// was an allocation per reply). A valid code (`c.sss.ddd`) is at most 9 octets; longer text is
/// cut at [`Enhanced::MAX`] octets.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Enhanced {
    len: u8,
    bytes: [u8; Enhanced::MAX],
}

impl Enhanced {
    /// The most octets kept.
    pub const MAX: usize = 23;

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Built from a `&str` cut at a char boundary.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }
}

impl From<&str> for Enhanced {
    fn from(s: &str) -> Enhanced {
        let mut n = s.len().min(Enhanced::MAX);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        let mut bytes = [0u8; Enhanced::MAX];
        bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
        Enhanced {
            len: n as u8,
            bytes,
        }
    }
}

impl std::ops::Deref for Enhanced {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True if `s` looks like an enhanced status code `c.s.d` (class 2, 4 or 5).
pub fn is_enhanced(s: &str) -> bool {
    // Bytes, not `split('.')`: this runs for every reply line the client reads.
    let digits = |p: &[u8]| (1..=3).contains(&p.len()) && p.iter().all(u8::is_ascii_digit);
    match s.as_bytes() {
        [b'2' | b'4' | b'5', b'.', rest @ ..] => rest
            .iter()
            .position(|&c| c == b'.')
            .is_some_and(|dot| digits(&rest[..dot]) && digits(&rest[dot + 1..])),
        _ => false,
    }
}

impl Reply {
    /// A one-line reply with an enhanced status.
    pub fn new(code: u16, enhanced: &str, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: (!enhanced.is_empty()).then(|| Enhanced::from(enhanced)),
            lines: smallvec::smallvec![text.into()],
        }
    }

    /// A reply from a full line such as `550 5.1.1 no such user` (the form profiles and configs use).
    pub fn parse_line(line: &str) -> Option<Reply> {
        let code: u16 = line.get(..3)?.parse().ok()?;
        if !(200..600).contains(&code) {
            return None;
        }
        let rest = line.get(3..).unwrap_or("").trim_start_matches([' ', '-']);
        let (enhanced, text) = match rest.split_once(' ') {
            Some((e, t)) if is_enhanced(e) => (Some(Enhanced::from(e)), t.to_string()),
            None if is_enhanced(rest) => (Some(Enhanced::from(rest)), String::new()),
            _ => (None, rest.to_string()),
        };
        Some(Reply {
            code,
            enhanced,
            lines: smallvec::smallvec![text.into()],
        })
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status, or one derived from the code's class (`x.0.0`).
    pub fn status(&self) -> String {
        let mut s = String::new();
        let _ = self.write_status(&mut s); // writing to a String cannot fail
        s
    }

    /// [`Reply::status`] written to `out`.
    pub fn write_status(&self, out: &mut impl fmt::Write) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(out, "{e}"),
            None => write!(out, "{}.0.0", self.code / 100),
        }
    }

    /// The text, lines joined by spaces.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// Wire form: `250-first\r\n250 last\r\n`, the enhanced status on every line.
    pub fn to_wire(&self) -> String {
        let mut out = Vec::new();
        self.write_wire(&mut out);
        // Built from `&str` pieces and ASCII only.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the wire form (as [`Reply::to_wire`]) to `out`, without a String of its own.
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        let n = self.lines.len().max(1);
        // The code's digits without the formatting machinery (this runs for every reply sent).
        let mut digits = [0u8; 5];
        let mut at = digits.len();
        let mut c = self.code;
        loop {
            at -= 1;
            digits[at] = b'0' + (c % 10) as u8;
            c /= 10;
            if c == 0 {
                break;
            }
        }
        let code = std::str::from_utf8(&digits[at..]).unwrap_or("000");
        let enhanced = self.enhanced.as_deref();
        let len: usize = self.lines.iter().map(|l| l.len()).sum::<usize>()
            + n * (code.len() + enhanced.map_or(0, |e| e.len() + 1) + 3);
        out.reserve(len);
        for i in 0..n {
            out.extend_from_slice(code.as_bytes());
            out.push(if i + 1 == n { b' ' } else { b'-' });
            if let Some(e) = enhanced {
                out.extend_from_slice(e.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(
                self.lines
                    .get(i)
                    .map(|l| l.as_ref())
                    .unwrap_or("")
                    .as_bytes(),
            );
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl fmt::Display for Reply {
    /// One line: `550 5.1.1 text` (used in logs and accounting).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = &self.enhanced {
            f.write_str(" ")?;
            f.write_str(e)?;
        }
        // The text's lines joined by spaces, written as they are (no joined copy).
        f.write_str(" ")?;
        for (i, l) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(l)?;
        }
        Ok(())
    }
}

/// Assembles a reply from wire lines (client side).
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    enhanced: Option<Enhanced>,
    lines: Lines,
}

/// Why a reply line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply line: {0:?}")]
pub struct BadReply(pub String);

impl ReplyParser {
    /// Feeds one line (without CRLF); returns the reply when it was the last line.
    pub fn line(&mut self, line: &str) -> Result<Option<Reply>, BadReply> {
        self.line_owned(line.to_string())
    }

    /// As [`ReplyParser::line`], keeping the line's own buffer as the reply's text line (the
    /// client reads every reply line this way: no second allocation per line).
    pub fn line_owned(&mut self, mut line: String) -> Result<Option<Reply>, BadReply> {
        let bad = |line: &str| BadReply(line.chars().take(200).collect());
        let code: u16 = match line.get(..3).and_then(|c| c.parse().ok()) {
            Some(c) => c,
            None => return Err(bad(&line)),
        };
        if !(200..600).contains(&code) || self.code.is_some_and(|c| c != code) {
            return Err(bad(&line));
        }
        let sep = line.as_bytes().get(3).copied();
        let (rest_at, rest) = line.get(4..).map_or((line.len(), ""), |r| (4, r));
        // The first word, found by byte (a space is ASCII, so both sides are on char boundaries).
        let space = rest.as_bytes().iter().position(|&c| c == b' ');
        let word = space.map_or(rest, |i| &rest[..i]);
        let text_at = if is_enhanced(word) {
            self.enhanced.get_or_insert_with(|| Enhanced::from(word));
            rest_at + space.map_or(rest.len(), |i| i + 1)
        } else {
            rest_at
        };
        let last = match sep {
            Some(b'-') => false,
            Some(b' ') | None => true,
            _ => return Err(bad(&line)),
        };
        self.code = Some(code);
        line.drain(..text_at);
        self.lines.push(line.into());
        if !last {
            return Ok(None);
        }
        self.code = None;
        Ok(Some(Reply {
            code,
            enhanced: self.enhanced.take(),
            lines: std::mem::take(&mut self.lines),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        let r = Reply {
            code: 250,
            enhanced: Some("2.0.0".into()),
            lines: smallvec::smallvec!["first".into(), "second".into()],
        };
        assert_eq!(r.to_wire(), "250-2.0.0 first\r\n250 2.0.0 second\r\n");
        let plain = Reply {
            code: 421,
            enhanced: None,
            lines: smallvec::smallvec!["a".into(), "b".into()],
        };
        assert_eq!(plain.to_wire(), "421-a\r\n421 b\r\n");
        let bare = Reply {
            code: 9,
            enhanced: None,
            lines: Lines::new(),
        };
        assert_eq!(bare.to_wire(), "9 \r\n");
        let mut p = ReplyParser::default();
        let mut out = None;
        for l in r.to_wire().lines() {
            out = p.line(l).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(out, Some(r));
        assert_eq!(
            Reply::new(550, "5.1.1", "no such user").to_string(),
            "550 5.1.1 no such user"
        );
        let lines = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let multi = Reply {
            code: 421,
            enhanced: Some("4.7.0".into()),
            lines: lines(&["first", "second"])
                .into_iter()
                .map(Cow::Owned)
                .collect(),
        };
        assert_eq!(multi.to_string(), "421 4.7.0 first second");
        let plain = Reply {
            code: 250,
            enhanced: None,
            lines: lines(&["a", "b", "c"])
                .into_iter()
                .map(Cow::Owned)
                .collect(),
        };
        assert_eq!(plain.to_string(), "250 a b c");
        let empty = Reply {
            code: 250,
            enhanced: None,
            lines: Lines::new(),
        };
        assert_eq!(empty.to_string(), "250 ");
    }

    #[test]
    fn enhanced_codes_are_kept_inline() {
        let e = Enhanced::from("5.7.26");
        assert_eq!(
            (e.as_str(), format!("{e}"), format!("{e:?}")),
            ("5.7.26", "5.7.26".into(), "\"5.7.26\"".into())
        );
        assert_eq!(Enhanced::from("").as_str(), "");
        // Text past the limit is cut, at a char boundary.
        let long = format!("{}é", "x".repeat(Enhanced::MAX - 1));
        assert_eq!(
            Enhanced::from(long.as_str()).as_str(),
            &long[..Enhanced::MAX - 1]
        );
        assert_eq!(
            Reply::parse_line("550 5.1.1 no such user").and_then(|r| r.enhanced),
            Some(Enhanced::from("5.1.1"))
        );
    }

    #[test]
    fn enhanced_status_codes() {
        for yes in ["2.0.0", "5.7.26", "4.16.55", "5.123.999", "4.4.7"] {
            assert!(is_enhanced(yes), "{yes}");
        }
        for no in [
            "",
            "2",
            "2.0",
            "2.0.",
            "2..0",
            ".0.0",
            "3.0.0",
            "25.0.0",
            "2.1234.0",
            "2.0.1234",
            "2.a.0",
            "2.0.0 ",
            " 2.0.0",
            "4.16.55.1",
            "2.0.0.",
            "2-0-0",
            "2.0.é",
        ] {
            assert!(!is_enhanced(no), "{no}");
        }
        for (line, enhanced, text) in [
            ("250 2.1.5", Some("2.1.5"), ""),
            ("550 5.1.1  two spaces", Some("5.1.1"), " two spaces"),
            ("554 30 Sorry (554.30)", None, "30 Sorry (554.30)"),
        ] {
            let r = ReplyParser::default().line(line).ok().flatten();
            let r = r.unwrap_or_else(|| panic!("{line}"));
            assert_eq!((r.enhanced.as_deref(), r.text().as_str()), (enhanced, text));
            if !text.is_empty() {
                assert_eq!(r.to_wire(), format!("{line}\r\n"));
            }
        }
        let mut wire = b"x".to_vec();
        Reply::new(250, "2.0.0", "Ok").write_wire(&mut wire);
        assert_eq!(wire, b"x250 2.0.0 Ok\r\n");
    }

    #[test]
    fn parse_lines() {
        let r = Reply::parse_line("421 4.7.0 [TSS04] Messages from 1.2.3.4 deferred")
            .unwrap_or_else(|| panic!());
        assert_eq!(
            (r.code, r.enhanced.as_deref(), r.text().as_str()),
            (421, Some("4.7.0"), "[TSS04] Messages from 1.2.3.4 deferred")
        );
        let r = Reply::parse_line("421 RP-001 The mail server IP ...").unwrap_or_else(|| panic!());
        assert_eq!((r.enhanced, r.status()), (None, "4.0.0".to_string()));
        let r = Reply::parse_line("554 30 Sorry, your message cannot be delivered (554.30)")
            .unwrap_or_else(|| panic!());
        assert_eq!(r.enhanced, None);
        assert!(Reply::parse_line("hello").is_none());
        let mut p = ReplyParser::default();
        assert!(p.line("250-a").is_ok());
        assert!(p.line("251 b").is_err(), "codes must agree across lines");
        assert!(ReplyParser::default().line("2x0 x").is_err());
        assert!(ReplyParser::default().line("250?x").is_err());
        assert_eq!(
            ReplyParser::default()
                .line("220")
                .map(|r| r.map(|r| r.code)),
            Ok(Some(220))
        );
    }
}
