//! A scenario in live mode: `mta run` as its own process, the providers and the DNS server on
//! loopback, real TCP and the real clock (about a minute). The same expectations hold as in the
//! simulated run, and the evidence is real: the accounting file the MTA process wrote, sending
//! addresses mapped to loopback and seen by the providers, backoff read from the MTA's HTTP API.

use simulator::live::LiveOptions;
use simulator::scenario::Loaded;
use simulator::sim::{run_live, RunOptions};
use std::path::Path;

#[test]
fn live_tss04_holds_with_the_mta_as_its_own_process() {
    let live = LiveOptions::find_or_build_mta().unwrap_or_else(|e| panic!("{e}"));
    let l =
        Loaded::load(Path::new("../scenarios/live-tss04.toml")).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let r = run_live(
        &l,
        &RunOptions {
            seed: None,
            volume: 1.0,
            config: None,
            report_dir: dir.path().to_path_buf(),
            no_tls: false,
            no_dkim: false,
            maps: Vec::new(),
            root: None,
        },
        &live,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let run_dir = dir.path().join("live-tss04");
    let log = std::fs::read_to_string(run_dir.join("live/mta.log")).unwrap_or_default();
    for v in &r.verdicts {
        assert!(
            v.passed,
            "{} expected {}, observed {} ({})\nMTA log:\n{log}",
            v.expectation, v.expected, v.observed, v.location
        );
    }
    assert_eq!(r.mode, "live");
    assert!(r.verdicts.len() >= 5);
    // All traffic made it in and out, as the MTA process's own accounting file says.
    let acct = std::fs::read_to_string(run_dir.join("acct.csv")).unwrap_or_else(|e| panic!("{e}"));
    let count = |t: &str| acct.lines().filter(|l| l.starts_with(t)).count();
    assert!(count("r,") >= 243, "{} r records", count("r,"));
    assert_eq!(
        count("d,") + count("b,"),
        count("r,"),
        "every received recipient ended once"
    );
    assert!(count("t,") >= 1, "the TSS04 incident deferred something");
    assert!(
        acct.lines().any(|l| l.starts_with("tq,")
            && l.contains("@gmail.com")
            && (l.contains("bad-connection") || l.contains("no-answer-from-host"))),
        "Gmail's refused window deferred its queue for the connection"
    );
    assert!(
        acct.lines()
            .any(|l| l.starts_with("tq,") && l.contains("@outlook.com") && l.contains("DNS error")),
        "the live DNS server failed Outlook's look-ups in the dns-failure window"
    );
    // The documentation-range sending addresses went out from their loopback stand-ins.
    for ip in ["127.2.113.31", "127.2.113.32"] {
        assert!(
            acct.lines().any(|l| l.starts_with("d,") && l.contains(ip)),
            "no delivery from {ip}"
        );
    }
    let conf = std::fs::read_to_string(run_dir.join("live/mta.conf")).unwrap_or_default();
    assert!(conf.contains("smtp-source-host 127.2.113.31 live-1.news.example.com"));
    // Real TLS: every message the providers took came over STARTTLS.
    let (msgs, tls): (u64, u64) = r
        .providers
        .values()
        .fold((0, 0), |(m, t), p| (m + p.messages, t + p.messages_tls));
    assert!(
        msgs >= 200 && tls == msgs,
        "{tls} of {msgs} messages over TLS"
    );
    // Backoff was entered and left, as the MTA's management API reported it.
    assert!(
        r.backoff
            .iter()
            .any(|b| b.queue.starts_with("yahoo.com/") && b.to_s.is_some()),
        "{:?}",
        r.backoff
    );
}
