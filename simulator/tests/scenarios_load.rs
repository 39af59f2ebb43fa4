//! Every shipped scenario loads with its config and profiles; broken scenarios are refused with the
//! file and key named.

use simulator::scenario::{parse_rfc3339_utc, scenario_files, Expectation, IncidentKind, Loaded};
use std::path::Path;

#[test]
fn shipped_scenarios_load() {
    let files = scenario_files(Path::new("../scenarios")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_stem().and_then(|s| s.to_str()).map(str::to_string))
        .collect();
    for want in [
        "gmail-throttle",
        "yahoo-tss04-storm",
        "outlook-rp001",
        "bounce-categories",
        "dkim-signed",
        "fbl-complaints",
        "expiry",
        "mixed-production",
    ] {
        assert!(names.iter().any(|n| n == want), "missing scenario {want}");
    }
    for f in &files {
        let l = Loaded::load(f).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Some(l.scenario.name.as_str()),
            f.file_stem().and_then(|s| s.to_str()),
            "name matches the file"
        );
        assert!(
            l.scenario
                .expectations
                .iter()
                .any(|e| matches!(e, Expectation::NothingLost)),
            "{}: every scenario checks nothing is lost",
            l.scenario.name
        );
    }
    let storm = Loaded::load(Path::new("../scenarios/yahoo-tss04-storm.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(&storm.scenario.incidents[0].kind, IncidentKind::Reply { share, .. } if (*share - 0.8).abs() < 1e-9)
    );
    assert_eq!(
        storm.start_ms,
        parse_rfc3339_utc("2026-11-23T08:00:00Z").unwrap_or_default()
    );
    assert_eq!(storm.duration.as_secs(), 6 * 3600);
    assert_eq!(
        storm.provider_of("aol.com").map(|p| p.name.as_str()),
        Some("yahoo")
    );
    let day: u64 = Loaded::load(Path::new("../scenarios/mixed-production.toml"))
        .map(|l| l.scenario.traffic.iter().map(|t| t.messages).sum())
        .unwrap_or(0);
    assert_eq!(day, 1_000_000);
}

#[test]
fn rfc3339_times() {
    assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_rfc3339_utc("2026-11-23T23:00:00Z"),
        Some(1_795_474_800_000)
    );
    assert_eq!(
        parse_rfc3339_utc("2000-02-29T12:00:00Z"),
        Some(951_825_600_000)
    );
    assert_eq!(parse_rfc3339_utc("2026-13-01T00:00:00Z"), None);
    assert_eq!(parse_rfc3339_utc("2026-11-23 23:00:00"), None);
}

fn broken(edit: impl Fn(String) -> String) -> String {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string("../scenarios/yahoo-tss04-storm.toml").unwrap_or_default();
    let text = edit(text)
        .replace(
            "../fixtures/configs/hot.conf",
            &std::fs::canonicalize("../fixtures/configs/hot.conf")
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
        .replace("config = ", "profiles = \"PROFILES\"\nconfig = ");
    let text = text.replace(
        "PROFILES",
        &std::fs::canonicalize("../isp-profiles")
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    let f = dir.path().join("s.toml");
    std::fs::write(&f, text).unwrap_or_else(|e| panic!("{e}"));
    match Loaded::load(&f) {
        Ok(_) => panic!("the broken scenario loaded"),
        Err(e) => e
            .to_string()
            .replace(&dir.path().display().to_string(), "DIR"),
    }
}

#[test]
fn errors_name_file_and_key() {
    assert!(broken(|t| t.replace("seed = 7", "sed = 7")).contains("unknown field `sed`"));
    assert_eq!(
        broken(|t| t.replace("share = 0.8", "share = 1.8")),
        "DIR/s.toml: `incident[0].share`: 1.8 is not a share between 0 and 1"
    );
    assert_eq!(
        broken(|t| t.replace("provider = \"yahoo\"", "provider = \"yahooo\"")),
        "DIR/s.toml: `incident[0].provider`: no provider profile named `yahooo`"
    );
    assert!(
        broken(|t| t.replace("\"aol.com\" = 0.2", "\"aol.example\" = 0.2")).contains(
            "`traffic[0].domains.\"aol.example\"`: no provider profile hosts `aol.example`"
        )
    );
    assert!(
        broken(|t| t.replace("rate = \"500/m\"", "rate = \"500\"")).contains("`traffic[0].rate`")
    );
    assert!(broken(|t| t.replace("incident = 0", "incident = 3"))
        .contains("`expect[0].incident`: there are only 1 incidents"));
    assert!(
        broken(|t| t.replace("kind = \"nothing-lost\"", "kind = \"nothing-lots\""))
            .contains("unknown variant `nothing-lots`")
    );
    assert!(
        broken(|t| t.replace("phase = \"rcpt\"", "phase = \"rcpt\"\ncolor = \"red\""))
            .contains("unknown field `color`"),
        "unknown incident keys are refused"
    );
    assert!(broken(|t| t.replace(
        "disconnect = true",
        "disconnect = true\nfailure = \"servfail\""
    ))
    .contains("`failure` does not apply to incident kind `reply`"));
}

/// `mtasim --config` replaces the scenario's config: a scenario copied elsewhere (its own config
/// path no longer resolving) loads with the override, and a missing override is named.
#[test]
fn config_override_replaces_the_scenarios_config() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string("../scenarios/yahoo-tss04-storm.toml").unwrap_or_default();
    let profiles = std::fs::canonicalize("../isp-profiles").unwrap_or_else(|e| panic!("{e}"));
    let text = text.replace(
        "config = ",
        &format!("profiles = \"{}\"\nconfig = ", profiles.display()),
    );
    let f = dir.path().join("s.toml");
    std::fs::write(&f, text).unwrap_or_else(|e| panic!("{e}"));
    let own = Loaded::load(&f)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        own.contains("`config`") && own.contains("does not exist"),
        "{own}"
    );
    let hot =
        std::fs::canonicalize("../fixtures/configs/hot.conf").unwrap_or_else(|e| panic!("{e}"));
    let l = Loaded::load_with(&f, Some(&hot)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.config_path, hot);
    let missing = dir.path().join("nope.conf");
    let e = Loaded::load_with(&f, Some(&missing))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("nope.conf") && e.contains("--config"), "{e}");
}

#[test]
fn the_suite_leaves_out_scenarios_built_around_their_own_config() {
    let (keep, left) = simulator::validate::suite_files(Path::new("../scenarios"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left[0].starts_with("live-tss04 ("), "{left:?}");
    assert!(left[1].starts_with("stock-2000 ("), "{left:?}");
    assert!(keep
        .iter()
        .all(|f| !f.ends_with("live-tss04.toml") && !f.ends_with("stock-2000.toml")));
    assert_eq!(
        keep.len() + 2,
        scenario_files(Path::new("../scenarios")).map_or(0, |v| v.len())
    );
}
