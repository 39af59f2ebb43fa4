//! The categorization corpus: real reply lines (`fixtures/bounce-corpus/replies.tsv`) and bounce
//! messages of many MTAs (`fixtures/bounces/*.eml`, expectations in `fixtures/bounces/MANIFEST.tsv`),
//! each with the source it comes from. Every row must classify as listed; together they cover every
//! PowerMTA category.

use mta::bounce::classify::{Category, Classifier, ALL_CATEGORIES};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Data rows of a TSV file: (line number, columns); `#` lines and blank lines are skipped.
fn rows(path: &Path, columns: usize) -> Vec<(usize, Vec<String>)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<String> = line.split('\t').map(str::to_string).collect();
        assert_eq!(
            cols.len(),
            columns,
            "{}:{}: want {columns} tab-separated columns",
            path.display(),
            i + 1
        );
        assert!(
            cols.iter().all(|c| !c.trim().is_empty()),
            "{}:{}: an empty column (every row needs its source)",
            path.display(),
            i + 1
        );
        out.push((i + 1, cols));
    }
    out
}

fn category(path: &Path, line: usize, name: &str) -> Category {
    name.parse()
        .unwrap_or_else(|e| panic!("{}:{line}: {e}", path.display()))
}

#[test]
fn reply_lines_classify_as_listed() {
    let path = fixtures().join("bounce-corpus/replies.tsv");
    let rows = rows(&path, 3);
    assert!(
        rows.len() >= 150,
        "{} reply lines, want at least 150",
        rows.len()
    );
    let c = Classifier::default();
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    for (line, cols) in &rows {
        let want = category(&path, *line, &cols[0]);
        let got = c.classify_reply(&cols[1]);
        if got.category != want {
            bad.push(format!(
                "replies.tsv:{line}: {}\n    want {want}, got {} via {:?}",
                cols[1], got.category, got.origin
            ));
        }
        assert!(
            seen.insert(cols[1].clone()),
            "replies.tsv:{line}: duplicate"
        );
    }
    assert!(
        bad.is_empty(),
        "{} misclassified:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The manifest: file -> [(recipient, status, category)].
fn manifest() -> BTreeMap<String, Vec<(String, String, Category)>> {
    let path = fixtures().join("bounces/MANIFEST.tsv");
    let mut m: BTreeMap<String, Vec<(String, String, Category)>> = BTreeMap::new();
    for (line, cols) in rows(&path, 5) {
        let cat = category(&path, line, &cols[3]);
        m.entry(cols[0].clone()).or_default().push((
            cols[1].to_ascii_lowercase(),
            cols[2].clone(),
            cat,
        ));
    }
    m
}

#[test]
fn bounce_messages_yield_the_listed_recipients() {
    let m = manifest();
    assert!(
        m.len() >= 40,
        "{} bounce messages, want at least 40",
        m.len()
    );
    let dir = fixtures().join("bounces");
    // Every bounce fixture is in the manifest (the one non-bounce is checked elsewhere).
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.ends_with(".eml") && n != "not-a-bounce.eml")
        .collect();
    let listed: BTreeSet<String> = m.keys().cloned().collect();
    assert_eq!(
        on_disk, listed,
        "fixtures/bounces and MANIFEST.tsv disagree"
    );
    let c = Classifier::default();
    let mut bad = Vec::new();
    for (file, want) in &m {
        let raw = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let report = mta::bounce::parse(&raw, &c).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut got: Vec<(String, String, Category)> = report
            .recipients
            .iter()
            .map(|r| {
                (
                    r.recipient.to_ascii_lowercase(),
                    r.status.clone(),
                    r.category,
                )
            })
            .collect();
        got.sort();
        let mut want = want.clone();
        want.sort();
        if got != want {
            bad.push(format!(
                "{file} ({:?}):\n    want {want:?}\n    got  {got:?}",
                report.format
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} bounce messages differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn the_corpus_covers_every_category() {
    let replies = fixtures().join("bounce-corpus/replies.tsv");
    let mut covered: BTreeSet<Category> = rows(&replies, 3)
        .iter()
        .map(|(l, c)| category(&replies, *l, &c[0]))
        .collect();
    for v in manifest().values() {
        covered.extend(v.iter().map(|r| r.2));
    }
    let missing: Vec<Category> = ALL_CATEGORIES
        .iter()
        .copied()
        .filter(|c| *c != Category::Success && !covered.contains(c))
        .collect();
    assert!(missing.is_empty(), "no corpus entry for {missing:?}");
}
