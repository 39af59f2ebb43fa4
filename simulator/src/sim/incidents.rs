//! The incident timeline put in place: replies a provider gives for a while (overrides),
//! unreachable or refusing hosts, DNS failures, chaos at the providers' side (drops, slow
//! replies, blocklisted IPs) and complaint-rate changes.

use crate::isp::server::{Backchannel, ChaosKind, ChaosRule};
use crate::isp::{Engine as Isp, Override};
use crate::scenario::{IncidentKind, Loaded};
use mta::config::values::parse_interval;
use mta::dns::StaticResolver;
use mta::net::SimNet;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// What incidents act on.
pub(super) struct Targets<'a> {
    /// Providers by name.
    pub(super) isps: &'a BTreeMap<String, Isp>,
    /// Each provider's MX addresses.
    pub(super) addr_of: &'a BTreeMap<String, Vec<IpAddr>>,
    /// Where providers' late mail and chaos rules live.
    pub(super) back: &'a Arc<Backchannel>,
    /// The simulated network (unreachable and refused hosts).
    pub(super) sim_net: &'a SimNet,
    /// The simulated DNS.
    pub(super) dns: &'a StaticResolver,
    /// The live DNS server, in live runs.
    pub(super) dns_server: &'a Option<Arc<crate::dns::DnsServer>>,
    /// A live run (listeners handle unreachable and refused themselves).
    pub(super) live: bool,
}

/// Schedules every incident of the scenario.
pub(super) fn schedule(l: &Loaded, t: &Targets<'_>) {
    let Targets {
        isps,
        addr_of,
        back,
        sim_net,
        dns,
        dns_server,
        live,
    } = t;
    let s = &l.scenario;
    for inc in &s.incidents {
        let (from, until) = crate::expect::incident_window(l, inc);
        let (at, lasts) = (from - l.start_ms, until - from);
        let ips = addr_of.get(&inc.provider).cloned().unwrap_or_default();
        let chaos = |kind: ChaosKind| {
            if let Ok(mut v) = back.chaos.lock() {
                v.push(ChaosRule {
                    provider: inc.provider.clone(),
                    from_ms: from,
                    until_ms: until,
                    kind,
                });
            }
        };
        match &inc.kind {
            IncidentKind::Reply {
                reply,
                phase,
                share,
                disconnect,
            } => {
                if let Some(isp) = isps.get(&inc.provider) {
                    isp.add_override(Override {
                        response: crate::profile::Response {
                            reply: reply.clone(),
                            at: *phase,
                            disconnect: *disconnect,
                        },
                        share: *share,
                        from_ms: from,
                        until_ms: until,
                    });
                }
            }
            IncidentKind::Unreachable | IncidentKind::Refused if *live => {
                // Handled by the provider's listeners (see above).
            }
            IncidentKind::Unreachable | IncidentKind::Refused => {
                let net = SimNet::clone(sim_net);
                let unreachable = matches!(inc.kind, IncidentKind::Unreachable);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(at as u64)).await;
                    for ip in &ips {
                        if unreachable {
                            net.set_unreachable(*ip, true)
                        } else {
                            net.set_refused(*ip, true)
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(lasts as u64)).await;
                    for ip in &ips {
                        if unreachable {
                            net.set_unreachable(*ip, false)
                        } else {
                            net.set_refused(*ip, false)
                        }
                    }
                });
            }
            IncidentKind::DnsFailure { failure } => {
                let domains = l
                    .profiles
                    .iter()
                    .find(|p| p.name == inc.provider)
                    .map(|p| p.domains.clone())
                    .unwrap_or_default();
                let (failure, lasts) = (failure.clone(), Duration::from_millis(lasts as u64));
                // Live: the real DNS server fails the names; simulated: the in-process zones do.
                let server = Option::clone(dns_server);
                let dns = StaticResolver::clone(dns);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(at as u64)).await;
                    if let Some(server) = server {
                        let f = match failure.as_str() {
                            "nxdomain" => crate::dns::Failure::NxDomain,
                            "timeout" => crate::dns::Failure::Timeout,
                            _ => crate::dns::Failure::ServFail,
                        };
                        for d in &domains {
                            server.inject(d, f, Some(lasts));
                        }
                        return;
                    }
                    dns.edit(|z| {
                        for d in &domains {
                            let e = match failure.as_str() {
                                "nxdomain" => mta::dns::DnsError::NxDomain(d.clone()),
                                "timeout" => mta::dns::DnsError::Timeout(d.clone()),
                                _ => mta::dns::DnsError::ServFail(d.clone()),
                            };
                            z.failures.insert(d.clone(), e);
                        }
                    });
                    tokio::time::sleep(lasts).await;
                    dns.edit(|z| {
                        for d in &domains {
                            z.failures.remove(d);
                        }
                    });
                });
            }
            IncidentKind::Drop { share } => chaos(ChaosKind::Drop { share: *share }),
            IncidentKind::Slow { share, delay } => chaos(ChaosKind::Slow {
                share: *share,
                delay: parse_interval(delay).unwrap_or(Duration::from_secs(30)),
            }),
            IncidentKind::Blocklist { ip, reply } => match ip.parse() {
                Ok(ip) => chaos(ChaosKind::Blocklist {
                    ip,
                    reply: reply.clone(),
                }),
                Err(_) => tracing::warn!(%ip, "blocklist incident: not an address"),
            },
            IncidentKind::ComplaintRate { share } => {
                if let Ok(mut v) = back.complaint_rates.lock() {
                    v.push((inc.provider.clone(), from, until, *share));
                }
            }
        }
    }
}
