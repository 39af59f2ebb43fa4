//! Text and JSON reports for `mta bounce classify FILE...` and `mta bounce classify --reply TEXT`.

use std::path::PathBuf;

use serde::Serialize;

use super::classify::{Classifier, RuleOrigin};
use super::parse::parse;

/// One output row: a recipient found in a file (or an error row for a file that failed).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReportRow {
    /// The file the row comes from.
    pub file: String,
    /// The bounce format recognised (`dsn`, `exim`, …), empty if none.
    pub format: String,
    /// The failed recipient, empty for an error or no-recipient row.
    pub recipient: String,
    /// The enhanced status.
    pub status: String,
    /// The diagnostic text.
    pub diagnostic: String,
    /// The bounce category.
    pub category: String,
    /// Why the file gave no recipient, or the read/parse error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// With `--explain`: the rule that decided the category (see [`Classifier::describe`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// How `mta bounce classify` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportOptions {
    /// JSON instead of tab-separated text.
    pub json: bool,
    /// Say, per classification, which rule decided it.
    pub explain: bool,
}

/// Collects the rows for `paths`; the bool is false if any file could not be read or parsed.
pub fn classify_files_rows(
    paths: &[PathBuf],
    classifier: &Classifier,
    explain: bool,
) -> (Vec<ReportRow>, bool) {
    let mut rows = Vec::new();
    let mut all_ok = true;
    for p in paths {
        let file = p.display().to_string();
        let empty = |note: String| ReportRow {
            file: file.clone(),
            format: String::new(),
            recipient: String::new(),
            status: String::new(),
            diagnostic: String::new(),
            category: String::new(),
            note: Some(note),
            rule: None,
        };
        let raw = match std::fs::read(p) {
            Ok(r) => r,
            Err(e) => {
                all_ok = false;
                rows.push(empty(format!("cannot read: {e}")));
                continue;
            }
        };
        match parse(&raw, classifier) {
            Err(e) => {
                all_ok = false;
                rows.push(empty(format!("cannot parse: {e}")));
            }
            Ok(rep) => {
                let format = rep.format.map(|f| f.as_str()).unwrap_or("").to_string();
                if rep.recipients.is_empty() {
                    let mut r = empty(rep.reason.unwrap_or_else(|| "no recipient".into()));
                    r.format = format.clone();
                    rows.push(r);
                }
                for fr in rep.recipients {
                    let rule = explain.then(|| classifier.describe(fr.rule));
                    rows.push(ReportRow {
                        file: file.clone(),
                        format: format.clone(),
                        recipient: fr.recipient,
                        status: fr.status,
                        diagnostic: fr.diagnostic,
                        category: fr.category.as_str().to_string(),
                        note: None,
                        rule,
                    });
                }
            }
        }
    }
    (rows, all_ok)
}

/// The `mta bounce classify FILE...` output: one line per recipient, tab-separated
/// `file, format, recipient, status, diagnostic, category` (or a JSON array of objects); `explain`
/// adds the deciding rule as a last column (text) or a `rule` field (JSON). A file with no
/// recipient gets one line with the reason. The bool says whether every file could be read and
/// parsed.
pub fn classify_files_report(
    paths: &[PathBuf],
    classifier: &Classifier,
    opts: ReportOptions,
) -> (String, bool) {
    let (rows, ok) = classify_files_rows(paths, classifier, opts.explain);
    if opts.json {
        let s = serde_json::to_string_pretty(&rows).unwrap_or_else(|e| format!("[] // {e}"));
        return (s + "\n", ok);
    }
    let mut out = String::new();
    for r in rows {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        let format = if r.format.is_empty() { "-" } else { &r.format };
        match &r.note {
            Some(n) => out.push_str(&format!("{}\t{format}\t-\t-\t{}\t-", r.file, clean(n))),
            None => out.push_str(&format!(
                "{}\t{format}\t{}\t{}\t{}\t{}",
                r.file,
                r.recipient,
                r.status,
                clean(&r.diagnostic),
                r.category
            )),
        }
        if opts.explain {
            let rule = r.rule.as_deref().unwrap_or("no classification");
            out.push_str(&format!("\t{}", clean(rule)));
        }
        out.push('\n');
    }
    (out, ok)
}

#[derive(Serialize)]
struct ReplyRow<'a> {
    reply: &'a str,
    status: &'a str,
    category: &'a str,
    rule: RuleOrigin,
    #[serde(skip_serializing_if = "Option::is_none")]
    explain: Option<String>,
}

/// The `mta bounce classify --reply TEXT` output: `status<TAB>category<TAB>rule` (or a JSON
/// object); `explain` names the deciding rule: its origin (config file:line or built-in rules table
/// line), regex and source, or "no rule matched".
pub fn classify_reply_report(reply: &str, classifier: &Classifier, opts: ReportOptions) -> String {
    let c = classifier.classify_reply(reply);
    let explain = opts.explain.then(|| classifier.describe(c.origin));
    if opts.json {
        let row = ReplyRow {
            reply,
            status: &c.status,
            category: c.category.as_str(),
            rule: c.origin,
            explain,
        };
        return serde_json::to_string_pretty(&row).unwrap_or_default() + "\n";
    }
    let rule = match (explain, c.origin) {
        (Some(e), _) => e,
        (None, RuleOrigin::Config(i)) => format!("config rule {}", i + 1),
        (None, RuleOrigin::Default(i)) => format!("default rule {}", i + 1),
        (None, RuleOrigin::Fallback) => "no rule matched".to_string(),
    };
    format!("{}\t{}\t{}\n", c.status, c.category, rule)
}
