//! The shipped provider profiles load and say what the issue asks; broken profiles are refused with
//! the file and key named.

use simulator::profile::{load_dir, Phase, Profile, ProfileError, Response};
use std::path::Path;

const DIR: &str = "../isp-profiles";

#[test]
fn shipped_profiles_load_and_cover_the_big_providers() {
    let profiles = load_dir(Path::new(DIR)).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["gmail", "icloud", "longtail", "outlook", "yahoo"]);
    let by = |n: &str| {
        profiles
            .iter()
            .find(|p| p.name == n)
            .unwrap_or_else(|| panic!("{n}"))
    };
    assert!(by("yahoo").domains.iter().any(|d| d == "aol.com"));
    for d in ["hotmail.com", "live.com", "msn.com", "outlook.com"] {
        assert!(by("outlook").domains.iter().any(|x| x == d), "{d}");
    }
    // Only providers that really send per-message ARF reports do (reference part B).
    let arf: Vec<&str> = profiles
        .iter()
        .filter(|p| p.feedback.sends_arf)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(arf, ["outlook", "yahoo"]);
    // Every Gmail reply ends in "- gsmtp".
    let g = by("gmail");
    assert!(g.mailboxes.on_unknown.reply.ends_with("- gsmtp"));
    assert!(g
        .limits
        .on_message_rate
        .as_ref()
        .is_some_and(|r| r.reply.starts_with("421 4.7.28 ")));
    let tss04 = by("yahoo")
        .limits
        .on_message_rate
        .clone()
        .unwrap_or_else(|| panic!("yahoo rate reply"));
    assert_eq!(tss04.at, Phase::Rcpt);
    assert_eq!(tss04.code(), 421);
    assert_eq!(
        tss04.render("203.0.113.11", "u@yahoo.com", "news.example.com"),
        "421 4.7.0 [TSS04] Messages from 203.0.113.11 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes"
    );
    assert_eq!(g.max_message_bytes(), 25 << 20);
    assert!(by("longtail")
        .greylisting
        .as_ref()
        .is_some_and(|g| g.enabled));
}

fn broken(edit: impl Fn(String) -> String) -> String {
    let text = std::fs::read_to_string(Path::new(DIR).join("gmail.toml")).unwrap_or_default();
    match Profile::parse(Path::new("gmail.toml"), &edit(text)) {
        Ok(_) => panic!("the broken profile loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_file_and_the_key() {
    let e = broken(|t| t.replace("connections = 20", "connectoins = 20"));
    assert!(
        e.starts_with("gmail.toml: ")
            && e.contains("unknown field `connectoins`")
            && e.contains("line"),
        "{e}"
    );
    let e = broken(|t| t.replace("unknown = 0.02", "unknown = 1.5"));
    assert_eq!(
        e,
        "gmail.toml: `mailboxes.unknown`: 1.5 is not a share between 0 and 1"
    );
    let e = broken(|t| t.replace("reply = \"552 5.3.4 Your message", "reply = \"Your message"));
    assert!(e.starts_with("gmail.toml: `on_too_large.reply`: "), "{e}");
    let e = broken(|t| t.replace("complaint_share = 0.0", "complaint_share = 0.01"));
    assert!(
        e.contains("`feedback.complaint_share`") && e.contains("sends no ARF"),
        "{e}"
    );
    let e = broken(|t| {
        t.replace(
            "per = \"1m\" },   # assumption: sustained",
            "per = \"1q\" },   # assumption: sustained",
        )
    });
    assert!(
        e.starts_with("gmail.toml: `limits.message_rates[0].per`: "),
        "{e}"
    );
    let e = broken(|t| t.replace("at = \"banner\"", "at = \"helo\""));
    assert!(e.contains("unknown variant `helo`"), "{e}");
}

#[test]
fn a_domain_claimed_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let g = std::fs::read_to_string(Path::new(DIR).join("gmail.toml")).unwrap_or_default();
    std::fs::write(dir.path().join("a.toml"), &g).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("b.toml"),
        g.replace("name = \"gmail\"", "name = \"gmail2\""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    match load_dir(dir.path()) {
        Err(ProfileError::DuplicateDomain { domain, .. }) => assert_eq!(domain, "gmail.com"),
        other => panic!("{other:?}"),
    }
}

/// Placeholders are filled in order, each in what the ones before left (a recipient that itself
/// reads `{domain}` gets it filled too), and a reply without any comes back as it is.
#[test]
fn reply_placeholders_fill_in_order() {
    let r = |reply: &str| Response {
        reply: reply.into(),
        at: Phase::Rcpt,
        disconnect: false,
    };
    let all = r("550 5.1.1 <{rcpt}> at {domain} from {ip} for {sender_domain} {ip}");
    assert_eq!(
        all.render("127.0.0.9", "a{domain}b@x.test", "s.test"),
        "550 5.1.1 <ax.testb@x.test> at x.test from 127.0.0.9 for s.test 127.0.0.9"
    );
    let none = r("421 4.7.0 Try again later");
    assert_eq!(
        none.render("", "u@x.test", "s.test"),
        "421 4.7.0 Try again later"
    );
}
