//! DKIM keys through the world's DNS server: `mta dkim check`'s logic finds a matching, a wrong and
//! a missing key; and dkimpy (an independent verifier) checks our RSA and Ed25519 signatures with
//! the public keys it fetches from our DNS server (a tampered copy fails).

use mta::dkim::check::{check_config, KeyStatus};
use mta::dns::HickoryResolver;
use simulator::dns::{DnsServer, Zones};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn txt(key: &str) -> String {
    mta::dkim::keys::public_txt(&root().join("fixtures/keys").join(key))
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_check_compares_published_keys() {
    let mut z = Zones::default();
    // hot.conf: s2048 -> rsa2048-pkcs1.pem, ed1 -> ed25519.pem, tx (vMTA) -> rsa2048-pkcs8.pem.
    z.add_txt(
        "s2048._domainkey.news.example.com",
        &txt("rsa2048-pkcs1.pem"),
    );
    z.add_txt("ed1._domainkey.news.example.com", &txt("rsa2048-pkcs8.pem"));
    z.add_txt("news.example.com", "v=spf1 -all");
    let server = DnsServer::start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")), &z)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = mta::config::load(&root().join("fixtures/configs/hot.conf"))
        .into_result()
        .unwrap_or_else(|e| panic!("{e}"));
    let r = HickoryResolver::with_nameservers(&[server.addr()]).unwrap_or_else(|e| panic!("{e}"));
    let checks = check_config(&cfg, &r).await;
    let by_sel = |s: &str| {
        checks
            .iter()
            .find(|c| c.selector == s)
            .map(|c| c.status.clone())
            .unwrap_or_else(|| panic!("no {s} in {checks:?}"))
    };
    assert_eq!(by_sel("s2048"), KeyStatus::Match);
    assert!(
        matches!(by_sel("ed1"), KeyStatus::Mismatch(_)),
        "{checks:?}"
    );
    assert!(matches!(by_sel("tx"), KeyStatus::Missing(_)), "{checks:?}");
    let text = mta::dkim::check::render(&checks);
    assert!(
        text.contains("s2048._domainkey.news.example.com") && text.contains(": ok:"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkimpy_verifies_with_keys_from_our_dns() {
    let have = Command::new("python3")
        .args(["-c", "import dkim, dns.resolver, nacl"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var("REQUIRE_ORACLES").as_deref() != Ok("1"),
            "REQUIRE_ORACLES=1 but dkimpy/dnspython/pynacl are missing"
        );
        eprintln!("skipping: dkimpy not installed");
        return;
    }
    let mut z = Zones::default();
    z.add_txt("rsa1._domainkey.sender.test", &txt("rsa2048-pkcs8.pem"));
    z.add_txt("ed1._domainkey.sender.test", &txt("ed25519.pem"));
    let server = DnsServer::start("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")), &z)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let msg = b"From: News <news@sender.test>\r\nTo: someone@gmail.test\r\nSubject: Weekly\r\nDate: Tue, 24 Nov 2026 05:00:00 +0000\r\nMessage-ID: <d1@sender.test>\r\n\r\nHello\r\n";
    let mut files = Vec::new();
    for (sel, key) in [("rsa1", "rsa2048-pkcs8.pem"), ("ed1", "ed25519.pem")] {
        let k = mta::dkim::LoadedKey::load(&root().join("fixtures/keys").join(key))
            .unwrap_or_else(|e| panic!("{e}"));
        let h = mta::dkim::sign(
            msg,
            &k,
            "sender.test",
            sel,
            mta::dkim::DEFAULT_HEADERS,
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let signed = [h.as_bytes(), msg].concat();
        let good = dir.path().join(format!("{sel}.eml"));
        std::fs::write(&good, &signed).unwrap_or_else(|e| panic!("{e}"));
        let bad = dir.path().join(format!("{sel}-tampered.eml"));
        let tampered = String::from_utf8_lossy(&signed).replace("Hello", "Hullo");
        std::fs::write(&bad, tampered).unwrap_or_else(|e| panic!("{e}"));
        files.push((good, true));
        files.push((bad, false));
    }
    let script = r#"
import sys, dkim, dns.resolver
ip, port = sys.argv[1], int(sys.argv[2])
r = dns.resolver.Resolver(configure=False)
r.nameservers = [ip]
r.port = port
def dnsfunc(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    ans = r.resolve(name.rstrip('.'), 'TXT')
    return b''.join(ans[0].strings)
for f in sys.argv[3:]:
    print(f, dkim.verify(open(f, 'rb').read(), dnsfunc=dnsfunc))
"#;
    let mut args = vec![
        "-c".to_string(),
        script.to_string(),
        server.addr().ip().to_string(),
        server.addr().port().to_string(),
    ];
    args.extend(files.iter().map(|(f, _)| f.display().to_string()));
    let out = tokio::task::spawn_blocking(move || Command::new("python3").args(&args).output())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    for (f, expect) in &files {
        let line = text
            .lines()
            .find(|l| l.starts_with(&f.display().to_string()))
            .unwrap_or_else(|| panic!("{text}{}", String::from_utf8_lossy(&out.stderr)));
        assert!(
            line.ends_with(if *expect { " True" } else { " False" }),
            "{line}"
        );
    }
    assert!(server.queries() >= 4, "dkimpy asked our server");
}
