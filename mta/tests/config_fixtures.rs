//! The shipped config fixtures: `check-config` output snapshots, the `# ERROR` / `# WARNING`
//! markers in the broken fixtures matched against what is reported, `show settings`, and the CLI's
//! exit codes.

use mta::config::{self, render, Severity};
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURES: &str = "../fixtures/configs";

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn all_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn there_are_at_least_six_fixtures_with_the_valid_ones_valid() {
    let all = all_fixtures();
    assert!(all.len() >= 6, "{all:?}");
    for p in &all {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let loaded = config::load(p);
        assert_eq!(
            loaded.is_valid(),
            !name.starts_with("broken-"),
            "{name}: {:#?}",
            loaded.diagnostics
        );
    }
}

#[test]
fn check_config_output_snapshots() {
    for p in all_fixtures() {
        let name = p
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let loaded = config::load(&p);
        insta::assert_snapshot!(
            format!("check_{name}"),
            render::check_report(&loaded, render::Format::Text)
        );
    }
    let hot = config::load(&fixture("hot.conf"));
    insta::assert_snapshot!(
        "check_hot_json",
        render::check_report(&hot, render::Format::Json)
    );
}

/// Every line of a broken fixture that carries `# ERROR` gets an error there, every `# WARNING` a
/// warning, and nothing is reported on a line without a marker.
#[test]
fn broken_fixture_markers_match_the_diagnostics() {
    for p in all_fixtures()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("broken-"))
    {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let file = p.display().to_string();
        let loaded = config::load(&p);
        for (i, line) in text.lines().enumerate() {
            let n = i as u32 + 1;
            let here: Vec<_> = loaded
                .diagnostics
                .iter()
                .filter(|d| {
                    d.span
                        .as_ref()
                        .is_some_and(|s| *s.file == *file && s.line == n)
                })
                .collect();
            let marker = line
                .find("# ERROR")
                .map(|_| Severity::Error)
                .or(line.find("# WARNING").map(|_| Severity::Warning));
            match marker {
                Some(_) if line.contains("(in ") => {}
                Some(sev) => assert!(
                    here.iter().any(|d| d.severity == sev),
                    "{file}:{n}: expected {sev:?} for `{}`, got {here:?}",
                    line.trim()
                ),
                None => assert!(here.is_empty(), "{file}:{n}: unexpected {here:?}"),
            }
        }
    }
}

#[test]
fn show_settings_snapshots() {
    let cfg = config::load(&fixture("hot.conf"))
        .into_result()
        .unwrap_or_else(|e| panic!("{e}"));
    for q in [
        "gmail.com/mkt-3",
        "gmail.com/tx-1",
        "yahoo.com/mkt-1",
        "aol.com/tx-2",
        "mail.comcast.net/{default}",
    ] {
        let out = render::settings_report(&cfg, q, render::Format::Text)
            .unwrap_or_else(|e| panic!("{e}"));
        insta::assert_snapshot!(format!("settings_{}", q.replace(['/', '{', '}'], "_")), out);
    }
    let json = render::settings_report(&cfg, "hotmail.com/tx-1", render::Format::Json)
        .unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    let s = &v["queues"][0]["settings"];
    assert_eq!(s["max-msg-rate"]["value"], "2500/m");
    assert_eq!(
        s["max-msg-rate"]["origin"]["block"],
        "<domain hotmail.com> (from macro)"
    );
    assert_eq!(s["backoff-max-connect-rate"]["origin"]["from"], "derived");
    assert_eq!(s["bounce-after"]["value"], "2d");
    // Wildcards expand over vMTAs and configured domains.
    let all =
        render::settings_report(&cfg, "gmail.com/*", render::Format::Text).unwrap_or_default();
    assert_eq!(all.matches("queue gmail.com/").count(), cfg.vmtas.len());
    assert!(render::settings_report(&cfg, "gmail.com/mkt-9", render::Format::Text).is_err());
}

fn mta(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_exit_codes_and_aliases() {
    let hot = fixture("hot.conf");
    let hot = hot.to_str().unwrap_or_default();
    let (code, out, _) = mta(&["check-config", hot]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid: 0 error(s)"), "{out}");
    let (code, out2, _) = mta(&["test", "config", hot]);
    assert_eq!((code, &out2), (0, &out));
    let broken = fixture("broken-directives.conf");
    let (code, out, _) = mta(&[
        "check-config",
        "--format",
        "json",
        broken.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["valid"], false);
    assert!(v["errors"].as_u64().unwrap_or(0) >= 20);
    assert_eq!(v["diagnostics"][0]["line"], 2);
    assert_eq!(
        v["diagnostics"][0]["hint"],
        "did you mean `smtp-source-host`?"
    );
    let (code, _, err) = mta(&["check-config", "/nonexistent/mta.conf"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = mta(&["check-config", "--format", "yaml", hot]);
    assert_eq!(code, 2);
    let (code, out, _) = mta(&["show", "settings", "--config", hot, "gmail.com/mkt-3"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("max-smtp-out")
                && l.contains(" 2 ")
                && l.contains("<virtual-mta mkt-3> <domain gmail.com>")),
        "{out}"
    );
    let (code, _, err) = mta(&["show", "settings", "--config", hot, "gmail.com/nope"]);
    assert_eq!(code, 2);
    assert!(err.contains("no virtual-mta named `nope`"), "{err}");
}
