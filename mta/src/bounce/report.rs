//! Text and JSON reports for `mta bounce classify FILE...` and `mta bounce classify --reply TEXT`.

use std::path::PathBuf;

use serde::Serialize;

use super::classify::Classifier;
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
}

/// Collects the rows for `paths`; the bool is false if any file could not be read or parsed.
pub fn classify_files_rows(paths: &[PathBuf], classifier: &Classifier) -> (Vec<ReportRow>, bool) {
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
                    rows.push(ReportRow {
                        file: file.clone(),
                        format: format.clone(),
                        recipient: fr.recipient,
                        status: fr.status,
                        diagnostic: fr.diagnostic,
                        category: fr.category.as_str().to_string(),
                        note: None,
                    });
                }
            }
        }
    }
    (rows, all_ok)
}

/// The `mta bounce classify FILE...` output: one line per recipient, tab-separated
/// `file, recipient, status, diagnostic, category` (or a JSON array of objects). The bool says
/// whether every file could be read and parsed.
pub fn classify_files_report(
    paths: &[PathBuf],
    classifier: &Classifier,
    json: bool,
) -> (String, bool) {
    let (rows, ok) = classify_files_rows(paths, classifier);
    if json {
        let s = serde_json::to_string_pretty(&rows).unwrap_or_else(|e| format!("[] // {e}"));
        return (s + "\n", ok);
    }
    let mut out = String::new();
    for r in rows {
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        match &r.note {
            Some(n) => out.push_str(&format!("{}\t-\t-\t{}\t-\n", r.file, clean(n))),
            None => out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                r.file,
                r.recipient,
                r.status,
                clean(&r.diagnostic),
                r.category
            )),
        }
    }
    (out, ok)
}

#[derive(Serialize)]
struct ReplyRow<'a> {
    reply: &'a str,
    status: &'a str,
    category: &'a str,
    rule: super::classify::RuleOrigin,
}

/// The `mta bounce classify --reply TEXT` output: `status<TAB>category<TAB>rule` (or a JSON object).
pub fn classify_reply_report(reply: &str, classifier: &Classifier, json: bool) -> String {
    let c = classifier.classify_reply(reply);
    if json {
        let row = ReplyRow {
            reply,
            status: &c.status,
            category: c.category.as_str(),
            rule: c.origin,
        };
        return serde_json::to_string_pretty(&row).unwrap_or_default() + "\n";
    }
    let rule = match c.origin {
        super::classify::RuleOrigin::Config(i) => format!("config rule {}", i + 1),
        super::classify::RuleOrigin::Default(i) => format!("default rule {}", i + 1),
        super::classify::RuleOrigin::Fallback => "no rule matched".to_string(),
    };
    format!("{}\t{}\t{}\n", c.status, c.category, rule)
}
