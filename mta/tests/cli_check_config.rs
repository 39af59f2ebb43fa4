//! `mta check-config` for CI: diagnostic codes, `--format github`, `--no-host-checks`, `--root DIR`
//! and reading the config from standard input.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const FIXTURES: &str = "../fixtures/configs";

/// Runs `mta ARGS` in `cwd` with `stdin` fed in; (exit code, stdout, stderr).
fn mta_in(cwd: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mta(args: &[&str]) -> (i32, String, String) {
    mta_in(Path::new("."), args, "")
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The codes the README's table lists.
fn documented_codes() -> BTreeSet<String> {
    let readme = std::fs::read_to_string("../README.md").unwrap_or_else(|e| panic!("{e}"));
    let start = readme
        .find("<!-- diagnostic codes")
        .unwrap_or_else(|| panic!("README has no diagnostic code table"));
    readme[start..]
        .lines()
        .skip(3)
        .take_while(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_string))
        .collect()
}

fn broken_fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("broken-") && n.ends_with(".conf"))
    });
    v.sort();
    v
}

#[test]
fn every_fixture_diagnostic_has_a_documented_code() {
    let documented = documented_codes();
    let in_lib: BTreeSet<String> = mta::config::Code::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(documented, in_lib, "README table and Code::ALL differ");
    let fixtures = broken_fixtures();
    assert!(fixtures.len() >= 4, "{fixtures:?}");
    let mut seen = BTreeSet::new();
    for f in fixtures {
        let (code, out, err) = mta(&["check-config", "--format", "json", &f.to_string_lossy()]);
        assert_eq!(code, 1, "{f:?}: {err}");
        let v = json(&out);
        let diags = v["diagnostics"].as_array().cloned().unwrap_or_default();
        assert!(!diags.is_empty(), "{f:?}");
        for d in diags {
            let c = d["code"].as_str().unwrap_or_default().to_string();
            assert!(documented.contains(&c), "{f:?}: undocumented code in {d}");
            seen.insert(c);
        }
    }
    for c in [
        "unknown-directive",
        "bad-value",
        "undefined-vmta",
        "missing-program",
    ] {
        assert!(seen.contains(c), "no fixture produced `{c}`: {seen:?}");
    }
}

#[test]
fn github_format_gives_one_annotation_per_diagnostic() {
    let f = Path::new(FIXTURES).join("broken-lints.conf");
    let f = f.to_string_lossy();
    let (_, out, _) = mta(&["check-config", "--format", "json", &f]);
    let v = json(&out);
    let (code, gh, _) = mta(&["check-config", "--format", "github", &f]);
    assert_eq!(code, 1);
    let notes: Vec<&str> = gh.lines().filter(|l| l.starts_with("::")).collect();
    assert_eq!(
        notes.len() as u64,
        v["errors"].as_u64().unwrap_or(0) + v["warnings"].as_u64().unwrap_or(0)
    );
    let want = format!("::error file={f},line=7,col=1,title=mta check-config (missing-program)::accounting pipe program `/no/such/program`");
    assert!(notes.iter().any(|l| l.starts_with(&want)), "{gh}");
    assert!(
        notes.iter().any(|l| l.starts_with("::warning file=")),
        "{gh}"
    );
    assert!(
        gh.lines().last().unwrap_or_default().contains("INVALID"),
        "{gh}"
    );
}

/// A production-style config whose paths all live under /etc/pmta, /var/... on the real host.
const PROD: &str = "\
log-file /var/log/pmta-test-nowhere/pmta.log
<spool /var/spool/pmta-test-nowhere/spool>
</spool>
<acct-file /var/log/pmta-test-nowhere/acct.csv>
</acct-file>
<acct-file |/usr/local/pmta-test-nowhere/bin/acct-handler --in>
</acct-file>
domain-key s1, example.com, /etc/pmta-test-nowhere/keys/s1.pem
<virtual-mta v1>
    smtp-source-host 192.0.2.1 v1.example.com
</virtual-mta>
";

#[test]
fn no_host_checks_defers_machine_checks_but_not_config_errors() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = dir.path().join("config");
    std::fs::write(&cfg, PROD).unwrap_or_else(|e| panic!("{e}"));
    let cfg = cfg.to_string_lossy();
    let (code, out, _) = mta(&["check-config", "--format", "json", &cfg]);
    assert_eq!(code, 1, "{out}");
    let v = json(&out);
    let errors: Vec<String> = v["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["severity"] == "error")
        .map(|d| d["code"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        errors.iter().collect::<BTreeSet<_>>(),
        ["bad-key", "missing-program", "path-not-writable"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .iter()
            .collect(),
        "{out}"
    );
    assert_eq!(
        errors.len(),
        5,
        "spool, acct file, log-file, pipe, key: {out}"
    );

    let (code, out, _) = mta(&["check-config", "--no-host-checks", "--format", "json", &cfg]);
    assert_eq!(code, 0, "{out}");
    let v = json(&out);
    let deferred: Vec<&serde_json::Value> = v["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["code"] == "host-check-deferred")
        .collect();
    assert_eq!(deferred.len(), 5, "{out}");
    for d in &deferred {
        assert_eq!(d["severity"], "warning");
        assert!(
            d["message"]
                .as_str()
                .unwrap_or_default()
                .ends_with("here; will be checked on the host"),
            "{d}"
        );
    }
    assert!(
        deferred.iter().any(|d| d["line"] == 1
            && d["message"]
                .as_str()
                .unwrap_or_default()
                .contains("directory `/var/log/pmta-test-nowhere` does not exist")),
        "{out}"
    );

    // A mistake in the config itself stays an error.
    let bad = dir.path().join("bad");
    std::fs::write(&bad, format!("{PROD}smtp-sorce-host 192.0.2.9 x\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, out, _) = mta(&["check-config", "--no-host-checks", &bad.to_string_lossy()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown directive `smtp-sorce-host`"), "{out}");
}

#[cfg(unix)]
fn make_executable(p: &Path, yes: bool) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, "#!/bin/sh\ncat >/dev/null\n").unwrap_or_else(|e| panic!("{e}"));
    let mode = if yes { 0o755 } else { 0o644 };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[cfg(unix)]
#[test]
fn root_resolves_absolute_paths_under_a_checkout() {
    let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let r = root.path();
    let mk = |p: &str| std::fs::create_dir_all(r.join(p)).unwrap_or_else(|e| panic!("{e}"));
    for d in [
        "etc/pmta/conf.d",
        "etc/pmta-test-nowhere/keys",
        "var/spool/pmta-test-nowhere",
        "var/log/pmta-test-nowhere",
        "usr/local/pmta-test-nowhere/bin",
    ] {
        mk(d);
    }
    std::fs::copy(
        Path::new(FIXTURES).join("../keys/rsa2048-pkcs8.pem"),
        r.join("etc/pmta-test-nowhere/keys/s1.pem"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let prog = r.join("usr/local/pmta-test-nowhere/bin/acct-handler");
    make_executable(&prog, true);
    let main = r.join("etc/pmta/config");
    std::fs::write(&main, "include /etc/pmta/conf.d/*.conf\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(r.join("etc/pmta/conf.d/prod.conf"), PROD).unwrap_or_else(|e| panic!("{e}"));
    let root_s = r.to_string_lossy().to_string();
    let main_s = main.to_string_lossy().to_string();

    // Without --root the include pattern matches nothing on this machine (a warning).
    let (_, out, _) = mta(&["check-config", &main_s]);
    assert!(
        out.contains("include pattern `/etc/pmta/conf.d/*.conf` matches no file"),
        "{out}"
    );

    let (code, out, _) = mta(&["check-config", "--root", &root_s, &main_s]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 error(s)"), "{out}");

    // What is missing or unusable under the root is named as written and where it was looked for.
    std::fs::remove_file(r.join("etc/pmta-test-nowhere/keys/s1.pem"))
        .unwrap_or_else(|e| panic!("{e}"));
    make_executable(&prog, false);
    let (code, out, _) = mta(&["check-config", "--root", &root_s, &main_s]);
    assert_eq!(code, 1, "{out}");
    let key_at = r.join("etc/pmta-test-nowhere/keys/s1.pem");
    assert!(out.contains(&format!("DKIM key file `/etc/pmta-test-nowhere/keys/s1.pem` (looked for at `{}`) cannot be read", key_at.display())), "{out}");
    assert!(out.contains(&format!("accounting pipe program `/usr/local/pmta-test-nowhere/bin/acct-handler` (looked for at `{}`) is not executable", prog.display())), "{out}");

    // A missing include under the root names both paths too.
    std::fs::write(&main, "include /etc/pmta/nothere.conf\n").unwrap_or_else(|e| panic!("{e}"));
    let (code, out, _) = mta(&["check-config", "--root", &root_s, &main_s]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "cannot read included file `/etc/pmta/nothere.conf` (looked for at `{}`)",
            r.join("etc/pmta/nothere.conf").display()
        )),
        "{out}"
    );

    let (code, _, err) = mta(&["check-config", "--root", "/nonexistent-root-dir", &main_s]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn dash_reads_the_config_from_stdin_with_includes_from_the_current_directory() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("vmtas.conf"),
        "<virtual-mta v1>\n    smtp-source-host 192.0.2.1 v1.example.com\n</virtual-mta>\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = "include vmtas.conf\n<virtual-mta-pool p>\n    virtual-mta v1\n    virtual-mta v2\n</virtual-mta-pool>\n";
    let (code, out, _) = mta_in(dir.path(), &["check-config", "--format", "json", "-"], text);
    assert_eq!(code, 1, "{out}");
    let v = json(&out);
    assert_eq!(v["file"], "<stdin>");
    let undefined: Vec<_> = v["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["severity"] == "error")
        .collect();
    assert_eq!(undefined.len(), 1, "only v2 is undefined: {out}");
    assert_eq!(undefined[0]["code"], "undefined-vmta");
    assert_eq!(undefined[0]["file"], "<stdin>");
    assert_eq!(undefined[0]["line"], 4);
    let (code, out, _) = mta_in(dir.path(), &["check-config", "-"], "include vmtas.conf\n");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("<stdin>: valid"), "{out}");
}

const VMTA: &str =
    "<virtual-mta v1>\n    smtp-source-host 192.0.2.1 v1.example.com\n</virtual-mta>\n";

/// Errors (code, line) of `mta check-config --format json -` on `text`, and the JSON.
fn errors_of(text: &str) -> (Vec<(String, u64)>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (_, out, _) = mta_in(dir.path(), &["check-config", "--format", "json", "-"], text);
    let v = json(&out);
    let errs = v["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["severity"] == "error")
        .map(|d| {
            (
                d["code"].as_str().unwrap_or_default().to_string(),
                d["line"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    (errs, v)
}

#[test]
fn listeners_and_named_sources_must_meet() {
    // A listener naming a missing source, and a named source nothing reaches: both errors, each
    // with the fix in its hint.
    let text = format!("smtp-listener 0/0:587 source=injecter\n{VMTA}<source injector>\n    default-virtual-mta v1\n</source>\n");
    let (errs, v) = errors_of(&text);
    assert_eq!(
        errs,
        vec![
            ("undefined-source".to_string(), 1),
            ("unreached-source".to_string(), 5)
        ],
        "{v}"
    );
    let hints: Vec<&str> = v["diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["hint"].as_str())
        .collect();
    assert!(
        hints.iter().any(|h| h.contains("did you mean `injector`?")),
        "{v}"
    );
    assert!(
        hints
            .iter()
            .any(|h| h.contains("a listener names `injecter`")),
        "{v}"
    );

    // Nothing names it at all: the hint says how to reach it.
    let (errs, v) = errors_of(&format!("{VMTA}<source injector>\n</source>\n"));
    assert_eq!(errs, vec![("unreached-source".to_string(), 4)], "{v}");
    assert!(
        v.to_string()
            .contains("smtp-listener 0/0:587 source=injector"),
        "{v}"
    );

    // PowerMTA's braces are the same source, either way round; {auth} needs no listener; an
    // smtp-user also reaches a named source.
    for text in [
        format!("smtp-listener 0/0:587 source=injector\n{VMTA}<source {{injector}}>\n    default-virtual-mta v1\n</source>\n"),
        format!("smtp-listener 0/0:587 source={{injector}}\n{VMTA}<source injector>\n    default-virtual-mta v1\n</source>\n"),
        format!("{VMTA}<source {{auth}}>\n    always-allow-relaying yes\n</source>\n"),
        format!("{VMTA}<smtp-user u>\n    password p\n    source injector\n</smtp-user>\n<source injector>\n</source>\n"),
    ] {
        let (errs, v) = errors_of(&text);
        assert!(errs.is_empty(), "{text}: {v}");
    }
}
