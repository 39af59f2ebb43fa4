//! The live world for an MTA without a PowerMTA config (`mtasim world up --sender-domain
//! --sender-ip --dkim-key`): its DNS publishes SPF, DMARC, DKIM (a given key and a generated one)
//! and forward-confirmed PTRs for the sending addresses (documentation addresses mapped onto
//! loopback); a message signed with either key from a sending address verifies at the provider, an
//! unsigned or wrongly signed one from an address outside SPF gets the provider's authentication reply, and the
//! totals count both per provider and per sending address with the reply text.

use mta::dns::{HickoryResolver, Resolver};
use mta::net::{LiveNet, Net};
use mta::smtp::client::{Client, Timeouts};
use simulator::world::{World, WorldOptions};
use simulator::world_auth::{DkimKeyArg, DmarcPolicy, SenderOptions};
use std::net::{IpAddr, SocketAddr};
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

fn opts(keys: &Path, ips: &[&str]) -> WorldOptions {
    WorldOptions {
        profiles: root().join("isp-profiles"),
        dns: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        smtp_port: free_port("127.100.1.1"),
        senders: SenderOptions {
            domains: vec!["shop.example".into(), "given.example".into()],
            ips: ips
                .iter()
                .map(|s| s.parse().unwrap_or_else(|e: String| panic!("{e}")))
                .collect(),
            dkim_keys: vec![DkimKeyArg {
                selector: "s1".into(),
                domain: "given.example".into(),
                path: root().join("fixtures/keys/rsa2048-pkcs1.pem"),
            }],
            dmarc_policy: DmarcPolicy::Quarantine,
            key_dir: keys.to_path_buf(),
            ..SenderOptions::default()
        },
        ..WorldOptions::default()
    }
}

fn gmail_mx(w: &World) -> SocketAddr {
    w.providers
        .iter()
        .find(|p| p.name == "gmail")
        .and_then(|p| p.mx.first())
        .map(|m| m.addr)
        .unwrap_or_else(|| panic!("no gmail MX"))
}

/// Sends `body` from `src` to gmail with MAIL FROM `from`.
async fn send(mx: SocketAddr, src: [u8; 4], from: &str, body: &[u8]) {
    let conn = LiveNet
        .connect(Some(IpAddr::from(src)), mx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = Client::connect(conn.stream, Timeouts::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|r| panic!("banner {r}"));
    c.ehlo("out.shop.example")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = c.send(from, &["reader@gmail.com".to_string()], body).await;
    c.quit().await;
}

fn signed(domain: &str, selector: &str, key: &Path, id: &str) -> Vec<u8> {
    let msg = format!(
        "From: Shop <news@{domain}>\r\nTo: reader@gmail.com\r\nSubject: hi\r\nDate: Tue, 24 Nov 2026 06:00:00 +0000\r\nMessage-ID: <{id}@{domain}>\r\n\r\nhello\r\n"
    );
    let key = mta::dkim::LoadedKey::load(key).unwrap_or_else(|e| panic!("{e}"));
    let sig = mta::dkim::sign(
        msg.as_bytes(),
        &key,
        domain,
        selector,
        mta::dkim::DEFAULT_HEADERS,
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    [sig.as_bytes(), msg.as_bytes()].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_without_a_config_are_published_and_verified() {
    let keys = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let w = World::start(&opts(
        keys.path(),
        &["127.0.0.170=out.shop.example", "192.0.2.44"],
    ))
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // The generated key: in the key directory, reported with its selector.
    let generated = w
        .published
        .dkim
        .iter()
        .find(|k| k.domain == "shop.example")
        .cloned()
        .unwrap_or_else(|| panic!("{:?}", w.published));
    assert_eq!(
        (generated.selector.as_str(), generated.source),
        ("mtasim", "generated")
    );
    assert!(generated.path.starts_with(keys.path()) && generated.path.is_file());
    assert_eq!(
        w.published.mapping(),
        vec![(IpAddr::from([192, 0, 2, 44]), IpAddr::from([127, 2, 2, 44]))]
    );

    // The world's DNS, asked as an MTA or a provider would.
    let r = HickoryResolver::with_nameservers(&[w.dns.addr()]).unwrap_or_else(|e| panic!("{e}"));
    for d in ["shop.example", "given.example"] {
        let spf = r.txt(d).await.unwrap_or_else(|e| panic!("{d}: {e}"));
        assert_eq!(
            spf,
            vec!["v=spf1 ip4:127.0.0.170 ip4:127.2.2.44 -all".to_string()],
            "{d}"
        );
        let dmarc = r
            .txt(&format!("_dmarc.{d}"))
            .await
            .unwrap_or_else(|e| panic!("{d}: {e}"));
        assert_eq!(dmarc, vec!["v=DMARC1; p=quarantine".to_string()]);
    }
    let dkim = r
        .txt("mtasim._domainkey.shop.example")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let want = mta::dkim::keys::public_txt(&generated.path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dkim, vec![want]);
    let dkim = r
        .txt("s1._domainkey.given.example")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let want = mta::dkim::keys::public_txt(&root().join("fixtures/keys/rsa2048-pkcs1.pem"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dkim, vec![want]);
    let ptr = r
        .ptr(IpAddr::from([127, 0, 0, 170]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ptr, vec!["out.shop.example".to_string()]);
    assert_eq!(
        r.ip("out.shop.example").await.ok(),
        Some(vec![IpAddr::from([127, 0, 0, 170])])
    );
    let ptr = r
        .ptr(IpAddr::from([127, 2, 2, 44]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ptr,
        vec!["mail-2.shop.example".to_string()],
        "default host name"
    );

    // Signed with the generated key and with the given one, from a sending address: verified.
    let mx = gmail_mx(&w);
    let gen_body = signed("shop.example", "mtasim", &generated.path, "g1");
    send(mx, [127, 0, 0, 170], "b@shop.example", &gen_body).await;
    let given_body = signed(
        "given.example",
        "s1",
        &root().join("fixtures/keys/rsa2048-pkcs1.pem"),
        "g2",
    );
    send(mx, [127, 0, 0, 170], "b@given.example", &given_body).await;
    // Unsigned, from an address outside SPF: Gmail's authentication reply.
    let unsigned = b"From: Shop <news@shop.example>\r\nTo: reader@gmail.com\r\nSubject: hi\r\nMessage-ID: <u1@shop.example>\r\n\r\nhello\r\n";
    send(mx, [127, 0, 0, 171], "b@shop.example", unsigned).await;
    // Signed with a key that is not the published one (the selector is): DKIM fails too.
    let wrong = signed(
        "shop.example",
        "mtasim",
        &root().join("fixtures/keys/rsa2048-pkcs8.pem"),
        "w1",
    );
    send(mx, [127, 0, 0, 171], "b@shop.example", &wrong).await;

    let t = w.all_totals();
    let gmail = &t.providers["gmail"];
    assert_eq!(gmail.dkim_verified, 2, "{gmail:?}");
    assert_eq!(gmail.messages, 2, "{gmail:?}");
    let good = &t.ips[&IpAddr::from([127, 0, 0, 170])];
    assert_eq!(
        (good.messages, good.dkim_verified, good.rejected),
        (2, 2, 0)
    );
    let bad = &t.ips[&IpAddr::from([127, 0, 0, 171])];
    assert_eq!(bad.rejected, 2, "{bad:?}");
    assert_eq!(bad.replies.len(), 1, "{bad:?}");
    assert!(
        bad.replies[0].reply.starts_with(
            "550 5.7.26 This email has been blocked because the sender is unauthenticated."
        ),
        "{bad:?}"
    );
    assert_eq!(bad.replies[0].count, 2);
    assert_eq!(
        gmail.replies, bad.replies,
        "the provider's replies are the IP's"
    );
    let text = w.describe_totals(&t);
    assert!(
        text.contains("127.0.0.171") && text.contains("550 5.7.26"),
        "{text}"
    );

    // A second world finds the generated key again instead of making a new one.
    drop(w);
    let w = World::start(&opts(keys.path(), &["127.0.0.170"]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let again = w
        .published
        .dkim
        .iter()
        .find(|k| k.domain == "shop.example")
        .unwrap_or_else(|| panic!("{:?}", w.published));
    assert_eq!((again.source, &again.path), ("reused", &generated.path));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_addresses_outside_loopback_are_refused() {
    let keys = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let e = World::start(&opts(keys.path(), &["10.1.2.3"]))
        .await
        .err()
        .unwrap_or_default();
    assert!(
        e.contains("--sender-ip 10.1.2.3") && e.contains("127.0.0.0/8"),
        "{e}"
    );
}
