//! The live world on loopback (`mtasim world up` and the same thing in-process): its DNS answers
//! for the providers and for the MTA config's sending addresses and keys; real clients (swaks,
//! Python smtplib, our own client) get the profiles' replies verbatim from the MX hosts.

use mta::dns::{HickoryResolver, Resolver};
use mta::net::{LiveNet, Net};
use mta::smtp::client::{Client, Timeouts};
use simulator::world::{World, WorldOptions};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind(format!("{ip}:0"))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn tool_missing(name: &str) -> bool {
    let missing = Command::new(name).arg("--version").output().is_err();
    if missing {
        assert!(
            std::env::var("REQUIRE_ORACLES").as_deref() != Ok("1"),
            "REQUIRE_ORACLES=1 but {name} is missing"
        );
        eprintln!("skipping the {name} part: not installed");
    }
    missing
}

async fn world() -> World {
    World::start(&WorldOptions {
        profiles: root().join("isp-profiles"),
        config: Some(root().join("fixtures/configs/hot.conf")),
        dns: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        smtp_port: free_port("127.100.1.1"),
        mta: None,
        ..WorldOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn gmail_mx(w: &World) -> SocketAddr {
    w.providers
        .iter()
        .find(|p| p.name == "gmail")
        .and_then(|p| p.mx.first())
        .map(|m| m.addr)
        .unwrap_or_else(|| panic!("no gmail MX"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_serves_providers_and_the_senders_records() {
    let w = world().await;
    let r = HickoryResolver::with_nameservers(&[w.dns.addr()]).unwrap_or_else(|e| panic!("{e}"));
    let mx = r.mx("gmail.com").await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!mx.is_empty());
    let ip = r.ip(&mx[0].host).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ip,
        vec![gmail_mx(&w).ip()],
        "the MX host resolves to where it listens"
    );
    // hot.conf: smtp-source-host 203.0.113.11 mkt-1.news.example.com, published (forward-confirmed)
    // at the loopback address it is mapped onto, as in live runs.
    assert!(w.published.mapping().contains(&(
        IpAddr::from([203, 0, 113, 11]),
        IpAddr::from([127, 2, 113, 11])
    )));
    let ptr = r
        .ptr(IpAddr::from([127, 2, 113, 11]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ptr, vec!["mkt-1.news.example.com".to_string()]);
    assert_eq!(
        r.ip("mkt-1.news.example.com").await.ok(),
        Some(vec![IpAddr::from([127, 2, 113, 11])])
    );
    let dkim = r
        .txt("s2048._domainkey.news.example.com")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let published = mta::dkim::keys::public_txt(&root().join("fixtures/keys/rsa2048-pkcs1.pem"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dkim,
        vec![published],
        "the config's key, from the world's DNS"
    );
    let spf = r.txt("news.example.com").await.unwrap_or_default();
    assert!(
        spf.iter()
            .any(|t| t.starts_with("v=spf1") && t.contains("ip4:127.2.113.11")),
        "{spf:?}"
    );
    assert!(r.txt("_dmarc.news.example.com").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_get_the_profiles_replies() {
    let w = world().await;
    let mx = gmail_mx(&w);
    // Our client: an unknown mailbox gets Gmail's 550 5.1.1 text, a good one 250.
    let conn = LiveNet
        .connect(Some(IpAddr::from([127, 0, 0, 131])), mx)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = Client::connect(conn.stream, Timeouts::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|r| panic!("banner {r}"));
    c.ehlo("mkt-1.news.example.com")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Signed with the config's key (the world publishes it): Gmail wants SPF or DKIM.
    let msg = b"From: news@news.example.com\r\nTo: x@gmail.com\r\nSubject: hi\r\nMessage-ID: <w1@news.example.com>\r\n\r\nhello\r\n";
    let key = mta::dkim::LoadedKey::load(&root().join("fixtures/keys/rsa2048-pkcs1.pem"))
        .unwrap_or_else(|e| panic!("{e}"));
    let sig = mta::dkim::sign(
        msg,
        &key,
        "news.example.com",
        "s2048",
        mta::dkim::DEFAULT_HEADERS,
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let body = &[sig.as_bytes(), msg].concat();
    let t = c
        .send(
            "b@bounces.news.example.com",
            &[
                "unknown-7@gmail.com".to_string(),
                "someone@gmail.com".to_string(),
            ],
            body,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let unknown = t.outcome(0).to_string();
    assert!(
        unknown.starts_with("550 5.1.1 The email account that you tried to reach does not exist."),
        "{unknown}"
    );
    assert_eq!(t.outcome(1).code, 250, "{}", t.outcome(1));
    c.quit().await;

    // swaks, an independent client.
    if !tool_missing("swaks") {
        let out = Command::new("swaks")
            .args([
                "--server",
                &mx.ip().to_string(),
                "--port",
                &mx.port().to_string(),
                "--local-interface",
                "127.0.0.132",
                "--from",
                "b@bounces.news.example.com",
                "--to",
                "unknown-9@gmail.com",
                "--timeout",
                "10",
            ])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(
                "<** 550 5.1.1 The email account that you tried to reach does not exist."
            ),
            "{text}"
        );
    }

    // Python smtplib: the 21st concurrent connection from one address gets Gmail's limit reply.
    if !tool_missing("python3") {
        let script = format!(
            r#"
import smtplib, socket, sys
held = []
for i in range(20):
    s = smtplib.SMTP('{ip}', {port}, source_address=('127.0.0.133', 0), timeout=10)
    held.append(s)
try:
    s = smtplib.SMTP('{ip}', {port}, source_address=('127.0.0.133', 0), timeout=10)
    print('accepted', s.noop())
except smtplib.SMTPConnectError as e:
    print('refused', e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPServerDisconnected as e:
    print('disconnected', e)
s = smtplib.SMTP('{ip}', {port}, source_address=('127.0.0.134', 0), timeout=10)
print('other ip', s.noop()[0])
"#,
            ip = mx.ip(),
            port = mx.port()
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("refused 421") && text.contains("other ip 250"),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let totals = w.totals();
    assert!(totals["gmail"].connections >= 3, "{totals:?}");
    assert!(totals["gmail"].rejected >= 1, "{totals:?}");
}

#[test]
fn world_up_prints_json_and_totals() {
    let port = free_port("127.100.1.1");
    let keys = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtasim"))
        .current_dir(root())
        .args([
            "world",
            "up",
            "--format",
            "json",
            "--dns",
            "127.0.0.1:0",
            "--smtp-port",
            &port.to_string(),
            "--config",
            "fixtures/configs/hot.conf",
            "--sender-domain",
            "shop.example",
            "--sender-ip",
            "127.0.0.160",
            "--key-dir",
        ])
        .arg(keys.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    // Readiness: one JSON line on stderr.
    let ready = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(&l)
                .ok()
                .filter(|v| v["ready"] == true)
        })
        .unwrap_or_else(|| panic!("no readiness line"));
    let dns: SocketAddr = ready["dns"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{ready}"));
    // An MX look-up through it works.
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let mx = rt.block_on(async {
        let r = HickoryResolver::with_nameservers(&[dns]).unwrap_or_else(|e| panic!("{e}"));
        r.mx("yahoo.com").await
    });
    assert!(mx.is_ok_and(|m| !m.is_empty()));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::io::BufReader::new(stdout), &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    // Exactly one JSON document on stdout.
    let mut docs = serde_json::Deserializer::from_str(&out).into_iter::<serde_json::Value>();
    let v = docs
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no JSON document: {out}"));
    assert!(docs.next().is_none(), "more than one document: {out}");
    let w = &v["world"];
    assert_eq!(w["dns"], dns.to_string());
    let providers = w["providers"].as_array().cloned().unwrap_or_default();
    assert_eq!(providers.len(), 5, "{w}");
    let yahoo = providers
        .iter()
        .find(|p| p["name"] == "yahoo")
        .unwrap_or_else(|| panic!("{w}"));
    assert!(yahoo["domains"]
        .as_array()
        .is_some_and(|d| d.iter().any(|x| x == "aol.com")));
    assert!(
        w["mapped_ips"].as_array().is_some_and(|m| m
            .iter()
            .any(|x| x["from"] == "203.0.113.11" && x["to"] == "127.2.113.11")),
        "{w}"
    );
    let generated = w["dkim_keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["domain"] == "shop.example").cloned())
        .unwrap_or_else(|| panic!("{w}"));
    assert_eq!(generated["source"], "generated", "{generated}");
    assert!(generated["path"]
        .as_str()
        .is_some_and(|p| Path::new(p).is_file()));
    assert!(
        w["records"].as_array().is_some_and(|r| r
            .iter()
            .any(|x| x["type"] == "PTR" && x["name"] == "127.0.0.160")),
        "{w}"
    );
    assert!(
        v["totals"]["providers"]["gmail"]["connections"].is_number(),
        "{v}"
    );
    assert!(v["totals"]["ips"].is_object(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_verify_dkim_with_keys_from_the_worlds_dns() {
    let w = world().await;
    let mx = gmail_mx(&w);
    let key = mta::dkim::LoadedKey::load(&root().join("fixtures/keys/rsa2048-pkcs1.pem"))
        .unwrap_or_else(|e| panic!("{e}"));
    let msg = b"From: News <news@news.example.com>\r\nTo: reader@gmail.com\r\nSubject: signed\r\nDate: Tue, 24 Nov 2026 06:00:00 +0000\r\nMessage-ID: <sig1@news.example.com>\r\n\r\nhello\r\n";
    let sig = mta::dkim::sign(
        msg,
        &key,
        "news.example.com",
        "s2048",
        mta::dkim::DEFAULT_HEADERS,
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let signed = [sig.as_bytes(), msg].concat();
    let tampered = String::from_utf8_lossy(&signed)
        .replace("hello", "hullo")
        .into_bytes();
    for body in [&signed, &tampered] {
        let conn = LiveNet
            .connect(Some(IpAddr::from([127, 0, 0, 135])), mx)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut c = Client::connect(conn.stream, Timeouts::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|r| panic!("{r}"));
        c.ehlo("mkt-1.news.example.com")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = c
            .send(
                "b@bounces.news.example.com",
                &["reader@gmail.com".to_string()],
                body,
            )
            .await;
        c.quit().await;
    }
    let t = &w.totals()["gmail"];
    assert_eq!(
        t.dkim_verified, 1,
        "the signed copy verifies, the tampered one not: {t:?}"
    );
    assert!(w.dns.queries() >= 1, "the key came from the world's DNS");
}
