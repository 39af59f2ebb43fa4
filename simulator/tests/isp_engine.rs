//! The provider engine with the shipped profiles: limits per source IP, the profiles' reply texts
//! verbatim, mailbox states, greylisting, authentication rules, incidents and reputation.

use simulator::isp::{DataFacts, Engine, EventKind, Mailbox, Override};
use simulator::profile::{Phase, Profile, Response};
use std::net::IpAddr;
use std::path::Path;

fn engine(name: &str) -> Engine {
    Engine::new(
        Profile::load(&Path::new("../isp-profiles").join(format!("{name}.toml")))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

const T0: i64 = 1_795_474_800_000;

fn facts(rcpts: u32) -> DataFacts<'static> {
    DataFacts {
        mail_from: "bounces@news.example.com",
        rcpts,
        size: 2048,
        spf_pass: true,
        dkim_pass: true,
        dmarc_pass: true,
        one_click_unsubscribe: true,
        subscribed: true,
        dkim_assumed: false,
    }
}

#[test]
fn connection_limit_per_ip_across_hosts() {
    let g = engine("gmail");
    let a = ip("203.0.113.11");
    let mut open = Vec::new();
    for _ in 0..20 {
        let (s, greet) = g.connect(a, T0);
        assert!(
            greet
                .as_ref()
                .is_ok_and(|g| g.starts_with("220 mx.google.com ESMTP ")),
            "{greet:?}"
        );
        open.push(s);
    }
    let (s21, greet) = g.connect(a, T0);
    let refusal = greet.map(|_| ()).unwrap_err();
    assert_eq!(
        refusal.reply,
        "421 4.7.0 Try again later, closing connection. - gsmtp"
    );
    assert!(refusal.disconnect);
    g.disconnect(&s21, T0);
    assert!(
        g.connect(ip("203.0.113.12"), T0).1.is_ok(),
        "another IP has its own count"
    );
    g.disconnect(&open.remove(0), T0);
    assert!(g.connect(a, T0).1.is_ok(), "a slot freed up");
    let max_open = g
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Connect { open } if e.ip == a => Some(open),
            _ => None,
        })
        .max();
    assert_eq!(max_open, Some(21), "the 21st attempt is recorded");
}

#[test]
fn messages_per_connection_and_rate_windows_answer_verbatim() {
    let y = engine("yahoo");
    let a = ip("203.0.113.21");
    let (mut s, _) = y.connect(a, T0);
    for i in 0..20 {
        assert_eq!(y.mail(&s, T0), Ok(()));
        assert_eq!(
            y.rcpt(&s, "b@news.example.com", &format!("ok-{i}@yahoo.com"), T0),
            Ok(())
        );
        assert!(y.end_of_data(&mut s, &facts(1), T0).is_ok());
    }
    let cap = y.mail(&s, T0).unwrap_err();
    assert_eq!(
        cap.reply,
        "421 Max message per connection reached, closing transmission channel"
    );
    // 1000 recipients a minute from one IP, then TSS04 with the IP filled in.
    let t = T0 + 1000;
    let (mut s2, _) = y.connect(a, t);
    let mut n = 20;
    while n < 1000 {
        let (mut s3, _) = y.connect(a, t);
        for _ in 0..10 {
            assert_eq!(
                y.rcpt(&s3, "b@news.example.com", &format!("ok-{n}@yahoo.com"), t),
                Ok(()),
                "{n}"
            );
            n += 1;
        }
        assert!(y.end_of_data(&mut s3, &facts(10), t).is_ok());
        y.disconnect(&s3, t);
    }
    let tss04 = y
        .rcpt(&s2, "b@news.example.com", "ok-x@yahoo.com", t)
        .unwrap_err();
    assert_eq!(tss04.reply, "421 4.7.0 [TSS04] Messages from 203.0.113.21 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes");
    assert!(tss04.disconnect);
    // A minute later the window has moved on.
    assert_eq!(
        y.rcpt(&s2, "b@news.example.com", "ok-x@yahoo.com", t + 61_000),
        Ok(())
    );
    assert!(y.end_of_data(&mut s2, &facts(1), t + 61_000).is_ok());
}

#[test]
fn mailbox_population_is_deterministic_and_named_addresses_win() {
    let g = engine("gmail");
    assert_eq!(g.mailbox("unknown-42@gmail.com"), Mailbox::Unknown);
    assert_eq!(g.mailbox("full-1@gmail.com"), Mailbox::Full);
    assert_eq!(g.mailbox("disabled-x@gmail.com"), Mailbox::Disabled);
    assert_eq!(g.mailbox("ok-unknown@gmail.com"), Mailbox::Ok);
    let n = 20_000;
    let unknown = (0..n)
        .filter(|i| g.mailbox(&format!("user{i}@gmail.com")) == Mailbox::Unknown)
        .count() as f64
        / n as f64;
    assert!(
        (unknown - 0.02).abs() < 0.005,
        "share of unknown users {unknown}"
    );
    assert_eq!(
        g.mailbox("user7@gmail.com"),
        engine("gmail").mailbox("user7@gmail.com"),
        "same draw in a fresh world"
    );
    let (s, _) = g.connect(ip("203.0.113.11"), T0);
    let e = g
        .rcpt(&s, "b@news.example.com", "unknown-1@gmail.com", T0)
        .unwrap_err();
    assert_eq!(e.reply, "550 5.1.1 The email account that you tried to reach does not exist. Please double-check the recipient's email address for typos or unnecessary spaces. - gsmtp");
    let e = engine("yahoo");
    let (s, _) = e.connect(ip("203.0.113.11"), T0);
    let r = e
        .rcpt(&s, "b@news.example.com", "unknown-1@aol.com", T0)
        .unwrap_err();
    assert!(r.reply.starts_with("554 delivery error: dd This user doesn't have a aol.com account (unknown-1@aol.com) [-5]"), "{}", r.reply);
}

#[test]
fn greylisting_defers_the_first_attempt_only() {
    let l = engine("longtail");
    let a = ip("203.0.113.31");
    let (s, _) = l.connect(a, T0);
    let first = l
        .rcpt(&s, "b@news.example.com", "ok-1@comcast.net", T0)
        .unwrap_err();
    assert!(
        first
            .reply
            .starts_with("450 4.2.0 <ok-1@comcast.net>: Recipient address rejected: Greylisted"),
        "{}",
        first.reply
    );
    assert!(
        l.rcpt(&s, "b@news.example.com", "ok-1@comcast.net", T0 + 60_000)
            .is_err(),
        "still within the delay"
    );
    assert_eq!(
        l.rcpt(&s, "b@news.example.com", "ok-1@comcast.net", T0 + 301_000),
        Ok(())
    );
}

/// `--no-dkim` benchmarks: a message taken as signed passes the bulk rules as a signed one does,
/// but the provider's record says it was not verified.
#[test]
fn assumed_dkim_passes_the_rules_and_is_recorded_as_unverified() {
    let g = engine("gmail");
    let (mut s, _) = g.connect(ip("203.0.113.11"), T0);
    let assumed = DataFacts {
        dkim_assumed: true,
        ..facts(1000)
    };
    for _ in 0..8 {
        assert!(
            g.end_of_data(&mut s, &assumed, T0).is_ok(),
            "bulk past 5,000 a day"
        );
    }
    let verified: Vec<bool> = g
        .events()
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Accepted { dkim_pass, .. } => Some(dkim_pass),
            _ => None,
        })
        .collect();
    assert_eq!(verified, vec![false; 8]);
    assert!(g.end_of_data(&mut s, &facts(1), T0).is_ok());
    assert!(matches!(
        g.events().last().map(|e| &e.kind),
        Some(EventKind::Accepted {
            dkim_pass: true,
            ..
        })
    ));
}

#[test]
fn authentication_rules() {
    let g = engine("gmail");
    let (mut s, _) = g.connect(ip("203.0.113.11"), T0);
    let unauth = DataFacts {
        spf_pass: false,
        dkim_pass: false,
        ..facts(1)
    };
    assert!(g
        .end_of_data(&mut s, &unauth, T0)
        .unwrap_err()
        .reply
        .starts_with(
            "550 5.7.26 This email has been blocked because the sender is unauthenticated."
        ));
    // Past 5,000 a day from one sending domain, DMARC is required too.
    let no_dmarc = DataFacts {
        dmarc_pass: false,
        ..facts(1000)
    };
    for _ in 0..5 {
        assert!(g.end_of_data(&mut s, &no_dmarc, T0).is_ok());
    }
    let bulk = g.end_of_data(&mut s, &no_dmarc, T0).unwrap_err();
    assert_eq!(bulk.reply, "550 5.7.26 Unauthenticated email from news.example.com is not accepted due to domain's DMARC policy. - gsmtp");
    let big = DataFacts {
        size: 30 << 20,
        ..facts(1)
    };
    assert!(g
        .end_of_data(&mut s, &big, T0)
        .unwrap_err()
        .reply
        .starts_with("552 5.3.4"));
}

#[test]
fn incident_overrides_and_reputation_tiers() {
    let y = engine("yahoo");
    let resp = Response { reply: "421 4.7.0 [TSS04] Messages from {ip} temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes".into(), at: Phase::Rcpt, disconnect: true };
    y.add_override(Override {
        response: resp,
        share: 1.0,
        from_ms: T0 + 1_200_000,
        until_ms: T0 + 3_900_000,
    });
    let a = ip("203.0.113.41");
    let (s, _) = y.connect(a, T0);
    assert_eq!(
        y.rcpt(&s, "b@news.example.com", "ok-1@yahoo.com", T0),
        Ok(()),
        "before the incident"
    );
    let (s, _) = y.connect(a, T0 + 1_300_000);
    assert!(y
        .rcpt(&s, "b@news.example.com", "ok-1@yahoo.com", T0 + 1_300_000)
        .unwrap_err()
        .reply
        .contains("[TSS04] Messages from 203.0.113.41"));
    let (s, _) = y.connect(a, T0 + 4_000_000);
    assert_eq!(
        y.rcpt(&s, "b@news.example.com", "ok-1@yahoo.com", T0 + 4_000_000),
        Ok(()),
        "after it"
    );
    // Complaints sink the IP below the TSS09 tier: connections are refused at the banner.
    // (A hundred complaints at once from one IP is far past any profile's penalty scale.)
    let b = ip("203.0.113.42");
    for _ in 0..100 {
        y.complaint(b, T0);
    }
    assert!(y.reputation_of(b, T0) < 20.0);
    let refused = y.connect(b, T0).1.unwrap_err();
    assert!(
        refused.reply.starts_with(
            "553 5.7.2 [TSS09] All messages from 203.0.113.42 will be permanently deferred"
        ),
        "{}",
        refused.reply
    );
    assert!(
        y.reputation_of(b, T0 + 48 * 3_600_000) > 20.0,
        "reputation recovers with time"
    );
}

#[test]
fn tls_required_answers_on_missing_until_starttls() {
    let mut p =
        Profile::load(Path::new("../isp-profiles/gmail.toml")).unwrap_or_else(|e| panic!("{e}"));
    p.tls.required = true;
    let g = Engine::new(p);
    let a = ip("203.0.113.51");
    let (mut s, _) = g.connect(a, T0);
    let refused = g
        .rcpt(&s, "b@news.example.com", "ok-1@gmail.com", T0)
        .unwrap_err();
    assert!(
        refused.reply.starts_with("421 4.7.29"),
        "gmail's on_missing reply: {}",
        refused.reply
    );
    s.tls = true;
    assert_eq!(
        g.rcpt(&s, "b@news.example.com", "ok-1@gmail.com", T0),
        Ok(()),
        "after STARTTLS"
    );
}

/// Providers judge complaint rates, not counts: the same 0.1% of complaints costs a high-volume IP
/// no more than a small one, while the same number of complaints on little mail still costs in full.
#[test]
fn complaint_penalties_follow_the_rate_not_the_count() {
    let y = engine("yahoo");
    let pen = y.profile.reputation.complaint_penalty;
    let initial = y.profile.reputation.initial;
    // Small sender: 500 messages, then one complaint: the full penalty.
    let small = ip("203.0.113.51");
    let (mut s, _) = y.connect(small, T0);
    for _ in 0..25 {
        assert!(y.end_of_data(&mut s, &facts(20), T0).is_ok());
    }
    y.complaint(small, T0);
    let lost_small = initial - y.reputation_of(small, T0);
    assert!((lost_small - pen).abs() < 1e-9, "{lost_small}");
    // Large sender: 10,000 messages in the hour (ten times the reference), ten complaints (the
    // same 0.1%): they cost about one full penalty together, not ten.
    let big = ip("203.0.113.52");
    let (mut s, _) = y.connect(big, T0);
    for _ in 0..500 {
        assert!(y.end_of_data(&mut s, &facts(20), T0).is_ok());
    }
    for _ in 0..10 {
        y.complaint(big, T0);
    }
    let lost_big = initial - y.reputation_of(big, T0);
    assert!(
        (lost_big - pen).abs() < 1e-9,
        "ten complaints on 10,000 messages: lost {lost_big}"
    );
    // An hour later the volume estimate has decayed (to about 3,700): a complaint costs more.
    let later = T0 + 3_600_000;
    let before = y.reputation_of(big, later);
    y.complaint(big, later);
    let cost = before - y.reputation_of(big, later);
    assert!(cost > pen * 0.2 && cost < pen * 0.4, "{cost}");
}

/// The one-click unsubscribe rule is for marketing and subscribed mail; transactional mail (no
/// List-Unsubscribe, List-Id or Precedence: bulk) is exempt, as Gmail's sender rules say.
#[test]
fn one_click_rule_spares_transactional_mail() {
    let g = engine("gmail");
    let (mut s, _) = g.connect(ip("203.0.113.11"), T0);
    for _ in 0..6 {
        assert!(g.end_of_data(&mut s, &facts(1000), T0).is_ok());
    }
    let marketing = DataFacts {
        one_click_unsubscribe: false,
        ..facts(1)
    };
    let refused = g.end_of_data(&mut s, &marketing, T0).unwrap_err();
    assert!(refused.reply.starts_with("550 5.7.26"), "{}", refused.reply);
    let transactional = DataFacts {
        one_click_unsubscribe: false,
        subscribed: false,
        ..facts(1)
    };
    assert!(g.end_of_data(&mut s, &transactional, T0).is_ok());
}

/// The bulk-sender count is per sending domain (in any letter case) and per day: the next day a
/// domain starts below the threshold again, and another domain has its own count.
#[test]
fn bulk_count_is_per_domain_and_day() {
    let g = engine("gmail");
    let (mut s, _) = g.connect(ip("203.0.113.12"), T0);
    let no_one_click = |mail_from| DataFacts {
        mail_from,
        one_click_unsubscribe: false,
        ..facts(1)
    };
    // 5,000 a day is the threshold: at it the rule does not apply yet.
    for _ in 0..4 {
        assert!(g.end_of_data(&mut s, &facts(1000), T0).is_ok());
    }
    assert!(g.end_of_data(&mut s, &facts(999), T0).is_ok());
    assert!(g
        .end_of_data(&mut s, &no_one_click("bounces@news.example.com"), T0)
        .is_ok());
    // Past it, for the same domain written in capitals too.
    let refused = g
        .end_of_data(&mut s, &no_one_click("Bounces@NEWS.Example.com"), T0)
        .unwrap_err();
    assert!(refused.reply.starts_with("550 5.7.26"), "{}", refused.reply);
    // Another domain counts on its own.
    assert!(g
        .end_of_data(&mut s, &no_one_click("orders@shop.example.org"), T0)
        .is_ok());
    // The next day the count starts again.
    let tomorrow = T0 + 86_400_000;
    let (mut s, _) = g.connect(ip("203.0.113.12"), tomorrow);
    assert!(g
        .end_of_data(&mut s, &no_one_click("bounces@news.example.com"), tomorrow)
        .is_ok());
}
