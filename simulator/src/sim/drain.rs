//! The run's last steps around the MTA under test: before, a live run's plan (its derived config
//! on loopback ports of its own); after the traffic, the drain: the queues are left to empty
//! (retries, expiry) so that every accepted message reaches its end, then the MTA stops and its
//! records are read.

use super::mta_run::Mta;
use super::RunError;
use crate::live::LivePlan;
use crate::scenario::Loaded;
use mta::clock::Clock;
use mta::config::Config;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A live run's plan: the MTA process's directory, ports and derived config (written as
/// `live/mta.conf` and loaded back: what the process will read).
pub(super) fn live_plan(
    dir: &Path,
    acct_path: &Path,
    cfg_path: &Path,
    config: &Config,
) -> Result<(LivePlan, PathBuf, Arc<Config>), RunError> {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let run_dir = dir.join("live");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    let plan = LivePlan {
        dir: run_dir,
        acct: acct_path.to_path_buf(),
        dns: SocketAddr::new(lo, crate::live::free_udp_tcp_port(lo)?),
        smtp_port: crate::live::free_port(IpAddr::V4(crate::world::mx_ip(0, 0)))?,
        mgmt: SocketAddr::new(lo, crate::live::free_port(lo)?),
    };
    let derived = crate::live::derive_config(cfg_path, config, &plan)?;
    let path = plan.dir.join("mta.conf");
    std::fs::write(&path, &derived.text).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = Arc::new(
        mta::config::load(&path)
            .into_result()
            .map_err(|e| format!("the derived live config: {e}"))?,
    );
    Ok((plan, path, config))
}

/// The accounting tally and the mode history once the queues have drained: in process, until the
/// spool is empty (at most five simulated days); a process, until its spool is empty (at most the
/// scenario's length again, at least two minutes), then stopped. What stays queued goes to `notes`.
pub(super) async fn drain(
    mta: Mta,
    clock: Clock,
    l: &Loaded,
    acct_path: &Path,
    notes: &mut Vec<String>,
) -> Result<
    (
        crate::tally::Tally,
        BTreeMap<String, Vec<mta::shaping::ModeChange>>,
    ),
    RunError,
> {
    Ok(match mta {
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
            (crate::live::read_acct(acct_path, l)?, modes)
        }
    })
}
