//! A scenario's roles bound to configs it was not written for: by name, by purpose, by the
//! config's only choice, by `--map`; unbound roles and impossible injection are errors that list
//! what the scenario needs and what the config offers.

use simulator::bind::{bind, RoleKind, RoleMap};
use simulator::inject::injection;
use simulator::scenario::{scenario_files, Expectation, Loaded};
use std::path::Path;

fn scenario(name: &str) -> Loaded {
    Loaded::load(Path::new(&format!("../scenarios/{name}.toml"))).unwrap_or_else(|e| panic!("{e}"))
}

fn config(text: &str) -> mta::config::Config {
    let l = mta::config::load_str("test.conf", text);
    assert!(l.is_valid(), "{:?}", l.diagnostics);
    l.config
}

/// An operator's config: pools `bulk` and `trans`, one signing domain, one bounce domain.
const OPERATOR: &str = "host-name mta.mailer.example.net
smtp-listener 0/0:25
<source 10.20.0.0/16>
    always-allow-relaying yes
    process-x-virtual-mta yes
</source>
<source 0/0>
    always-allow-relaying no
</source>
relay-domain bounce.mailer.example.net
<bounce-processor>
    <address-list>
        domain bounce.mailer.example.net
    </address-list>
</bounce-processor>
domain-key k1, mailer.example.net, ../fixtures/keys/rsa2048-pkcs1.pem
<virtual-mta o1>
    smtp-source-host 203.0.113.40 o1.mailer.example.net
</virtual-mta>
<virtual-mta o2>
    smtp-source-host 203.0.113.41 o2.mailer.example.net
</virtual-mta>
<virtual-mta t1>
    smtp-source-host 198.51.100.7 t1.mailer.example.net
</virtual-mta>
<virtual-mta-pool bulk>
    virtual-mta o1
    virtual-mta o2
</virtual-mta-pool>
<virtual-mta-pool trans>
    virtual-mta t1
</virtual-mta-pool>
";

#[test]
fn the_suite_binds_to_its_own_config_unchanged() {
    let hot = mta::config::load(Path::new("../fixtures/configs/hot.conf"))
        .into_result()
        .unwrap_or_else(|e| panic!("{e}"));
    for f in scenario_files(Path::new("../scenarios")).unwrap_or_else(|e| panic!("{e}")) {
        let l = Loaded::load(&f).unwrap_or_else(|e| panic!("{e}"));
        if !l.config_path.ends_with("hot.conf") {
            continue;
        }
        let b = bind(&l, &hot, "hot.conf", &[]).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(b.is_identity(), "{}: {:?}", f.display(), b.roles);
        assert!(b.notes().is_empty());
        assert_eq!(b.apply(&l).scenario, l.scenario, "{}", f.display());
        let needs = l.scenario.traffic.iter().any(|t| t.vmta.is_some());
        let i = injection(&hot, needs, false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i.listener.to_string(), "127.0.0.1:2525");
        assert!(i.why.is_empty(), "{}", i.why);
    }
}

#[test]
fn roles_bind_by_purpose_and_only_choice() {
    let cfg = config(OPERATOR);
    let l = scenario("mixed-production");
    let b = bind(&l, &cfg, "op.conf", &[]).unwrap_or_else(|e| panic!("{e}"));
    let to = |k: RoleKind, r: &str| {
        b.roles
            .iter()
            .find(|x| x.kind == k && x.role == r)
            .and_then(|x| x.to.clone())
    };
    assert_eq!(
        to(RoleKind::Vmta, "pool-marketing").as_deref(),
        Some("bulk")
    );
    assert_eq!(
        to(RoleKind::Vmta, "pool-transactional").as_deref(),
        Some("trans")
    );
    assert_eq!(
        to(RoleKind::Sender, "news.example.com").as_deref(),
        Some("mailer.example.net")
    );
    let notes = b.notes().join("\n");
    assert!(notes.contains("named for marketing"), "{notes}");
    let applied = b.apply(&l);
    for t in &applied.scenario.traffic {
        assert!(t.sender.ends_with("@mailer.example.net"), "{}", t.sender);
        assert!(matches!(t.vmta.as_deref(), Some("bulk" | "trans")));
        for v in t.headers.values() {
            assert!(!v.contains("news.example.com"), "{v}");
        }
    }
    // The backoff expectation's queue pattern keeps its domain.
    assert!(applied
        .scenario
        .expectations
        .iter()
        .any(|e| matches!(e, Expectation::Backoff { queue, .. } if queue == "yahoo.com/*")));
}

#[test]
fn the_return_path_goes_to_the_bounce_processor() {
    let cfg = config(OPERATOR);
    let l = scenario("fbl-complaints");
    let b = bind(&l, &cfg, "op.conf", &[]).unwrap_or_else(|e| panic!("{e}"));
    let t = &b.apply(&l).scenario.traffic[0];
    assert_eq!(t.mail_from.as_deref(), Some("b@bounce.mailer.example.net"));
    assert!(t.sender.ends_with("@mailer.example.net"));
}

#[test]
fn ambiguous_roles_are_errors_listing_needs_and_offers() {
    // Two pools named for nothing: which is marketing?
    let cfg = config(
        &OPERATOR
            .replace("bulk", "pool-a")
            .replace("trans", "pool-b"),
    );
    let l = scenario("gmail-throttle");
    let e = bind(&l, &cfg, "op.conf", &[]).expect_err("ambiguous");
    let text = e.to_string();
    assert!(text.contains("vmta `pool-marketing`"), "{text}");
    assert!(text.contains("pools: pool-a, pool-b"), "{text}");
    assert!(text.contains("--map vmta:"), "{text}");
    // Bound by hand it runs; a map to a pool the config lacks, or for a role the scenario does
    // not have, is an error.
    let m: RoleMap = "vmta:pool-marketing=pool-b"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let b = bind(&l, &cfg, "op.conf", &[m]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        b.apply(&l).scenario.traffic[0].vmta.as_deref(),
        Some("pool-b")
    );
    let bad: RoleMap = "vmta:pool-marketing=nosuch"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(bind(&l, &cfg, "op.conf", &[bad])
        .expect_err("no such pool")
        .to_string()
        .contains("`nosuch`"));
    let unused: RoleMap = "vmta:pool-x=pool-a"
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let e = bind(&l, &cfg, "op.conf", &[unused]).expect_err("unused map");
    assert!(e.to_string().contains("uses no vmta `pool-x`"), "{e}");
    // Two signing domains, neither named for the purpose: which sender?
    let two = OPERATOR.replace(
        "domain-key k1, mailer.example.net",
        "domain-key k2, shop.example.org, ../fixtures/keys/rsa2048-pkcs1.pem\ndomain-key k1, mailer.example.net",
    );
    let e = bind(&l, &config(&two), "op.conf", &[]).expect_err("two domains");
    assert!(e.to_string().contains("sender `news.example.com`"), "{e}");
    assert!(
        e.to_string()
            .contains("mailer.example.net, shop.example.org"),
        "{e}"
    );
}

#[test]
fn a_config_without_vmtas_sends_without_the_header() {
    let cfg =
        config("smtp-listener 0/0:25\n<source 127.0.0.1>\nalways-allow-relaying yes\n</source>\n");
    let l = scenario("gmail-throttle");
    let b = bind(&l, &cfg, "stock.conf", &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.apply(&l).scenario.traffic[0].vmta, None);
    assert!(
        b.notes()[0].contains("no X-Virtual-MTA header"),
        "{:?}",
        b.notes()
    );
    // The sender stays: the config signs for nothing.
    assert_eq!(
        b.apply(&l).scenario.traffic[0].sender,
        l.scenario.traffic[0].sender
    );
    let i = injection(&cfg, false, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(i.listener.to_string(), "127.0.0.1:25");
}

#[test]
fn injection_goes_where_the_source_rules_let_it_relay() {
    let cfg = config(OPERATOR);
    let i = injection(&cfg, true, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(i.client.to_string(), "10.20.0.1");
    assert!(i.why.contains("10.20.0.1"), "{}", i.why);
    // Live runs connect from loopback only.
    let e = injection(&cfg, true, true).expect_err("no loopback relaying");
    assert!(e.contains("always-allow-relaying yes"), "{e}");
    // Relaying without process-x-virtual-mta: the traffic's vMTA names would be ignored.
    let no_header = OPERATOR.replace("    process-x-virtual-mta yes\n", "");
    let e = injection(&config(&no_header), true, false).expect_err("no header processing");
    assert!(e.contains("process-x-virtual-mta"), "{e}");
    assert!(injection(&config(&no_header), false, false).is_ok());
    // A named source reached through its listener (braces optional).
    let named = config(
        "smtp-listener 127.0.0.1:587 source=injector\n<source {injector}>\nalways-allow-relaying yes\nprocess-x-virtual-mta yes\n</source>\n<source 0/0>\nalways-allow-relaying no\n</source>\n",
    );
    let i = injection(&named, true, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(i.listener.to_string(), "127.0.0.1:587");
}
