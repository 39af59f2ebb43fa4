//! Field and address reading shared by the format parsers.

use super::strip_diag_type;

/// Splits header-like text into unfolded `(lowercase name, value)` fields.
pub fn header_fields(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(' ') {
                out.push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
    }
    out
}

pub(crate) fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Drops an RFC 3464 type prefix (`rfc822;`, `dns;`) and angle brackets.
pub(crate) fn typed_value(v: &str) -> String {
    strip_diag_type(v)
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_string()
}

/// An e-mail address in `s`: the first `local@domain` token, brackets and punctuation removed.
pub fn find_address(s: &str) -> Option<String> {
    for token in s.split(|c: char| {
        c.is_whitespace() || matches!(c, '<' | '>' | '(' | ')' | '\'' | '"' | ',' | '[' | ']')
    }) {
        let t = token.trim_matches(|c: char| matches!(c, '.' | ':' | ';'));
        // A type prefix before the address ("SMTP:user@example.com"): ':' cannot stand in an
        // unquoted local part.
        let t = match t.split_once('@') {
            Some((local, _)) if local.contains(':') => &t[local.rfind(':').map_or(0, |c| c + 1)..],
            _ => t,
        };
        if let Some((local, domain)) = t.split_once('@') {
            if !local.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && domain
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
            {
                return Some(t.to_string());
            }
        }
    }
    None
}

pub(crate) fn strip_html(h: &str) -> String {
    let mut out = String::with_capacity(h.len());
    let mut in_tag = false;
    for c in h.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .replace("&#39;", "'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfolds_fields() {
        let f = header_fields("Diagnostic-Code: smtp; 550 5.1.1\n  user unknown\nStatus: 5.1.1");
        assert_eq!(
            f[0],
            (
                "diagnostic-code".into(),
                "smtp; 550 5.1.1 user unknown".into()
            )
        );
        assert_eq!(f[1], ("status".into(), "5.1.1".into()));
    }

    #[test]
    fn finds_addresses() {
        assert_eq!(
            find_address("<bob@example.com>:").as_deref(),
            Some("bob@example.com")
        );
        assert_eq!(find_address("  x (x@ex.org)").as_deref(), Some("x@ex.org"));
        assert_eq!(find_address("no address here"), None);
    }
}
