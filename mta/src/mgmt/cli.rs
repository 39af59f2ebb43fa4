//! The operator commands (`mta show status|queues|...`, `mta pause queue ...`) as a client of the
//! management HTTP API: requests with ureq, tables for people (PowerMTA's layout where it has
//! one) and the API's JSON for scripts.

use serde_json::Value;
use std::fmt::Write as _;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No answer from the management server.
    #[error("cannot reach the management interface at {url}: {reason} (is `mta run` running with http-mgmt-port? use --mgmt URL)")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server answered with an error.
    #[error("{url}: HTTP {status}: {message}")]
    Refused {
        /// What was asked.
        url: String,
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("{url}: unexpected answer: {reason}")]
    BadAnswer {
        /// What was asked.
        url: String,
        /// Why.
        reason: String,
    },
}

/// A client of one management server.
pub struct Client {
    base: String,
    api_key: Option<String>,
}

impl Client {
    /// A client for `base` (`http://127.0.0.1:8080`); `api_key` is sent as `X-API-Key`.
    pub fn new(base: &str, api_key: Option<String>) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            api_key,
        }
    }

    fn call(&self, post: bool, path: &str) -> Result<Value, CliError> {
        let url = format!("{}{}", self.base, path);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        let res = if post {
            let mut r = agent.post(&url);
            if let Some(k) = &self.api_key {
                r = r.header("X-API-Key", k);
            }
            r.send_empty()
        } else {
            let mut r = agent.get(&url);
            if let Some(k) = &self.api_key {
                r = r.header("X-API-Key", k);
            }
            r.call()
        };
        let mut res = res.map_err(|e| CliError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let status = res.status().as_u16();
        let text = res
            .body_mut()
            .read_to_string()
            .map_err(|e| CliError::BadAnswer {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let json: Value = serde_json::from_str(&text).map_err(|e| CliError::BadAnswer {
            url: url.clone(),
            reason: format!("{e}: {}", text.chars().take(200).collect::<String>()),
        })?;
        if status >= 400 {
            return Err(CliError::Refused {
                url,
                status,
                message: json["error"].as_str().unwrap_or(&text).to_string(),
            });
        }
        Ok(json)
    }

    /// GET `path` (e.g. `/api/v1/status`).
    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(false, path)
    }

    /// POST `path` (an action).
    pub fn post(&self, path: &str) -> Result<Value, CliError> {
        self.call(true, path)
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~*".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Drops trailing blanks from every line (empty last columns).
fn tidy(o: String) -> String {
    let mut out: String = o.lines().map(str::trim_end).collect::<Vec<_>>().join("\n");
    out.push('\n');
    out
}

fn n(v: &Value) -> String {
    match v {
        Value::Number(x) => x.to_string(),
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `show status` as a table.
pub fn render_status(v: &Value) -> String {
    let s = &v["status"];
    let t = &s["traffic"];
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<12} {:>30}   {:>30}",
        "traffic", "-----------inbound-----------", "-----------outbound----------"
    );
    let _ = writeln!(
        o,
        "{:<12} {:>9} {:>9} {:>10}   {:>9} {:>9} {:>10}",
        "", "rcpts", "msgs", "kbytes", "rcpts", "msgs", "kbytes"
    );
    for (label, key) in [
        ("Total", "total"),
        ("Last Hour", "lastHr"),
        ("Top/Hour", "topPerHr"),
        ("Last Min.", "lastMin"),
        ("Top/Min.", "topPerMin"),
    ] {
        let i = &t[key]["in"];
        let x = &t[key]["out"];
        let _ = writeln!(
            o,
            "{:<12} {:>9} {:>9} {:>10}   {:>9} {:>9} {:>10}",
            label,
            n(&i["rcp"]),
            n(&i["msg"]),
            n(&i["kb"]),
            n(&x["rcp"]),
            n(&x["msg"]),
            n(&x["kb"])
        );
    }
    let _ = writeln!(
        o,
        "\nconnections  in {}  out {}",
        n(&s["conn"]["smtpIn"]["cur"]),
        n(&s["conn"]["smtpOut"]["cur"])
    );
    let q = &s["queue"]["smtp"];
    let _ = writeln!(
        o,
        "smtp queue   {} rcpts  {} kbytes  {} queues ({} in backoff, {} paused)",
        n(&q["rcp"]),
        n(&q["kb"]),
        n(&q["queues"]),
        n(&q["backoff"]),
        n(&q["paused"])
    );
    let tt = &s["totals"];
    let _ = writeln!(
        o,
        "totals       received {}  delivered {}  bounced {}  deferred {}",
        n(&tt["received"]),
        n(&tt["delivered"]),
        n(&tt["bounced"]),
        n(&tt["deferred"])
    );
    let _ = writeln!(o, "spool        {} messages", n(&s["spool"]["messages"]));
    let up = s["uptimeSeconds"].as_i64().unwrap_or(0);
    let _ = writeln!(
        o,
        "uptime       {}d {:02}:{:02}:{:02}   version {}",
        up / 86400,
        up % 86400 / 3600,
        up % 3600 / 60,
        up % 60,
        n(&s["version"])
    );
    tidy(o)
}

/// `show queues` / `show topqueues` as a table (`limit` rows): per queue its size, connections,
/// mode, when it next tries and why it waits; the last error below when it says more.
pub fn render_queues(v: &Value, limit: usize) -> String {
    let empty = Vec::new();
    let qs = v["queues"].as_array().unwrap_or(&empty);
    let now = v["timeMs"].as_i64();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<32} {:>8} {:>9} {:>5} {:<8} {:<6} {:<9} waiting",
        "queue", "#rcpt", "kbytes", "conn", "mode", "paused", "next"
    );
    for q in qs.iter().take(limit) {
        let waiting = q["waiting"].as_str().unwrap_or("");
        let _ = writeln!(
            o,
            "{:<32} {:>8} {:>9} {:>5} {:<8} {:<6} {:<9} {}",
            n(&q["name"]),
            n(&q["rcpt"]),
            n(&q["kb"]),
            n(&q["conn"]),
            n(&q["mode"]),
            if q["paused"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            next_in(q["nextAttemptMs"].as_i64(), now),
            waiting
        );
        if let Some(e) = q["lastError"].as_str().filter(|e| !waiting.contains(e)) {
            let _ = writeln!(o, "    last error: {e}");
        }
    }
    let total = v["total"].as_u64().unwrap_or(qs.len() as u64);
    let _ = writeln!(o, "{} of {} queues shown.", qs.len().min(limit), total);
    tidy(o)
}

/// "in 4m05s" from now to `at` (both Unix ms); "now" when due, "-" when nothing is timed.
fn next_in(at: Option<i64>, now: Option<i64>) -> String {
    let (Some(at), Some(now)) = (at, now) else {
        return "-".into();
    };
    let s = (at - now).max(0) / 1000;
    match s {
        0 => "now".into(),
        s if s < 60 => format!("in {s}s"),
        s if s < 3600 => format!("in {}m{:02}s", s / 60, s % 60),
        s => format!("in {}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `show domains` as a table.
pub fn render_domains(v: &Value, limit: usize) -> String {
    let empty = Vec::new();
    let ds = v["domains"].as_array().unwrap_or(&empty);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<32} {:>8} {:>9} {:>6} last error",
        "domain", "#rcpt", "kbytes", "conn"
    );
    for d in ds.iter().take(limit) {
        let _ = writeln!(
            o,
            "{:<32} {:>8} {:>9} {:>6} {}",
            n(&d["domain"]),
            n(&d["rcpt"]),
            n(&d["kb"]),
            n(&d["conn"]),
            d["lastError"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(o, "{} of {} domains shown.", ds.len().min(limit), ds.len());
    tidy(o)
}

/// `show vmtas` as a table.
pub fn render_vmtas(v: &Value) -> String {
    let empty = Vec::new();
    let vs = v["vmtas"].as_array().unwrap_or(&empty);
    let total: u64 = vs.iter().filter_map(|x| x["rcpt"].as_u64()).sum();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<24} {:>7} {:>8} {:>6} {:>9} {:>6}  source IPs",
        "name", "domains", "#rcpt", "%", "kbytes", "conn"
    );
    for x in vs {
        let rcpt = x["rcpt"].as_u64().unwrap_or(0);
        let pct = if total > 0 {
            rcpt as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let ips: Vec<String> = x["sourceIps"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|i| {
                format!(
                    "{}{}",
                    n(&i["ip"]),
                    if i["disabled"].as_bool() == Some(true) {
                        " (disabled)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "{:<24} {:>7} {:>8} {:>5.1}% {:>9} {:>6}  {}",
            n(&x["name"]),
            n(&x["domains"]),
            rcpt,
            pct,
            n(&x["kb"]),
            n(&x["conn"]),
            ips.join(", ")
        );
    }
    tidy(o)
}

/// The suppression list as a table (`list`) or CSV (`export`: address,reason,detail,since).
pub fn render_suppression(v: &Value, csv: bool) -> String {
    let empty = Vec::new();
    let es = v["entries"].as_array().unwrap_or(&empty);
    let mut o = String::new();
    if csv {
        o.push_str("address,reason,detail,since\n");
        for e in es {
            let q = |s: &str| {
                if s.contains([',', '"']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s.to_string()
                }
            };
            let since = e["sinceMs"]
                .as_i64()
                .map(crate::acct::record::iso_time)
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "{},{},{},{}",
                q(e["address"].as_str().unwrap_or("")),
                q(e["reason"].as_str().unwrap_or("")),
                q(e["detail"].as_str().unwrap_or("")),
                since
            );
        }
        return o;
    }
    let _ = writeln!(
        o,
        "{:<40} {:<12} {:<26} detail",
        "address", "reason", "since"
    );
    for e in es {
        let since = e["sinceMs"]
            .as_i64()
            .map(crate::acct::record::iso_time)
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "{:<40} {:<12} {:<26} {}",
            e["address"].as_str().unwrap_or(""),
            e["reason"].as_str().unwrap_or(""),
            since,
            e["detail"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(o, "{} addresses suppressed.", es.len());
    tidy(o)
}

/// `show settings QUEUE` from the running MTA's queue detail.
pub fn render_settings(v: &Value) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "queue {}", n(&v["queue"]["name"]));
    if let Some(m) = v["settings"].as_object() {
        for (k, s) in m {
            let _ = writeln!(
                o,
                "{:<36} {:<24} # {}",
                k,
                s["value"].as_str().unwrap_or("-"),
                s["origin"].as_str().unwrap_or("")
            );
        }
    }
    tidy(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_status() -> Value {
        serde_json::json!({"status": {
            "version": "0.1.0",
            "traffic": {
                "total": {"in": {"rcp": 1200, "msg": 1000, "kb": 4000}, "out": {"rcp": 1100, "msg": 950, "kb": 3700}},
                "lastHr": {"in": {"rcp": 600, "msg": 500, "kb": 2000}, "out": {"rcp": 580, "msg": 490, "kb": 1900}},
                "topPerHr": {"in": {"rcp": 600, "msg": 500, "kb": 2000}, "out": {"rcp": 580, "msg": 490, "kb": 1900}},
                "lastMin": {"in": {"rcp": 10, "msg": 9, "kb": 30}, "out": {"rcp": 12, "msg": 11, "kb": 36}},
                "topPerMin": {"in": {"rcp": 90, "msg": 80, "kb": 300}, "out": {"rcp": 85, "msg": 70, "kb": 280}}
            },
            "conn": {"smtpIn": {"cur": 3}, "smtpOut": {"cur": 17}},
            "queue": {"smtp": {"rcp": 100, "kb": 350, "queues": 4, "backoff": 1, "paused": 1}},
            "spool": {"messages": 90},
            "totals": {"received": 1000, "delivered": 1100, "bounced": 20, "deferred": 300, "connections": 400},
            "uptimeSeconds": 90061
        }})
    }

    fn sample_queues() -> Value {
        serde_json::json!({"total": 3, "timeMs": 1_000_000, "queues": [
            {"name": "yahoo.com/mkt-1", "domain": "yahoo.com", "vmta": "mkt-1", "rcpt": 80, "kb": 300, "conn": 2, "maxConn": 20,
             "mode": "backoff", "paused": false, "lastError": "421 4.7.0 [TSS04] Messages from 127.0.0.2 temporarily deferred",
             "nextAttemptMs": 1_245_000, "waitingKind": "retry-queue",
             "waiting": "backoff since 1970-01-01 00:16:00+0000 because 421 4.7.0 [TSS04] Messages from 127.0.0.2 temporarily deferred; queue deferred: retry after 421 4.7.0 [TSS04] Messages from 127.0.0.2 temporarily deferred"},
            {"name": "gmail.com/mkt-1", "domain": "gmail.com", "vmta": "mkt-1", "rcpt": 15, "kb": 40, "conn": 5, "maxConn": 10,
             "mode": "normal", "paused": true, "lastError": "550 5.1.1 The email account that you tried to reach does not exist.",
             "nextAttemptMs": null, "waitingKind": "paused", "waiting": "paused by an operator"},
            {"name": "aol.com/mkt-2", "domain": "aol.com", "vmta": "mkt-2", "rcpt": 5, "kb": 10, "conn": 0, "maxConn": 20,
             "mode": "normal", "paused": false, "lastError": null}
        ]})
    }

    #[test]
    fn status_table() {
        insta::assert_snapshot!(render_status(&sample_status()));
    }

    #[test]
    fn queue_tables() {
        insta::assert_snapshot!(render_queues(&sample_queues(), 2));
        let domains = serde_json::json!({"domains": [
            {"domain": "yahoo.com", "rcpt": 80, "kb": 300, "conn": 2, "lastError": "421 4.7.0 [TSS04]"},
            {"domain": "gmail.com", "rcpt": 15, "kb": 40, "conn": 5, "lastError": null}
        ]});
        insta::assert_snapshot!(render_domains(&domains, 10));
        let vmtas = serde_json::json!({"vmtas": [
            {"name": "mkt-1", "domains": 2, "rcpt": 95, "kb": 340, "conn": 7,
             "sourceIps": [{"ip": "127.0.0.2", "disabled": false}, {"ip": "127.0.0.3", "disabled": true}]},
            {"name": "mkt-2", "domains": 1, "rcpt": 5, "kb": 10, "conn": 0, "sourceIps": []}
        ]});
        insta::assert_snapshot!(render_vmtas(&vmtas));
    }

    #[test]
    fn encodes_queue_names() {
        assert_eq!(enc("gmail.com/*"), "gmail.com%2F*");
        assert_eq!(enc("{default}"), "%7Bdefault%7D");
    }
}
