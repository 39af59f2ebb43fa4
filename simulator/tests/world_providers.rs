//! Every provider of the shipped profiles, live over real TCP and driven by our SMTP client: an
//! unknown mailbox gets the profile's reply verbatim (the greylisting deferral first where the
//! profile greylists), and the N+1st concurrent connection from one
//! address gets the profile's connection-limit reply (N from the profile).

use mta::net::{LiveNet, Net};
use mta::smtp::client::{Client, Timeouts};
use simulator::profile::Phase;
use simulator::world::{World, WorldOptions};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind(format!("{ip}:0"))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_answers_with_its_profile() {
    let world = World::start(&WorldOptions {
        profiles: root().join("isp-profiles"),
        config: Some(root().join("fixtures/configs/hot.conf")),
        dns: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        smtp_port: free_port("127.100.1.1"),
        mta: None,
        ..WorldOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let profiles = simulator::profile::load_dir(&root().join("isp-profiles"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(profiles.len(), 5);
    for (pi, p) in profiles.iter().enumerate() {
        let info = world
            .providers
            .iter()
            .find(|x| x.name == p.name)
            .unwrap_or_else(|| panic!("{} not running", p.name));
        let mx = info.mx[0].addr;
        let domain = &p.domains[0];
        // An unknown mailbox, from an address of its own.
        let src = IpAddr::from([127, 0, 1, 10 + pi as u8]);
        let conn = LiveNet
            .connect(Some(src), mx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut c = Client::connect(conn.stream, Timeouts::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|r| panic!("{}: banner {r}", p.name));
        c.ehlo("mkt-1.news.example.com")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let rcpt = format!("unknown-1@{domain}");
        let t = c
            .send(
                "b@bounces.news.example.com",
                std::slice::from_ref(&rcpt),
                b"Subject: x\r\n\r\nx\r\n",
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // A greylisting provider defers the first attempt of every new triple (for minutes).
        let expected = match &p.greylisting {
            Some(g) if g.enabled => &g.on_greylisted,
            _ => &p.mailboxes.on_unknown,
        };
        let want = expected.render(src, &rcpt, "bounces.news.example.com");
        assert_eq!(
            t.outcome(0).to_string(),
            want,
            "{}: unknown mailbox",
            p.name
        );
        c.quit().await;
        // N concurrent connections from one address, then one more.
        let (Some(n), Some(on)) = (p.limits.connections, p.limits.on_connections.as_ref()) else {
            continue;
        };
        let src = IpAddr::from([127, 0, 2, 10 + pi as u8]);
        let mut held = Vec::new();
        for _ in 0..n {
            let conn = LiveNet
                .connect(Some(src), mx)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let c = Client::connect(conn.stream, Timeouts::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(c.is_ok(), "{}: connection within the limit refused", p.name);
            held.push(c);
        }
        let conn = LiveNet
            .connect(Some(src), mx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let over = Client::connect(conn.stream, Timeouts::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let want = on.render(src, "", "");
        match (on.at, over) {
            (Phase::Banner, Err(r)) => {
                assert_eq!(r.to_string(), want, "{}: connection {}", p.name, n + 1)
            }
            (Phase::Banner, Ok(_)) => panic!("{}: connection {} accepted", p.name, n + 1),
            (_, _) => {} // a limit answered later in the session is covered by the engine tests
        }
        drop(held);
    }
}
