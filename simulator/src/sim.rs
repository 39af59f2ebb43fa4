//! Scenario runs: the world (providers on their MX addresses, DNS zones), the MTA from the
//! scenario's config, the traffic streams and the incident timeline.
//!
//! - Simulated (default): the MTA engine in-process, everything on one current-thread tokio runtime
//!   with the clock paused, over the in-memory network. Hours pass in seconds and the same scenario
//!   and seed give the same accounting log.
//! - Live: the same world over real TCP on loopback with a real hickory DNS server, on the real
//!   clock, and the MTA as its own process (see [`crate::live`]).

use crate::expect::{check, Observed};
use crate::isp::server::{Backchannel, ChaosKind, ChaosRule, IspHandler, SenderSink};
use crate::isp::{Engine as Isp, Override};
use crate::live::{LiveOptions, LivePlan, MtaProcess};
use crate::report::{BackoffPeriod, Report};
use crate::scenario::{IncidentKind, Loaded};
use crate::traffic::BodyPool;
use mta::acct::{Accounting, Record};
use mta::clock::Clock;
use mta::config::values::parse_interval;
use mta::dns::{Mx, StaticResolver};
use mta::engine::{Engine, Parts};
use mta::net::{LiveNet, Net, SimNet};
use mta::smtp::server::{serve, ServerOptions};
use mta::spool::{BodyBuffers, MemorySpool, Spool};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
pub fn run(l: &Loaded, opts: &RunOptions) -> Result<Report, String> {
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
pub fn run_live(l: &Loaded, opts: &RunOptions, live: &LiveOptions) -> Result<Report, String> {
    if opts.no_dkim {
        return Err(
            "--no-dkim is for simulated runs (the MTA process signs as its config says)".into(),
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let scaled = crate::live::scaled(l, Clock::live().now_ms());
    rt.block_on(run_async(&scaled, opts, Some(live)))
}

/// The in-process MTA's records on their way to acct.csv and the expectations' tally, on a
/// thread of their own (the second core): both are pure sinks, fed in the engine's order through
/// the tap, so the accounting log is the same byte for byte.
struct RecordSink {
    done: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(crate::tally::Tally, Option<String>)>,
    acct: Arc<Accounting>,
}

/// Spent records handed back to the engine at once.
const SPENT_BATCH: usize = 256;

/// Lines the accounting file may hold back (a full disk) before the run gives up writing it:
/// the accounting keeps unwritten lines for a retry, which must not grow without bound.
const ACCT_BACKLOG_LIMIT: usize = mta::acct::DEFAULT_BACKLOG_LIMIT;

impl RecordSink {
    fn start(
        mut tap: tokio::sync::mpsc::UnboundedReceiver<Box<Record>>,
        acct: Accounting,
        mut tally: crate::tally::Tally,
        monitor: Arc<mta::mgmt::Monitor>,
        pool: Arc<mta::acct::RecordPool>,
    ) -> RecordSink {
        use std::sync::atomic::Ordering;
        use tokio::sync::mpsc::error::TryRecvError;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acct = Arc::new(acct);
        let (stop, out) = (done.clone(), acct.clone());
        // Polled rather than woken: a waiting receiver would cost the engine a futex wake per
        // record; a sleeping one costs nothing, and a millisecond of lag does not matter.
        let thread = std::thread::spawn(move || {
            let mut given_up: Option<String> = None;
            let mut n: u64 = 0;
            // Spent records go back to the engine in batches, to be built anew from.
            let mut spent = Vec::with_capacity(SPENT_BATCH);
            let mut take = |r: Box<Record>| {
                monitor.observe(&r);
                if given_up.is_none() {
                    out.log(&r);
                    n += 1;
                    if n.is_multiple_of(4096) && out.pending() > ACCT_BACKLOG_LIMIT {
                        given_up = out.failure().or_else(|| Some("write failed".into()));
                    }
                }
                tally.add(&crate::tally::RecordView::of(&r));
                spent.push(r);
                if spent.len() == SPENT_BATCH {
                    pool.give_back(&mut spent);
                }
            };
            loop {
                match tap.try_recv() {
                    Ok(r) => take(r),
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) if stop.load(Ordering::Acquire) => {
                        // Everything sent before `done` was set is visible now: take it, stop.
                        while let Ok(r) = tap.try_recv() {
                            take(r);
                        }
                        break;
                    }
                    Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            (tally, given_up)
        });
        RecordSink { done, thread, acct }
    }

    /// Takes the records logged so far, writes the accounting file out and returns the tally;
    /// an error if acct.csv could not be written in full.
    fn finish(self, now_ms: i64) -> Result<crate::tally::Tally, String> {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        let (tally, given_up) = self
            .thread
            .join()
            .map_err(|_| "the accounting thread panicked".to_string())?;
        if let Some(err) = given_up {
            return Err(format!(
                "the accounting log could not be written ({err}); gave up after {ACCT_BACKLOG_LIMIT} unwritten lines"
            ));
        }
        self.acct.flush(now_ms);
        match self.acct.failure() {
            Some(err) => Err(format!("the accounting log could not be written: {err}")),
            None => Ok(tally),
        }
    }
}

/// The MTA of a run: the engine in this process, or an `mta run` process.
enum Mta {
    InProcess {
        records: RecordSink,
        engine: Arc<Engine>,
        stop_tx: tokio::sync::oneshot::Sender<()>,
        sched: tokio::task::JoinHandle<()>,
    },
    Process {
        process: MtaProcess,
        mgmt: SocketAddr,
    },
}

async fn run_async(
    l: &Loaded,
    opts: &RunOptions,
    live: Option<&LiveOptions>,
) -> Result<Report, String> {
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
        .map_err(|e| e.to_string())?;
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
            let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let run_dir = dir.join("live");
            let _ = std::fs::remove_dir_all(&run_dir);
            std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
            let plan = LivePlan {
                dir: run_dir,
                acct: acct_path.clone(),
                dns: SocketAddr::new(lo, crate::live::free_udp_tcp_port(lo)?),
                smtp_port: crate::live::free_port(IpAddr::V4(crate::world::mx_ip(0, 0)))?,
                mgmt: SocketAddr::new(lo, crate::live::free_port(lo)?),
            };
            let derived = crate::live::derive_config(&cfg_path, &config, &plan)?;
            let path = plan.dir.join("mta.conf");
            std::fs::write(&path, &derived.text).map_err(|e| format!("{}: {e}", path.display()))?;
            config = Arc::new(
                mta::config::load(&path)
                    .into_result()
                    .map_err(|e| format!("the derived live config: {e}"))?,
            );
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
    )?;
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
    let mx_names: Vec<String> = l
        .profiles
        .iter()
        .flat_map(|p| p.mx.iter().map(|m| m.host.clone()))
        .collect();
    let tls = match opts.no_tls {
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
        let outages: Arc<Vec<(i64, i64, bool)>> = Arc::new(if live.is_some() {
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
            let isp2 = isp.clone();
            let dkim2 = dkim.clone();
            let host = mx.host.clone();
            let back2 = back.clone();
            let tls = tls.clone().filter(|_| p.tls.offered);
            let outages = outages.clone();
            let pool: Arc<dyn BodyBuffers> = bodies.clone();
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
                    let mut h = IspHandler {
                        isp: isp2.clone(),
                        dkim: dkim2.clone(),
                        clock,
                        session: None,
                        peer: c.peer.ip(),
                        from: String::new(),
                        rcpts: 0,
                        accepted: Vec::new(),
                        local: ip,
                        host: host.clone(),
                        back: back2.clone(),
                        slow: Duration::ZERO,
                        drop_at_data: false,
                        helo: String::new(),
                        spf_seen: None,
                        bodies: Some(pool.clone()),
                    };
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
    let mta = match (&plan, live) {
        (Some((p, path)), Some(lo)) => {
            let mut process = MtaProcess::start(&lo.mta_bin, path, &p.dir.join("mta.log"))?;
            // Ready when the management port and the submission listener answer.
            let mut ready = false;
            for _ in 0..400 {
                if let Some(st) = process.exited() {
                    let log = std::fs::read_to_string(p.dir.join("mta.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(10).collect();
                    return Err(format!(
                        "the MTA exited at start ({st}); its log ends:\n{}",
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    ));
                }
                if tokio::net::TcpStream::connect(mta_addr).await.is_ok()
                    && tokio::net::TcpStream::connect(p.mgmt).await.is_ok()
                {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !ready {
                return Err(format!("the MTA did not listen on {mta_addr} within 20 s"));
            }
            Mta::Process {
                process,
                mgmt: p.mgmt,
            }
        }
        _ => {
            let acct_cfg = mta::config::load_str("acct.conf", &format!("<acct-file {}>\nrecords r,d,b,t,tq,f,rb\nrecord-fields * *,header_Message-ID\nmove-interval never\n</acct-file>\n", acct_path.display()));
            let acct2 = Accounting::new(&acct_cfg.config.acct_files);
            let (tap_tx, tap_rx) = tokio::sync::mpsc::unbounded_channel::<Box<Record>>();
            let engine = Engine::new(Parts {
                config: config.clone(),
                spool: Arc::new(Spool::Memory(
                    MemorySpool::with_budget(SPOOL_MEMORY_BUDGET, &std::env::temp_dir())
                        .map_err(|e| format!("simulated spool: {e}"))?
                        .recycling(bodies.clone()),
                )),
                // The engine's records leave through the tap; `records` writes acct.csv from them.
                acct: Arc::new(Accounting::new(&[])),
                net: net.clone(),
                dns: Arc::new(dns.clone()),
                clock,
                tap: Some(tap_tx),
                dkim_signing: !opts.no_dkim,
                monitor_on_tap: true,
            });
            // The HTTP status counters are fed on the record thread too.
            let records = RecordSink::start(
                tap_rx,
                acct2,
                crate::tally::Tally::new(l),
                engine.shared_monitor(),
                engine.record_pool(),
            );
            // Every smtp-listener of the config, with its source name (0/0 listens on 127.0.0.1).
            let mut listeners: Vec<(SocketAddr, Option<String>)> = config
                .listeners
                .iter()
                .map(|l| (sim_addr(l.addr), l.source.clone()))
                .collect();
            if listeners.is_empty() {
                listeners.push((mta_addr, None));
            }
            for (addr, source) in listeners {
                let mut listener = net.listen(addr).await.map_err(|e| e.to_string())?;
                let engine = engine.clone();
                tokio::spawn(async move {
                    while let Ok(c) = listener.accept().await {
                        let mut h = mta::receive::session::InboundSession::new(
                            engine.clone(),
                            c.peer,
                            c.local,
                            source.clone(),
                        );
                        tokio::spawn(Box::pin(async move {
                            serve(c.stream, &mut h, &ServerOptions::default()).await
                        }));
                    }
                });
            }
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let sched = tokio::spawn(engine.clone().run(async move {
                let _ = stop_rx.await;
            }));
            Mta::InProcess {
                records,
                engine,
                stop_tx,
                sched,
            }
        }
    };
    // Incidents.
    let mut notes: Vec<String> = bound_notes;
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
            IncidentKind::Unreachable | IncidentKind::Refused if live.is_some() => {
                // Handled by the provider's listeners (see above).
            }
            IncidentKind::Unreachable | IncidentKind::Refused => {
                let net = sim_net.clone();
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
                let server = dns_server.clone();
                let dns = dns.clone();
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
    let depth: Arc<Mutex<Vec<DepthSample>>> = Arc::default();
    {
        let depth = depth.clone();
        // What the progress bar and the depth chart read: the engine, or the MTA's HTTP API.
        let probe: Box<dyn Fn() -> (BTreeMap<String, usize>, String) + Send> = match &mta {
            Mta::InProcess { engine, .. } => {
                let engine = engine.clone();
                Box::new(move || {
                    let d = engine.queue_depths();
                    let st = engine.stats.lock().map(|s| *s).unwrap_or_default();
                    let msg = format!(
                        "received {} delivered {} queued {}",
                        st.received,
                        st.delivered,
                        d.values().sum::<usize>()
                    );
                    (d, msg)
                })
            }
            Mta::Process { mgmt, .. } => {
                let mgmt = *mgmt;
                Box::new(move || {
                    let d = tokio::task::block_in_place(|| crate::live::queue_depths(mgmt));
                    let msg = format!("queued {} (live)", d.values().sum::<usize>());
                    (d, msg)
                })
            }
        };
        let step = (l.duration.as_millis() as u64 / 300).max(1000);
        let total_ms = l.duration.as_millis() as u64;
        let bar = indicatif::ProgressBar::new(total_ms / 1000);
        if std::env::var_os("MTASIM_NO_PROGRESS").is_some()
            || !std::io::IsTerminal::is_terminal(&std::io::stderr())
        {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_style(
            indicatif::ProgressStyle::with_template(if live.is_some() {
                "{prefix} [{bar:30}] {pos}/{len} s (live) {msg}"
            } else {
                "{prefix} [{bar:30}] {pos}/{len} simulated s {msg}"
            })
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(s.name.clone());
        tokio::spawn(async move {
            let mut t = 0;
            while t <= total_ms {
                let (d, msg) = probe();
                bar.set_position(t / 1000);
                bar.set_message(msg);
                if let Ok(mut v) = depth.lock() {
                    v.push((clock.now_ms(), d));
                }
                tokio::time::sleep(Duration::from_millis(step)).await;
                t += step;
            }
            bar.finish_and_clear();
        });
    }
    tokio::time::sleep(l.duration).await;
    for i in &injectors {
        i.abort();
    }
    // Let the queues drain (retries, expiry) so that every accepted message reaches its end; the
    // charts cover the scenario's duration, the verdicts the whole run.
    let (tally, modes) = match mta {
        Mta::InProcess {
            records,
            engine,
            stop_tx,
            sched,
        } => {
            let cap = clock.now_ms() + 5 * 86_400_000;
            while engine.pending_messages() > 0 && clock.now_ms() < cap {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            let _ = stop_tx.send(());
            let _ = sched.await;
            let tally = records.finish(clock.now_ms())?;
            (tally, engine.mode_history())
        }
        Mta::Process { process, mgmt } => {
            // Real time: wait for the spool to empty, at most the scenario's length again
            // (and at least two minutes).
            let cap = clock.now_ms() + (l.duration.as_millis() as i64).max(120_000);
            loop {
                let left = tokio::task::block_in_place(|| crate::live::pending(mgmt));
                if left == Some(0) || clock.now_ms() >= cap {
                    if let Some(n) = left.filter(|n| *n > 0) {
                        notes.push(format!(
                            "{n} message(s) still queued when the live run ended"
                        ));
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let modes = tokio::task::block_in_place(|| crate::live::mode_history(mgmt));
            let status = tokio::task::block_in_place(|| process.stop(Duration::from_secs(20)));
            if !status.is_some_and(|s| s.success()) {
                notes.push(format!("the MTA process ended with {status:?}"));
            }
            (crate::live::read_acct(&acct_path, l)?, modes)
        }
    };
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

/// Where a run's report goes, how it ran, and what it noted on the way.
struct RunInfo<'a> {
    dir: &'a Path,
    mode: &'a str,
    notes: Vec<String>,
    findings: Vec<String>,
    streams: Vec<crate::inject::StreamStats>,
}

fn build_report(
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
