//! DKIM signatures made by the MTA's signing path, checked by mail-auth's verifier and by an
//! independent implementation (dkimpy, run under REQUIRE_ORACLES in CI), for RSA 1024/2048 in
//! PKCS#1 and PKCS#8 and for Ed25519; tampered copies must fail.

use mail_auth::DkimResult;
use mta::dkim::{self, keys, LoadedKey};
use std::path::Path;

/// The public-key TXT record for a fixture key, made with openssl (an independent tool).
fn txt_for_fixture(pem: &Path) -> String {
    let ed = std::fs::read_to_string(pem)
        .unwrap_or_default()
        .contains("BEGIN PRIVATE KEY")
        && pem.to_string_lossy().contains("ed25519");
    if ed {
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-in"])
            .arg(pem)
            .args(["-pubout", "-outform", "DER"])
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e}"));
        let raw = &out.stdout[out.stdout.len() - 32..];
        format!("v=DKIM1; k=ed25519; p={}", b64(raw))
    } else {
        let out = std::process::Command::new("openssl")
            .args(["pkey", "-in"])
            .arg(pem)
            .args(["-pubout", "-outform", "DER"])
            .output()
            .unwrap_or_else(|e| panic!("openssl: {e}"));
        format!("v=DKIM1; k=rsa; p={}", b64(&out.stdout))
    }
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

const MESSAGE: &str = "From: \"News Team\" <news@news.example.com>\r\nTo: user@gmail.com\r\nSubject: =?utf-8?q?Caf=C3=A9?= this week: a rather long subject line that\r\n goes on and on across a folded continuation line\r\nDate: Mon, 23 Nov 2026 23:00:00 +0000\r\nMessage-ID: <abc123@news.example.com>\r\nList-Unsubscribe: <https://news.example.com/u/abc>, <mailto:u@news.example.com>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCafé crème brûlée.\r\n.leading dot line\r\n\r\n\r\n";

async fn verify_with_mail_auth(message: &[u8], selector: &str, txt: &str) -> DkimResult {
    let v = mta::dkim::verify::Verifier::new().unwrap_or_else(|e| panic!("{e}"));
    v.publish(selector, "news.example.com", txt)
        .unwrap_or_else(|e| panic!("{e}"));
    v.verify(message).await.unwrap_or(DkimResult::None)
}

fn signed(key: &LoadedKey, selector: &str, msg: &[u8]) -> Vec<u8> {
    let h = dkim::sign(
        msg,
        key,
        "news.example.com",
        selector,
        dkim::DEFAULT_HEADERS,
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut out = h.into_bytes();
    out.extend_from_slice(msg);
    out
}

fn tamper(m: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(m)
        .replace("rather long subject", "rather LONG subject")
        .into_bytes()
}

const FIXTURE_KEYS: &[(&str, &str)] = &[
    ("rsa2048-pkcs1.pem", "s1"),
    ("rsa2048-pkcs8.pem", "s8"),
    ("rsa1024-pkcs1.pem", "s1024"),
    ("ed25519.pem", "ed"),
];

#[tokio::test]
async fn signatures_verify_with_mail_auth_and_tampering_fails() {
    for (file, sel) in FIXTURE_KEYS {
        let path = Path::new("../fixtures/keys").join(file);
        let key = LoadedKey::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let txt = txt_for_fixture(&path);
        let m = signed(&key, sel, MESSAGE.as_bytes());
        assert_eq!(
            verify_with_mail_auth(&m, sel, &txt).await,
            DkimResult::Pass,
            "{file}"
        );
        assert!(
            matches!(
                verify_with_mail_auth(&tamper(&m), sel, &txt).await,
                DkimResult::Fail(_)
            ),
            "{file}: tampered"
        );
    }
}

#[tokio::test]
async fn lf_input_existing_signature_and_generated_keys() {
    // LF-only input is signed as the CRLF message that goes on the wire.
    let lf = MESSAGE.replace("\r\n", "\n");
    let crlf = dkim::to_crlf(lf.as_bytes());
    assert_eq!(crlf, MESSAGE.as_bytes());
    for alg in [keys::KeyAlgorithm::Rsa2048, keys::KeyAlgorithm::Ed25519] {
        let g = keys::generate(alg).unwrap_or_else(|e| panic!("{e}"));
        let key = LoadedKey::from_pem(g.private_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let once = signed(&key, "gen", &crlf);
        // A message that already carries a signature (from an upstream signer) gets a second one.
        let twice = signed(&key, "gen", &once);
        assert_eq!(
            String::from_utf8_lossy(&twice)
                .matches("DKIM-Signature:")
                .count(),
            2
        );
        assert_eq!(
            verify_with_mail_auth(&twice, "gen", &g.txt).await,
            DkimResult::Pass,
            "{alg:?}"
        );
    }
    let zone = keys::zone_record(
        "s",
        "news.example.com",
        &keys::generate(keys::KeyAlgorithm::Rsa2048)
            .map(|g| g.txt)
            .unwrap_or_default(),
    );
    assert!(
        zone.starts_with("s._domainkey.news.example.com. 3600 IN TXT ( \"v=DKIM1; k=rsa; p="),
        "{zone}"
    );
    for part in zone.split('"').skip(1).step_by(2) {
        assert!(part.len() <= 255);
    }
}

#[test]
fn keys_too_small_or_wrong_are_refused_and_cached_keys_reload() {
    let err = LoadedKey::load(Path::new("../fixtures/keys/rsa512-weak.pem"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("RSA-512"), "{err}");
    assert!(LoadedKey::load(Path::new("../fixtures/keys/ecdsa-p256.pem")).is_err());
    assert!(LoadedKey::load(Path::new("../fixtures/keys/not-a-key.pem")).is_err());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = dir.path().join("k.pem");
    std::fs::copy("../fixtures/keys/ed25519.pem", &p).unwrap_or_else(|e| panic!("{e}"));
    let cache = keys::KeyCache::default();
    assert_eq!(
        cache.get(&p).map(|k| k.describe()).unwrap_or_default(),
        "Ed25519"
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy("../fixtures/keys/rsa2048-pkcs8.pem", &p).unwrap_or_else(|e| panic!("{e}"));
    let t = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&p)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cache.get(&p).map(|k| k.describe()).unwrap_or_default(),
        "RSA-2048",
        "a changed file is loaded again"
    );
    assert_eq!(cache.len(), 1);
}

/// dkimpy (an independent DKIM implementation) verifies our signatures with the public key handed
/// in through its `dnsfunc` hook; a tampered copy fails.
#[test]
fn dkimpy_verifies_our_signatures() {
    let have = std::process::Command::new("python3")
        .args(["-c", "import dkim, nacl"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var("REQUIRE_ORACLES").is_err(),
            "REQUIRE_ORACLES=1 but python3 with dkimpy and pynacl is missing"
        );
        eprintln!("skipping: dkimpy not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let script = "import sys, dkim\nmsg = open(sys.argv[1], 'rb').read()\ntxt = open(sys.argv[2], 'rb').read()\nok = dkim.verify(msg, dnsfunc=lambda name, timeout=5: txt)\nprint('PASS' if ok else 'FAIL')\n";
    let script_path = dir.path().join("v.py");
    std::fs::write(&script_path, script).unwrap_or_else(|e| panic!("{e}"));
    for (file, sel) in FIXTURE_KEYS {
        let path = Path::new("../fixtures/keys").join(file);
        let key = LoadedKey::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let txt = txt_for_fixture(&path);
        std::fs::write(dir.path().join("txt"), &txt).unwrap_or_else(|e| panic!("{e}"));
        for (label, msg, want) in [
            ("signed", signed(&key, sel, MESSAGE.as_bytes()), "PASS"),
            (
                "tampered",
                tamper(&signed(&key, sel, MESSAGE.as_bytes())),
                "FAIL",
            ),
        ] {
            std::fs::write(dir.path().join("m.eml"), &msg).unwrap_or_else(|e| panic!("{e}"));
            let out = std::process::Command::new("python3")
                .arg(&script_path)
                .arg(dir.path().join("m.eml"))
                .arg(dir.path().join("txt"))
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(
                got,
                want,
                "{file} {label}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// RFC 8463 Appendix A: the example message of A.3 with the keys of A.2 (Ed25519 `brisbane`,
/// RSA `test`) verifies through our verifying path; a changed body fails both.
#[tokio::test]
async fn rfc8463_test_vector_verifies() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/dkim/rfc8463-a3.eml"
    );
    let msg = std::fs::read(path).unwrap_or_else(|e| panic!("{e}"));
    let v = mta::dkim::verify::Verifier::new().unwrap_or_else(|e| panic!("{e}"));
    v.publish(
        "brisbane",
        "football.example.com",
        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    v.publish(
        "test",
        "football.example.com",
        "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let results = v.verify_all(&msg).await;
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(
        results[0],
        mail_auth::DkimResult::Pass,
        "Ed25519: {results:?}"
    );
    assert_eq!(results[1], mail_auth::DkimResult::Pass, "RSA: {results:?}");
    let tampered = String::from_utf8_lossy(&msg).replace("hungry", "thirsty");
    let results = v.verify_all(tampered.as_bytes()).await;
    assert!(
        results.iter().all(|r| *r != mail_auth::DkimResult::Pass) && results.len() == 2,
        "{results:?}"
    );
}

/// SPF, DKIM and DMARC as a receiver evaluates them from published records (the providers' check).
#[tokio::test]
async fn spf_dkim_and_dmarc_from_published_records() {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/keys");
    let key = LoadedKey::load(&keys.join("rsa2048-pkcs8.pem")).unwrap_or_else(|e| panic!("{e}"));
    let v = mta::dkim::verify::Verifier::new().unwrap_or_else(|e| panic!("{e}"));
    v.publish(
        "s1",
        "sender.test",
        &mta::dkim::keys::public_txt(&keys.join("rsa2048-pkcs8.pem"))
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    v.publish_txt("sender.test", "v=spf1 ip4:127.0.0.2 -all")
        .unwrap_or_else(|e| panic!("{e}"));
    v.publish_txt("_dmarc.sender.test", "v=DMARC1; p=reject")
        .unwrap_or_else(|e| panic!("{e}"));
    let msg = b"From: News <news@sender.test>\r\nTo: x@gmail.test\r\nSubject: s\r\nMessage-ID: <a1@sender.test>\r\n\r\nhello\r\n";
    let sig = mta::dkim::sign(
        msg,
        &key,
        "sender.test",
        "s1",
        mta::dkim::DEFAULT_HEADERS,
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let signed = [sig.as_bytes(), msg].concat();
    let good: std::net::IpAddr = [127, 0, 0, 2].into();
    let bad: std::net::IpAddr = [127, 0, 0, 9].into();
    let a = v
        .authenticate(&signed, good, "mta.sender.test", "b@sender.test")
        .await;
    assert!(a.spf && a.dkim && a.dmarc, "{a:?}");
    let a = v
        .authenticate(&signed, bad, "mta.sender.test", "b@sender.test")
        .await;
    assert!(!a.spf && a.dkim && a.dmarc, "DKIM alone aligns: {a:?}");
    let a = v
        .authenticate(msg, bad, "mta.sender.test", "b@sender.test")
        .await;
    assert!(!a.spf && !a.dkim && !a.dmarc, "{a:?}");
    let a = v
        .authenticate(msg, good, "mta.sender.test", "b@sender.test")
        .await;
    assert!(a.spf && !a.dkim && a.dmarc, "SPF alone aligns: {a:?}");
}
