//! Scenario runs: the world (providers on their MX addresses, DNS zones), the MTA from the
//! scenario's config, the traffic streams and the incident timeline.
//!
//! - Simulated (default): the MTA engine in-process, everything on one current-thread tokio runtime
//!   with the clock paused, over the in-memory network. Hours pass in seconds and the same scenario
//!   and seed give the same accounting log.
//! - Live: the same world over real TCP on loopback with a real hickory DNS server, on the real
//!   clock, and the MTA as its own process (see [`crate::live`]).

use crate::expect::{check, Observed};
use crate::isp::server::{Backchannel, SenderSink};
use crate::live::LiveOptions;
use crate::report::Report;
use crate::scenario::Loaded;
use crate::traffic::BodyPool;

mod drain;
mod incidents;
mod mta_run;
mod progress;
mod providers;
mod record_sink;
mod report_build;

use mta::clock::Clock;
use mta::dns::{Mx, StaticResolver};
use mta::net::{LiveNet, Net, SimNet};
use mta::smtp::server::{serve, ServerOptions};
use mta_run::Mta;
use report_build::{build_report, RunInfo};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Bytes of message bodies the simulated spool keeps in memory; past it, bodies go to a temporary
/// directory until delivered (a backlog during an incident need not fit in memory).
const SPOOL_MEMORY_BUDGET: u64 = 256 << 20;

/// Queue depth per destination domain at a time (Unix ms).
type DepthSample = (i64, BTreeMap<String, usize>);

/// Options of a simulated run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Seed override.
    pub seed: Option<u64>,
    /// Multiply message counts by this (a smaller volume for tests).
    pub volume: f64,
    /// Replace the scenario's MTA config.
    pub config: Option<PathBuf>,
    /// Where reports go (`reports/<scenario>/` under it).
    pub report_dir: PathBuf,
    /// Providers do not offer STARTTLS (throughput benchmarks without the world's crypto cost).
    pub no_tls: bool,
    /// The MTA does not sign and the providers take every message as DKIM-signed (benchmarks
    /// without the signing and verification cost; simulated runs only).
    pub no_dkim: bool,
    /// Explicit role bindings (`--map`), before automatic ones.
    pub maps: Vec<crate::bind::RoleMap>,
    /// Absolute paths of the config (includes, key files) are looked for under this directory.
    pub root: Option<PathBuf>,
}

impl Default for RunOptions {
    /// Full volume, the scenario's seed and config, reports under `reports/`, TLS and DKIM on.
    fn default() -> RunOptions {
        RunOptions {
            seed: None,
            volume: 1.0,
            config: None,
            report_dir: PathBuf::from("reports"),
            no_tls: false,
            no_dkim: false,
            maps: Vec::new(),
            root: None,
        }
    }
}

/// A listener address in the simulated network: an unspecified address (`0/0:25`) listens on
/// 127.0.0.1.
fn sim_addr(a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), a.port())
    } else {
        a
    }
}

/// The address of MX host `i` of provider `p` (loopback, so live runs can use the same plan).
pub fn mx_addr(p: usize, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 100 + p as u8, i as u8 + 1, 1)
}

/// Runs a scenario in simulated mode and writes its report; returns the report.
pub fn run(l: &Loaded, opts: &RunOptions) -> Result<Report, RunError> {
    // Timers only: the simulated world has no sockets, and with the I/O driver every timer set
    // earlier than the next wake-up woke it through an eventfd write (a system call per timer).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run_async(l, opts, None))
}

/// Runs a scenario in live mode (see [`crate::live`]) and writes its report; returns the report.
pub fn run_live(l: &Loaded, opts: &RunOptions, live: &LiveOptions) -> Result<Report, RunError> {
    if opts.no_dkim {
        return Err(RunError::Failed(
            "--no-dkim is for simulated runs (the MTA process signs as its config says)".into(),
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let scaled = crate::live::scaled(l, Clock::live().now_ms());
    rt.block_on(run_async(&scaled, opts, Some(live)))
}

/// Why a run did not give a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The scenario's roles could not be bound to the config, or no listener lets the injector
    /// relay: found before anything ran.
    Unbound(String),
    /// The run could not be set up or finished (config, files, the MTA process ...).
    Failed(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Unbound(e) | RunError::Failed(e) => f.write_str(e),
        }
    }
}

impl From<String> for RunError {
    fn from(e: String) -> RunError {
        RunError::Failed(e)
    }
}

async fn run_async(
    l: &Loaded,
    opts: &RunOptions,
    live: Option<&LiveOptions>,
) -> Result<Report, RunError> {
    let s = &l.scenario;
    let seed = opts.seed.unwrap_or(s.seed);
    let cfg_path = opts.config.clone().unwrap_or_else(|| l.config_path.clone());
    let dir = opts.report_dir.join(&s.name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Simulated: the config as the run takes it (host checks deferred, --root, stand-in keys);
    // live: as the MTA process will read it.
    let (mut config, under_test_notes) = match live {
        None => {
            let ut = crate::under_test::load(&cfg_path, opts.root.as_deref(), &dir.join("keys"))?;
            (Arc::new(ut.config), ut.notes)
        }
        Some(_) => {
            let loaded = mta::config::load(&cfg_path);
            (
                Arc::new(loaded.into_result().map_err(|e| e.to_string())?),
                Vec::new(),
            )
        }
    };
    // The scenario's roles bound to the config's names, before anything is built.
    let binding = crate::bind::bind(l, &config, &cfg_path.display().to_string(), &opts.maps)
        .map_err(|e| RunError::Unbound(e.to_string()))?;
    let bound = binding.apply(l);
    let l = &bound;
    let s = &l.scenario;
    let config_under_test = config.clone();
    let acct_path = dir.join("acct.csv");
    // The traffic's body buffers, given back by the in-process MTA's spool when done.
    let bodies = Arc::new(BodyPool::default());
    let _ = std::fs::remove_file(&acct_path);
    // Live: a derived config for the MTA process, on loopback ports of its own.
    let plan = match live {
        Some(_) => {
            let (plan, path, derived) = drain::live_plan(&dir, &acct_path, &cfg_path, &config)?;
            config = derived;
            Some((plan, path))
        }
        None => None,
    };
    let smtp_port = plan.as_ref().map_or(25, |(p, _)| p.smtp_port);
    let clock = if live.is_some() {
        Clock::live()
    } else {
        Clock::starting_at(l.start_ms)
    };
    let sim_net = SimNet::new();
    let net: Arc<dyn Net> = if live.is_some() {
        Arc::new(LiveNet)
    } else {
        Arc::new(sim_net.clone())
    };
    let dns = StaticResolver::default();
    // The providers verify DKIM against the keys the config publishes.
    let senders: Vec<String> = s
        .traffic
        .iter()
        .filter_map(|t| {
            t.sender
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
        })
        .collect();
    let dkim = match &plan {
        Some((p, _)) => crate::dkim_check::DkimChecker::live(p.dns)?,
        None => crate::dkim_check::DkimChecker::from_config(&config, &senders)?,
    };
    let dkim = if opts.no_dkim {
        dkim.assuming_dkim()
    } else {
        dkim
    };
    let mta_addr = config
        .listeners
        .first()
        .map(|l| l.addr)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 25)));
    let mta_addr = sim_addr(mta_addr);
    let injection = crate::inject::injection(
        &config,
        s.traffic.iter().any(|t| t.vmta.is_some()),
        live.is_some(),
    )
    .map_err(RunError::Unbound)?;
    let mut bound_notes = under_test_notes;
    bound_notes.extend(binding.notes());
    if !injection.why.is_empty() {
        bound_notes.push(injection.why.clone());
    }
    // Where the internet reaches the MTA (its MX): the port-25 listener if there is one.
    let inbound_addr = config
        .listeners
        .iter()
        .map(|l| sim_addr(l.addr))
        .find(|a| a.port() == 25)
        .unwrap_or(mta_addr);
    let sink_ip = IpAddr::V4(Ipv4Addr::new(127, 99, 0, 1));
    let back = Arc::new(Backchannel {
        net: net.clone(),
        seed,
        mta_addr: inbound_addr,
        mta_domains: mta::receive::local_domains(&config),
        sink_addr: SocketAddr::new(sink_ip, smtp_port),
        fbl_address: s.fbl_address.clone(),
        complaint_rates: Mutex::new(Vec::new()),
        chaos: Mutex::new(Vec::new()),
    });
    // The world: every provider's MX hosts on their own addresses, with DNS for them, offering
    // STARTTLS with one self-signed certificate for all of them where the profile says so.
    let (isps, addr_of) = providers::start(providers::World {
        l,
        no_tls: opts.no_tls,
        net: &net,
        smtp_port,
        dns: &dns,
        live: live.is_some(),
        dkim: &dkim,
        bodies: &bodies,
        back: &back,
        clock,
    })
    .await?;
    // The senders' own domains (where DSNs go) are hosted by a sink that takes everything.
    {
        let mut listener = net
            .listen(SocketAddr::new(sink_ip, smtp_port))
            .await
            .map_err(|e| format!("{sink_ip}:{smtp_port}: {e}"))?;
        tokio::spawn(async move {
            while let Ok(c) = listener.accept().await {
                tokio::spawn(async move {
                    serve(c.stream, &mut SenderSink, &ServerOptions::default()).await
                });
            }
        });
        for t in &s.traffic {
            if let Some((_, d)) = t.sender.rsplit_once('@') {
                if l.provider_of(d).is_none() {
                    dns.edit(|z| {
                        z.mx.insert(
                            d.to_ascii_lowercase(),
                            vec![Mx {
                                preference: 10,
                                host: "mx.senders.sim".into(),
                            }],
                        );
                        z.ip.insert("mx.senders.sim".into(), vec![sink_ip]);
                    });
                }
            }
        }
    }
    // Live: the world's zones served by a real DNS server (the MTA process resolves through it).
    let dns_server = match &plan {
        Some((p, _)) => {
            let mut zones = crate::world::zones(&l.profiles, Some(&config))?;
            // No resolver cache may outlast a dns-failure incident (the simulation has none).
            zones.ttl = Some(1);
            for t in &s.traffic {
                if let Some((_, d)) = t.sender.rsplit_once('@') {
                    if l.provider_of(d).is_none() {
                        zones.add_mx(&d.to_ascii_lowercase(), 10, "mx.senders.sim");
                    }
                }
            }
            zones.add_a("mx.senders.sim", Ipv4Addr::new(127, 99, 0, 1));
            Some(Arc::new(
                crate::dns::DnsServer::start(p.dns, &zones)
                    .await
                    .map_err(|e| format!("DNS server on {}: {e}", p.dns))?,
            ))
        }
        None => None,
    };
    // The MTA, with its accounting going to the report directory and to the expectations.
    let mta = mta_run::start(mta_run::Start {
        plan: &plan,
        live,
        mta_addr,
        acct_path: &acct_path,
        config: &config,
        no_dkim: opts.no_dkim,
        bodies: &bodies,
        net: &net,
        dns: &dns,
        clock,
        l,
    })
    .await?;
    // Incidents.
    let mut notes: Vec<String> = bound_notes;
    incidents::schedule(
        l,
        &incidents::Targets {
            isps: &isps,
            addr_of: &addr_of,
            back: &back,
            sim_net: &sim_net,
            dns: &dns,
            dns_server: &dns_server,
            live: live.is_some(),
        },
    );
    // Traffic, from the client address and to the listener the config lets relay.
    let stats: crate::inject::Stats = Arc::new(Mutex::new(
        s.traffic
            .iter()
            .map(|t| crate::inject::StreamStats {
                name: t.name.clone(),
                ..Default::default()
            })
            .collect(),
    ));
    let injectors: Vec<_> = s
        .traffic
        .iter()
        .enumerate()
        .map(|(index, traffic)| {
            let plan = crate::inject::Plan {
                traffic,
                index,
                seed,
                volume: opts.volume,
                to: &injection,
            };
            crate::inject::spawn(plan, net.clone(), bodies.clone(), stats.clone())
        })
        .collect();
    // Queue depth per provider, sampled over the scenario's duration, with a progress bar.
    let depth = progress::sample(&mta, l, live.is_some(), clock);
    tokio::time::sleep(l.duration).await;
    for i in &injectors {
        i.abort();
    }
    // Let the queues drain (retries, expiry) so that every accepted message reaches its end; the
    // charts cover the scenario's duration, the verdicts the whole run.
    let (tally, modes) = drain::drain(mta, clock, l, &acct_path, &mut notes).await?;
    let events: BTreeMap<String, Vec<crate::isp::Event>> = isps
        .iter()
        .map(|(n, i)| (n.clone(), i.take_events()))
        .collect();
    let observed = Observed {
        volume: opts.volume,
        events,
        tally,
        modes,
    };
    let streams = stats.lock().map(|v| v.clone()).unwrap_or_default();
    let mut verdicts = check(l, &observed);
    verdicts.extend(crate::findings::injection_verdicts(&streams));
    verdicts.extend(crate::findings::bounce_verdict(l, &observed));
    let findings = crate::findings::findings(l, &config_under_test, &observed, &streams, &verdicts);
    let depth = depth.lock().map(|d| d.clone()).unwrap_or_default();
    for st in &streams {
        notes.extend(
            st.errors
                .iter()
                .map(|e| format!("traffic `{}`: {e}", st.name)),
        );
    }
    let mode = if live.is_some() { "live" } else { "simulated" };
    Ok(build_report(
        l,
        seed,
        &observed,
        verdicts,
        &depth,
        RunInfo {
            dir: &dir,
            mode,
            notes,
            findings,
            streams,
        },
    ))
}
