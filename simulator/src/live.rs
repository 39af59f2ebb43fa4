//! Live runs: the pieces that differ from a simulated run. The MTA runs as its own process (`mta run`)
//! from a config derived from the scenario's: its listeners, spool, accounting file, management port
//! and name server moved to loopback and a run directory, and every non-loopback sending address
//! mapped to a loopback one (127.2.x.y) so that the world can see and answer it. The world's DNS is
//! a real hickory server; what the MTA did is read back from its accounting file and its HTTP API.

use crate::scenario::Loaded;
use crate::tally::{RecordView, Tally};
use mta::acct::RecordType;
use mta::config::Config;
use mta::queue::Mode;
use mta::shaping::ModeChange;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Options of a live run.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// The `mta` binary to run.
    pub mta_bin: PathBuf,
}

impl LiveOptions {
    /// The `mta` binary beside the running executable (`target/<profile>/mta` for `mtasim` and,
    /// one level up, for test binaries in `target/<profile>/deps`), unless `MTASIM_MTA_BIN` names one.
    pub fn find_mta() -> Result<LiveOptions, String> {
        if let Some(p) = std::env::var_os("MTASIM_MTA_BIN") {
            return Ok(LiveOptions {
                mta_bin: PathBuf::from(p),
            });
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let name = format!("mta{}", std::env::consts::EXE_SUFFIX);
        let mut dir = exe.parent();
        for _ in 0..2 {
            if let Some(d) = dir {
                let p = d.join(&name);
                if p.is_file() {
                    return Ok(LiveOptions { mta_bin: p });
                }
                dir = d.parent();
            }
        }
        Err(format!(
            "--live needs the `mta` binary: none beside {} (build it with `cargo build -p mta`, or set MTASIM_MTA_BIN)",
            exe.display()
        ))
    }

    /// [`LiveOptions::find_mta`], or, when there is none (a test run of the simulator alone),
    /// the binary built with `cargo build -p mta --bin mta` first (`$CARGO`, else `cargo`).
    pub fn find_or_build_mta() -> Result<LiveOptions, String> {
        if let Ok(o) = LiveOptions::find_mta() {
            return Ok(o);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let st = std::process::Command::new(cargo)
            .args(["build", "-p", "mta", "--bin", "mta"])
            .status()
            .map_err(|e| format!("cargo build -p mta: {e}"))?;
        if !st.success() {
            return Err(format!("cargo build -p mta failed: {st}"));
        }
        LiveOptions::find_mta()
    }
}

/// A free TCP port on `ip` (the port is released again; loopback races are unlikely).
pub fn free_port(ip: IpAddr) -> Result<u16, String> {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on {ip}: {e}"))
}

/// A free port on `ip` for both UDP and TCP (for the DNS server).
pub fn free_udp_tcp_port(ip: IpAddr) -> Result<u16, String> {
    for _ in 0..50 {
        let u = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("no free UDP port on {ip}: {e}"))?;
        let port = u.local_addr().map_err(|e| e.to_string())?.port();
        if std::net::TcpListener::bind(SocketAddr::new(ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(format!("no port on {ip} free for both UDP and TCP"))
}

/// The loopback address a scenario's sending address uses in a live run: loopback stays, any
/// other IPv4 address becomes 127.2.x.y (its last two octets), IPv6 becomes 127.3.0.n.
pub fn loopback_for(ip: IpAddr, n: usize) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => ip,
        IpAddr::V4(v4) => {
            let o = v4.octets();
            IpAddr::V4(Ipv4Addr::new(127, 2, o[2], o[3]))
        }
        IpAddr::V6(_) => IpAddr::V4(Ipv4Addr::new(127, 3, (n >> 8) as u8, (n & 255) as u8)),
    }
}

/// Where the derived config puts things.
#[derive(Debug, Clone)]
pub struct LivePlan {
    /// The run directory (config, spool, MTA log).
    pub dir: PathBuf,
    /// The accounting file (beside the report).
    pub acct: PathBuf,
    /// The world's DNS server.
    pub dns: SocketAddr,
    /// The port every provider (and the senders' sink) listens on.
    pub smtp_port: u16,
    /// The management interface.
    pub mgmt: SocketAddr,
}

/// What the derived config looks like: its text and its listeners (submission first).
#[derive(Debug, Clone)]
pub struct Derived {
    /// The config text.
    pub text: String,
    /// Listener addresses with their `source=`, in the original's order.
    pub listeners: Vec<(SocketAddr, Option<String>)>,
    /// Original sending address -> the loopback one used.
    pub ip_map: BTreeMap<IpAddr, IpAddr>,
}

fn absolute(base: &Path, p: &str) -> String {
    let unq = p.trim().trim_matches('"');
    let pb = Path::new(unq);
    if pb.is_absolute() || unq.starts_with('|') {
        unq.to_string()
    } else {
        base.join(pb).display().to_string()
    }
}

/// Derives the live config from the original's text (`path` for relative paths) and its model.
pub fn derive_config(path: &Path, original: &Config, plan: &LivePlan) -> Result<Derived, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let full = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let base = full.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut ip_map = BTreeMap::new();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Derived by `mtasim run --live` from {} for a live run.",
        path.display()
    );
    let mut skipping: Option<&str> = None;
    for line in text.lines() {
        let t = line.trim_start();
        let lower = t.to_ascii_lowercase();
        if let Some(end) = skipping {
            if lower.starts_with(end) {
                skipping = None;
            }
            let _ = writeln!(out, "# (live) {line}");
            continue;
        }
        let word = lower.split_whitespace().next().unwrap_or("");
        let indent = &line[..line.len() - t.len()];
        match word {
            "<spool" | "<acct-file" | "<smtp-listener" => {
                skipping = Some(match word {
                    "<spool" => "</spool>",
                    "<acct-file" => "</acct-file>",
                    _ => "</smtp-listener>",
                });
                let _ = writeln!(out, "# (live) {line}");
            }
            "smtp-listener" | "spool" | "http-mgmt-port" | "name-server" | "suppression-file" => {
                let _ = writeln!(out, "# (live) {line}");
            }
            "include" => {
                let rest = t["include".len()..].trim();
                let _ = writeln!(out, "{indent}include {}", absolute(&base, rest));
            }
            "smtp-server-tls-certificate" | "tls-certificate" => {
                let rest = t[word.len()..].trim();
                let _ = writeln!(out, "{indent}{word} {}", absolute(&base, rest));
            }
            "domain-key" => {
                let rest = t["domain-key".len()..].trim();
                let mut parts: Vec<String> =
                    rest.splitn(3, ',').map(|s| s.trim().to_string()).collect();
                if let Some(p) = parts.get_mut(2) {
                    let (file, comment) = match p.split_once('#') {
                        Some((f, c)) => (f.trim().to_string(), format!(" #{c}")),
                        None => (p.clone(), String::new()),
                    };
                    *p = format!("{}{comment}", absolute(&base, &file));
                }
                let _ = writeln!(out, "{indent}domain-key {}", parts.join(", "));
            }
            "smtp-source-host" => {
                let rest: Vec<&str> = t.split_whitespace().collect();
                let mapped = rest.get(1).and_then(|a| {
                    let (ip, suffix) = match a.split_once('/') {
                        Some((ip, s)) => (ip, format!("/{s}")),
                        None => (*a, String::new()),
                    };
                    let ip: IpAddr = ip.parse().ok()?;
                    let n = ip_map.len();
                    let to = *ip_map.entry(ip).or_insert_with(|| loopback_for(ip, n));
                    Some(format!("{to}{suffix}"))
                });
                match mapped {
                    Some(m) => {
                        let mut parts = rest.clone();
                        parts[1] = &m;
                        let _ = writeln!(out, "{indent}{}", parts.join(" "));
                    }
                    None => {
                        let _ = writeln!(out, "{line}");
                    }
                }
            }
            _ => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    // The run's own settings.
    let mut listeners = Vec::new();
    for l in &original.listeners {
        let ip = match l.addr.ip() {
            IpAddr::V4(v) if v.is_loopback() => l.addr.ip(),
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let addr = SocketAddr::new(ip, free_port(ip)?);
        listeners.push((addr, l.source.clone()));
    }
    if listeners.is_empty() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        listeners.push((SocketAddr::new(ip, free_port(ip)?), None));
    }
    let _ = writeln!(out, "\n# --- live run settings ---");
    for (a, s) in &listeners {
        match s {
            Some(s) => {
                let _ = writeln!(out, "smtp-listener {a} source={s}");
            }
            None => {
                let _ = writeln!(out, "smtp-listener {a}");
            }
        }
    }
    let _ = writeln!(out, "name-server {}", plan.dns);
    let _ = writeln!(out, "http-mgmt-port {}", plan.mgmt);
    let _ = writeln!(
        out,
        "<spool {}>\n</spool>",
        plan.dir.join("spool").display()
    );
    let _ = writeln!(
        out,
        "<acct-file {}>\n    records r,d,b,t,tq,f,rb\n    record-fields * *,header_Message-ID\n    move-interval never\n</acct-file>",
        plan.acct.display()
    );
    let _ = writeln!(
        out,
        "<domain *>\n    default-smtp-port {}\n</domain>",
        plan.smtp_port
    );
    Ok(Derived {
        text: out,
        listeners,
        ip_map,
    })
}

/// The MTA process of a live run; killed if dropped before [`MtaProcess::stop`].
pub struct MtaProcess {
    child: Option<Child>,
}

impl MtaProcess {
    /// Starts `mta run --config CONFIG`, its log going to `log`.
    pub fn start(bin: &Path, config: &Path, log: &Path) -> Result<MtaProcess, String> {
        let f = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("MTASIM_MTA_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        Ok(MtaProcess { child: Some(child) })
    }

    /// Whether the process has exited (with its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGTERM (the MTA finishes and flushes its accounting), then waits up to `grace`, then kills.
    pub fn stop(mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let until = std::time::Instant::now() + grace;
        while std::time::Instant::now() < until {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for MtaProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Splits CSV text (RFC 4180: quoted fields may hold commas, quotes and line breaks) into rows.
pub fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// Parses an accounting time (`2026-11-23 08:00:00+0000`) into Unix ms.
pub fn acct_time(s: &str) -> Option<i64> {
    if s.len() < 19 {
        return None;
    }
    let iso = format!("{}T{}Z", s.get(..10)?, s.get(11..19)?);
    crate::scenario::parse_rfc3339_utc(&iso)
}

/// The tally of an accounting file written with `record-fields * *,header_Message-ID`.
pub fn read_acct(path: &Path, l: &Loaded) -> Result<Tally, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let rows = csv_rows(&text);
    let mut tally = Tally::new(l);
    let Some(header) = rows.first() else {
        return Ok(tally);
    };
    let col = |name: &str| header.iter().position(|h| h == name);
    let (ty, tl, rcpt) = (col("type"), col("timeLogged"), col("rcpt"));
    let (tq, cat, mid) = (
        col("timeQueued"),
        col("bounceCat"),
        col("header_Message-ID"),
    );
    let (diag, orig) = (col("dsnDiag"), col("orig"));
    let get = |r: &'_ [String], c: Option<usize>| -> String {
        c.and_then(|i| r.get(i)).cloned().unwrap_or_default()
    };
    for r in rows.iter().skip(1).filter(|r| r.len() > 1) {
        let (rc, bc, id, dg) = (get(r, rcpt), get(r, cat), get(r, mid), get(r, diag));
        let from = get(r, orig);
        tally.add(&RecordView {
            ty: RecordType::from_code(&get(r, ty)),
            time_logged: acct_time(&get(r, tl)).unwrap_or(0),
            time_queued: acct_time(&get(r, tq)),
            rcpt: &rc,
            bounce_cat: &bc,
            message_id: &id,
            dsn_diag: &dg,
            orig: &from,
        });
    }
    Ok(tally)
}

/// Reads JSON from the MTA's management interface (blocking).
pub fn api(mgmt: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    mta::mgmt::cli::Client::new(&format!("http://{mgmt}"), None)
        .get(path)
        .map_err(|e| e.to_string())
}

/// Queue depth per destination domain, from `/api/v1/queues`.
pub fn queue_depths(mgmt: SocketAddr) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    if let Ok(v) = api(mgmt, "/api/v1/queues") {
        for q in v["queues"].as_array().into_iter().flatten() {
            let d = q["domain"].as_str().unwrap_or_default().to_string();
            *out.entry(d).or_insert(0) += q["rcpt"].as_u64().unwrap_or(0) as usize;
        }
    }
    out
}

/// Messages not yet finished (spool), from `/api/v1/status`; `None` if the MTA does not answer.
pub fn pending(mgmt: SocketAddr) -> Option<u64> {
    api(mgmt, "/api/v1/status")
        .ok()
        .and_then(|v| v["status"]["spool"]["messages"].as_u64())
}

/// Every queue's mode changes, oldest first, from `/api/v1/queueDetail`.
pub fn mode_history(mgmt: SocketAddr) -> BTreeMap<String, Vec<ModeChange>> {
    let mut out = BTreeMap::new();
    let Ok(v) = api(mgmt, "/api/v1/queues") else {
        return out;
    };
    for q in v["queues"].as_array().into_iter().flatten() {
        let Some(name) = q["name"].as_str() else {
            continue;
        };
        let path = format!("/api/v1/queueDetail?queue={}", mta::mgmt::cli::enc(name));
        let Ok(d) = api(mgmt, &path) else { continue };
        let mut changes: Vec<ModeChange> = d["modeHistory"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| ModeChange {
                at_ms: m["atMs"].as_i64().unwrap_or(0),
                to: if m["to"].as_str() == Some("backoff") {
                    Mode::Backoff
                } else {
                    Mode::Normal
                },
                cause: m["cause"].as_str().unwrap_or_default().to_string(),
                reply: m["reply"].as_str().map(str::to_string),
            })
            .collect();
        changes.sort_by_key(|c| c.at_ms);
        if !changes.is_empty() {
            out.insert(name.to_string(), changes);
        }
    }
    out
}

/// The scenario on the live clock: it starts now, and every duration in it (length, traffic
/// starts, incident times, expectation windows) is multiplied by `live_scale`, as are message
/// counts; rates stay as written. The MTA config is not scaled.
pub fn scaled(l: &Loaded, now_ms: i64) -> Loaded {
    let k = l.scenario.live_scale.unwrap_or(1.0);
    let sc = |s: &str| -> String {
        match mta::config::values::parse_interval(s) {
            Ok(d) => format!("{}s", ((d.as_secs_f64() * k).round() as u64).max(1)),
            Err(_) => s.to_string(),
        }
    };
    let mut out = l.clone();
    out.start_ms = now_ms;
    out.duration = Duration::from_secs_f64((l.duration.as_secs_f64() * k).max(1.0));
    for t in &mut out.scenario.traffic {
        t.messages = ((t.messages as f64) * k).round().max(1.0) as u64;
        if t.start != "0" && !t.start.is_empty() {
            t.start = sc(&t.start);
        }
    }
    for i in &mut out.scenario.incidents {
        i.at = sc(&i.at);
        i.lasts = sc(&i.lasts);
    }
    for e in &mut out.scenario.expectations {
        e.scale_windows(&sc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_follow_rfc4180() {
        let rows = csv_rows("a,b,c\r\n1,\"x, \"\"y\"\"\",\"two\nlines\"\n");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], vec!["1", "x, \"y\"", "two\nlines"]);
    }

    #[test]
    fn acct_times_parse() {
        assert_eq!(acct_time("1970-01-01 00:00:10+0000"), Some(10_000));
        assert_eq!(acct_time("garbage"), None);
    }

    #[test]
    fn sending_addresses_map_to_loopback() {
        let a: IpAddr = "203.0.113.11".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            loopback_for(a, 0),
            IpAddr::V4(Ipv4Addr::new(127, 2, 113, 11))
        );
        let l: IpAddr = "127.0.0.151".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(loopback_for(l, 0), l);
    }
}
