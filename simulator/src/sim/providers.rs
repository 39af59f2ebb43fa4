//! The providers of the world started: each profile's MX hosts listening on their own addresses
//! (with STARTTLS where the profile offers it), their MX and A records in the simulated DNS; in
//! live runs the listeners themselves refuse or hold connections during outages.

use super::mx_addr;
use crate::dkim_check::DkimChecker;
use crate::isp::server::{Backchannel, MxHost};
use crate::isp::Engine as Isp;
use crate::scenario::{IncidentKind, Loaded};
use crate::traffic::BodyPool;
use mta::clock::Clock;
use mta::dns::{Mx, StaticResolver};
use mta::net::Net;
use mta::smtp::server::{serve, ServerOptions};
use mta::spool::BodyBuffers;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// What the providers are started with.
pub(super) struct World<'a> {
    /// The scenario and its profiles.
    pub(super) l: &'a Loaded,
    /// Providers offer no STARTTLS (`--no-tls`).
    pub(super) no_tls: bool,
    /// The network they listen on.
    pub(super) net: &'a Arc<dyn Net>,
    /// Their SMTP port.
    pub(super) smtp_port: u16,
    /// The simulated DNS their MX and A records go into.
    pub(super) dns: &'a StaticResolver,
    /// A live run.
    pub(super) live: bool,
    /// Their SPF/DKIM/DMARC checks.
    pub(super) dkim: &'a DkimChecker,
    /// Body buffers handed back to the traffic.
    pub(super) bodies: &'a Arc<BodyPool>,
    /// What they send back (DSNs, complaints) and the chaos rules.
    pub(super) back: &'a Arc<Backchannel>,
    /// The clock.
    pub(super) clock: Clock,
}

/// Providers by name, and each one's MX addresses.
type Started = (BTreeMap<String, Isp>, BTreeMap<String, Vec<IpAddr>>);

/// Starts every provider of the scenario.
pub(super) async fn start(w: World<'_>) -> Result<Started, String> {
    let World {
        l,
        no_tls,
        net,
        smtp_port,
        dns,
        live,
        dkim,
        bodies,
        back,
        clock,
    } = w;
    let s = &l.scenario;
    let mx_names: Vec<String> = l
        .profiles
        .iter()
        .flat_map(|p| p.mx.iter().map(|m| m.host.clone()))
        .collect();
    let tls = match no_tls {
        true => None,
        false => Some(mta::smtp::client::self_signed_acceptor(&mx_names)?),
    };
    // The world: every provider's MX hosts on their own addresses, with DNS for them.
    let mut isps: BTreeMap<String, Isp> = BTreeMap::new();
    let mut addr_of: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for (pi, p) in l.profiles.iter().enumerate() {
        let isp = Isp::new(p.clone());
        let mut ips = Vec::new();
        // Live runs have no in-memory network to switch off: the provider's own listeners close
        // new connections at once (`refused`) or hold them silent (`unreachable`) in the window.
        let outages: Arc<Vec<(i64, i64, bool)>> = Arc::new(if live {
            s.incidents
                .iter()
                .filter(|i| i.provider == p.name)
                .filter_map(|i| {
                    let unreachable = match i.kind {
                        IncidentKind::Unreachable => true,
                        IncidentKind::Refused => false,
                        _ => return None,
                    };
                    let (from, until) = crate::expect::incident_window(l, i);
                    Some((from, until, unreachable))
                })
                .collect()
        } else {
            Vec::new()
        });
        for (i, mx) in p.mx.iter().enumerate() {
            let ip = IpAddr::V4(mx_addr(pi, i));
            ips.push(ip);
            dns.edit(|z| {
                z.ip.insert(mx.host.clone(), vec![ip]);
            });
            let mut listener = net
                .listen(SocketAddr::new(ip, smtp_port))
                .await
                .map_err(|e| format!("{ip}:{smtp_port}: {e}"))?;
            let host = mx.host.clone();
            let tls = tls.clone().filter(|_| p.tls.offered);
            let outages = outages.clone();
            let pool: Arc<dyn BodyBuffers> = bodies.clone();
            let mx_host = MxHost {
                isp: isp.clone(),
                dkim: dkim.clone(),
                clock,
                back: back.clone(),
                local: ip,
                host: host.clone(),
                bodies: Some(pool),
            };
            tokio::spawn(async move {
                let opts = ServerOptions {
                    host_name: host.clone(),
                    max_message_size: None,
                    tls,
                    ..ServerOptions::default()
                };
                while let Ok(c) = listener.accept().await {
                    let now = clock.now_ms();
                    if let Some(&(_, until, unreachable)) =
                        outages.iter().find(|(f, u, _)| now >= *f && now < *u)
                    {
                        if unreachable {
                            let stream = c.stream;
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis((until - now) as u64))
                                    .await;
                                drop(stream);
                            });
                        }
                        continue;
                    }
                    let mut h = mx_host.handler(c.peer.ip());
                    let o = opts.clone();
                    tokio::spawn(Box::pin(async move { serve(c.stream, &mut h, &o).await }));
                }
            });
        }
        for d in &p.domains {
            let mx: Vec<Mx> =
                p.mx.iter()
                    .map(|m| Mx {
                        preference: m.preference,
                        host: m.host.clone(),
                    })
                    .collect();
            dns.edit(|z| {
                z.mx.insert(d.clone(), mx);
            });
        }
        addr_of.insert(p.name.clone(), ips);
        isps.insert(p.name.clone(), isp);
    }
    Ok((isps, addr_of))
}
