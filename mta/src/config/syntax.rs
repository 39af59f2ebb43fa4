//! The PowerMTA config syntax: lines, `#` comments, `<tag arg> … </tag>` blocks and `include`,
//! turned into a tree of directives and blocks with source locations. No meaning is given here.

use super::diag::{Code, Diagnostics, Span};
use super::host::HostPaths;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One `keyword value` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    /// The keyword, lower-cased.
    pub name: String,
    /// Everything after the keyword, trimmed; comments removed.
    pub value: String,
    /// The whole line as written (trimmed, comment removed; the keyword keeps its case).
    pub text: String,
    /// Where the keyword starts.
    pub span: Span,
    /// Where the value starts (the end of the line when the value is empty).
    pub value_span: Span,
}

/// A `<tag arg> … </tag>` block.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The tag, lower-cased.
    pub tag: String,
    /// The argument after the tag (may be empty), trimmed.
    pub arg: String,
    /// Where the opening `<` is.
    pub span: Span,
    /// Where the argument starts.
    pub arg_span: Span,
    /// What the block holds, in file order (includes already expanded).
    pub items: Vec<Item>,
}

/// A directive or a nested block.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A `keyword value` line.
    Directive(Directive),
    /// A nested block.
    Block(Block),
}

/// Tags that may hold `include` lines besides the top level (reference part A, "Include").
const INCLUDE_SCOPES: &[&str] = &["source", "domain", "virtual-mta", "smtp-pattern-list"];
/// Deepest include nesting accepted (a guard on top of cycle detection).
const MAX_INCLUDE_DEPTH: usize = 32;

/// Reads the files a config consists of, following includes.
pub trait FileSource {
    /// The text of a file.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// Files matching a wildcard pattern, sorted.
    fn glob(&self, pattern: &Path) -> Vec<PathBuf>;
}

/// The real file system.
pub struct DiskFiles;

impl FileSource for DiskFiles {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn glob(&self, pattern: &Path) -> Vec<PathBuf> {
        let Some(p) = pattern.to_str() else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = match glob::glob(p) {
            Ok(paths) => paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort();
        out
    }
}

struct Parser<'a> {
    files: &'a dyn FileSource,
    /// Where absolute include paths are looked for.
    host: &'a HostPaths,
    diags: &'a mut Diagnostics,
    /// Open blocks; index 0 is the top level (a pseudo block).
    stack: Vec<Block>,
    /// Files currently being read (canonical where possible), for cycle detection.
    active: Vec<(PathBuf, String)>,
}

/// Parses the file at `path` (and what it includes) into the top-level items.
/// Absolute include paths are looked for where `host` says.
pub fn parse_file(
    path: &Path,
    files: &dyn FileSource,
    host: &HostPaths,
    diags: &mut Diagnostics,
) -> Vec<Item> {
    let mut p = Parser::new(files, host, diags);
    let top = Span::new(&Arc::from(path.display().to_string()), 0, 0);
    p.include(path, &format!("`{}`", path.display()), &top, false);
    p.finish()
}

/// Parses config text given in memory, named `name` in diagnostics; includes resolve against
/// the current directory.
pub fn parse_str(
    name: &str,
    text: &str,
    files: &dyn FileSource,
    host: &HostPaths,
    diags: &mut Diagnostics,
) -> Vec<Item> {
    let mut p = Parser::new(files, host, diags);
    let file: Arc<str> = Arc::from(name);
    p.parse_text(&file, Path::new(name), text.as_bytes());
    p.finish()
}

fn root_block() -> Block {
    let f: Arc<str> = Arc::from("");
    Block {
        tag: String::new(),
        arg: String::new(),
        span: Span::new(&f, 0, 0),
        arg_span: Span::new(&f, 0, 0),
        items: Vec::new(),
    }
}

impl<'a> Parser<'a> {
    fn new(files: &'a dyn FileSource, host: &'a HostPaths, diags: &'a mut Diagnostics) -> Self {
        Parser {
            files,
            host,
            diags,
            stack: vec![root_block()],
            active: Vec::new(),
        }
    }

    fn finish(mut self) -> Vec<Item> {
        while self.stack.len() > 1 {
            self.close_top_unterminated();
        }
        self.stack.pop().map(|b| b.items).unwrap_or_default()
    }

    fn close_top_unterminated(&mut self) {
        if let Some(b) = self.stack.pop() {
            self.diags.error(
                Code::Syntax,
                &b.span,
                format!("<{}> is never closed (expected </{}>)", b.tag, b.tag),
            );
            self.push_item(Item::Block(b));
        }
    }

    fn push_item(&mut self, item: Item) {
        if let Some(top) = self.stack.last_mut() {
            top.items.push(item);
        }
    }

    /// Reads one file (or the files a wildcard names) into the current block; `shown` is how
    /// messages name it (as written, and where it was looked for).
    fn include(&mut self, path: &Path, shown: &str, at: &Span, wildcard_ok: bool) {
        let text = path.to_string_lossy();
        if wildcard_ok && text.contains(['*', '?', '[']) {
            let found = self.files.glob(path);
            if found.is_empty() {
                self.diags.warn(
                    Code::Include,
                    at,
                    format!("include pattern {shown} matches no file"),
                );
            }
            for f in found {
                self.include(&f, &format!("`{}`", f.display()), at, false);
            }
            return;
        }
        if self.active.len() >= MAX_INCLUDE_DEPTH {
            self.diags.error(
                Code::Include,
                at,
                format!("includes nested deeper than {MAX_INCLUDE_DEPTH} levels"),
            );
            return;
        }
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| normalize(path));
        if self.active.iter().any(|(k, _)| *k == key) {
            self.diags.error(
                Code::Include,
                at,
                format!(
                    "include cycle: `{}` includes itself (through {})",
                    path.display(),
                    self.active_chain()
                ),
            );
            return;
        }
        let bytes = match self.files.read(path) {
            Ok(b) => b,
            Err(e) => {
                let msg = if at.line == 0 {
                    format!("cannot read config file {shown}: {e}")
                } else {
                    format!("cannot read included file {shown}: {e}")
                };
                if at.line == 0 {
                    self.diags
                        .push(super::diag::Diagnostic::error(Code::MissingFile, None, msg));
                } else {
                    self.diags.error(Code::MissingFile, at, msg);
                }
                return;
            }
        };
        self.active.push((key, path.display().to_string()));
        let name: Arc<str> = Arc::from(path.display().to_string());
        self.parse_text(&name, path, &bytes);
        self.active.pop();
    }

    fn active_chain(&self) -> String {
        self.active
            .iter()
            .map(|(_, shown)| shown.as_str())
            .collect::<Vec<_>>()
            .join(" -> ")
    }

    fn parse_text(&mut self, file: &Arc<str>, path: &Path, bytes: &[u8]) {
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(e) => {
                let good = &bytes[..e.valid_up_to()];
                let line = good.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
                let col_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                let col = String::from_utf8_lossy(&good[col_start..]).chars().count() as u32 + 1;
                self.diags.error(
                    Code::Syntax,
                    &Span::new(file, line, col),
                    "the file is not valid UTF-8 (invalid bytes replaced)",
                );
                String::from_utf8_lossy(bytes)
            }
        };
        let depth_at_start = self.stack.len();
        for (idx, raw_line) in text.split('\n').enumerate() {
            let line_no = idx as u32 + 1;
            self.parse_line(
                file,
                path,
                line_no,
                raw_line.strip_suffix('\r').unwrap_or(raw_line),
            );
        }
        while self.stack.len() > depth_at_start {
            self.close_top_unterminated();
        }
    }

    fn parse_line(&mut self, file: &Arc<str>, path: &Path, line_no: u32, line: &str) {
        let content = strip_comment(line);
        let lead = content.len() - content.trim_start().len();
        let trimmed = content.trim();
        if trimmed.is_empty() {
            return;
        }
        let col = char_col(content, lead);
        let span = Span::new(file, line_no, col);
        if let Some(rest) = trimmed.strip_prefix("</") {
            let Some(tag) = rest.strip_suffix('>') else {
                self.diags
                    .error(Code::Syntax, &span, "closing tag is missing its `>`");
                return;
            };
            let tag = tag.trim().to_ascii_lowercase();
            self.close_block(&tag, &span);
            return;
        }
        if let Some(rest) = trimmed.strip_prefix('<') {
            let Some(inner) = rest.strip_suffix('>') else {
                self.diags
                    .error(Code::Syntax, &span, "block tag is missing its closing `>`");
                return;
            };
            let inner_trim = inner.trim_start();
            let tag_len = inner_trim
                .find(|c: char| c.is_whitespace())
                .unwrap_or(inner_trim.len());
            let tag = inner_trim[..tag_len].to_ascii_lowercase();
            if tag.is_empty() {
                self.diags
                    .error(Code::Syntax, &span, "empty block tag `<>`");
                return;
            }
            let after = &inner_trim[tag_len..];
            let arg = after.trim();
            let arg_off = lead
                + 1
                + (inner.len() - inner_trim.len())
                + tag_len
                + (after.len() - after.trim_start().len());
            let arg_span = Span::new(file, line_no, char_col(content, arg_off));
            self.stack.push(Block {
                tag,
                arg: arg.to_string(),
                span,
                arg_span,
                items: Vec::new(),
            });
            return;
        }
        let name_len = trimmed
            .find(|c: char| c.is_whitespace())
            .unwrap_or(trimmed.len());
        let name = trimmed[..name_len].to_ascii_lowercase();
        let rest = &trimmed[name_len..];
        let value = rest.trim();
        let value_off = lead + name_len + (rest.len() - rest.trim_start().len());
        let value_span = Span::new(file, line_no, char_col(content, value_off));
        if name == "include" {
            self.handle_include(path, &span, &value_span, value);
            return;
        }
        self.push_item(Item::Directive(Directive {
            name,
            value: value.to_string(),
            text: trimmed.to_string(),
            span,
            value_span,
        }));
    }

    fn handle_include(&mut self, path: &Path, span: &Span, value_span: &Span, value: &str) {
        let scope = self.stack.last().map(|b| b.tag.clone()).unwrap_or_default();
        if !scope.is_empty() && !INCLUDE_SCOPES.contains(&scope.as_str()) {
            self.diags.error(Code::Include,
                span,
                format!("`include` is not allowed inside <{scope}> (only at top level and in <source>, <domain>, <virtual-mta>, <smtp-pattern-list>)"),
            );
            return;
        }
        let target = unquote(value);
        if target.is_empty() {
            self.diags
                .error(Code::Include, value_span, "`include` needs a file name");
            return;
        }
        if target.starts_with("http://") || target.starts_with("https://") {
            self.diags.error(
                Code::Include,
                value_span,
                "remote includes (`include https://…`) are not supported: copy the file locally",
            );
            return;
        }
        let rel = Path::new(target);
        let (full, shown) = if rel.is_absolute() {
            (self.host.resolve(rel), self.host.describe(rel))
        } else {
            let full = path.parent().unwrap_or(Path::new("")).join(rel);
            let shown = format!("`{}`", full.display());
            (full, shown)
        };
        self.include(&full, &shown, value_span, true);
    }

    fn close_block(&mut self, tag: &str, span: &Span) {
        if self.stack.len() <= 1 {
            self.diags.error(
                Code::Syntax,
                span,
                format!("</{tag}> closes a block that was never opened"),
            );
            return;
        }
        if !self.stack.iter().skip(1).any(|b| b.tag == tag) {
            self.diags.error(
                Code::Syntax,
                span,
                format!("</{tag}> closes a block that was never opened"),
            );
            return;
        }
        // Close inner blocks that were left open, then the matching one.
        while let Some(top) = self.stack.last() {
            if top.tag == tag {
                break;
            }
            let (t, s) = (top.tag.clone(), top.span.clone());
            self.diags.error(
                Code::Syntax,
                span,
                format!(
                    "</{tag}> found while <{t}> opened at line {} is still open",
                    s.line
                ),
            );
            if let Some(b) = self.stack.pop() {
                self.push_item(Item::Block(b));
            }
        }
        if let Some(b) = self.stack.pop() {
            self.push_item(Item::Block(b));
        }
    }
}

/// Resolves `.` and `..` lexically (for files that are not on disk).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Removes a `#` comment (outside double quotes) from a line.
fn strip_comment(line: &str) -> &str {
    let mut in_quotes = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            '#' if !in_quotes => return &line[..i],
            _ => {}
        }
    }
    line
}

/// 1-based character column of byte offset `off` in `s`.
fn char_col(s: &str, off: usize) -> u32 {
    let off = off.min(s.len());
    let mut end = off;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].chars().count() as u32 + 1
}

/// Strips one pair of surrounding double quotes.
pub fn unquote(s: &str) -> &str {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// An in-memory file system for include tests.
    pub(crate) struct MemFiles(pub BTreeMap<PathBuf, String>);

    impl FileSource for MemFiles {
        fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
            self.0
                .get(path)
                .map(|s| s.as_bytes().to_vec())
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
        }
        fn glob(&self, pattern: &Path) -> Vec<PathBuf> {
            let pat = glob::Pattern::new(&pattern.to_string_lossy()).ok();
            self.0
                .keys()
                .filter(|k| pat.as_ref().is_some_and(|p| p.matches_path(k)))
                .cloned()
                .collect()
        }
    }

    fn parse(text: &str) -> (Vec<Item>, Vec<String>) {
        let mut d = Diagnostics::default();
        let items = parse_str("t.conf", text, &DiskFiles, &HostPaths::local(), &mut d);
        (
            items,
            d.into_sorted().iter().map(|d| d.to_string()).collect(),
        )
    }

    #[test]
    fn lines_comments_and_blocks() {
        let (items, diags) = parse(
            "# comment\nhost-name mta.example.com  # trailing\n<domain gmail.com>\n  max-smtp-out 10\n</domain>\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(items.len(), 2);
        let Item::Directive(d) = &items[0] else {
            panic!()
        };
        assert_eq!(
            (d.name.as_str(), d.value.as_str()),
            ("host-name", "mta.example.com")
        );
        assert_eq!((d.span.line, d.span.col, d.value_span.col), (2, 1, 11));
        let Item::Block(b) = &items[1] else { panic!() };
        assert_eq!(
            (b.tag.as_str(), b.arg.as_str(), b.arg_span.col),
            ("domain", "gmail.com", 9)
        );
        let Item::Directive(inner) = &b.items[0] else {
            panic!()
        };
        assert_eq!((inner.span.line, inner.span.col), (4, 3));
    }

    #[test]
    fn hash_inside_quotes_is_not_a_comment() {
        let (items, _) = parse("password \"a#b\" # real comment\n");
        let Item::Directive(d) = &items[0] else {
            panic!()
        };
        assert_eq!(d.value, "\"a#b\"");
    }

    #[test]
    fn unclosed_and_stray_tags_are_located() {
        let (_, diags) = parse("<domain x>\nmax-smtp-out 1\n</source>\n");
        assert_eq!(
            diags,
            vec![
                "t.conf:1:1: error: <domain> is never closed (expected </domain>)".to_string(),
                "t.conf:3:1: error: </source> closes a block that was never opened".to_string(),
            ]
        );
    }

    #[test]
    fn includes_wildcards_and_cycles() {
        let mut m = BTreeMap::new();
        m.insert(
            PathBuf::from("/c/main.conf"),
            "include conf.d/*.conf\n<domain x>\ninclude d.inc\n</domain>\n".to_string(),
        );
        m.insert(
            PathBuf::from("/c/conf.d/a.conf"),
            "host-name a\n".to_string(),
        );
        m.insert(
            PathBuf::from("/c/conf.d/b.conf"),
            "include ../main.conf\n".to_string(),
        );
        m.insert(PathBuf::from("/c/d.inc"), "max-smtp-out 3\n".to_string());
        let files = MemFiles(m);
        let mut d = Diagnostics::default();
        let items = parse_file(
            Path::new("/c/main.conf"),
            &files,
            &HostPaths::local(),
            &mut d,
        );
        let diags: Vec<String> = d.into_sorted().iter().map(|d| d.to_string()).collect();
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(
            diags[0].starts_with("/c/conf.d/b.conf:1:9: error: include cycle"),
            "{diags:?}"
        );
        let Item::Directive(h) = &items[0] else {
            panic!()
        };
        assert_eq!(
            (h.name.as_str(), &*h.span.file),
            ("host-name", "/c/conf.d/a.conf")
        );
        let Item::Block(b) = &items[1] else { panic!() };
        let Item::Directive(inner) = &b.items[0] else {
            panic!()
        };
        assert_eq!(
            (inner.name.as_str(), &*inner.span.file),
            ("max-smtp-out", "/c/d.inc")
        );
    }

    #[test]
    fn invalid_utf8_is_an_error_with_location() {
        let mut d = Diagnostics::default();
        let h = HostPaths::local();
        let mut p = Parser::new(&DiskFiles, &h, &mut d);
        let f: Arc<str> = Arc::from("x.conf");
        p.parse_text(&f, Path::new("x.conf"), b"host-name a\nab\xffc\n");
        let _ = p.finish();
        assert_eq!(
            d.into_sorted()[0].to_string(),
            "x.conf:2:3: error: the file is not valid UTF-8 (invalid bytes replaced)"
        );
    }
}
