//! Table-driven categorisation corpus (issue 4, "Tests"): real reply lines in
//! `fixtures/bounce-corpus/replies.tsv` and real bounce layouts in `fixtures/bounces/*.eml`, whose
//! expected recipients are listed in `fixtures/bounces/MANIFEST.tsv`. Every row cites its source.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use mta::bounce::classify::ALL_CATEGORIES;
use mta::bounce::{parse, Category, Classifier};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Data rows of a TAB-separated file: `#` comments and blank lines skipped, (line number, fields).
fn rows(path: &Path, columns: usize) -> Vec<(usize, Vec<String>)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<String> = line.split('\t').map(str::to_string).collect();
        assert_eq!(
            fields.len(),
            columns,
            "{}:{}: want {columns} TAB-separated fields, got {}: {line}",
            path.display(),
            i + 1,
            fields.len()
        );
        assert!(
            !fields[columns - 1].trim().is_empty(),
            "{}:{}: empty source",
            path.display(),
            i + 1
        );
        out.push((i + 1, fields));
    }
    out
}

fn category(s: &str, at: &str) -> Category {
    s.parse()
        .unwrap_or_else(|e| panic!("{at}: bad category `{s}`: {e}"))
}

fn reply_rows() -> Vec<(usize, Vec<String>)> {
    rows(&fixtures().join("bounce-corpus/replies.tsv"), 3)
}

fn manifest_rows() -> Vec<(usize, Vec<String>)> {
    rows(&fixtures().join("bounces/MANIFEST.tsv"), 5)
}

#[test]
fn every_reply_classifies_to_its_category() {
    let rows = reply_rows();
    assert!(rows.len() >= 150, "only {} reply rows", rows.len());
    let c = Classifier::default();
    let mut bad = Vec::new();
    for (line, f) in &rows {
        let want = category(&f[0], &format!("replies.tsv:{line}"));
        let got = c.classify_reply(&f[1]);
        if got.category != want {
            bad.push(format!(
                "replies.tsv:{line}: {}\n   want {want}, got {} via {:?}",
                f[1], got.category, got.origin
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} misclassified:\n{}",
        bad.len(),
        rows.len(),
        bad.join("\n")
    );
}

#[test]
fn every_manifest_bounce_yields_exactly_its_recipients() {
    let rows = manifest_rows();
    let mut want: BTreeMap<String, Vec<(String, String, Category)>> = BTreeMap::new();
    for (line, f) in &rows {
        want.entry(f[0].clone()).or_default().push((
            f[1].clone(),
            f[2].clone(),
            category(&f[3], &format!("MANIFEST.tsv:{line}")),
        ));
    }
    assert!(
        want.len() >= 40,
        "only {} distinct bounce files in the manifest",
        want.len()
    );
    let c = Classifier::default();
    let mut bad = Vec::new();
    for (file, expected) in &want {
        let raw = match std::fs::read(fixtures().join("bounces").join(file)) {
            Ok(r) => r,
            Err(e) => {
                bad.push(format!("{file}: cannot read: {e}"));
                continue;
            }
        };
        let got: Vec<(String, String, Category)> = match parse(&raw, &c) {
            Ok(r) => r
                .recipients
                .iter()
                .map(|x| (x.recipient.clone(), x.status.clone(), x.category))
                .collect(),
            Err(e) => {
                bad.push(format!("{file}: parse error: {e}"));
                continue;
            }
        };
        if &got != expected {
            bad.push(format!("{file}:\n   want {expected:?}\n   got  {got:?}"));
        }
    }
    assert!(bad.is_empty(), "bounce mismatches:\n{}", bad.join("\n"));
}

#[test]
fn every_bounce_fixture_is_in_the_manifest() {
    let listed: BTreeSet<String> = manifest_rows()
        .into_iter()
        .map(|(_, f)| f[0].clone())
        .collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(fixtures().join("bounces")).expect("bounces dir") {
        let name = entry
            .expect("dir entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".eml") && name != "not-a-bounce.eml" && !listed.contains(&name) {
            missing.push(name);
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "not in MANIFEST.tsv: {missing:?}");
}

#[test]
fn the_corpus_covers_every_category() {
    let mut seen: BTreeSet<Category> = BTreeSet::new();
    for (line, f) in reply_rows() {
        seen.insert(category(&f[0], &format!("replies.tsv:{line}")));
    }
    for (line, f) in manifest_rows() {
        seen.insert(category(&f[3], &format!("MANIFEST.tsv:{line}")));
    }
    let missing: Vec<&str> = ALL_CATEGORIES
        .iter()
        .filter(|c| **c != Category::Success && !seen.contains(c))
        .map(|c| c.as_str())
        .collect();
    assert!(missing.is_empty(), "categories not covered: {missing:?}");
}
