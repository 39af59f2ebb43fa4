//! The simulation's raw ceiling: SMTP transactions between tokio tasks over `tokio::io::duplex`
//! on a paused current-thread runtime (the simulated mode's network and clock), with no MTA or
//! provider bookkeeping at all. Two bodies: ~2 KB (the yardstick of issue 6) and the size mix of
//! `scenarios/mixed-production.toml` (80% 8-60 KB, 20% 2-16 KB). Two stacks on each:
//! - `bare`: the least a correct exchange needs: commands parsed with smtp-proto, pipelined
//!   MAIL/RCPT/DATA, the body scanned for its terminator and kept (one copy), replies read;
//! - `ours`: our own `smtp::client::Client` and `smtp::server::serve` (line and DATA framing with
//!   the limits and smuggling checks, dot-stuffing, reply parsing, timeouts) with a sink handler;
//! - `ours-sim-pipe`: the same over the simulated network's own pipe (`mta::net::pipe`), which
//!   hands whole buffers across instead of copying bytes in and out.
//!
//! A simulated message crosses two such hops (traffic -> MTA, MTA -> provider), so a scenario's
//! ceiling is about half the per-hop figure. `cargo bench -p mta --bench smtp_ceiling`.

#[path = "sink.rs"]
mod sink;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mta::net::pipe::pipe;
use mta::net::BoxStream;
use mta::smtp::client::{Client, Timeouts};
use mta::smtp::server::{serve, ServerOptions};
use mta::smtp::Request;
use sink::Sink;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Transactions per measured run, spread over `SESSIONS` concurrent sessions.
const PER_RUN: usize = 2_000;
const SESSIONS: usize = 10;
/// The simulated network's pipe buffer (as in `mta::net::sim`).
const PIPE: usize = 64 * 1024;

/// A deterministic body of about `size` bytes: a few headers, then 76-character lines.
fn body(size: usize, n: usize) -> Vec<u8> {
    let mut b = format!(
        "From: news@news.example.com\r\nTo: user{n}@gmail.com\r\nSubject: Offer {n}\r\n\
         Message-ID: <{n}@news.example.com>\r\n\r\n"
    )
    .into_bytes();
    let mut i = n;
    while b.len() < size {
        for _ in 0..76 {
            i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            b.push(b'a' + ((i >> 16) % 26) as u8);
        }
        b.extend_from_slice(b"\r\n");
    }
    b
}

/// The bodies for one run: `mix` follows mixed-production's sizes, else all ~2 KB.
fn bodies(mix: bool) -> Arc<Vec<Vec<u8>>> {
    let mut seed: u64 = 42;
    let mut next = |lo: usize, hi: usize| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        lo + ((seed >> 33) as usize) % (hi - lo + 1)
    };
    Arc::new(
        (0..PER_RUN)
            .map(|n| {
                let size = match (mix, n % 5) {
                    (false, _) => 2_048,
                    (true, 4) => next(2 << 10, 16 << 10),
                    (true, _) => next(8 << 10, 60 << 10),
                };
                body(size, n)
            })
            .collect(),
    )
}

/// Reads one reply (skipping continuation lines) from `buf` at `at`, reading more as needed;
/// returns its code.
async fn bare_reply(s: &mut DuplexStream, buf: &mut Vec<u8>, at: &mut usize) -> u16 {
    loop {
        if let Some(nl) = memchr::memchr(b'\n', &buf[*at..]) {
            let line = &buf[*at..*at + nl];
            let code = std::str::from_utf8(line.get(..3).unwrap_or_default())
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            *at += nl + 1;
            if line.get(3) == Some(&b'-') {
                continue;
            }
            if *at == buf.len() {
                buf.clear();
                *at = 0;
            }
            return code;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.expect("read reply");
        assert!(n > 0, "server closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn bare_client(mut s: DuplexStream, bodies: Arc<Vec<Vec<u8>>>, which: Vec<usize>) {
    let (mut buf, mut at) = (Vec::new(), 0);
    assert_eq!(bare_reply(&mut s, &mut buf, &mut at).await, 220);
    s.write_all(b"EHLO bench.test\r\n").await.expect("ehlo");
    assert_eq!(bare_reply(&mut s, &mut buf, &mut at).await, 250);
    for n in which {
        let cmds =
            format!("MAIL FROM:<news@news.example.com>\r\nRCPT TO:<user{n}@gmail.com>\r\nDATA\r\n");
        s.write_all(cmds.as_bytes()).await.expect("mail");
        assert_eq!(bare_reply(&mut s, &mut buf, &mut at).await, 250);
        assert_eq!(bare_reply(&mut s, &mut buf, &mut at).await, 250);
        assert_eq!(bare_reply(&mut s, &mut buf, &mut at).await, 354);
        // The bodies have no line starting with a dot, so they go as they are.
        s.write_all(&bodies[n]).await.expect("body");
        s.write_all(b".\r\n").await.expect("dot");
        assert_eq!(bare_reply(&mut s, &mut buf, &mut at).await, 250);
    }
    s.write_all(b"QUIT\r\n").await.expect("quit");
    assert_eq!(bare_reply(&mut s, &mut buf, &mut at).await, 221);
}

/// A minimal server: smtp-proto parses each command; DATA is read to CRLF.CRLF and kept.
async fn bare_server(mut s: DuplexStream) -> usize {
    let mut buf: Vec<u8> = Vec::with_capacity(PIPE);
    let mut kept = 0;
    s.write_all(b"220 sink ESMTP\r\n").await.expect("greet");
    loop {
        // Commands: answer every complete line buffered (the client pipelines).
        let mut out = Vec::new();
        let mut data = false;
        let mut at = 0;
        while let Some(nl) = memchr::memchr(b'\n', &buf[at..]) {
            let line = &buf[at..at + nl + 1];
            at += nl + 1;
            let reply: &[u8] = match Request::parse(&mut line.iter()) {
                Ok(Request::Ehlo { .. }) => b"250-sink\r\n250 PIPELINING\r\n",
                Ok(Request::Mail { .. }) => b"250 2.1.0 Ok\r\n",
                Ok(Request::Rcpt { .. }) => b"250 2.1.5 Ok\r\n",
                Ok(Request::Data) => {
                    data = true;
                    b"354 go ahead\r\n"
                }
                Ok(Request::Quit) => {
                    s.write_all(&out).await.expect("reply");
                    s.write_all(b"221 2.0.0 Bye\r\n").await.expect("bye");
                    return kept;
                }
                _ => b"500 5.5.1 command unrecognized\r\n",
            };
            out.extend_from_slice(reply);
            if data {
                break;
            }
        }
        buf.drain(..at);
        if !out.is_empty() {
            s.write_all(&out).await.expect("reply");
        }
        if data {
            // The body: scan for the terminator as bytes arrive, then keep it.
            let mut scanned: usize = 0;
            let end = loop {
                let from = scanned.saturating_sub(4);
                if let Some(p) = memchr::memmem::find(&buf[from..], b"\r\n.\r\n") {
                    break from + p + 5;
                }
                scanned = buf.len();
                if buf.len() == buf.capacity() {
                    buf.reserve(PIPE);
                }
                assert!(s.read_buf(&mut buf).await.expect("read") > 0, "closed");
            };
            let message = buf[..end - 3].to_vec();
            kept += message.len();
            buf.drain(..end);
            s.write_all(b"250 2.0.0 Ok\r\n").await.expect("250");
            continue;
        }
        if buf.len() == buf.capacity() {
            buf.reserve(PIPE);
        }
        if s.read_buf(&mut buf).await.expect("read") == 0 {
            return kept;
        }
    }
}

async fn ours_client(s: BoxStream, bodies: Arc<Vec<Vec<u8>>>, which: Vec<usize>) {
    let mut c = Client::connect(s, Timeouts::default())
        .await
        .expect("greeting")
        .expect("220");
    c.ehlo("bench.test").await.expect("ehlo");
    for n in which {
        let t = c
            .send(
                "news@news.example.com",
                &[format!("user{n}@gmail.com")],
                &bodies[n],
            )
            .await
            .expect("send");
        assert!(t.outcome(0).is_positive(), "{}", t.outcome(0));
    }
    c.quit().await;
}

/// The three stacks measured.
#[derive(Clone, Copy)]
enum Stack {
    /// `bare_client` and `bare_server` over `tokio::io::duplex`.
    Bare,
    /// Our client and server over `tokio::io::duplex`.
    Ours,
    /// Our client and server over the simulated network's pipe (`mta::net::pipe`), as in
    /// `mtasim` runs: whole buffers cross without the byte pipe's two copies.
    OursSimPipe,
}

/// One run: `PER_RUN` transactions over `SESSIONS` sessions on a paused current-thread runtime.
fn run(stack: Stack, bodies: &Arc<Vec<Vec<u8>>>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut tasks = Vec::new();
        for s in 0..SESSIONS {
            let which: Vec<usize> = (s..PER_RUN).step_by(SESSIONS).collect();
            let bodies = bodies.clone();
            let (client, server): (BoxStream, BoxStream) = match stack {
                Stack::Bare => {
                    let (client, server) = tokio::io::duplex(PIPE);
                    tokio::spawn(bare_server(server));
                    tasks.push(tokio::spawn(bare_client(client, bodies, which)));
                    continue;
                }
                Stack::Ours => {
                    let (client, server) = tokio::io::duplex(PIPE);
                    (Box::new(client), Box::new(server))
                }
                Stack::OursSimPipe => {
                    let (client, server) = pipe(PIPE);
                    (Box::new(client), Box::new(server))
                }
            };
            tokio::spawn(async move {
                serve(server, &mut Sink::default(), &ServerOptions::default()).await
            });
            tasks.push(tokio::spawn(ours_client(client, bodies, which)));
        }
        for t in tasks {
            t.await.expect("session");
        }
    });
}

fn ceiling(c: &mut Criterion) {
    let mut g = c.benchmark_group("smtp_ceiling");
    g.sample_size(10);
    g.throughput(Throughput::Elements(PER_RUN as u64));
    for (name, mix) in [("2k", false), ("mixed-production", true)] {
        let bodies = bodies(mix);
        for (label, stack) in [
            ("bare", Stack::Bare),
            ("ours", Stack::Ours),
            ("ours-sim-pipe", Stack::OursSimPipe),
        ] {
            g.bench_with_input(BenchmarkId::new(label, name), &bodies, |b, bodies| {
                b.iter(|| run(stack, bodies))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, ceiling);
criterion_main!(benches);
