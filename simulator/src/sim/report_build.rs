//! The run's report from what was observed: totals per provider, the charts' series with queue
//! depth and connections, backoff periods, verdicts, findings and notes.

use super::DepthSample;
use crate::expect::Observed;
use crate::report::{BackoffPeriod, Report};
use crate::scenario::Loaded;
use std::collections::BTreeMap;
use std::path::Path;

/// Where a run's report goes, how it ran, and what it noted on the way.
pub(super) struct RunInfo<'a> {
    pub(super) dir: &'a Path,
    pub(super) mode: &'a str,
    pub(super) notes: Vec<String>,
    pub(super) findings: Vec<String>,
    pub(super) streams: Vec<crate::inject::StreamStats>,
}

pub(super) fn build_report(
    l: &Loaded,
    seed: u64,
    o: &Observed,
    verdicts: Vec<crate::report::Verdict>,
    depth: &[DepthSample],
    run: RunInfo<'_>,
) -> Report {
    let RunInfo {
        dir,
        mode,
        mut notes,
        findings,
        streams,
    } = run;
    let mut tl = o.tally.timeline.clone();
    for (t, per_domain) in depth {
        let mut per_provider: BTreeMap<&str, usize> = BTreeMap::new();
        for (d, n) in per_domain {
            *per_provider
                .entry(l.provider_of(d).map_or("other", |p| p.name.as_str()))
                .or_insert(0) += n;
        }
        for (p, n) in per_provider {
            tl.gauge(p, "queue-depth", *t, n as f64);
        }
    }
    let totals = o.tally.totals.clone();
    let mut providers = o.tally.providers.clone();
    for (p, evs) in &o.events {
        let pt = providers.entry(p.clone()).or_default();
        for e in evs {
            match e.kind {
                crate::isp::EventKind::Connect { open } => {
                    pt.connections += 1;
                    pt.max_connections_per_ip = pt.max_connections_per_ip.max(open);
                    tl.gauge(p, "connections", e.t_ms, f64::from(open));
                }
                crate::isp::EventKind::Accepted { tls, .. } => {
                    pt.messages += 1;
                    pt.messages_tls += u64::from(tls);
                }
                _ => {}
            }
        }
    }
    let mut backoff = Vec::new();
    for (q, changes) in &o.modes {
        let mut open: Option<&mta::shaping::ModeChange> = None;
        for c in changes {
            match (c.to, open) {
                (mta::queue::Mode::Backoff, None) => open = Some(c),
                (mta::queue::Mode::Normal, Some(b)) => {
                    backoff.push(BackoffPeriod {
                        queue: q.clone(),
                        from_s: (b.at_ms - l.start_ms) as f64 / 1000.0,
                        to_s: Some((c.at_ms - l.start_ms) as f64 / 1000.0),
                        cause: b.cause.clone(),
                    });
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(b) = open {
            backoff.push(BackoffPeriod {
                queue: q.clone(),
                from_s: (b.at_ms - l.start_ms) as f64 / 1000.0,
                to_s: None,
                cause: b.cause.clone(),
            });
        }
    }
    let (series, bucket_s) = tl.finish();
    let passed = verdicts.iter().all(|v| v.passed);
    let report = Report {
        scenario: l.scenario.name.clone(),
        description: l.scenario.description.clone(),
        mode: mode.into(),
        seed,
        start: l.scenario.start.clone(),
        duration_s: l.duration.as_secs_f64(),
        passed,
        verdicts,
        totals,
        providers,
        bucket_s,
        series,
        backoff,
        findings,
        injection: streams,
        notes: {
            notes.insert(
                0,
                format!("accounting log: {}", dir.join("acct.csv").display()),
            );
            notes
        },
    };
    if let Err(e) = report.write(dir) {
        tracing::error!(%e, "could not write the report");
    }
    report
}
