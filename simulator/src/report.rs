//! Run reports: a JSON document with a stable field order (for diffs and snapshots) and a
//! self-contained HTML page with SVG charts over time per provider (deliveries, deferrals, bounces,
//! open connections, queue depth) with backoff periods shaded, and the expectation verdicts.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One expectation's outcome, readable on its own.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// What was expected, in words.
    pub expectation: String,
    /// Whether it held (an expectation not exercised did not).
    pub passed: bool,
    /// False if its subject never happened (a limit at a provider that received nothing): such a
    /// verdict fails, as NOT EXERCISED.
    pub exercised: bool,
    /// The bound.
    pub expected: String,
    /// What happened.
    pub observed: String,
    /// Where it was observed (provider, IP, queue, time).
    #[serde(rename = "where")]
    pub location: String,
}

/// Counts for the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Messages accepted by the MTA.
    pub accepted: u64,
    /// Recipients delivered.
    pub delivered: u64,
    /// Recipients bounced (synchronously or by DSN), expiries included.
    pub bounced: u64,
    /// Of those, expired (`message-expired`).
    pub expired: u64,
    /// Transient failures (deferrals).
    pub deferrals: u64,
    /// Feedback-loop (`f`) records.
    pub complaints: u64,
    /// Bounces per category.
    pub by_category: BTreeMap<String, u64>,
}

/// What happened at one provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProviderTotals {
    /// Recipients delivered.
    pub delivered: u64,
    /// Deferrals.
    pub deferrals: u64,
    /// Bounces.
    pub bounced: u64,
    /// Connections opened.
    pub connections: u64,
    /// Most concurrent connections from one source IP.
    pub max_connections_per_ip: u32,
    /// Messages the provider accepted, and how many of them over TLS (STARTTLS).
    pub messages: u64,
    /// Of those, over TLS.
    pub messages_tls: u64,
}

/// Metrics charted over time.
pub const METRICS: &[&str] = &[
    "deliveries",
    "deferrals",
    "bounces",
    "bounces-by-category",
    "connections",
    "queue-depth",
];

/// Values per time bucket for one provider and metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Series {
    /// Bucket values, bucket i covering [i*bucket, (i+1)*bucket) seconds from the start.
    pub values: Vec<f64>,
}

/// A backoff period of a queue, in seconds from the start (`to_s` = None: still in backoff at the end).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackoffPeriod {
    /// The queue.
    pub queue: String,
    /// Start.
    pub from_s: f64,
    /// End.
    pub to_s: Option<f64>,
    /// The rule and reply that caused it.
    pub cause: String,
}

/// A run's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// What it shows.
    pub description: String,
    /// `simulated` or `live`.
    pub mode: String,
    /// RNG seed.
    pub seed: u64,
    /// Start, RFC 3339.
    pub start: String,
    /// Simulated (or real) seconds covered.
    pub duration_s: f64,
    /// True if every expectation held.
    pub passed: bool,
    /// Expectation outcomes.
    pub verdicts: Vec<Verdict>,
    /// Whole-run counts.
    pub totals: Totals,
    /// Per provider.
    pub providers: BTreeMap<String, ProviderTotals>,
    /// Chart bucket width in seconds.
    pub bucket_s: f64,
    /// provider -> metric -> series (for `bounces-by-category` the key is the bounce category).
    pub series: BTreeMap<String, BTreeMap<String, Series>>,
    /// Backoff periods.
    pub backoff: Vec<BackoffPeriod>,
    /// What the run found, most important first (refused injections, the reason most mail
    /// bounced for, why a backoff expectation failed).
    pub findings: Vec<String>,
    /// Per traffic stream: messages planned, accepted and refused by the MTA, with the replies.
    pub injection: Vec<crate::inject::StreamStats>,
    /// Remarks (e.g. how live mode mapped source IPs to loopback).
    pub notes: Vec<String>,
}

/// Collects time series while a run goes on.
#[derive(Debug, Clone)]
pub struct Timeline {
    start_ms: i64,
    bucket_ms: i64,
    buckets: usize,
    series: BTreeMap<String, BTreeMap<String, Series>>,
}

impl Timeline {
    /// A timeline of `duration_ms` from `start_ms` with about 300 buckets (at least one second each).
    pub fn new(start_ms: i64, duration_ms: i64) -> Timeline {
        let bucket_ms = (duration_ms / 300).max(1000);
        let buckets = (duration_ms / bucket_ms + 1).max(1) as usize;
        Timeline {
            start_ms,
            bucket_ms,
            buckets,
            series: BTreeMap::new(),
        }
    }

    fn slot(&mut self, provider: &str, metric: &str, t_ms: i64) -> Option<&mut f64> {
        let i = (t_ms - self.start_ms).div_euclid(self.bucket_ms);
        if i < 0 || i as usize >= self.buckets {
            return None;
        }
        let n = self.buckets;
        // Looked up first: the names are copied only when a series is new.
        if !self.series.contains_key(provider) {
            self.series.insert(provider.to_string(), Default::default());
        }
        let by_metric = self.series.get_mut(provider)?;
        if !by_metric.contains_key(metric) {
            by_metric.insert(
                metric.to_string(),
                Series {
                    values: vec![0.0; n],
                },
            );
        }
        by_metric.get_mut(metric)?.values.get_mut(i as usize)
    }

    /// Adds `delta` to the bucket of `t_ms` (counts such as deliveries).
    pub fn add(&mut self, provider: &str, metric: &str, t_ms: i64, delta: f64) {
        if let Some(v) = self.slot(provider, metric, t_ms) {
            *v += delta;
        }
    }

    /// Keeps the maximum seen in the bucket of `t_ms` (gauges such as open connections).
    pub fn gauge(&mut self, provider: &str, metric: &str, t_ms: i64, value: f64) {
        if let Some(v) = self.slot(provider, metric, t_ms) {
            *v = v.max(value);
        }
    }

    /// The series, and the bucket width in seconds.
    pub fn finish(self) -> (BTreeMap<String, BTreeMap<String, Series>>, f64) {
        (self.series, self.bucket_ms as f64 / 1000.0)
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: &[&str] = &[
    "#1b73e8", "#7b1fa2", "#00897b", "#e65100", "#c62828", "#5d4037", "#455a64", "#2e7d32",
];

impl Report {
    /// The JSON document (fields in declaration order, maps sorted).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// One SVG line chart of `metric`, a line per provider, backoff periods shaded.
    pub fn chart(&self, metric: &str) -> String {
        let (w, h, left, bottom, top) = (900.0, 220.0, 56.0, 28.0, 24.0);
        let plot_w = w - left - 12.0;
        let plot_h = h - bottom - top;
        let lines: Vec<(&String, &Series)> = self
            .series
            .iter()
            .filter_map(|(p, m)| m.get(metric).map(|s| (p, s)))
            .collect();
        let n = lines
            .iter()
            .map(|(_, s)| s.values.len())
            .max()
            .unwrap_or(1)
            .max(2);
        let max = lines
            .iter()
            .flat_map(|(_, s)| s.values.iter().copied())
            .fold(0.0_f64, f64::max)
            .max(1.0);
        let total_s = self.bucket_s * n as f64;
        let x = |i: f64| left + plot_w * i / (n as f64 - 1.0);
        let y = |v: f64| top + plot_h * (1.0 - v / max);
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{metric} per provider">"#
        );
        let _ = write!(
            svg,
            r##"<text x="{left}" y="16" font-size="13" font-weight="bold">{} per {} s</text>"##,
            esc(metric),
            self.bucket_s
        );
        for b in &self.backoff {
            let x0 = left + plot_w * (b.from_s / total_s).clamp(0.0, 1.0);
            let x1 = left + plot_w * (b.to_s.unwrap_or(total_s) / total_s).clamp(0.0, 1.0);
            let _ = write!(
                svg,
                r##"<rect x="{x0:.1}" y="{top}" width="{:.1}" height="{plot_h}" fill="#ffcc80" opacity="0.35"><title>backoff {}: {}</title></rect>"##,
                (x1 - x0).max(1.0),
                esc(&b.queue),
                esc(&b.cause)
            );
        }
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#888"/>"##,
            top + plot_h,
            left + plot_w,
            top + plot_h
        );
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#888"/>"##,
            top + plot_h
        );
        for frac in [0.0, 0.5, 1.0] {
            let v = max * frac;
            let _ = write!(
                svg,
                r##"<text x="{}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
                left - 4.0,
                y(v) + 3.0,
                if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            );
        }
        for k in 0..=4 {
            let t = total_s * f64::from(k) / 4.0;
            let label = if total_s >= 7200.0 {
                format!("{:.1}h", t / 3600.0)
            } else {
                format!("{:.0}m", t / 60.0)
            };
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{label}</text>"##,
                left + plot_w * f64::from(k) / 4.0,
                h - 8.0
            );
        }
        for (idx, (provider, s)) in lines.iter().enumerate() {
            // One colour per provider across all charts.
            let color = COLORS[self
                .series
                .keys()
                .position(|k| k == *provider)
                .unwrap_or(idx)
                % COLORS.len()];
            let pts: Vec<String> = s
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{:.1},{:.1}", x(i as f64), y(*v)))
                .collect();
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"><title>{}</title></polyline>"#,
                pts.join(" "),
                esc(provider)
            );
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{}" font-size="11" fill="{color}">{}</text>"#,
                left + 8.0 + 110.0 * idx as f64,
                top + 12.0,
                esc(provider)
            );
        }
        svg.push_str("</svg>");
        svg
    }

    /// The self-contained HTML page.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let status = if self.passed { "PASSED" } else { "FAILED" };
        let _ = write!(
            h,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} — {status}</title><style>body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:8px 0 20px}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;font-size:13px}}.pass{{color:#1b5e20}}.fail{{color:#b71c1c;font-weight:bold}}h1 small{{font-weight:normal;color:#666}}</style></head><body>\n",
            esc(&self.scenario)
        );
        let _ = write!(
            h,
            "<h1>{} <small>{} run, seed {}, from {}</small></h1>\n<p>{}</p>\n",
            esc(&self.scenario),
            esc(&self.mode),
            self.seed,
            esc(&self.start),
            esc(&self.description)
        );
        let cls = if self.passed { "pass" } else { "fail" };
        let _ = writeln!(
            h,
            "<h2 class=\"{cls}\">{status}: {} of {} expectations held</h2>",
            self.verdicts.iter().filter(|v| v.passed).count(),
            self.verdicts.len()
        );
        if !self.findings.is_empty() {
            h.push_str("<h2>Findings</h2><ul>\n");
            for f in &self.findings {
                let _ = writeln!(h, "<li>{}</li>", esc(f));
            }
            h.push_str("</ul>\n");
        }
        h.push_str("<table><tr><th>expectation</th><th>result</th><th>expected</th><th>observed</th><th>where</th></tr>\n");
        for v in &self.verdicts {
            let (c, r) = match (v.passed, v.exercised) {
                (true, _) => ("pass", "held"),
                (false, true) => ("fail", "FAILED"),
                (false, false) => ("fail", "NOT EXERCISED"),
            };
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"{c}\">{r}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&v.expectation),
                esc(&v.expected),
                esc(&v.observed),
                esc(&v.location)
            );
        }
        h.push_str("</table>\n<h2>Totals</h2><table>");
        let t = &self.totals;
        for (k, v) in [
            ("accepted", t.accepted),
            ("delivered", t.delivered),
            ("bounced", t.bounced),
            ("expired", t.expired),
            ("deferrals", t.deferrals),
            ("complaints (f records)", t.complaints),
        ] {
            let _ = write!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
        }
        for (k, v) in &t.by_category {
            let _ = write!(h, "<tr><th>bounced: {}</th><td>{v}</td></tr>", esc(k));
        }
        h.push_str("</table>\n<h2>Per provider</h2><table><tr><th>provider</th><th>delivered</th><th>deferrals</th><th>bounced</th><th>connections</th><th>max connections per IP</th></tr>");
        for (p, v) in &self.providers {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(p),
                v.delivered,
                v.deferrals,
                v.bounced,
                v.connections,
                v.max_connections_per_ip
            );
        }
        h.push_str("</table>\n<h2>Over time</h2>\n<p>Shaded: queues in backoff.</p>\n");
        for m in METRICS {
            h.push_str(&self.chart(m));
            h.push('\n');
        }
        if !self.backoff.is_empty() {
            h.push_str("<h2>Backoff periods</h2><table><tr><th>queue</th><th>from (s)</th><th>to (s)</th><th>cause</th></tr>");
            for b in &self.backoff {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td></tr>",
                    esc(&b.queue),
                    b.from_s,
                    b.to_s
                        .map_or("end of run".to_string(), |t| format!("{t:.0}")),
                    esc(&b.cause)
                );
            }
            h.push_str("</table>\n");
        }
        for n in &self.notes {
            let _ = writeln!(h, "<p><em>{}</em></p>", esc(n));
        }
        h.push_str("</body></html>\n");
        h
    }

    /// Writes `report.json` and `report.html` into `dir` (created if needed).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), self.to_json())?;
        std::fs::write(dir.join("report.html"), self.to_html())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut t = Timeline::new(0, 3_600_000);
        for i in 0..60 {
            t.add("yahoo", "deliveries", i * 60_000, 100.0);
            t.add("gmail", "deliveries", i * 60_000, 50.0);
            t.gauge("yahoo", "connections", i * 60_000, (i % 7) as f64);
        }
        t.add("yahoo", "deferrals", 25 * 60_000, 30.0);
        t.add("yahoo", "deliveries", 7_200_000, 1.0); // past the end: ignored
        let (series, bucket_s) = t.finish();
        Report {
            scenario: "demo".into(),
            description: "a <test> & more".into(),
            mode: "simulated".into(),
            seed: 1,
            start: "2026-11-23T08:00:00Z".into(),
            duration_s: 3600.0,
            passed: false,
            verdicts: vec![
                Verdict {
                    expectation: "max-connections yahoo".into(),
                    passed: true,
                    exercised: true,
                    expected: "<= 20".into(),
                    observed: "6".into(),
                    location: "203.0.113.11".into(),
                },
                Verdict {
                    expectation: "nothing-lost".into(),
                    passed: false,
                    exercised: true,
                    expected: "0 lost".into(),
                    observed: "3 lost".into(),
                    location: "acct.csv".into(),
                },
            ],
            totals: Totals {
                accepted: 9000,
                delivered: 8997,
                ..Totals::default()
            },
            providers: BTreeMap::new(),
            bucket_s,
            series,
            findings: vec!["most mail: 3 of 9000 accepted recipients bounced".into()],
            injection: Vec::new(),
            backoff: vec![BackoffPeriod {
                queue: "yahoo.com/mkt-1".into(),
                from_s: 1250.0,
                to_s: Some(2400.0),
                cause: "/\\[TSS04\\]/".into(),
            }],
            notes: vec![],
        }
    }

    #[test]
    fn buckets_charts_and_pages() {
        let r = sample();
        assert_eq!(r.bucket_s, 12.0, "an hour in about 300 buckets");
        let y = &r.series["yahoo"]["deliveries"].values;
        assert_eq!(
            y.iter().sum::<f64>(),
            6000.0,
            "the sample past the end is not counted"
        );
        let svg = r.chart("deliveries");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2, "a line per provider");
        assert!(svg.contains("backoff yahoo.com/mkt-1"), "backoff shaded");
        let html = r.to_html();
        assert!(html.contains("FAILED: 1 of 2 expectations held"));
        assert!(
            html.contains("a &lt;test&gt; &amp; more"),
            "text is escaped"
        );
        assert_eq!(html.matches("<svg").count(), METRICS.len());
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap_or_default();
        assert_eq!(json["verdicts"][1]["where"], "acct.csv");
        let text = r.to_json();
        let pos: Vec<usize> = [
            "\"scenario\"",
            "\"description\"",
            "\"mode\"",
            "\"seed\"",
            "\"verdicts\"",
        ]
        .iter()
        .filter_map(|k| text.find(k))
        .collect();
        assert!(
            pos.len() == 5 && pos.windows(2).all(|w| w[0] < w[1]),
            "stable field order: {pos:?}"
        );
    }
}
