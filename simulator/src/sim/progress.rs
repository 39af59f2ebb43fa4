//! While a run goes on: queue depth per destination domain sampled over the scenario's duration
//! (for the depth chart), and the progress bar, from the in-process engine or the MTA's HTTP API.

use super::{DepthSample, Mta};
use crate::scenario::Loaded;
use mta::clock::Clock;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Starts sampling; the samples gather in the vector returned.
pub(super) fn sample(
    mta: &Mta,
    l: &Loaded,
    live: bool,
    clock: Clock,
) -> Arc<Mutex<Vec<DepthSample>>> {
    let s = &l.scenario;
    let depth: Arc<Mutex<Vec<DepthSample>>> = Arc::default();
    {
        let depth = depth.clone();
        // What the progress bar and the depth chart read: the engine, or the MTA's HTTP API.
        let probe: Box<dyn Fn() -> (BTreeMap<String, usize>, String) + Send> = match mta {
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
            indicatif::ProgressStyle::with_template(if live {
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
    depth
}
