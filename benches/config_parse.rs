//! Parsing a generated production-sized config: 1,000 vMTAs in 10 pools and 200 domain blocks
//! (about 10,000 lines). `parse+model` is what loading costs; `+lints` adds the static checks.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

/// A config with `vmtas` virtual MTAs (one IP and host name each), 10 pools and `domains` domain
/// blocks with throttles, backoff and pattern lists.
pub fn generate(vmtas: usize, domains: usize) -> String {
    let mut s = String::from("host-name mta.example.com\npostmaster postmaster@example.com\nsmtp-listener 0/0:25\n<source 127.0.0.1>\n    always-allow-relaying yes\n    process-x-virtual-mta yes\n</source>\n<spool /var/spool/mtasim>\n</spool>\n");
    s.push_str("<smtp-pattern-list common>\n    reply /\\[TSS04\\]/ mode=backoff,backoff-to-normal-after=1h\n    reply /4\\.7\\.28/ mode=backoff\n    reply /RP-00[12]/ mode=backoff\n</smtp-pattern-list>\n");
    for i in 0..vmtas {
        s.push_str(&format!(
            "# vMTA {i}\n<virtual-mta v{i}>\n    smtp-source-host 10.{}.{}.{} v{i}.mta.example.com\n    max-smtp-out 100\n</virtual-mta>\n",
            i / 65536 % 256,
            i / 256 % 256,
            i % 256
        ));
    }
    let per_pool = vmtas.div_ceil(10).max(1);
    for p in 0..10 {
        s.push_str(&format!("<virtual-mta-pool pool{p}>\n"));
        for i in (p * per_pool)..((p + 1) * per_pool).min(vmtas) {
            s.push_str(&format!("    virtual-mta v{i}\n"));
        }
        s.push_str("    <domain *>\n        max-msg-per-connection 40\n    </domain>\n</virtual-mta-pool>\n");
    }
    for d in 0..domains {
        s.push_str(&format!(
            "# ISP {d}\n<domain isp{d}.example>\n    connect-timeout 1m\n    data-send-timeout 5m\n    max-rcpt-per-message 100\n    max-smtp-out {}\n    max-msg-per-connection 50\n    max-msg-rate {}/m\n    retry-after 5m,10m,20m,1h\n    bounce-after 2d\n    smtp-pattern-list common\n    backoff-max-msg-rate 10/m\n    backoff-retry-after 30m\n    backoff-to-normal-after 1h\n    use-starttls yes\n    dkim-sign yes\n    retry-recipients-after 15m\n    max-connect-rate 60/m\n</domain>\n",
            5 + d % 15,
            100 + d
        ));
    }
    s
}

fn bench(c: &mut Criterion) {
    let text = generate(1000, 200);
    eprintln!(
        "generated config: {} lines, {} bytes",
        text.lines().count(),
        text.len()
    );
    let mut g = c.benchmark_group("config");
    g.sample_size(20);
    g.bench_function("parse+model 10k lines", |b| {
        b.iter(|| {
            let mut d = mta::config::diag::Diagnostics::default();
            let items = mta::config::syntax::parse_str(
                "gen.conf",
                black_box(&text),
                &mta::config::syntax::DiskFiles,
                &mta::config::HostPaths::local(),
                &mut d,
            );
            mta::config::model::build(std::path::Path::new("gen.conf"), &items, &mut d)
        })
    });
    g.bench_function("parse+model+lints 10k lines", |b| {
        b.iter(|| mta::config::load_str("gen.conf", black_box(&text)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
