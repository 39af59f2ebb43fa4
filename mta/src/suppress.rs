//! Suppression (a step past PowerMTA, off by default): with `suppress-after hard-bounce,complaint`
//! an address that hard-bounced (categories bad-mailbox, bad-domain, inactive-mailbox) or was
//! complained about (an `f` record) goes on a durable list, and later mail to it is refused at RCPT
//! with `550 5.7.1`. The list is an append-only log of additions and removals (fsynced), replayed
//! at start; operators list, export, add and remove entries through the management API and CLI.

use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Why an address is suppressed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The address, lower-case.
    pub address: String,
    /// `hard-bounce`, `complaint` or `manual`.
    pub reason: String,
    /// What caused it (bounce category and status, feedback type, operator note).
    pub detail: String,
    /// When (Unix ms).
    pub since_ms: i64,
}

/// What `suppress-after` asks for (parsed with the config).
pub use crate::config::values::SuppressPolicy as Policy;

/// Bounce categories that count as hard bounces.
pub const HARD_CATEGORIES: [&str; 3] = ["bad-mailbox", "bad-domain", "inactive-mailbox"];

/// Why the list could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SuppressError {
    /// The file could not be read or written.
    #[error("suppression list {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The list.
pub struct List {
    /// The log file; `None` keeps the list in memory (simulated runs without a spool directory).
    path: Option<PathBuf>,
    entries: Mutex<BTreeMap<String, Entry>>,
}

fn field(s: &str) -> String {
    s.replace(['\t', '\r', '\n'], " ")
}

impl List {
    /// Opens (or starts) the list at `path`, replaying its log. Lines it cannot read are skipped
    /// with a warning (a torn last line after a crash).
    pub fn open(path: &Path) -> Result<List, SuppressError> {
        let io = |source| SuppressError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut entries = BTreeMap::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let f: Vec<&str> = line.split('\t').collect();
                    match f.as_slice() {
                        ["+", t, a, r, d] => {
                            entries.insert(
                                a.to_string(),
                                Entry {
                                    address: a.to_string(),
                                    reason: r.to_string(),
                                    detail: d.to_string(),
                                    since_ms: t.parse().unwrap_or(0),
                                },
                            );
                        }
                        ["-", _, a] => {
                            entries.remove(*a);
                        }
                        _ => {
                            tracing::warn!(file = %path.display(), line = n + 1, "unreadable suppression line skipped")
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        Ok(List {
            path: Some(path.to_path_buf()),
            entries: Mutex::new(entries),
        })
    }

    /// A list kept in memory only.
    pub fn in_memory() -> List {
        List {
            path: None,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    fn append(&self, line: &str) -> Result<(), SuppressError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let io = |source| SuppressError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        f.write_all(line.as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)
    }

    /// The entry for `address`, if suppressed.
    pub fn get(&self, address: &str) -> Option<Entry> {
        let a = address.to_ascii_lowercase();
        self.entries.lock().ok()?.get(&a).cloned()
    }

    /// Adds `address` (no-op if already there). Returns true if it was added.
    pub fn add(
        &self,
        address: &str,
        reason: &str,
        detail: &str,
        now_ms: i64,
    ) -> Result<bool, SuppressError> {
        let a = address.trim().to_ascii_lowercase();
        if a.is_empty() || self.get(&a).is_some() {
            return Ok(false);
        }
        self.append(&format!(
            "+\t{now_ms}\t{}\t{}\t{}\n",
            field(&a),
            field(reason),
            field(detail)
        ))?;
        if let Ok(mut m) = self.entries.lock() {
            m.insert(
                a.clone(),
                Entry {
                    address: a,
                    reason: reason.to_string(),
                    detail: detail.to_string(),
                    since_ms: now_ms,
                },
            );
        }
        Ok(true)
    }

    /// Removes `address`. Returns true if it was there.
    pub fn remove(&self, address: &str, now_ms: i64) -> Result<bool, SuppressError> {
        let a = address.trim().to_ascii_lowercase();
        if self.get(&a).is_none() {
            return Ok(false);
        }
        self.append(&format!("-\t{now_ms}\t{}\n", field(&a)))?;
        if let Ok(mut m) = self.entries.lock() {
            m.remove(&a);
        }
        Ok(true)
    }

    /// Every entry, by address.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of suppressed addresses.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when nothing is suppressed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The policy and file of a config: `suppress-after` (default none) and `suppression-file`
/// (default `suppressions.log` in the first `<spool>` directory).
pub fn from_config(cfg: &crate::config::Config) -> Result<(Policy, Option<PathBuf>), String> {
    use crate::config::values::Value;
    let text = |name: &str| match cfg.global.get(name).map(|s| &s.value) {
        Some(Value::Text(t)) => Some(t.clone()),
        Some(other) => Some(other.to_string()),
        None => None,
    };
    let policy = match text("suppress-after") {
        Some(t) => Policy::parse(&t).map_err(|e| format!("suppress-after: {e}"))?,
        None => Policy::default(),
    };
    let file = text("suppression-file")
        .map(PathBuf::from)
        .or_else(|| cfg.spools.first().map(|s| s.path.join("suppressions.log")));
    Ok((policy, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_restart_and_forgets_removed_addresses() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("s.log");
        let l = List::open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            l.add("A@Gmail.com", "hard-bounce", "bad-mailbox 5.1.1", 1)
                .ok(),
            Some(true)
        );
        assert_eq!(
            l.add("a@gmail.com", "complaint", "abuse", 2).ok(),
            Some(false)
        );
        assert_eq!(
            l.add("b@yahoo.com", "complaint", "abuse\tx", 3).ok(),
            Some(true)
        );
        assert_eq!(l.remove("b@yahoo.com", 4).ok(), Some(true));
        assert_eq!(l.add("c@aol.com", "manual", "operator", 5).ok(), Some(true));
        // A torn last line (crash mid-write) is skipped.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"+\t6\td@x").unwrap_or_else(|e| panic!("{e}"));
        let again = List::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<(String, String)> = again
            .entries()
            .into_iter()
            .map(|e| (e.address, e.reason))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a@gmail.com".to_string(), "hard-bounce".to_string()),
                ("c@aol.com".to_string(), "manual".to_string())
            ]
        );
        assert!(again.get("A@GMAIL.COM").is_some());
    }

    #[test]
    fn policy_forms() {
        assert_eq!(
            Policy::parse("hard-bounce,complaint"),
            Ok(Policy {
                hard_bounce: true,
                complaint: true
            })
        );
        assert_eq!(Policy::parse("none"), Ok(Policy::default()));
        assert!(Policy::parse("soft-bounce").is_err());
    }
}
