//! Classification speed (issue 22's targets: ≥ 50,000 reply lines/s and ≥ 5,000 bounce
//! messages/s on one core, release build).
//!
//! - `reply lines`: every distinct diagnostic line of the real corpus `../shared/corpora/sisimai`
//!   (each recipient's `diagnostic` as `mta::bounce::parse` finds it) plus the reply texts of
//!   `fixtures/bounce-corpus/replies.tsv`, classified with `Classifier::classify_reply`, three ways:
//!   - `cache warm`: every line's verdict remembered (a repeated reply);
//!   - `verdicts cold`: a long-lived classifier that has not seen these lines (its verdict cache
//!     flushed outside the timed part by 4,096 other replies; the regexes' own lazy-DFA caches warm):
//!     a new reply in a running MTA;
//!   - `fresh clone`: `Classifier::clone()` per pass (made outside the timed part): verdicts and
//!     the regexes' lazy-DFA caches both empty, as just after start.
//! - `bounce messages`: every message of the corpus and of `fixtures/bounces/*.eml` parsed and
//!   classified with `mta::bounce::parse`, the same three ways.
//! - `bad input`: what the large inputs of `mta/tests/bounce_bad_input.rs` cost in a release
//!   build (a 10 MB reply, a DSN of `MAX_BOUNCE_SIZE`, a DSN with 100,000 recipients).
//!
//! Without the corpus beside the checkout (`../shared/corpora/sisimai`), the fixtures alone are
//! measured and a note says so.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use mta::bounce::{parse, Classifier};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `.eml` files of `dir`, sorted; empty if the directory is absent.
fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

struct Inputs {
    /// Corpus messages, then fixture messages.
    messages: Vec<Vec<u8>>,
    /// Distinct reply/diagnostic lines.
    lines: Vec<String>,
    corpus_messages: usize,
    corpus_lines: usize,
    tsv_lines: usize,
}

fn load(classifier: &Classifier) -> Inputs {
    let corpus = manifest_dir().join("../../shared/corpora/sisimai/emails");
    let corpus_files = eml_files(&corpus);
    if corpus_files.is_empty() {
        eprintln!(
            "note: corpus {} absent or empty: measuring the fixtures only",
            corpus.display()
        );
    }
    let fixture_files = eml_files(&manifest_dir().join("../fixtures/bounces"));
    let read = |files: &[PathBuf]| -> Vec<Vec<u8>> {
        files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
    };
    let corpus_msgs = read(&corpus_files);
    let corpus_messages = corpus_msgs.len();
    let mut messages = corpus_msgs;
    messages.extend(read(&fixture_files));

    let mut lines = BTreeSet::new();
    for m in &messages[..corpus_messages] {
        if let Ok(rep) = parse(m, classifier) {
            for r in rep.recipients {
                if !r.diagnostic.trim().is_empty() {
                    lines.insert(r.diagnostic);
                }
            }
        }
    }
    let corpus_lines = lines.len();
    let tsv = std::fs::read_to_string(manifest_dir().join("../fixtures/bounce-corpus/replies.tsv"))
        .unwrap_or_default();
    let mut tsv_lines = 0;
    for l in tsv.lines().filter(|l| !l.starts_with('#')) {
        if let Some(reply) = l.split('\t').nth(1).filter(|r| !r.trim().is_empty()) {
            tsv_lines += 1;
            lines.insert(reply.to_string());
        }
    }
    // Fixtures only: their diagnostics stand in for the corpus's.
    if corpus_messages == 0 {
        for m in &messages {
            if let Ok(rep) = parse(m, classifier) {
                lines.extend(rep.recipients.into_iter().map(|r| r.diagnostic));
            }
        }
    }
    Inputs {
        messages,
        lines: lines.into_iter().collect(),
        corpus_messages,
        corpus_lines,
        tsv_lines,
    }
}

/// Fills `c`'s verdict cache (4,096 entries at most, cleared when full) with replies none of the
/// measured lines is, so that none of them is remembered afterwards.
fn flush_verdicts(c: &Classifier, round: &mut u64) {
    *round += 1;
    for i in 0..4096 {
        c.classify_reply(&format!(
            "550 5.1.1 <flush{i}.{round}@example.com>: Recipient address rejected: User unknown"
        ));
    }
}

fn bench(c: &mut Criterion) {
    let base = Classifier::default();
    let inp = load(&base.clone());
    eprintln!(
        "inputs: {} distinct reply lines ({} from {} corpus messages, {} rows of replies.tsv); {} bounce messages ({} corpus, {} fixtures)",
        inp.lines.len(),
        inp.corpus_lines,
        inp.corpus_messages,
        inp.tsv_lines,
        inp.messages.len(),
        inp.corpus_messages,
        inp.messages.len() - inp.corpus_messages,
    );

    let mut g = c.benchmark_group("bounce_classify");
    g.sample_size(30);

    g.throughput(Throughput::Elements(inp.lines.len() as u64));
    let warm = base.clone();
    for l in &inp.lines {
        warm.classify_reply(l);
    }
    g.bench_function("reply lines, cache warm", |b| {
        b.iter(|| {
            for l in &inp.lines {
                black_box(warm.classify_reply(black_box(l)));
            }
        })
    });
    let mut round = 0;
    g.bench_function("reply lines, verdicts cold", |b| {
        b.iter_batched(
            || flush_verdicts(&warm, &mut round),
            |()| {
                for l in &inp.lines {
                    black_box(warm.classify_reply(black_box(l)));
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("reply lines, fresh clone", |b| {
        b.iter_batched(
            || base.clone(),
            |cold| {
                for l in &inp.lines {
                    black_box(cold.classify_reply(black_box(l)));
                }
                cold
            },
            BatchSize::SmallInput,
        )
    });

    g.throughput(Throughput::Elements(inp.messages.len() as u64));
    let warm = base.clone();
    for m in &inp.messages {
        let _ = parse(m, &warm);
    }
    g.bench_function("bounce messages, cache warm", |b| {
        b.iter(|| {
            for m in &inp.messages {
                let _ = black_box(parse(black_box(m), &warm));
            }
        })
    });
    g.bench_function("bounce messages, verdicts cold", |b| {
        b.iter_batched(
            || flush_verdicts(&warm, &mut round),
            |()| {
                for m in &inp.messages {
                    let _ = black_box(parse(black_box(m), &warm));
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("bounce messages, fresh clone", |b| {
        b.iter_batched(
            || base.clone(),
            |cold| {
                for m in &inp.messages {
                    let _ = black_box(parse(black_box(m), &cold));
                }
                cold
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn dsn(blocks: &str, original_body: &[u8]) -> Vec<u8> {
    let mut m = format!("From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nThis is the mail system at host mx.example.net.\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n{blocks}--B\r\nContent-Type: message/rfc822\r\n\r\nFrom: sender@example.org\r\nSubject: hello\r\n\r\n").into_bytes();
    m.extend_from_slice(original_body);
    m.extend_from_slice(b"\r\n--B--\r\n");
    m
}

fn bench_bad_input(c: &mut Criterion) {
    let base = Classifier::default();
    let mut g = c.benchmark_group("bounce_bad_input");
    g.sample_size(10);
    let mut words = String::from("550 5.1.1 ");
    while words.len() < 10 << 20 {
        words.push_str("mailbox unavailable ");
    }
    g.throughput(Throughput::Bytes(words.len() as u64));
    g.bench_function("10 MB reply line, fresh clone", |b| {
        b.iter_batched(
            || base.clone(),
            |cold| black_box(cold.classify_reply(black_box(&words))).category,
            BatchSize::PerIteration,
        )
    });
    let rcpt = "Final-Recipient: rfc822; user@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <user@example.com>: User unknown\r\n\r\n";
    let head = dsn(rcpt, b"");
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    let mut body = Vec::new();
    while head.len() + body.len() + line.len() <= mta::bounce::parse::MAX_BOUNCE_SIZE {
        body.extend_from_slice(line);
    }
    let big = dsn(rcpt, &body);
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.bench_function("DSN of MAX_BOUNCE_SIZE", |b| {
        b.iter(|| parse(black_box(&big), &base).map(|r| r.recipients.len()))
    });
    let mut blocks = String::new();
    for i in 0..100_000 {
        blocks.push_str(&format!("Final-Recipient: rfc822; user{i}@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <user{i}@example.com>: Recipient address rejected: User unknown\r\n\r\n"));
    }
    let many = dsn(&blocks, b"Hello.\r\n");
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("DSN with 100,000 recipients", |b| {
        b.iter(|| parse(black_box(&many), &base).map(|r| r.recipients.len()))
    });
    g.finish();
}

criterion_group!(benches, bench, bench_bad_input);
criterion_main!(benches);
