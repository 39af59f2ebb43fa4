//! Reading header fields of a message (the spooled body), folded lines unfolded: what the engine,
//! the DKIM verifier and the feedback-loop reader need of a message's header section.

/// The first header field `name` of a message (matched case-insensitively), unfolded; CRLF or LF
/// line ends; the header section ends at the first empty line.
pub fn header(body: &[u8], name: &str) -> Option<String> {
    let [v] = headers(body, [name]);
    v
}

/// The first header field of each of `names`, as [`header`] finds one, in one pass over the
/// header section (which stops once every name is found).
pub fn headers<const N: usize>(body: &[u8], names: [&str; N]) -> [Option<String>; N] {
    let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut left = N;
    // The field whose folded continuation lines are being collected.
    let mut open: Option<usize> = None;
    let mut rest = body;
    while !rest.is_empty() && (left > 0 || open.is_some()) {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        // A line that is not UTF-8 is skipped and ends a folded field.
        if let Some(k) = open {
            if line.starts_with(b" ") || line.starts_with(b"\t") {
                match std::str::from_utf8(line) {
                    Ok(text) => {
                        if let Some(v) = found[k].as_mut() {
                            v.push(' ');
                            v.push_str(text.trim());
                        }
                    }
                    Err(_) => open = None,
                }
                continue;
            }
            open = None;
            if left == 0 {
                break;
            }
        }
        // The name is looked at first (as bytes when ASCII), the whole line only for a wanted
        // field: most fields are not wanted.
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let wanted = |n: &[u8]| {
            (0..N).find(|&k| found[k].is_none() && n.eq_ignore_ascii_case(names[k].as_bytes()))
        };
        let name = &line[..colon];
        let k = if name.is_ascii() {
            wanted(trim_white(name))
        } else {
            std::str::from_utf8(name)
                .ok()
                .and_then(|n| wanted(n.trim().as_bytes()))
        };
        let (Some(k), Ok(text)) = (k, std::str::from_utf8(line)) else {
            continue;
        };
        found[k] = Some(text[colon + 1..].trim().to_string());
        left -= 1;
        open = Some(k);
    }
    found
}

/// `bytes` without the ASCII characters `str::trim` removes at either end.
fn trim_white(bytes: &[u8]) -> &[u8] {
    let white = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r');
    let start = bytes.iter().position(|b| !white(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !white(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::{header, headers};

    #[test]
    fn header_fields_are_found_in_one_pass() {
        let msg = b"Received: x\r\nx-job: j1\r\nSubject: a\r\n b\r\n\tc\r\nX-Job: j2\r\n\r\nList-Id: body\r\n";
        let [job, subject, list, missing] =
            headers(msg, ["X-Job", "subject", "List-Id", "Message-ID"]);
        assert_eq!(job.as_deref(), Some("j1"), "the first field wins");
        assert_eq!(
            subject.as_deref(),
            Some("a b c"),
            "folded lines are unfolded"
        );
        assert_eq!(list, None, "the header section ends at the empty line");
        assert_eq!(missing, None);
        assert_eq!(header(msg, "SUBJECT").as_deref(), Some("a b c"));
        assert_eq!(
            header(b"A: 1\nB: 2\n", "b").as_deref(),
            Some("2"),
            "LF line ends"
        );
        // Names are trimmed as `str::trim` trims; a line that is not UTF-8 is skipped and ends
        // the field being folded.
        let odd = b"\x0B X-Job \t: j3\r\nSubject: s\r\n \xff\r\n more\r\nList-Id: \xfe\r\n\xc2\xa0Message-ID\xc2\xa0: <m>\r\n\r\n";
        let [job, subject, list, id] = headers(odd, ["X-Job", "subject", "List-Id", "Message-ID"]);
        assert_eq!(job.as_deref(), Some("j3"));
        assert_eq!(subject.as_deref(), Some("s"));
        assert_eq!(list, None);
        assert_eq!(id.as_deref(), Some("<m>"));
    }
}
