//! The injector: where it connects (a listener and client address the config's `<source>` rules
//! let relay) and each traffic stream's messages sent there over SMTP, counting what the MTA took
//! and what it refused (with its replies), so a stream whose mail is refused fails the run with
//! the reason.

use crate::scenario::Traffic;
use crate::traffic::{BodyPool, Generator, Prepared};
use mta::config::model::SourceSelector;
use mta::config::values::{parse_interval, parse_rate};
use mta::config::Config;
use mta::net::Net;
use mta::smtp::client::{Client, Timeouts};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the injector connects: the client address it connects from and the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The client address (a `<source>` network's first address, or 127.0.0.1).
    pub client: IpAddr,
    /// The listener.
    pub listener: SocketAddr,
    /// Why, for the notes (empty when it is the default: 127.0.0.1 to the first listener).
    pub why: String,
}

/// An unspecified listener address (`0/0:25`) is reached on 127.0.0.1.
pub fn reachable(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port())
    } else {
        a
    }
}

/// Picks a listener and client address that `cfg`'s `<source>` rules let relay (and take
/// `X-Virtual-MTA` from, when `needs_header`). `loopback_only`: live runs connect from 127.0.0.1.
pub fn injection(
    cfg: &Config,
    needs_header: bool,
    loopback_only: bool,
) -> Result<Injection, String> {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut listeners: Vec<(SocketAddr, Option<&str>)> = cfg
        .listeners
        .iter()
        .map(|l| (reachable(l.addr), l.source.as_deref()))
        .collect();
    if listeners.is_empty() {
        listeners.push((SocketAddr::new(lo, 25), None));
    }
    let mut clients = vec![lo];
    if !loopback_only {
        for s in &cfg.sources {
            if let SourceSelector::Net(n) = &s.selector {
                if n.prefix_len() > 0 {
                    if let Some(ip) = n.hosts().next() {
                        if !clients.contains(&ip) {
                            clients.push(ip);
                        }
                    }
                }
            }
        }
    }
    let mut no_header = None;
    for (addr, source) in &listeners {
        for ip in &clients {
            let eff = cfg.source_settings(Some(*ip), *source);
            if !eff.bool("smtp-service") || !eff.bool("always-allow-relaying") {
                continue;
            }
            let why = if (*addr, *ip) == (listeners[0].0, lo) {
                String::new()
            } else {
                format!("the injector connects from {ip} to {addr}, where the config's <source> rules let it relay")
            };
            let found = Injection {
                client: *ip,
                listener: *addr,
                why,
            };
            if !needs_header || eff.bool("process-x-virtual-mta") {
                return Ok(found);
            }
            no_header.get_or_insert(found);
        }
    }
    if let Some(i) = no_header {
        return Err(format!(
            "the traffic names virtual MTAs (X-Virtual-MTA), but the only source that may relay ({} to {}) does not have `process-x-virtual-mta yes`",
            i.client, i.listener
        ));
    }
    let ls: Vec<String> = listeners.iter().map(|(a, _)| a.to_string()).collect();
    Err(format!(
        "no listener ({}) lets the injector relay from {}: add a <source> for the injector's address with `always-allow-relaying yes` (and `process-x-virtual-mta yes`){}",
        ls.join(", "),
        clients.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" or "),
        if loopback_only { " for 127.0.0.1" } else { "" }
    ))
}

/// Distinct refusal replies kept per stream (the rest are counted under the last kept).
const MAX_REPLIES: usize = 20;

/// What one stream's injection achieved.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamStats {
    /// The stream's name.
    pub name: String,
    /// Messages the stream was to send.
    pub planned: u64,
    /// Messages the MTA took (250 after the data).
    pub accepted: u64,
    /// Messages the MTA refused (at MAIL, every RCPT, or after the data).
    pub refused: u64,
    /// Refusals by reply text, most frequent first when reported.
    pub replies: BTreeMap<String, u64>,
    /// Connection problems (first few).
    pub errors: Vec<String>,
}

impl StreamStats {
    /// The most frequent refusal reply and its count.
    pub fn top_reply(&self) -> Option<(&str, u64)> {
        self.replies
            .iter()
            .max_by_key(|(r, n)| (**n, std::cmp::Reverse(*r)))
            .map(|(r, n)| (r.as_str(), *n))
    }

    fn refused(&mut self, reply: String) {
        self.refused += 1;
        if self.replies.len() < MAX_REPLIES || self.replies.contains_key(&reply) {
            *self.replies.entry(reply).or_insert(0) += 1;
        } else if let Some(mut last) = self.replies.last_entry() {
            *last.get_mut() += 1;
        }
    }

    fn error(&mut self, e: String) {
        if self.errors.len() < 10 {
            self.errors.push(e);
        }
    }
}

/// Every stream's stats, in scenario order.
pub type Stats = Arc<Mutex<Vec<StreamStats>>>;

/// How a stream is sent.
pub struct Plan<'a> {
    /// The stream.
    pub traffic: &'a Traffic,
    /// Its index in the scenario (and in [`Stats`]).
    pub index: usize,
    /// Run seed.
    pub seed: u64,
    /// Message count multiplier.
    pub volume: f64,
    /// Where to connect.
    pub to: &'a Injection,
}

/// Starts one stream; its counts go to `stats[plan.index]` (which must exist).
pub fn spawn(
    plan: Plan<'_>,
    net: Arc<dyn Net>,
    bodies: Arc<BodyPool>,
    stats: Stats,
) -> tokio::task::JoinHandle<()> {
    let t = plan.traffic.clone();
    let n = ((t.messages as f64) * plan.volume).round().max(1.0) as u64;
    let start = parse_interval(&t.start).map_or(0, |d| d.as_millis() as u64);
    // A smaller volume keeps the stream's time profile: fewer messages, spread as widely.
    let gap_ms = t
        .rate
        .as_deref()
        .and_then(|r| parse_rate(r).ok())
        .and_then(|r| r.count.map(|c| r.per.as_millis() as f64 / c as f64))
        .unwrap_or(0.0)
        / plan.volume.min(1.0);
    let mut generator = Generator::new(&t, plan.seed, n, bodies);
    let (client_ip, addr, i) = (plan.to.client, plan.to.listener, plan.index);
    let with = move |f: &mut dyn FnMut(&mut StreamStats)| {
        if let Ok(mut v) = stats.lock() {
            if let Some(s) = v.get_mut(i) {
                f(s);
            }
        }
    };
    with(&mut |s| s.planned = n);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(start)).await;
        let mut client: Option<Client> = None;
        for i in 0..generator.total() {
            if client.is_none() {
                match connect(&*net, client_ip, addr).await {
                    Ok(c) => client = Some(c),
                    Err(e) => return with(&mut |s| s.error(e.clone())),
                }
            }
            let Prepared {
                rcpts,
                body,
                dot_free,
            } = generator.message(i);
            let from = t.mail_from.as_deref().unwrap_or(&t.sender);
            let sent = match client.as_mut() {
                Some(c) => c.send_owned(from, &rcpts, body, dot_free).await,
                None => continue,
            };
            match sent {
                Ok(tx) if tx.data.as_ref().is_some_and(|r| r.is_positive()) => {
                    with(&mut |s| s.accepted += 1)
                }
                Ok(tx) => {
                    let reply = (0..rcpts.len())
                        .map(|k| tx.outcome(k))
                        .find(|r| !r.is_positive())
                        .unwrap_or(&tx.mail)
                        .to_string();
                    with(&mut |s| s.refused(reply.clone()));
                }
                Err(e) => {
                    with(&mut |s| s.error(format!("message {i}: {e}")));
                    client = None;
                }
            }
            if gap_ms > 0.0 {
                tokio::time::sleep(Duration::from_micros((gap_ms * 1000.0) as u64)).await;
            }
        }
        if let Some(c) = client {
            c.quit().await;
        }
    })
}

async fn connect(
    net: &dyn Net,
    from: std::net::IpAddr,
    addr: std::net::SocketAddr,
) -> Result<Client, String> {
    let conn = net
        .connect(Some(from), addr)
        .await
        .map_err(|e| format!("cannot connect to the MTA at {addr}: {e}"))?;
    let mut c = match Client::connect(conn.stream, Timeouts::default()).await {
        Ok(Ok(c)) => c,
        Ok(Err(r)) => return Err(format!("the MTA at {addr} refused the session: {r}")),
        Err(e) => return Err(format!("no banner from the MTA at {addr}: {e}")),
    };
    c.ehlo("injector.sim")
        .await
        .map_err(|e| format!("EHLO to the MTA at {addr}: {e}"))?;
    Ok(c)
}
