//! `mta bounce classify` through the built binary: the text and JSON reports, the format column,
//! the reason for a file with no recipient, and `--explain` with built-in and config rules.

use std::path::PathBuf;
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/bounces")
}

fn mta(args: &[&str]) -> (String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args(args)
        .output()
        .expect("mta runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

#[test]
fn reply_explain_names_the_table_line_and_source() {
    let (out, ok) = mta(&[
        "bounce",
        "classify",
        "--explain",
        "--reply",
        "550 5.1.1 <a@example.com>: user unknown",
    ]);
    assert!(ok);
    let cols: Vec<&str> = out.trim_end().split('\t').collect();
    assert_eq!(cols[..2], ["5.1.1", "bad-mailbox"], "{out}");
    assert!(cols[2].starts_with("built-in rules.tsv line "), "{out}");
    assert!(
        cols[2].contains("user unknown") && cols[2].contains("(source: "),
        "{out}"
    );

    let (out, ok) = mta(&["bounce", "classify", "--explain", "--reply", "zzz"]);
    assert!(ok);
    assert_eq!(out, "\tother\tno rule matched\n");

    let (out, _) = mta(&[
        "bounce",
        "classify",
        "--explain",
        "--format",
        "json",
        "--reply",
        "552 5.2.2 mailbox full",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["category"], "quota-issues");
    assert!(v["explain"]
        .as_str()
        .is_some_and(|e| e.starts_with("built-in rules.tsv line ")));
}

#[test]
fn explain_names_a_config_rule_by_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("mta.conf");
    std::fs::write(
        &conf,
        "<bounce-category-patterns>\n  /frobnicated/ spam-related\n</bounce-category-patterns>\n",
    )
    .expect("write config");
    let conf = conf.display().to_string();
    let args = [
        "bounce",
        "classify",
        "--config",
        &conf,
        "--explain",
        "--reply",
    ];
    let (out, ok) = mta(&[&args[..], &["550 frobnicated"]].concat());
    assert!(ok, "{out}");
    assert!(out.starts_with("5.0.0\tspam-related\tconfig "), "{out}");
    assert!(out.contains("mta.conf:2 rule 1: /frobnicated/"), "{out}");
}

#[test]
fn files_report_the_format_and_the_rule() {
    let dsn = fixtures().join("postfix-dsn-quota.eml");
    let dsn = dsn.display().to_string();
    let (out, ok) = mta(&["bounce", "classify", &dsn]);
    assert!(ok);
    let cols: Vec<&str> = out.trim_end().split('\t').collect();
    assert_eq!(cols.len(), 6, "{out}");
    assert_eq!(
        (cols[1], cols[2], cols[5]),
        ("dsn", "ann@example.org", "quota-issues")
    );

    let (out, ok) = mta(&["bounce", "classify", "--explain", &dsn]);
    assert!(ok);
    let cols: Vec<&str> = out.trim_end().split('\t').collect();
    assert_eq!(cols.len(), 7, "{out}");
    assert!(cols[6].starts_with("built-in rules.tsv line "), "{out}");
}

#[test]
fn a_file_with_no_recipient_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let note = dir.path().join("note.eml");
    std::fs::write(
        &note,
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: lunch\r\n\r\nSee you at noon.\r\n",
    )
    .expect("write message");
    let (out, _) = mta(&["bounce", "classify", &note.display().to_string()]);
    let cols: Vec<&str> = out.trim_end().split('\t').collect();
    assert_eq!(cols.len(), 6, "{out}");
    assert_eq!((cols[2], cols[3], cols[5]), ("-", "-", "-"), "{out}");
    assert!(cols[4].contains("not a recognised bounce"), "{out}");
}
