//! `/metrics` in the Prometheus/OpenMetrics text format, built with `prometheus-client` from the
//! engine's state at scrape time. Label cardinality is bounded: the 100 largest queues and the 50
//! busiest domains get their own series, the rest are summed under `other`; bounce categories are
//! PowerMTA's fixed set.

use crate::engine::Engine;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;

/// Queues with their own series.
pub const MAX_QUEUE_SERIES: usize = 100;
/// Domains with their own series.
pub const MAX_DOMAIN_SERIES: usize = 50;

type Labels = Vec<(String, String)>;

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Renders the metrics text.
pub fn render(e: &Engine) -> Result<String, String> {
    let mut reg = Registry::with_prefix("mta");
    let now = e.now_ms();
    let stats = e.stats.lock().map(|s| *s).unwrap_or_default();
    let mon = e.monitor();

    let uptime = Gauge::<i64>::default();
    uptime.set((now - mon.started_ms.load(Ordering::Relaxed)).max(0) / 1000);
    reg.register("uptime_seconds", "Seconds since the MTA started", uptime);

    let rcpts = Family::<Labels, Counter>::default();
    for (outcome, n) in [
        ("received_messages", stats.received),
        ("delivered", stats.delivered),
        ("bounced", stats.bounced),
        ("deferred", stats.deferred),
    ] {
        rcpts.get_or_create(&l(&[("outcome", outcome)])).inc_by(n);
    }
    reg.register(
        "recipients",
        "Recipients by outcome since start (received_messages counts messages)",
        rcpts,
    );
    let conns = Counter::<u64>::default();
    conns.inc_by(stats.connections);
    reg.register("smtp_out_connections", "Outbound connections opened", conns);
    let smtp_in = Gauge::<i64>::default();
    smtp_in.set(mon.smtp_in.load(Ordering::Relaxed) as i64);
    reg.register(
        "smtp_in_sessions",
        "Inbound SMTP sessions open now",
        smtp_in,
    );

    let queues = e.queue_views();
    let q_rcpt = Family::<Labels, Gauge>::default();
    let q_conn = Family::<Labels, Gauge>::default();
    let q_backoff = Family::<Labels, Gauge>::default();
    let q_paused = Family::<Labels, Gauge>::default();
    let q_next = Family::<Labels, Gauge>::default();
    let q_why = Family::<Labels, Gauge>::default();
    let waiting = Family::<Labels, Gauge>::default();
    for q in &queues {
        waiting
            .get_or_create(&l(&[("reason", &q.waiting_kind)]))
            .inc();
    }
    for (i, q) in queues.iter().enumerate() {
        if i < MAX_QUEUE_SERIES {
            let labels = l(&[("queue", &q.name), ("vmta", &q.vmta)]);
            if let Some(t) = q.next_attempt_ms {
                q_next.get_or_create(&labels).set(t / 1000);
            }
            let why = l(&[
                ("queue", &q.name),
                ("vmta", &q.vmta),
                ("reason", &q.waiting_kind),
            ]);
            q_why.get_or_create(&why).set(1);
        }
        let labels = if i < MAX_QUEUE_SERIES {
            l(&[("queue", &q.name), ("vmta", &q.vmta)])
        } else {
            l(&[("queue", "other"), ("vmta", "other")])
        };
        q_rcpt.get_or_create(&labels).inc_by(q.rcpt as i64);
        q_conn.get_or_create(&labels).inc_by(q.conn as i64);
        q_backoff
            .get_or_create(&labels)
            .inc_by((q.mode == "backoff") as i64);
        q_paused.get_or_create(&labels).inc_by(q.paused as i64);
    }
    reg.register("queue_recipients", "Recipients waiting per queue", q_rcpt);
    reg.register("queue_connections", "Open connections per queue", q_conn);
    reg.register(
        "queue_backoff",
        "Queues in backoff mode (1 per queue)",
        q_backoff,
    );
    reg.register("queue_paused", "Queues paused by an operator", q_paused);
    reg.register(
        "queue_next_attempt_timestamp_seconds",
        "When a waiting queue next tries to send (Unix seconds), for queues that wait on a time",
        q_next,
    );
    reg.register(
        "queue_waiting",
        "Why each queue waits (1 per queue, the reason as a label)",
        q_why,
    );
    reg.register(
        "queues_waiting",
        "Queues per reason they wait (empty, sending, retry, retry-queue, reconnect, rate, ...)",
        waiting,
    );

    let v_rcpt = Family::<Labels, Gauge>::default();
    let v_conn = Family::<Labels, Gauge>::default();
    let ip_disabled = Family::<Labels, Gauge>::default();
    for v in e.vmta_views() {
        let labels = l(&[("vmta", &v.name)]);
        v_rcpt.get_or_create(&labels).set(v.rcpt as i64);
        v_conn.get_or_create(&labels).set(v.conn as i64);
        for ip in &v.source_ips {
            ip_disabled
                .get_or_create(&l(&[("vmta", &v.name), ("ip", &ip.ip)]))
                .set(ip.disabled as i64);
        }
    }
    reg.register("vmta_recipients", "Recipients waiting per vMTA", v_rcpt);
    reg.register("vmta_connections", "Open connections per vMTA", v_conn);
    reg.register(
        "source_ip_disabled",
        "Source IPs out of service (1) or in service (0)",
        ip_disabled,
    );

    let mut domains: Vec<(String, crate::mgmt::monitor::Outcomes)> =
        mon.domain_outcomes(now, 5).into_iter().collect();
    domains.sort_by(|a, b| {
        let t = |o: &crate::mgmt::monitor::Outcomes| o.delivered + o.deferred + o.bounced;
        t(&b.1).cmp(&t(&a.1)).then_with(|| a.0.cmp(&b.0))
    });
    let d_out = Family::<Labels, Gauge>::default();
    for (i, (d, o)) in domains.iter().enumerate() {
        let d = if i < MAX_DOMAIN_SERIES {
            d.as_str()
        } else {
            "other"
        };
        for (k, n) in [
            ("delivered", o.delivered),
            ("deferred", o.deferred),
            ("bounced", o.bounced),
        ] {
            d_out
                .get_or_create(&l(&[("domain", d), ("outcome", k)]))
                .inc_by(n as i64);
        }
    }
    reg.register(
        "domain_recipients_last_5m",
        "Recipient outcomes per destination domain over the last 5 minutes",
        d_out,
    );

    let cats = Family::<Labels, Counter>::default();
    for (c, n) in mon.bounce_categories() {
        cats.get_or_create(&l(&[("category", &c)])).inc_by(n);
    }
    reg.register(
        "bounces",
        "Bounced recipients (b and rb records) per bounce category",
        cats,
    );

    let mut out = String::new();
    encode(&mut out, &reg).map_err(|e| e.to_string())?;
    Ok(out)
}
