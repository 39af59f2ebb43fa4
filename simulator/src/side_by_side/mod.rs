//! Postfix and our MTA side by side in the same simulated world with the same traffic (issue 24).
//!
//! Each MTA under test gets its own instance of the live world (`crate::world::World`: the same
//! profiles, its own DNS and SMTP ports, so all run at once) in which the sending domain
//! [`SENDER_DOMAIN`] and the MTA's sending address are published (A, PTR, SPF, DMARC). The same
//! messages (a fixed seed) go into each over SMTP as fast as it takes them; then, from the world's
//! side, the messages each provider accepted are read at every minute: delivered-within-N-minutes
//! curves, with the 4xx (deferrals) and 5xx replies the providers gave.
//!
//! The MTAs: Postfix with stock settings (`crate::postfix`), and `mta run` with
//! `fixtures/configs/minimal.conf` (the stock sample) or `hot.conf`, each derived for the world as
//! live runs derive theirs (`crate::live::derive_config`: listeners, spool, accounting, name
//! server, `default-smtp-port`, sending addresses mapped onto loopback).
//!
//! `start` starts a side (its world and MTA), `table` prints a comparison for people.

mod start;
mod table;

use crate::inject::{Plan, Stats, StreamStats};
use crate::postfix::PostfixError;
use crate::scenario::Traffic;
use crate::traffic::{BodyPool, Generator};
use crate::world::{ProviderTotals, ReplyCount};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The sending domain (hot.conf's, so its DKIM keys align with From).
pub const SENDER_DOMAIN: &str = "news.example.com";
/// The recipient domains, equally weighted (Outlook.com serves outlook.com and hotmail.com).
pub const DOMAINS: [&str; 4] = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com"];
/// One sample interval.
pub const MINUTE: Duration = Duration::from_secs(60);

/// An MTA under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// Postfix, stock settings.
    Postfix,
    /// `mta run` with `fixtures/configs/minimal.conf`.
    OursMinimal,
    /// `mta run` with `fixtures/configs/hot.conf`.
    OursHot,
}

impl Side {
    /// Every side, in table order.
    pub const ALL: [Side; 3] = [Side::Postfix, Side::OursMinimal, Side::OursHot];

    /// Its name (`postfix`, `ours-minimal`, `ours-hot`).
    pub fn name(self) -> &'static str {
        match self {
            Side::Postfix => "postfix",
            Side::OursMinimal => "ours-minimal",
            Side::OursHot => "ours-hot",
        }
    }

    /// The side named `s`.
    pub fn parse(s: &str) -> Option<Side> {
        Side::ALL.into_iter().find(|x| x.name() == s.trim())
    }

    /// The sending address and its host name in this side's world.
    fn sender(self) -> (Ipv4Addr, String) {
        match self {
            Side::Postfix => (
                Ipv4Addr::new(127, 0, 0, 41),
                format!("mail-pf.{SENDER_DOMAIN}"),
            ),
            // minimal.conf names no source address: the MTA connects from 127.0.0.1.
            _ => (Ipv4Addr::LOCALHOST, format!("mail-min.{SENDER_DOMAIN}")),
        }
    }

    /// Our config file for this side, under the checkout.
    fn config(self, root: &Path) -> Option<PathBuf> {
        let name = match self {
            Side::Postfix => return None,
            Side::OursMinimal => "minimal.conf",
            Side::OursHot => "hot.conf",
        };
        Some(root.join("fixtures/configs").join(name))
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Setting up or running a side.
    #[error("{side}: {message}")]
    Side {
        /// Which side.
        side: &'static str,
        /// What happened.
        message: String,
    },
    /// The Postfix instance.
    #[error("postfix: {0}")]
    Postfix(#[from] PostfixError),
    /// A file.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

pub(super) fn side_err(side: Side) -> impl Fn(String) -> Error {
    move |message| Error::Side {
        side: side.name(),
        message,
    }
}

/// How to run a comparison.
#[derive(Debug, Clone)]
pub struct Options {
    /// The checkout (its `isp-profiles/` and `fixtures/configs/`).
    pub root: PathBuf,
    /// Where each side's files go (`WORK/<side>/`: config, spool, logs, queue).
    pub work: PathBuf,
    /// The `mta` binary.
    pub mta_bin: PathBuf,
    /// How long to watch, in minutes (the curves have one point per minute).
    pub minutes: u32,
    /// Messages sent into each MTA.
    pub messages: u64,
    /// The traffic's seed.
    pub seed: u64,
    /// The MTAs under test.
    pub sides: Vec<Side>,
}

/// One provider's figures for one side.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProviderRow {
    /// The provider (the world's profile name).
    pub provider: String,
    /// Messages sent to its domains.
    pub planned: u64,
    /// Messages it accepted by the end of minute 1, 2, ... N.
    pub delivered_by_minute: Vec<u64>,
    /// 4xx replies it had given by the end of each minute.
    pub deferred_by_minute: Vec<u64>,
    /// 5xx replies it gave (unknown users and the like).
    pub rejected: u64,
    /// Connections it took.
    pub connections: u64,
    /// Its most frequent 4xx/5xx replies.
    pub replies: Vec<ReplyCount>,
}

impl ProviderRow {
    /// Delivered within the whole window.
    pub fn delivered(&self) -> u64 {
        self.delivered_by_minute.last().copied().unwrap_or(0)
    }

    /// Deferrals within the whole window.
    pub fn deferred(&self) -> u64 {
        self.deferred_by_minute.last().copied().unwrap_or(0)
    }
}

/// What the MTA itself logged: Postfix's maillog status lines, our accounting records
/// (`d`, `t`+`tq`, `b`).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct OwnCounts {
    /// Deliveries.
    pub delivered: u64,
    /// Deferrals.
    pub deferred: u64,
    /// Bounces.
    pub bounced: u64,
}

/// One side's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SideResult {
    /// The MTA.
    pub side: Side,
    /// Messages the MTA took (250 after the data).
    pub injected: u64,
    /// Messages it refused, and connection errors.
    pub refused: u64,
    /// Seconds the injection took, if it finished within the window.
    pub injection_secs: Option<f64>,
    /// Problems injecting (first few).
    pub injection_errors: Vec<String>,
    /// Per provider, the world's view.
    pub providers: Vec<ProviderRow>,
    /// The MTA's own records.
    pub own: OwnCounts,
    /// Where they came from.
    pub own_source: String,
}

impl SideResult {
    /// The row of `provider`.
    pub fn provider(&self, provider: &str) -> Option<&ProviderRow> {
        self.providers.iter().find(|p| p.provider == provider)
    }
}

/// A comparison's result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    /// Minutes watched.
    pub minutes: u32,
    /// Messages per side.
    pub messages: u64,
    /// The traffic's seed.
    pub seed: u64,
    /// Per side, in the order asked.
    pub sides: Vec<SideResult>,
}

/// The traffic every side gets.
pub fn traffic(messages: u64) -> Traffic {
    Traffic {
        name: "side-by-side".into(),
        messages,
        rate: None,
        start: "0s".into(),
        sender: format!("news@{SENDER_DOMAIN}"),
        mail_from: None,
        vmta: None,
        job_id: None,
        recipients_per_message: 1,
        size: None,
        headers: BTreeMap::new(),
        domains: DOMAINS.iter().map(|d| (d.to_string(), 1.0)).collect(),
        special: Vec::new(),
    }
}

/// Messages per provider (by the profiles' domains) of the traffic.
pub fn planned(root: &Path, messages: u64, seed: u64) -> Result<BTreeMap<String, u64>, String> {
    let profiles =
        crate::profile::load_dir(&root.join("isp-profiles")).map_err(|e| e.to_string())?;
    let t = traffic(messages);
    let mut g = Generator::new(&t, seed, messages, Arc::new(BodyPool::default()));
    let mut out = BTreeMap::new();
    for i in 0..g.total() {
        for r in g.message(i).rcpts {
            let domain = r.rsplit_once('@').map_or("", |(_, d)| d);
            let p = profiles
                .iter()
                .find(|p| p.domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
                .map_or_else(|| domain.to_string(), |p| p.name.clone());
            *out.entry(p).or_insert(0) += 1;
        }
    }
    Ok(out)
}

/// Runs one side: its world and MTA, the traffic, a sample of the world's totals every minute.
async fn run_side(
    side: Side,
    opts: &Options,
    planned: &BTreeMap<String, u64>,
) -> Result<SideResult, Error> {
    let dir = opts.work.join(side.name());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let r = match side {
        Side::Postfix => start::start_postfix(opts, &dir).await?,
        _ => start::start_ours(side, opts, &dir).await?,
    };
    let stats: Stats = Arc::new(Mutex::new(vec![StreamStats::default()]));
    let t = traffic(opts.messages);
    let t0 = Instant::now();
    let plan = Plan {
        traffic: &t,
        index: 0,
        seed: opts.seed,
        volume: 1.0,
        to: &r.injection,
    };
    let sending = crate::inject::spawn(
        plan,
        Arc::new(mta::net::LiveNet),
        Arc::new(BodyPool::default()),
        stats.clone(),
    );
    let injected = tokio::spawn(async move {
        let _ = sending.await;
        t0.elapsed()
    });
    let mut samples = Vec::new();
    for m in 1..=opts.minutes {
        tokio::time::sleep_until(t0 + MINUTE * m).await;
        samples.push(r.world.totals());
    }
    let injection_secs = if injected.is_finished() {
        injected.await.ok().map(|d| d.as_secs_f64())
    } else {
        injected.abort();
        None
    };
    let (own, own_source) = r.mta.finish().await;
    let s = stats
        .lock()
        .ok()
        .and_then(|v| v.first().cloned())
        .unwrap_or_default();
    Ok(SideResult {
        side,
        injected: s.accepted,
        refused: s.refused,
        injection_secs,
        injection_errors: s.errors,
        providers: rows(planned, &samples),
        own,
        own_source,
    })
}

/// The per-provider rows from the minute samples (providers that were sent mail).
fn rows(
    planned: &BTreeMap<String, u64>,
    samples: &[BTreeMap<String, ProviderTotals>],
) -> Vec<ProviderRow> {
    let empty = ProviderTotals::default();
    planned
        .iter()
        .map(|(name, n)| {
            let at =
                |s: &BTreeMap<String, ProviderTotals>| s.get(name).cloned().unwrap_or_default();
            let last = samples.last().map_or(empty.clone(), at);
            ProviderRow {
                provider: name.clone(),
                planned: *n,
                delivered_by_minute: samples.iter().map(|s| at(s).messages).collect(),
                deferred_by_minute: samples.iter().map(|s| at(s).deferred).collect(),
                rejected: last.rejected,
                connections: last.connections,
                replies: last.replies.into_iter().take(5).collect(),
            }
        })
        .collect()
}

/// Runs the comparison: every side at once, each in its own world.
pub async fn run(opts: &Options) -> Result<Comparison, Error> {
    let planned = planned(&opts.root, opts.messages, opts.seed).map_err(|message| Error::Side {
        side: "traffic",
        message,
    })?;
    let planned = Arc::new(planned);
    let mut tasks = Vec::new();
    for &side in &opts.sides {
        let (o, p) = (opts.clone(), planned.clone());
        tasks.push(tokio::spawn(async move { run_side(side, &o, &p).await }));
    }
    let mut sides = Vec::new();
    let mut first_error = None;
    for (t, &side) in tasks.into_iter().zip(&opts.sides) {
        match t.await {
            Ok(Ok(r)) => sides.push(r),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(j) => {
                first_error.get_or_insert(side_err(side)(j.to_string()));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Comparison {
        minutes: opts.minutes,
        messages: opts.messages,
        seed: opts.seed,
        sides,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_parse_by_name() {
        for s in Side::ALL {
            assert_eq!(Side::parse(s.name()), Some(s));
        }
        assert_eq!(Side::parse("exim"), None);
    }

    #[test]
    fn the_traffic_reaches_three_providers() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = planned(&root, 400, 7).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.keys().map(String::as_str).collect::<Vec<_>>(),
            ["gmail", "outlook", "yahoo"]
        );
        assert_eq!(p.values().sum::<u64>(), 400);
        assert!(
            p["outlook"] > p["gmail"],
            "outlook.com and hotmail.com: {p:?}"
        );
    }
}
