//! The MTA under test, started: the engine in this process on the simulated network and clock
//! (its records tallied on a thread of their own), or an `mta run` process on loopback (live).

use super::record_sink::RecordSink;
use super::{sim_addr, SPOOL_MEMORY_BUDGET};
use crate::live::{LivePlan, MtaProcess};
use crate::scenario::Loaded;
use crate::traffic::BodyPool;
use mta::acct::{Accounting, Record};
use mta::clock::Clock;
use mta::dns::StaticResolver;
use mta::engine::{Engine, Parts};
use mta::net::Net;
use mta::smtp::server::{serve, ServerOptions};
use mta::spool::{MemorySpool, Spool};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The MTA of a run: the engine in this process, or an `mta run` process.
pub(super) enum Mta {
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

/// What starting the MTA takes.
pub(super) struct Start<'a> {
    /// Live: the run's plan and the derived config file.
    pub(super) plan: &'a Option<(LivePlan, PathBuf)>,
    /// Live options (the `mta` binary).
    pub(super) live: Option<&'a crate::live::LiveOptions>,
    /// The MTA's first listener (live: where readiness is checked).
    pub(super) mta_addr: SocketAddr,
    /// Where acct.csv goes.
    pub(super) acct_path: &'a Path,
    /// The config in force.
    pub(super) config: &'a Arc<mta::config::Config>,
    /// `--no-dkim`.
    pub(super) no_dkim: bool,
    /// The traffic's body buffers.
    pub(super) bodies: &'a Arc<BodyPool>,
    /// The network.
    pub(super) net: &'a Arc<dyn Net>,
    /// The simulated DNS.
    pub(super) dns: &'a StaticResolver,
    /// The clock.
    pub(super) clock: Clock,
    /// The scenario (for the tally).
    pub(super) l: &'a Loaded,
}

/// Starts the MTA: the engine in process, or (live) the `mta run` process, ready.
pub(super) async fn start(st: Start<'_>) -> Result<Mta, String> {
    let Start {
        plan,
        live,
        mta_addr,
        acct_path,
        config,
        no_dkim,
        bodies,
        net,
        dns,
        clock,
        l,
    } = st;
    let mta = match (plan, live) {
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
                dkim_signing: !no_dkim,
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
    Ok(mta)
}
