//! Every scenario in `scenarios/` runs in simulated mode (smaller volumes where the full one is a
//! benchmark) and its expectations hold; the same seed gives the same accounting log byte for byte.

use simulator::scenario::{scenario_files, Loaded};
use simulator::sim::{run, RunOptions};
use std::path::Path;

/// The volume each scenario runs at here (1.0 = as written).
fn volume(name: &str) -> f64 {
    match name {
        "mixed-production" => 0.002,
        "gmail-throttle" | "yahoo-tss04-storm" => 0.05,
        "outlook-rp001" => 0.1,
        _ => 1.0,
    }
}

#[test]
fn every_scenario_holds_in_simulated_mode() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut summary = String::new();
    for f in scenario_files(Path::new("../scenarios")).unwrap_or_else(|e| panic!("{e}")) {
        let l = Loaded::load(&f).unwrap_or_else(|e| panic!("{e}"));
        let name = l.scenario.name.clone();
        let r = run(
            &l,
            &RunOptions {
                seed: None,
                volume: volume(&name),
                config: None,
                report_dir: dir.path().to_path_buf(),
                no_tls: false,
                no_dkim: false,
                maps: Vec::new(),
                root: None,
            },
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            dir.path().join(&name).join("report.html").is_file()
                && dir.path().join(&name).join("report.json").is_file()
        );
        for v in &r.verdicts {
            assert!(
                v.passed,
                "{name}: {} expected {}, observed {} ({})",
                v.expectation, v.expected, v.observed, v.location
            );
        }
        if name == "live-tss04" {
            // Its incidents act in the simulated network and zones: refused Gmail, failing DNS.
            let acct = std::fs::read_to_string(dir.path().join(&name).join("acct.csv"))
                .unwrap_or_else(|e| panic!("{e}"));
            let deferred = |domain: &str, text: &str| {
                acct.lines()
                    .any(|l| l.starts_with("tq,") && l.contains(domain) && l.contains(text))
            };
            assert!(deferred("@gmail.com", "refused"), "Gmail's refused window");
            assert!(
                deferred("@outlook.com", "DNS error"),
                "Outlook's DNS failure"
            );
        }
        if name == "bounce-categories" {
            // The page charts bounces per category over time: a line for every category seen.
            let html = std::fs::read_to_string(dir.path().join(&name).join("report.html"))
                .unwrap_or_else(|e| panic!("{e}"));
            let chart = html
                .split("<svg")
                .find(|c| c.contains("aria-label=\"bounces-by-category"))
                .unwrap_or_else(|| panic!("no bounces-by-category chart"));
            let lines = chart
                .split("</svg>")
                .next()
                .unwrap_or("")
                .matches("<polyline")
                .count();
            // (Bounces after the scenario's duration, such as expiries while draining, are not
            // charted.)
            assert!(
                lines >= 4 && lines <= r.totals.by_category.len(),
                "{lines} lines for {:?}",
                r.totals.by_category
            );
            for cat in ["bad-mailbox", "policy-related", "quota-issues"] {
                assert!(chart.contains(&format!("<title>{cat}</title>")), "{cat}");
            }
        }
        summary.push_str(&format!(
            "{name}: accepted {} delivered {} bounced {} expired {} passed {}\n",
            r.totals.accepted,
            r.totals.delivered,
            r.totals.bounced,
            r.totals.expired,
            r.verdicts.iter().filter(|v| v.passed).count()
        ));
    }
    insta::assert_snapshot!("scenario_summary", summary);
}

#[test]
fn same_seed_same_accounting_log() {
    let l = Loaded::load(Path::new("../scenarios/yahoo-tss04-storm.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let logs: Vec<Vec<u8>> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            run(
                &l,
                &RunOptions {
                    seed: Some(99),
                    volume: 0.02,
                    config: None,
                    report_dir: dir.path().to_path_buf(),
                    no_tls: false,
                    no_dkim: false,
                    maps: Vec::new(),
                    root: None,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
            std::fs::read(dir.path().join("yahoo-tss04-storm").join("acct.csv")).unwrap_or_default()
        })
        .collect();
    assert!(
        logs[0].len() > 10_000,
        "a real log: {} bytes",
        logs[0].len()
    );
    assert!(
        logs[0] == logs[1],
        "two runs with seed 99 wrote different accounting logs"
    );
}

/// A run whose accounting log cannot be written fails and says where, rather than passing with
/// a log that lacks records (or holding every unwritten line in memory).
#[test]
fn unwritable_accounting_log_fails_the_run() {
    let l = Loaded::load(Path::new("../scenarios/yahoo-tss04-storm.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A directory where acct.csv should be: the file cannot be opened.
    let acct = dir.path().join("yahoo-tss04-storm").join("acct.csv");
    std::fs::create_dir_all(&acct).unwrap_or_else(|e| panic!("{e}"));
    let err = run(
        &l,
        &RunOptions {
            seed: None,
            volume: 0.01,
            config: None,
            report_dir: dir.path().to_path_buf(),
            no_tls: false,
            no_dkim: false,
            maps: Vec::new(),
            root: None,
        },
    )
    .err()
    .unwrap_or_else(|| panic!("the run passed without its accounting log"))
    .to_string();
    assert!(
        err.contains("accounting log could not be written")
            && err.contains(&acct.display().to_string()),
        "{err}"
    );
}

/// The dkim-signed scenario at 5% with `config`, `--no-tls` and `--no-dkim` as given: the report
/// and its DKIM verdict.
fn dkim_signed_run(
    config: Option<&str>,
    no_tls: bool,
    no_dkim: bool,
) -> (simulator::report::Report, simulator::report::Verdict) {
    let l =
        Loaded::load(Path::new("../scenarios/dkim-signed.toml")).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let opts = RunOptions {
        seed: None,
        volume: 0.05,
        config: config.map(Into::into),
        report_dir: dir.path().to_path_buf(),
        no_tls,
        no_dkim,
        ..RunOptions::default()
    };
    let r = run(&l, &opts).unwrap_or_else(|e| panic!("{e}"));
    let v = r
        .verdicts
        .iter()
        .find(|v| v.expectation.contains("DKIM"))
        .cloned()
        .unwrap_or_else(|| panic!("no DKIM verdict"));
    (r, v)
}

/// The providers really verify DKIM: with a config that does not sign, the expectation fails.
#[test]
fn unsigned_mail_fails_the_dkim_expectation() {
    let (_, v) = dkim_signed_run(Some("../fixtures/configs/minimal.conf"), false, false);
    assert!(!v.passed && v.observed.starts_with("0 of "), "{v:?}");
}

/// `--no-dkim`: the MTA signs nothing (no provider verifies a signature) and the run goes through
/// (the providers' side of it, unsigned mail taken as signed, is tested in isp_engine).
#[test]
fn no_dkim_runs_unsigned_mail_as_if_signed() {
    let (r, v) = dkim_signed_run(None, true, true);
    assert!(!v.passed && v.observed.starts_with("0 of "), "{v:?}");
    assert!(r.totals.delivered > 0);
    assert!(
        !r.totals.by_category.contains_key("policy-related"),
        "{:?}",
        r.totals
    );
}

/// yahoo.com and aol.com share Yahoo's MX hosts: with MX rollup their queues share one limit of 20
/// connections per source IP (each queue alone allows 20), so Yahoo never sees more than 20.
#[test]
fn mx_rollup_shares_the_connection_limit_across_yahoo_domains() {
    let l = Loaded::load(Path::new("../scenarios/yahoo-tss04-storm.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let r = run(
        &l,
        &RunOptions {
            seed: None,
            volume: 0.3,
            config: None,
            report_dir: dir.path().to_path_buf(),
            no_tls: false,
            no_dkim: false,
            maps: Vec::new(),
            root: None,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let v = r
        .verdicts
        .iter()
        .find(|v| v.expectation.starts_with("at most 20 concurrent"))
        .unwrap_or_else(|| panic!("no connection verdict"));
    assert!(v.passed, "{v:?}");
    assert_eq!(
        r.providers.get("yahoo").map(|p| p.max_connections_per_ip),
        Some(20),
        "the shared limit is reached and held"
    );
}

/// `recipients_per_message` gives each message that many recipients, their domains drawn each on
/// its own, and the MTA splits and delivers them all: one `r` and one final record per recipient.
#[test]
fn recipients_per_message_sends_each_message_to_that_many() {
    let mut l =
        Loaded::load(Path::new("../scenarios/dkim-signed.toml")).unwrap_or_else(|e| panic!("{e}"));
    for t in &mut l.scenario.traffic {
        t.recipients_per_message = 3;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let r = run(
        &l,
        &RunOptions {
            seed: None,
            volume: 0.25,
            config: None,
            report_dir: dir.path().to_path_buf(),
            no_tls: true,
            no_dkim: true,
            maps: Vec::new(),
            root: None,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let acct = std::fs::read_to_string(dir.path().join("dkim-signed").join("acct.csv"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut lines = acct.lines();
    let head: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        head.iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column"))
    };
    let (rcpt, msgid) = (col("rcpt"), col("header_Message-ID"));
    // Recipients and their domains per message, from the `r` records.
    let mut per_msg: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut finals = 0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        match f.first() {
            Some(&"r") => per_msg
                .entry(f[msgid].to_string())
                .or_default()
                .push(f[rcpt].to_string()),
            Some(&"d") | Some(&"b") => finals += 1,
            _ => {}
        }
    }
    let injected: Vec<_> = per_msg
        .iter()
        .filter(|(id, _)| id.contains("@sim.mtasim"))
        .collect();
    assert!(injected.len() >= 400, "{} messages", injected.len());
    for (id, rcpts) in &injected {
        assert_eq!(rcpts.len(), 3, "{id}: {rcpts:?}");
    }
    let mixed = injected
        .iter()
        .filter(|(_, rcpts)| {
            let domains: std::collections::BTreeSet<_> = rcpts
                .iter()
                .filter_map(|a| a.split_once('@'))
                .map(|(_, d)| d)
                .collect();
            domains.len() > 1
        })
        .count();
    assert!(
        mixed * 2 > injected.len(),
        "{mixed} of {} span domains",
        injected.len()
    );
    let received: usize = per_msg.values().map(Vec::len).sum();
    assert_eq!(
        finals, received,
        "every recipient ends delivered or bounced"
    );
    assert!(r
        .verdicts
        .iter()
        .any(|v| v.expectation.contains("nothing lost") && v.passed));
}
