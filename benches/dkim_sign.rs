//! DKIM signing speed: a 10 KB message signed the way the MTA signs it (relaxed/relaxed, SHA-256,
//! the default header set) with RSA-2048 and Ed25519, beside the raw signature operation of the
//! same key (aws-lc over a 32-byte digest), so the overhead of our path (canonicalisation, body
//! hash, header assembly) shows. `cargo bench -p mta --bench dkim_sign`.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mta::dkim::{sign, LoadedKey, DEFAULT_HEADERS};
use std::hint::black_box;
use std::path::Path;

fn message() -> Vec<u8> {
    let mut m = String::from(
        "From: News <news@sender.test>\r\nTo: someone@gmail.test\r\nSubject: The weekly letter\r\nDate: Tue, 24 Nov 2026 05:00:00 +0000\r\nMessage-ID: <bench-1@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nList-Unsubscribe: <https://sender.test/u/1>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n",
    );
    while m.len() < 10 * 1024 {
        m.push_str(
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n",
        );
    }
    m.into_bytes()
}

fn pem_der(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).expect("key");
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64")
}

fn bench(c: &mut Criterion) {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/keys");
    let msg = message();
    let mut g = c.benchmark_group("dkim-sign-10KB");
    g.throughput(Throughput::Elements(1));
    for (name, file) in [
        ("rsa-2048", "rsa2048-pkcs8.pem"),
        ("ed25519", "ed25519.pem"),
    ] {
        let key = LoadedKey::load(&keys.join(file)).expect("key");
        g.bench_function(format!("{name}/mta-path"), |b| {
            b.iter(|| {
                sign(
                    black_box(&msg),
                    &key,
                    "sender.test",
                    "s1",
                    DEFAULT_HEADERS,
                    None,
                )
                .expect("sign")
            })
        });
    }
    let digest = [7u8; 32];
    let rsa = RsaKeyPair::from_pkcs8(&pem_der(&keys.join("rsa2048-pkcs8.pem"))).expect("rsa");
    let rng = SystemRandom::new();
    let mut sig = vec![0u8; rsa.public_modulus_len()];
    g.bench_function("rsa-2048/raw-sign-32B", |b| {
        b.iter(|| {
            rsa.sign(&RSA_PKCS1_SHA256, &rng, black_box(&digest), &mut sig)
                .expect("sign")
        })
    });
    let ed = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pem_der(&keys.join("ed25519.pem")))
        .expect("ed25519");
    g.bench_function("ed25519/raw-sign-32B", |b| {
        b.iter(|| ed.sign(black_box(&digest)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
