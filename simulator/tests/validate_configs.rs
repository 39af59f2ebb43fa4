//! The incident suite held against configs not written for it (issue item 9): PowerMTA's stock
//! sample, a production-style config with macros, pools and an include, and one with planted
//! mistakes; each gets a meaningful verdict. Also: roles that cannot be bound (and `--map`), an
//! expectation whose subject never happened, refused injection, count thresholds scaled by
//! `--volume`, and `mtasim validate` on the command line (exit status, table, JUnit XML).
//! Small volumes keep the whole file to well under a minute in a debug build.

use simulator::bind::RoleMap;
use simulator::sim::RunOptions;
use simulator::validate::{validate, Outcome, Row};
use std::path::{Path, PathBuf};

fn ws() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn scenario(name: &str) -> PathBuf {
    ws().join("scenarios").join(format!("{name}.toml"))
}

fn operator(file: &str) -> PathBuf {
    ws().join("fixtures/configs/operator").join(file)
}

/// Runs `names` against `config` at `volume`; rows in the same order.
fn run(
    config: &Path,
    root: Option<&Path>,
    names: &[&str],
    volume: f64,
    maps: Vec<RoleMap>,
) -> (Vec<Row>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let files: Vec<PathBuf> = names.iter().map(|n| scenario(n)).collect();
    let opts = RunOptions {
        config: Some(config.to_path_buf()),
        root: root.map(Path::to_path_buf),
        maps,
        volume,
        report_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    (validate(&files, &opts), dir)
}

fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.scenario == name)
        .unwrap_or_else(|| panic!("no row for {name}"))
}

fn findings(r: &Row) -> Vec<String> {
    match &r.outcome {
        Outcome::Ran(rep) => rep.findings.clone(),
        Outcome::Unbound(e) | Outcome::Error(e) => vec![e.clone()],
    }
}

fn report(r: &Row) -> &simulator::report::Report {
    match &r.outcome {
        Outcome::Ran(rep) => rep,
        other => panic!("{}: did not run: {other:?}", r.scenario),
    }
}

/// Asserts a finding of `r` contains every one of `parts`.
fn has_finding(r: &Row, parts: &[&str]) {
    let f = findings(r);
    assert!(
        f.iter().any(|x| parts.iter().all(|p| x.contains(p))),
        "{}: no finding with {parts:?} in {f:#?}",
        r.scenario
    );
}

fn verdicts(rows: &[Row]) -> Vec<(String, &'static str)> {
    rows.iter()
        .map(|r| (r.scenario.clone(), r.verdict()))
        .collect()
}

fn expect_verdicts(rows: &[Row], want: &[(&str, &str)]) {
    let got = verdicts(rows);
    let want: Vec<(String, &str)> = want.iter().map(|(s, v)| (s.to_string(), *v)).collect();
    assert_eq!(
        got,
        want,
        "findings: {:#?}",
        simulator::validate::findings(rows)
    );
}

#[test]
fn stock_sample_mail_is_unauthenticated_and_backoff_needs_pattern_lists() {
    let cfg = operator("stock-sample.conf");
    let (rows, _dir) = run(
        &cfg,
        None,
        &["dkim-signed", "outlook-rp001", "live-tss04"],
        0.1,
        Vec::new(),
    );
    expect_verdicts(
        &rows,
        &[
            ("dkim-signed", "FAILED"),
            ("outlook-rp001", "FAILED"),
            ("live-tss04", "FAILED"),
        ],
    );
    // Unsigned mail: most of it bounces for want of authentication, Gmail's 5.7.26 among the
    // reasons, and the config's part is named: it signs for no domain.
    let d = row(&rows, "dkim-signed");
    assert!(
        d.top_finding().starts_with("most mail: ")
            && d.top_finding()
                .contains("of 200 accepted recipients bounced as unauthenticated"),
        "{}",
        d.top_finding()
    );
    has_finding(d, &["at gmail", "550 5.7.26", "unauthenticated"]);
    has_finding(d, &["at yahoo", "550 5.7.9"]);
    has_finding(
        d,
        &[
            "mail not authenticated for news.example.com",
            "stock-sample.conf signs for no domain (no domain-key)",
        ],
    );
    // The MTA's own DSNs are not counted as accepted mail.
    assert!(!findings(d).iter().any(|f| f.contains("bad-mailbox")));
    // No pattern lists: nothing puts Outlook's RP-001 or Yahoo's TSS04 queues into backoff.
    has_finding(
        row(&rows, "outlook-rp001"),
        &[
            "hotmail.com backoff: no smtp-pattern-list applies to hotmail.com in",
            "RP-001",
        ],
    );
    has_finding(
        row(&rows, "live-tss04"),
        &[
            "yahoo.com backoff: no smtp-pattern-list applies to yahoo.com",
            "[TSS04]",
        ],
    );
    // Without vMTAs, a vMTA role is the config's default addresses, as the notes say.
    let notes = &report(row(&rows, "outlook-rp001")).notes;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("bound to no X-Virtual-MTA header")),
        "{notes:?}"
    );
}

#[test]
fn prod_mailer_holds_except_where_its_included_rules_hold_queues_in_backoff() {
    let cfg = operator("prod-mailer.conf");
    let root = operator("root");
    let (rows, _dir) = run(
        &cfg,
        Some(&root),
        &[
            "live-tss04",
            "yahoo-tss04-storm",
            "chaos",
            "dkim-signed",
            "expiry",
        ],
        0.1,
        Vec::new(),
    );
    expect_verdicts(
        &rows,
        &[
            ("live-tss04", "FAILED"),
            ("yahoo-tss04-storm", "PASSED"),
            ("chaos", "PASSED"),
            ("dkim-signed", "PASSED"),
            ("expiry", "FAILED"),
        ],
    );
    // The included file's TSS04 rule returns the queue to normal only after 2h.
    let l = row(&rows, "live-tss04");
    has_finding(
        l,
        &[
            "yahoo.com stayed in backoff too long",
            "backoff-to-normal-after 2h (rule at ",
            "etc/pmta/isp-rules.conf:7:5)",
        ],
    );
    assert!(l
        .top_finding()
        .starts_with("yahoo.com stayed in backoff too long"));
    // Roles bound automatically to the config's names; its key file is not here.
    let notes = &report(row(&rows, "chaos")).notes;
    for want in [
        "role vmta `pool-marketing` bound to `bulk` (the config's only pool named for marketing mail)",
        "role sender `news.example.com` bound to `mailer.example.net`",
        "cannot be read here: the run signs for mailer.example.net with a stand-in key",
    ] {
        assert!(notes.iter().any(|n| n.contains(want)), "{want}: {notes:#?}");
    }
    // bounce-after 3d: nothing expires in the scenario's 2d6h.
    let e = report(row(&rows, "expiry"));
    let v = &e.verdicts[0];
    assert!(
        !v.passed && v.exercised && v.expected == ">= 50 (500 at full volume)",
        "{v:?}"
    );
}

#[test]
fn each_planted_mistake_shows_up() {
    let cfg = operator("mistakes.conf");
    let root = operator("mistakes-root");
    let (rows, _dir) = run(
        &cfg,
        Some(&root),
        &[
            "yahoo-tss04-storm",
            "outlook-rp001",
            "dkim-signed",
            "fbl-complaints",
            "expiry",
            "chaos",
            "gmail-throttle",
        ],
        0.1,
        Vec::new(),
    );
    expect_verdicts(
        &rows,
        &[
            ("yahoo-tss04-storm", "FAILED"),
            ("outlook-rp001", "FAILED"),
            ("dkim-signed", "FAILED"),
            ("fbl-complaints", "FAILED"),
            ("expiry", "PASSED"),
            ("chaos", "PASSED"),
            ("gmail-throttle", "PASSED"),
        ],
    );
    // 1. The TSS04 rule's typo: Yahoo's reply matches no rule of the included list.
    let y = row(&rows, "yahoo-tss04-storm");
    assert!(
        y.top_finding().starts_with(
            "yahoo.com backoff never entered: no rule of smtp-pattern-list `yahoo-deferrals` ("
        ) && y
            .top_finding()
            .contains("mistakes-root/etc/pmta/isp-rules.conf:6:1) matches `421 4.7.0 [TSS04]"),
        "{}",
        y.top_finding()
    );
    // 2. RP-001 defers the queue instead of backing off; the rule's line is named.
    has_finding(
        row(&rows, "outlook-rp001"),
        &[
            "hotmail.com backoff never entered: the first rule of `microsoft-deferrals` matching `421 RP-001",
            "isp-rules.conf:13:5) does not say mode=backoff",
        ],
    );
    // 3. shop-mkt-3 has no key: about a third of the marketing pool's mail is not signed.
    let d = report(row(&rows, "dkim-signed"));
    let v = d
        .verdicts
        .iter()
        .find(|v| v.expectation.contains("verified DKIM"))
        .unwrap_or_else(|| panic!("{:?}", d.verdicts));
    let (pass, all) = v
        .observed
        .split_once(" of ")
        .and_then(|(p, rest)| {
            Some((
                p.parse::<f64>().ok()?,
                rest.split(' ').next()?.parse::<f64>().ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("{v:?}"));
    assert!(!v.passed && v.exercised, "{v:?}");
    assert!((0.5..0.8).contains(&(pass / all)), "{v:?}");
    assert!(d
        .notes
        .iter()
        .any(|n| n.contains("role sender `news.example.com` bound to `news.shop.example`")));
    // ... and the findings name the vMTA without a key.
    has_finding(
        row(&rows, "dkim-signed"),
        &[
            "vMTA shop-mkt-3 of `",
            "has no DKIM key for news.shop.example",
        ],
    );
    // 4. Complaints to the address the feedback loops know are not processed.
    let f = report(row(&rows, "fbl-complaints"));
    let v = &f.verdicts[0];
    assert!(
        !v.passed && v.exercised && v.observed == "0" && v.expectation.contains("f records"),
        "{v:?}"
    );
    has_finding(
        row(&rows, "fbl-complaints"),
        &["complaints (ARF) go to fbl@fbl.news.shop.example, which no <feedback-loop-processor> address-list"],
    );
}

/// A config of our own for the binding and exercise tests.
fn small_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let text = format!(
        "postmaster postmaster@news.example.com
smtp-listener 127.0.0.1:2525
<source 127.0.0.1>
    always-allow-relaying yes
    process-x-virtual-mta yes
    smtp-service yes
{extra}
</source>
<source 0/0>
    smtp-service no
</source>
domain-key k1, news.example.com, /nonexistent/k1.pem
<virtual-mta a-1>
    smtp-source-host 203.0.113.71 a-1.news.example.com
</virtual-mta>
<virtual-mta b-1>
    smtp-source-host 203.0.113.72 b-1.news.example.com
</virtual-mta>
<virtual-mta-pool pool-a>
    virtual-mta a-1
</virtual-mta-pool>
<virtual-mta-pool pool-b>
    virtual-mta b-1
</virtual-mta-pool>
<domain *>
    max-smtp-out 4
    retry-after 5s,10s
    bounce-after 10m
    dkim-sign yes
</domain>
<domain yahoo.com>
    max-msg-rate 1/h
</domain>
"
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
    p
}

#[test]
fn two_pools_named_for_nothing_are_unbound_until_mapped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = small_config(dir.path(), "two-pools.conf", "");
    let (rows, _r) = run(&cfg, None, &["chaos"], 0.05, Vec::new());
    let r = &rows[0];
    assert_eq!(r.verdict(), "UNBOUND");
    let Outcome::Unbound(e) = &r.outcome else {
        panic!("{r:?}")
    };
    for want in [
        "the scenario needs what",
        "vmta `pool-marketing` (a marketing stream from a pool of IPs): the config has 2 pools (pool-a, pool-b) and none by this name; which one?",
        "the config offers:",
        "pools: pool-a, pool-b",
        "virtual MTAs: a-1, b-1",
        "domains it signs for (domain-key): news.example.com",
        "--map vmta:SCENARIO-NAME=CONFIG-NAME",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
    // Bound with --map, it runs (and holds).
    let map: RoleMap = "vmta:pool-marketing=pool-b"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let (rows, _r) = run(&cfg, None, &["chaos"], 0.05, vec![map]);
    assert_eq!(rows[0].verdict(), "PASSED", "{:?}", findings(&rows[0]));
    let notes = &report(&rows[0]).notes;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("role vmta `pool-marketing` bound to `pool-b` (--map)")),
        "{notes:?}"
    );
    // A source that may relay but not choose a vMTA cannot carry the stream either.
    let cfg = small_config(dir.path(), "no-header.conf", "    process-x-virtual-mta no");
    let map: RoleMap = "vmta:pool-marketing=pool-a"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let (rows, _r) = run(&cfg, None, &["chaos"], 0.05, vec![map]);
    assert_eq!(rows[0].verdict(), "UNBOUND");
    assert!(
        rows[0]
            .top_finding()
            .contains("does not have `process-x-virtual-mta yes`")
            || findings(&rows[0])[0].contains("does not have `process-x-virtual-mta yes`"),
        "{:?}",
        findings(&rows[0])
    );
}

#[test]
fn an_incident_no_connection_meets_is_not_exercised() {
    // Yahoo's queue may send one message an hour: no connection meets the TSS04 incident.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = small_config(dir.path(), "slow-yahoo.conf", "");
    let (rows, _r) = run(&cfg, None, &["live-tss04"], 0.1, Vec::new());
    let r = &rows[0];
    assert!(!r.passed());
    let rep = report(r);
    let failed: Vec<_> = rep.verdicts.iter().filter(|v| !v.passed).collect();
    // The backoff expectation is not exercised; and most Yahoo mail expiring, which the scenario
    // does not expect, fails the run on its own (so the row says FAILED, not NOT EXERCISED).
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(!failed[0].exercised);
    // A connection opened just before the window idles into it (the 2 s wait for more mail when
    // connection-idle-timeout is not set) but sends nothing there: the reply is never given.
    assert_eq!(
        failed[0].observed,
        "yahoo never gave the incident's reply (421 4.7.0 [TSS04] Messages from ...) to a connection"
    );
    assert!(failed[1].exercised && failed[1].observed.contains("at yahoo (message-expired)"));
    assert_eq!(r.verdict(), "FAILED", "{:?}", findings(r));
    // The others were exercised and held.
    assert!(rep
        .verdicts
        .iter()
        .filter(|v| v.passed)
        .all(|v| v.exercised));
}

#[test]
fn mail_the_mta_refuses_fails_with_its_reply() {
    // The injection source takes messages of at most 1k: every message is refused.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = small_config(dir.path(), "tiny.conf", "    max-message-size 1k");
    let (rows, _r) = run(&cfg, None, &["dkim-signed"], 0.02, Vec::new());
    let r = &rows[0];
    assert_eq!(r.verdict(), "FAILED", "{:?}", findings(r));
    let rep = report(r);
    let inj = rep
        .verdicts
        .iter()
        .find(|v| v.expectation == "traffic `signed` taken by the MTA")
        .unwrap_or_else(|| panic!("{:?}", rep.verdicts));
    assert!(
        !inj.passed && inj.exercised && inj.location == "injection",
        "{inj:?}"
    );
    assert!(
        inj.observed.starts_with("40 of 40 refused; ")
            && inj.observed.contains(" with: 552 5.3.4 message size "),
        "{inj:?}"
    );
    let top = r.top_finding();
    assert!(
        top.starts_with("traffic `signed`: 40 of 40 messages refused by the MTA at injection (")
            && top.contains("exceeds the limit of 1024 bytes"),
        "{top}"
    );
    // What needed accepted mail was never exercised.
    assert!(rep
        .verdicts
        .iter()
        .filter(|v| v.location != "injection")
        .all(|v| !v.passed && !v.exercised));
}

#[test]
fn count_thresholds_scale_with_volume() {
    assert_eq!(simulator::expect::scale_count(500, 0.1), 50);
    assert_eq!(simulator::expect::scale_count(500, 1.0), 500);
    assert_eq!(simulator::expect::scale_count(3, 0.1), 1);
    let (rows, _r) = run(
        &ws().join("fixtures/configs/hot.conf"),
        None,
        &["expiry"],
        0.1,
        Vec::new(),
    );
    assert_eq!(rows[0].verdict(), "PASSED", "{:?}", findings(&rows[0]));
    let v = &report(&rows[0]).verdicts[0];
    assert_eq!(v.expectation, "bounces in category message-expired");
    assert_eq!(v.expected, ">= 50 (500 at full volume)");
    assert_eq!(v.observed, "50");
}

fn mtasim(args: &[&str], dir: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mtasim"))
        .args(args)
        .env("MTASIM_NO_PROGRESS", "1")
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The rows of the text table: lines starting with a scenario name and a verdict.
fn table_rows<'a>(text: &'a str, names: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| names.iter().any(|n| l.starts_with(&format!("{n} "))))
        .collect()
}

#[test]
fn cli_exit_status_table_and_junit() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let reports = dir.path().join("reports");
    let names = ["dkim-signed", "expiry"];
    let files: Vec<String> = names
        .iter()
        .map(|n| scenario(n).display().to_string())
        .collect();
    let hot = ws().join("fixtures/configs/hot.conf").display().to_string();
    let junit = dir.path().join("hot.xml");
    let mut args = vec![
        "validate",
        "--config",
        &hot,
        "--volume",
        "0.05",
        "--report",
        reports.to_str().unwrap_or(""),
        "--junit",
        junit.to_str().unwrap_or(""),
    ];
    args.extend(files.iter().map(String::as_str));
    let (code, out) = mtasim(&args, dir.path());
    assert_eq!(code, 0, "{out}");
    let rows = table_rows(&out, &names);
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows.iter().all(|l| l.contains(" PASSED ")), "{out}");
    assert!(out.contains("2 of 2 scenarios held against"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap_or_else(|e| panic!("{e}"));
    let rep = quick_junit::Report::deserialize_from_str(&xml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rep.test_suites.len(), 2);
    assert_eq!(rep.failures, 0);
    assert!(rep.tests >= 4, "{xml}");

    // The stock sample: dkim-signed fails (unsigned mail), expiry fails (bounce-after 4d12h).
    let stock = operator("stock-sample.conf").display().to_string();
    let junit = dir.path().join("stock.xml");
    let mut args = vec![
        "validate",
        "--config",
        &stock,
        "--volume",
        "0.05",
        "--report",
        reports.to_str().unwrap_or(""),
        "--junit",
        junit.to_str().unwrap_or(""),
    ];
    args.extend(files.iter().map(String::as_str));
    let (code, out) = mtasim(&args, dir.path());
    assert_eq!(code, 1, "{out}");
    let rows = table_rows(&out, &names);
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows.iter().all(|l| l.contains(" FAILED ")), "{out}");
    assert!(out.starts_with("findings for "), "{out}");
    assert!(out.contains("0 of 2 scenarios held against"), "{out}");
    let xml = std::fs::read_to_string(&junit).unwrap_or_else(|e| panic!("{e}"));
    let rep = quick_junit::Report::deserialize_from_str(&xml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rep.test_suites.len(), 2);
    for s in &rep.test_suites {
        assert!(s.failures >= 1, "{:?}: {xml}", s.name);
        assert!(
            s.name.starts_with("dkim-signed (") || s.name.starts_with("expiry ("),
            "{:?}",
            s.name
        );
    }
    assert!(
        xml.contains("expected &gt;= 100.0%") || xml.contains("expected >= 100.0%"),
        "{xml}"
    );
}

#[test]
fn bounces_the_scenario_drives_are_expected_and_others_fail_the_run() {
    // With its own config the scenario's bounces are the ones it drives (bad mailboxes, iCloud's
    // CS01 incident): it holds, whichever category the config files CS01 under.
    let hot = ws().join("fixtures/configs/hot.conf");
    let (rows, _r) = run(&hot, None, &["bounce-categories"], 0.1, Vec::new());
    assert_eq!(rows[0].verdict(), "PASSED", "{:?}", findings(&rows[0]));
    let cfg = operator("prod-mailer.conf");
    let root = operator("root");
    let (rows, _r) = run(&cfg, Some(&root), &["bounce-categories"], 0.1, Vec::new());
    assert_eq!(
        rows[0].verdict(),
        "PASSED",
        "{:?}",
        report(&rows[0]).verdicts
    );
    // Unsigned mail: most of it bounces 5.7.26 at Gmail, policy-related like the scenario's
    // expected refusal, yet not the reply any of its incidents gives: the run fails on it.
    let (rows, _r) = run(
        &operator("stock-sample.conf"),
        None,
        &["bounce-categories"],
        0.1,
        Vec::new(),
    );
    let rep = report(&rows[0]);
    assert_eq!(rows[0].verdict(), "FAILED");
    let v = rep
        .verdicts
        .iter()
        .find(|v| {
            v.expectation
                .starts_with("accepted mail not mostly bounced")
        })
        .unwrap_or_else(|| panic!("{:?}", rep.verdicts));
    assert!(!v.passed && v.observed.contains("5.7.26"), "{v:?}");
}
