//! The live world: every provider of the profiles on its own loopback MX addresses over real TCP,
//! and the DNS server with their zones plus what an MTA config publishes (A and PTR for its sending
//! addresses, SPF, DKIM keys from its `domain-key` files, DMARC). `mtasim world up` runs it so any
//! MTA can be pointed at it. What the sending side publishes (also without a config: sending
//! domains and addresses from the command line, generated DKIM keys) is `crate::world_auth`'s.

use crate::dkim_check::DkimChecker;
use crate::dns::{DnsServer, Zones};
use crate::isp::server::{Backchannel, MxHost};
use crate::isp::{Engine as Isp, EventKind};
use crate::profile::Profile;
use crate::world_auth::{Published, SenderOptions};
use mta::clock::Clock;
use mta::net::{LiveNet, Net};
use mta::smtp::server::{serve, ServerOptions};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How to build the world.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    /// The provider profiles directory.
    pub profiles: PathBuf,
    /// An MTA config whose sending addresses and DKIM keys go into DNS.
    pub config: Option<PathBuf>,
    /// Where the DNS server listens (port 0 picks one).
    pub dns: SocketAddr,
    /// The port every MX host listens on (0: try 25, then 2525).
    pub smtp_port: u16,
    /// Where providers send late DSNs and complaints (the MTA's inbound listener), if anywhere.
    pub mta: Option<SocketAddr>,
    /// Sending domains, addresses and keys from the command line (beside or instead of `config`).
    pub senders: SenderOptions,
}

impl Default for WorldOptions {
    fn default() -> WorldOptions {
        WorldOptions {
            profiles: PathBuf::from("isp-profiles"),
            config: None,
            dns: SocketAddr::from(([127, 0, 0, 1], 5353)),
            smtp_port: 0,
            mta: None,
            senders: SenderOptions::default(),
        }
    }
}

/// One provider as the world runs it.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderInfo {
    /// Short name.
    pub name: String,
    /// Its domains.
    pub domains: Vec<String>,
    /// MX hosts: name, preference, address.
    pub mx: Vec<MxInfo>,
}

/// One MX host.
#[derive(Debug, Clone, Serialize)]
pub struct MxInfo {
    /// Host name.
    pub host: String,
    /// MX preference.
    pub preference: u16,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Totals of one provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProviderTotals {
    /// Connections opened.
    pub connections: u64,
    /// Messages accepted.
    pub messages: u64,
    /// Recipients accepted.
    pub recipients: u64,
    /// 4xx replies.
    pub deferred: u64,
    /// 5xx replies.
    pub rejected: u64,
    /// Messages whose DKIM signature the provider verified.
    pub dkim_verified: u64,
    /// Every distinct 4xx/5xx reply given, with how often, most frequent first.
    pub replies: Vec<ReplyCount>,
}

/// How often one reply was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplyCount {
    /// The reply (code, enhanced code, text).
    pub reply: String,
    /// Times given.
    pub count: u64,
}

/// The world's totals: per provider and per sending address (the connecting peer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorldTotals {
    /// By provider name.
    pub providers: BTreeMap<String, ProviderTotals>,
    /// By sending address (as the providers saw it).
    pub ips: BTreeMap<IpAddr, ProviderTotals>,
}

#[derive(Default)]
struct Counting {
    t: ProviderTotals,
    replies: BTreeMap<String, u64>,
}

impl Counting {
    fn add(&mut self, kind: &EventKind) {
        let t = &mut self.t;
        match kind {
            EventKind::Connect { .. } => t.connections += 1,
            EventKind::Accepted {
                rcpts, dkim_pass, ..
            } => {
                t.messages += 1;
                t.recipients += *rcpts as u64;
                t.dkim_verified += *dkim_pass as u64;
            }
            EventKind::Refused(r) => {
                if r.reply.starts_with('4') {
                    t.deferred += 1
                } else {
                    t.rejected += 1
                }
                *self
                    .replies
                    .entry(r.reply.trim_end().to_string())
                    .or_default() += 1;
            }
            _ => {}
        }
    }

    fn done(self) -> ProviderTotals {
        let mut replies: Vec<ReplyCount> = self
            .replies
            .into_iter()
            .map(|(reply, count)| ReplyCount { reply, count })
            .collect();
        replies.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reply.cmp(&b.reply)));
        ProviderTotals { replies, ..self.t }
    }
}

/// The running world.
pub struct World {
    /// The DNS server.
    pub dns: DnsServer,
    /// The providers.
    pub providers: Vec<ProviderInfo>,
    /// What the sending side publishes (addresses, mapping, keys, records).
    pub published: Published,
    isps: BTreeMap<String, Isp>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The loopback address of MX host `i` of provider `p` (as in simulated runs).
pub fn mx_ip(p: usize, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 100 + p as u8, i as u8 + 1, 1)
}

/// The zones of `profiles` and of an MTA config.
pub fn zones(profiles: &[Profile], cfg: Option<&mta::config::Config>) -> Result<Zones, String> {
    let mut z = Zones::default();
    for (pi, p) in profiles.iter().enumerate() {
        for (i, mx) in p.mx.iter().enumerate() {
            z.add_a(&mx.host, mx_ip(pi, i));
            for d in &p.domains {
                z.add_mx(d, mx.preference, &mx.host);
            }
        }
    }
    let Some(cfg) = cfg else { return Ok(z) };
    // Forward-confirmed reverse DNS for every sending address with a host name.
    let mut ips: Vec<Ipv4Addr> = Vec::new();
    let hosts = cfg
        .source_hosts
        .iter()
        .chain(cfg.vmtas.values().flat_map(|v| v.source_hosts.iter()));
    for h in hosts {
        if let IpAddr::V4(ip) = h.net.addr() {
            ips.push(ip);
            if let Some(name) = &h.host_name {
                z.add_a(name, ip);
                z.add_ptr(ip, name);
            }
        }
    }
    // SPF, DKIM and DMARC for every signing domain.
    let keys = cfg.all_domain_keys();
    let mut domains = BTreeSet::new();
    for k in keys {
        if k.domain == "*" {
            continue;
        }
        let txt = mta::dkim::keys::public_txt(&k.path).map_err(|e| e.to_string())?;
        z.add_txt(&format!("{}._domainkey.{}", k.selector, k.domain), &txt);
        domains.insert(k.domain.to_ascii_lowercase());
    }
    let spf = std::iter::once("v=spf1".to_string())
        .chain(ips.iter().map(|i| format!("ip4:{i}")))
        .chain(std::iter::once("-all".to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    for d in &domains {
        z.add_txt(d, &spf);
        z.add_txt(&format!("_dmarc.{d}"), "v=DMARC1; p=none");
    }
    Ok(z)
}

async fn bind_all(ips: &[IpAddr], port: u16) -> std::io::Result<Vec<Box<dyn mta::net::Listener>>> {
    let mut out = Vec::new();
    let mut port = port;
    for ip in ips {
        let l = LiveNet.listen(SocketAddr::new(*ip, port)).await?;
        port = l.local_addr().port();
        out.push(l);
    }
    Ok(out)
}

impl World {
    /// Builds and starts the world.
    pub async fn start(opts: &WorldOptions) -> Result<World, String> {
        let profiles = crate::profile::load_dir(&opts.profiles).map_err(|e| e.to_string())?;
        let cfg = match &opts.config {
            Some(p) => Some(
                mta::config::load(p)
                    .into_result()
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let published = crate::world_auth::plan(cfg.as_ref(), &opts.senders)?;
        let mut zones = zones(&profiles, None)?;
        published.add_to(&mut zones);
        let dns = DnsServer::start(opts.dns, &zones)
            .await
            .map_err(|e| e.to_string())?;
        // The providers ask the world's DNS server for DKIM keys, SPF and DMARC, as real ones do.
        let dkim = DkimChecker::live(dns.addr())?;
        let clock = Clock::live();
        let back = Arc::new(Backchannel {
            net: Arc::new(LiveNet),
            seed: 1,
            mta_addr: opts
                .mta
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            // The config's local domains, and the command line's sending domains (an MTA without
            // a PowerMTA config takes its bounces and complaints there).
            mta_domains: match (&cfg, opts.mta) {
                (Some(c), Some(_)) => mta::receive::local_domains(c),
                _ => BTreeSet::new(),
            }
            .into_iter()
            .chain(
                opts.senders
                    .domains
                    .iter()
                    .filter(|_| opts.mta.is_some())
                    .map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
            )
            .collect(),
            sink_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            fbl_address: None,
            complaint_rates: Mutex::new(Vec::new()),
            chaos: Mutex::new(Vec::new()),
        });
        let mx_names: Vec<String> = profiles
            .iter()
            .flat_map(|p| p.mx.iter().map(|m| m.host.clone()))
            .collect();
        let tls = mta::smtp::client::self_signed_acceptor(&mx_names)?;
        let mut providers = Vec::new();
        let mut isps = BTreeMap::new();
        let mut tasks = Vec::new();
        for (pi, p) in profiles.iter().enumerate() {
            let isp = Isp::new(p.clone());
            let ips: Vec<IpAddr> = (0..p.mx.len()).map(|i| IpAddr::V4(mx_ip(pi, i))).collect();
            let listeners = if opts.smtp_port == 0 {
                match bind_all(&ips, 25).await {
                    Ok(l) => l,
                    Err(_) => bind_all(&ips, 2525)
                        .await
                        .map_err(|e| format!("cannot listen for {} on 25 or 2525: {e}", p.name))?,
                }
            } else {
                bind_all(&ips, opts.smtp_port).await.map_err(|e| {
                    format!(
                        "cannot listen for {} on port {}: {e}",
                        p.name, opts.smtp_port
                    )
                })?
            };
            let mut mx = Vec::new();
            for (i, mut listener) in listeners.into_iter().enumerate() {
                let host = p.mx[i].host.clone();
                let addr = listener.local_addr();
                mx.push(MxInfo {
                    host: host.clone(),
                    preference: p.mx[i].preference,
                    addr,
                });
                let mx_host = MxHost {
                    isp: isp.clone(),
                    dkim: dkim.clone(),
                    clock,
                    back: back.clone(),
                    local: addr.ip(),
                    host: host.clone(),
                    bodies: None,
                };
                let tls = p.tls.offered.then(|| tls.clone());
                tasks.push(tokio::spawn(async move {
                    let o = ServerOptions {
                        host_name: host.clone(),
                        tls,
                        ..ServerOptions::default()
                    };
                    while let Ok(c) = listener.accept().await {
                        let mut h = mx_host.handler(c.peer.ip());
                        let o = o.clone();
                        tokio::spawn(Box::pin(async move { serve(c.stream, &mut h, &o).await }));
                    }
                }));
            }
            providers.push(ProviderInfo {
                name: p.name.clone(),
                domains: p.domains.clone(),
                mx,
            });
            isps.insert(p.name.clone(), isp);
        }
        Ok(World {
            dns,
            providers,
            published,
            isps,
            tasks,
        })
    }

    /// Per-provider totals so far.
    pub fn totals(&self) -> BTreeMap<String, ProviderTotals> {
        self.all_totals().providers
    }

    /// Totals so far per provider and per sending address, with the replies given.
    pub fn all_totals(&self) -> WorldTotals {
        let mut providers = BTreeMap::new();
        let mut ips: BTreeMap<IpAddr, Counting> = BTreeMap::new();
        for (name, isp) in &self.isps {
            let mut c = Counting::default();
            for e in isp.events() {
                c.add(&e.kind);
                ips.entry(e.ip).or_default().add(&e.kind);
            }
            providers.insert(name.clone(), c.done());
        }
        WorldTotals {
            providers,
            ips: ips.into_iter().map(|(ip, c)| (ip, c.done())).collect(),
        }
    }

    /// The world as one JSON object: the DNS address and every provider's domains and MX hosts.
    pub fn to_json(&self) -> serde_json::Value {
        let mapped: Vec<serde_json::Value> = self
            .published
            .mapping()
            .iter()
            .map(|(from, to)| serde_json::json!({"from": from.to_string(), "to": to.to_string()}))
            .collect();
        serde_json::json!({
            "dns": self.dns.addr().to_string(),
            "providers": self.providers,
            "sender_ips": self.published.ips,
            "mapped_ips": mapped,
            "sender_domains": self.published.domains,
            "dkim_keys": self.published.dkim,
            "records": self.published.records,
        })
    }

    /// The sending side's addresses, domains and keys, for people.
    fn describe_published(&self) -> String {
        let p = &self.published;
        let mut o = String::new();
        if p.ips.is_empty() && p.domains.is_empty() {
            return o;
        }
        if !p.ips.is_empty() {
            o.push_str("\nSending addresses (A + PTR, in SPF):\n");
            for ip in &p.ips {
                o.push_str(&format!(
                    "    {:<16} {}{}\n",
                    ip.address.to_string(),
                    ip.host.as_deref().unwrap_or("(no host name)"),
                    ip.original
                        .map(|x| format!("   (mapped from {x})"))
                        .unwrap_or_default()
                ));
            }
            if !p.mapping().is_empty() {
                o.push_str(
                    "    Mapped addresses: providers listen on loopback, so send from the loopback \
                     address (e.g. bind the MTA's source address to it).\n",
                );
            }
        }
        let spf = p
            .records
            .iter()
            .find(|r| p.domains.first() == Some(&r.name))
            .map(|r| r.value.clone())
            .unwrap_or_default();
        let dmarc = p
            .records
            .iter()
            .find(|r| r.name.starts_with("_dmarc."))
            .map(|r| r.value.clone())
            .unwrap_or_default();
        if !p.domains.is_empty() {
            o.push_str(&format!(
                "\nSending domains: {}\n    SPF   \"{spf}\"\n    DMARC \"{dmarc}\"\n",
                p.domains.join(", ")
            ));
        }
        if !p.dkim.is_empty() {
            o.push_str("\nDKIM keys (sign with the private key file, d=DOMAIN s=SELECTOR):\n");
            for k in &p.dkim {
                o.push_str(&format!(
                    "    d={} s={}  {}  ({})\n",
                    k.domain,
                    k.selector,
                    k.path.display(),
                    k.source
                ));
            }
        }
        o
    }

    /// The totals for people: a table per provider, then per sending address, each row with its
    /// most frequent 4xx/5xx replies under it.
    pub fn describe_totals(&self, t: &WorldTotals) -> String {
        const TOP: usize = 5;
        let mapped: BTreeMap<IpAddr, IpAddr> = self
            .published
            .mapping()
            .into_iter()
            .map(|(from, to)| (to, from))
            .collect();
        let mut o = String::new();
        let mut table = |title: &str, rows: Vec<(String, &ProviderTotals)>| {
            o.push_str(&format!(
                "\n{:<30} {:>11} {:>9} {:>10} {:>9} {:>9} {:>13}\n",
                title,
                "connections",
                "messages",
                "recipients",
                "deferred",
                "rejected",
                "dkim-verified"
            ));
            if rows.is_empty() {
                o.push_str("    (none)\n");
            }
            for (name, t) in rows {
                o.push_str(&format!(
                    "{:<30} {:>11} {:>9} {:>10} {:>9} {:>9} {:>13}\n",
                    name,
                    t.connections,
                    t.messages,
                    t.recipients,
                    t.deferred,
                    t.rejected,
                    t.dkim_verified
                ));
                for r in t.replies.iter().take(TOP) {
                    o.push_str(&format!("    {:>6} x {}\n", r.count, r.reply));
                }
                if t.replies.len() > TOP {
                    o.push_str(&format!(
                        "    ... and {} more distinct replies\n",
                        t.replies.len() - TOP
                    ));
                }
            }
        };
        table(
            "provider",
            t.providers.iter().map(|(n, t)| (n.clone(), t)).collect(),
        );
        table(
            "sending IP",
            t.ips
                .iter()
                .map(|(ip, t)| {
                    let name = match mapped.get(ip) {
                        Some(from) => format!("{ip} ({from})"),
                        None => ip.to_string(),
                    };
                    (name, t)
                })
                .collect(),
        );
        o
    }

    /// The world and its totals as the one JSON document `world up --format json` prints.
    pub fn final_json(&self, t: &WorldTotals) -> serde_json::Value {
        serde_json::json!({ "world": self.to_json(), "totals": t })
    }

    /// How to point an MTA at the world, for people.
    pub fn describe(&self) -> String {
        let mut o = format!("DNS server: {} (UDP and TCP)\n\n", self.dns.addr());
        let mut ports = BTreeSet::new();
        for p in &self.providers {
            o.push_str(&format!("{} ({})\n", p.name, p.domains.join(", ")));
            for m in &p.mx {
                o.push_str(&format!(
                    "    MX {:>3} {:<40} {}\n",
                    m.preference, m.host, m.addr
                ));
                ports.insert(m.addr.port());
            }
        }
        o.push_str(&self.describe_published());
        o.push_str(&format!(
            "\nPoint an MTA at it: resolve through {} (our config: `name-server {}`)",
            self.dns.addr(),
            self.dns.addr()
        ));
        if !ports.contains(&25) {
            let p: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
            o.push_str(&format!(
                " and deliver to port {} (our config: `default-smtp-port {}` in <domain *>)",
                p.join("/"),
                p.join("/")
            ));
        }
        o.push_str(".\n");
        o
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
