//! Scenario files (`scenarios/*.toml`): which MTA config, which providers, what traffic, what goes
//! wrong when, and what must hold. Loaded with `deny_unknown_fields`; every error names the file
//! and the key, and references (providers, domains, the config file) are checked at load.

mod roles;

pub use roles::{Purpose, Roles, SenderRole, VmtaKind, VmtaRole};

use crate::profile::{Phase, Profile, ProfileError};
use mta::config::values::{parse_interval, parse_rate, parse_size, Rate};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML syntax, unknown keys, wrong types (toml's message has line, column and key).
    #[error("{file}: {message}")]
    Toml {
        /// The file.
        file: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A value that parses but makes no sense, or a reference to nothing.
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key, dotted.
        key: String,
        /// Why.
        message: String,
    },
    /// A provider profile failed to load.
    #[error(transparent)]
    Profile(#[from] ProfileError),
}

/// Message sizes: uniform between `min` and `max`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeRange {
    /// Smallest (`2k`).
    pub min: String,
    /// Largest (`40k`).
    pub max: String,
}

/// One stream of injected mail.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    /// Name, for reports.
    pub name: String,
    /// How many messages.
    pub messages: u64,
    /// Injection rate (`2000/m`); all at once when absent.
    pub rate: Option<String>,
    /// When the stream starts, after the scenario start (`0s`).
    #[serde(default = "zero")]
    pub start: String,
    /// From (and the envelope sender unless `mail_from` is given).
    pub sender: String,
    /// Envelope sender (a bounce address such as `b@bounces.example.com`), if not `sender`.
    pub mail_from: Option<String>,
    /// `X-Virtual-MTA` header (a vMTA or pool), if any.
    pub vmta: Option<String>,
    /// Job id (`X-Job` header).
    pub job_id: Option<String>,
    /// Recipients per message.
    #[serde(default = "one")]
    pub recipients_per_message: u32,
    /// Sizes.
    pub size: Option<SizeRange>,
    /// Extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Share of recipients per domain (normalised).
    pub domains: BTreeMap<String, f64>,
    /// Named addresses sent to once each (e.g. `unknown-1@gmail.com`).
    #[serde(default)]
    pub special: Vec<String>,
}

impl Traffic {
    /// The domain of `sender`, lower-cased.
    pub fn sender_domain(&self) -> String {
        self.sender
            .rsplit_once('@')
            .map_or(String::new(), |(_, d)| d.to_ascii_lowercase())
    }
}

fn zero() -> String {
    "0s".into()
}

fn one() -> u32 {
    1
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentKind {
    /// The provider answers with `reply` for a share of connections.
    Reply {
        /// The reply (placeholders as in profiles).
        reply: String,
        /// When in the conversation.
        phase: Phase,
        /// Share of connections affected.
        share: f64,
        /// Hang up after it.
        disconnect: bool,
    },
    /// Connections are dropped mid-session.
    Drop {
        /// Share of connections dropped.
        share: f64,
    },
    /// Connections to the provider never complete.
    Unreachable,
    /// Connections are refused.
    Refused,
    /// The provider's DNS fails.
    DnsFailure {
        /// `servfail`, `timeout` or `nxdomain`.
        failure: String,
    },
    /// The complaint rate changes.
    ComplaintRate {
        /// New share of delivered messages reported.
        share: f64,
    },
    /// Slow replies (tarpitting): a share of connections gets every reply after `delay`.
    Slow {
        /// Share of connections affected.
        share: f64,
        /// Delay before each reply (`30s`).
        delay: String,
    },
    /// An IP is blocklisted: every connection from it gets the reply.
    Blocklist {
        /// The source IP.
        ip: String,
        /// The reply.
        reply: String,
    },
}

fn all() -> f64 {
    1.0
}

/// An incident on the timeline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawIncident")]
pub struct Incident {
    /// Provider name (`yahoo`).
    pub provider: String,
    /// When it starts, after the scenario start.
    pub at: String,
    /// How long it lasts.
    pub lasts: String,
    /// What happens.
    pub kind: IncidentKind,
}

/// An incident as written: every key any kind may use; `Incident` checks which apply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIncident {
    provider: String,
    at: String,
    #[serde(rename = "for")]
    lasts: String,
    kind: String,
    reply: Option<String>,
    phase: Option<Phase>,
    share: Option<f64>,
    disconnect: Option<bool>,
    failure: Option<String>,
    ip: Option<String>,
    delay: Option<String>,
}

impl TryFrom<RawIncident> for Incident {
    type Error = String;

    fn try_from(r: RawIncident) -> Result<Incident, String> {
        let kind_name = r.kind.clone();
        let need = |v: Option<String>, k: &str| {
            v.ok_or_else(|| format!("incident kind `{kind_name}` needs `{k}`"))
        };
        let present: Vec<&str> = [
            ("reply", r.reply.is_some()),
            ("phase", r.phase.is_some()),
            ("share", r.share.is_some()),
            ("disconnect", r.disconnect.is_some()),
            ("failure", r.failure.is_some()),
            ("ip", r.ip.is_some()),
            ("delay", r.delay.is_some()),
        ]
        .into_iter()
        .filter(|(_, p)| *p)
        .map(|(k, _)| k)
        .collect();
        let (allowed, kind): (&[&str], IncidentKind) = match r.kind.as_str() {
            "reply" => (
                &["reply", "phase", "share", "disconnect"],
                IncidentKind::Reply { reply: need(r.reply, "reply")?, phase: r.phase.ok_or("incident kind `reply` needs `phase`")?, share: r.share.unwrap_or(1.0), disconnect: r.disconnect.unwrap_or(false) },
            ),
            "drop" => (&["share"], IncidentKind::Drop { share: r.share.ok_or("incident kind `drop` needs `share`")? }),
            "unreachable" => (&[], IncidentKind::Unreachable),
            "refused" => (&[], IncidentKind::Refused),
            "dns-failure" => (&["failure"], IncidentKind::DnsFailure { failure: need(r.failure, "failure")? }),
            "complaint-rate" => (&["share"], IncidentKind::ComplaintRate { share: r.share.ok_or("incident kind `complaint-rate` needs `share`")? }),
            "blocklist" => (&["ip", "reply"], IncidentKind::Blocklist { ip: need(r.ip, "ip")?, reply: need(r.reply, "reply")? }),
            "slow" => (&["share", "delay"], IncidentKind::Slow { share: r.share.unwrap_or(1.0), delay: need(r.delay, "delay")? }),
            other => return Err(format!("unknown incident kind `{other}` (reply, drop, unreachable, refused, dns-failure, complaint-rate, blocklist, slow)")),
        };
        if let Some(extra) = present.iter().find(|k| !allowed.contains(k)) {
            return Err(format!(
                "`{extra}` does not apply to incident kind `{kind_name}`"
            ));
        }
        Ok(Incident {
            provider: r.provider,
            at: r.at,
            lasts: r.lasts,
            kind,
        })
    }
}

/// Something that must hold.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum Expectation {
    /// Concurrent connections never exceed `max`, per source IP at `provider`.
    MaxConnections {
        /// Provider.
        provider: String,
        /// The limit.
        max: u32,
    },
    /// Messages per connection never exceed `max` at `provider`.
    MessagesPerConnection {
        /// Provider.
        provider: String,
        /// The limit.
        max: u32,
    },
    /// Accepted recipients per source IP never exceed `max` (a rate such as `1000/m`) in any window.
    Rate {
        /// Provider.
        provider: String,
        /// The rate.
        max: String,
    },
    /// Queues matching `queue` enter backoff within `enter_within` of `incident` starting, and are
    /// back to normal within `leave_within` of it ending.
    Backoff {
        /// Queue pattern (`yahoo.com/*`).
        queue: String,
        /// Index of the incident in the timeline (0-based).
        incident: usize,
        /// Deadline to enter backoff.
        enter_within: String,
        /// Deadline to leave it.
        leave_within: String,
    },
    /// Count or share of bounce records in `category`.
    Category {
        /// The bounce category.
        category: String,
        /// Further categories counted with it (a refusal the config's own patterns may file
        /// elsewhere than the built-in rules do, e.g. `policy-related` or `spam-related`).
        #[serde(default)]
        or: Vec<String>,
        /// At least.
        min: Option<u64>,
        /// At most.
        max: Option<u64>,
    },
    /// Every (or at least `share` of) delivered messages verified DKIM at the provider.
    DkimVerified {
        /// Share required (1.0 = all).
        #[serde(default = "all")]
        share: f64,
    },
    /// At least `min` `f` records (complaints turned into accounting records).
    FeedbackRecords {
        /// At least.
        min: u64,
    },
    /// Accepted = delivered + bounced + expired, each message exactly once.
    NothingLost,
    /// The `percentile` of delivery times at `provider` is under `under`.
    DeliveryTime {
        /// Provider.
        provider: String,
        /// Percentile (50, 95, 99 ...).
        percentile: f64,
        /// Bound.
        under: String,
    },
}

impl Expectation {
    /// Rewrites the time windows of the expectation with `f` (live runs scale them).
    pub fn scale_windows(&mut self, f: &dyn Fn(&str) -> String) {
        match self {
            Expectation::Backoff {
                enter_within,
                leave_within,
                ..
            } => {
                *enter_within = f(enter_within);
                *leave_within = f(leave_within);
            }
            Expectation::DeliveryTime { under, .. } => *under = f(under),
            _ => {}
        }
    }
}

/// A scenario.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name (the report directory).
    pub name: String,
    /// What it shows.
    pub description: String,
    /// The MTA config, relative to the scenario file.
    pub config: String,
    /// The provider profiles directory, relative to the scenario file.
    #[serde(default = "profiles_dir")]
    pub profiles: String,
    /// RNG seed.
    #[serde(default)]
    pub seed: u64,
    /// Start, RFC 3339 UTC (`2026-11-23T08:00:00Z`).
    pub start: String,
    /// How long the simulation runs.
    pub duration: String,
    /// Live runs multiply every duration by this (e.g. 0.01).
    pub live_scale: Option<f64>,
    /// Part of the incident suite `mtasim validate` runs by default (false for a scenario built
    /// around its own config, e.g. one with timers short enough for a live run).
    #[serde(default = "yes")]
    pub suite: bool,
    /// Where providers that send ARF reports send them (the address registered with their
    /// feedback loops); default `fbl@fbl.<From domain>`.
    pub fbl_address: Option<String>,
    /// What the traffic's vMTA and sender names stand for (see [`Roles`]).
    #[serde(default)]
    pub roles: Roles,
    /// Traffic streams.
    #[serde(default)]
    pub traffic: Vec<Traffic>,
    /// Incident timeline.
    #[serde(default, rename = "incident")]
    pub incidents: Vec<Incident>,
    /// Expectations.
    #[serde(default, rename = "expect")]
    pub expectations: Vec<Expectation>,
}

fn yes() -> bool {
    true
}

fn profiles_dir() -> String {
    "../isp-profiles".into()
}

/// A loaded scenario with its resolved paths and profiles.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The scenario.
    pub scenario: Scenario,
    /// Where it was read from.
    pub file: PathBuf,
    /// The MTA config path, resolved.
    pub config_path: PathBuf,
    /// The providers.
    pub profiles: Vec<Profile>,
    /// Start, Unix ms.
    pub start_ms: i64,
    /// Duration.
    pub duration: Duration,
}

/// Parses `YYYY-MM-DDTHH:MM:SSZ` into Unix milliseconds.
pub fn parse_rfc3339_utc(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400) + h * 3600 + mi * 60 + se) * 1000)
}

fn invalid(file: &Path, key: &str, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        file: file.to_path_buf(),
        key: key.to_string(),
        message: message.into(),
    }
}

fn interval(file: &Path, key: &str, v: &str) -> Result<Duration, ScenarioError> {
    parse_interval(v).map_err(|e| invalid(file, key, e))
}

fn rate(file: &Path, key: &str, v: &str) -> Result<Rate, ScenarioError> {
    parse_rate(v).map_err(|e| invalid(file, key, e))
}

fn share(file: &Path, key: &str, v: f64) -> Result<(), ScenarioError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(
            file,
            key,
            format!("{v} is not a share between 0 and 1"),
        ))
    }
}

impl Loaded {
    /// Reads a scenario file, its profiles, and checks every reference.
    pub fn load(file: &Path) -> Result<Loaded, ScenarioError> {
        Loaded::load_with(file, None)
    }

    /// As [`Loaded::load`], with `config` (`mtasim --config`) in place of the scenario's MTA
    /// config: the scenario's own config then need not exist.
    pub fn load_with(file: &Path, config: Option<&Path>) -> Result<Loaded, ScenarioError> {
        let text = std::fs::read_to_string(file).map_err(|source| ScenarioError::Io {
            file: file.to_path_buf(),
            source,
        })?;
        let scenario: Scenario = toml::from_str(&text).map_err(|e| ScenarioError::Toml {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let dir = file.parent().unwrap_or(Path::new("."));
        let config_path = match config {
            Some(c) => c.to_path_buf(),
            None => dir.join(&scenario.config),
        };
        if !config_path.is_file() {
            return Err(match config {
                Some(c) => ScenarioError::Io {
                    file: c.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the --config file does not exist",
                    ),
                },
                None => invalid(
                    file,
                    "config",
                    format!("`{}` does not exist", config_path.display()),
                ),
            });
        }
        let profiles = crate::profile::load_dir(&dir.join(&scenario.profiles))?;
        let l = Loaded {
            start_ms: parse_rfc3339_utc(&scenario.start).ok_or_else(|| {
                invalid(
                    file,
                    "start",
                    format!("`{}` is not YYYY-MM-DDTHH:MM:SSZ", scenario.start),
                )
            })?,
            duration: interval(file, "duration", &scenario.duration)?,
            scenario,
            file: file.to_path_buf(),
            config_path,
            profiles,
        };
        l.validate()?;
        Ok(l)
    }

    /// The provider hosting `domain`, if any.
    pub fn provider_of(&self, domain: &str) -> Option<&Profile> {
        let d = domain.to_ascii_lowercase();
        self.profiles.iter().find(|p| p.domains.contains(&d))
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let f = &self.file;
        let s = &self.scenario;
        if let Some(x) = s.live_scale {
            if !(x > 0.0 && x <= 1.0) {
                return Err(invalid(f, "live_scale", "must be in (0, 1]"));
            }
        }
        let known = |p: &str| self.profiles.iter().any(|x| x.name == p);
        for (i, t) in s.traffic.iter().enumerate() {
            let k = |x: &str| format!("traffic[{i}].{x}");
            if let Some(r) = &t.rate {
                let r = rate(f, &k("rate"), r)?;
                if r.count == Some(0) {
                    return Err(invalid(f, &k("rate"), "a stream needs a rate above 0"));
                }
            }
            interval(f, &k("start"), &t.start)?;
            if !t.sender.contains('@') {
                return Err(invalid(f, &k("sender"), "not an address"));
            }
            if t.domains.is_empty() && t.special.is_empty() {
                return Err(invalid(
                    f,
                    &k("domains"),
                    "a stream needs recipient domains or special addresses",
                ));
            }
            for (d, w) in &t.domains {
                if *w < 0.0 {
                    return Err(invalid(
                        f,
                        &k(&format!("domains.\"{d}\"")),
                        "weights are not negative",
                    ));
                }
                if self.provider_of(d).is_none() {
                    return Err(invalid(
                        f,
                        &k(&format!("domains.\"{d}\"")),
                        format!("no provider profile hosts `{d}`"),
                    ));
                }
            }
            if let Some(sz) = &t.size {
                let lo = parse_size(&sz.min).map_err(|e| invalid(f, &k("size.min"), e))?;
                let hi = parse_size(&sz.max).map_err(|e| invalid(f, &k("size.max"), e))?;
                if lo > hi {
                    return Err(invalid(f, &k("size"), "min is above max"));
                }
            }
            if t.recipients_per_message == 0 {
                return Err(invalid(f, &k("recipients_per_message"), "at least 1"));
            }
        }
        for name in s.roles.vmta.keys() {
            if !s
                .traffic
                .iter()
                .any(|t| t.vmta.as_deref() == Some(name.as_str()))
            {
                return Err(invalid(
                    f,
                    &format!("roles.vmta.\"{name}\""),
                    "no traffic stream uses this vmta",
                ));
            }
        }
        for name in s.roles.sender.keys() {
            if !s
                .traffic
                .iter()
                .any(|t| t.sender_domain() == name.to_ascii_lowercase())
            {
                return Err(invalid(
                    f,
                    &format!("roles.sender.\"{name}\""),
                    "no traffic stream sends from this domain",
                ));
            }
        }
        for (i, inc) in s.incidents.iter().enumerate() {
            let k = |x: &str| format!("incident[{i}].{x}");
            if !known(&inc.provider) {
                return Err(invalid(
                    f,
                    &k("provider"),
                    format!("no provider profile named `{}`", inc.provider),
                ));
            }
            interval(f, &k("at"), &inc.at)?;
            interval(f, &k("for"), &inc.lasts)?;
            match &inc.kind {
                IncidentKind::Reply {
                    reply, share: sh, ..
                } => {
                    share(f, &k("share"), *sh)?;
                    if !reply
                        .get(..3)
                        .and_then(|c| c.parse::<u16>().ok())
                        .is_some_and(|c| (400..600).contains(&c))
                    {
                        return Err(invalid(
                            f,
                            &k("reply"),
                            "an incident reply is a 4xx or 5xx reply",
                        ));
                    }
                }
                IncidentKind::Drop { share: sh } | IncidentKind::ComplaintRate { share: sh } => {
                    share(f, &k("share"), *sh)?
                }
                IncidentKind::Slow { share: sh, delay } => {
                    share(f, &k("share"), *sh)?;
                    interval(f, &k("delay"), delay)?;
                }
                IncidentKind::DnsFailure { failure }
                    if !["servfail", "timeout", "nxdomain"].contains(&failure.as_str()) =>
                {
                    return Err(invalid(f, &k("failure"), "servfail, timeout or nxdomain"));
                }
                IncidentKind::Blocklist { ip, .. } if ip.parse::<std::net::IpAddr>().is_err() => {
                    return Err(invalid(f, &k("ip"), "not an IP address"))
                }
                _ => {}
            }
        }
        for (i, e) in s.expectations.iter().enumerate() {
            let k = |x: &str| format!("expect[{i}].{x}");
            match e {
                Expectation::MaxConnections { provider, .. }
                | Expectation::MessagesPerConnection { provider, .. }
                    if !known(provider) =>
                {
                    return Err(invalid(
                        f,
                        &k("provider"),
                        format!("no provider profile named `{provider}`"),
                    ));
                }
                Expectation::Rate { provider, max } => {
                    if !known(provider) {
                        return Err(invalid(
                            f,
                            &k("provider"),
                            format!("no provider profile named `{provider}`"),
                        ));
                    }
                    rate(f, &k("max"), max)?;
                }
                Expectation::Backoff {
                    incident,
                    enter_within,
                    leave_within,
                    ..
                } => {
                    if *incident >= s.incidents.len() {
                        return Err(invalid(
                            f,
                            &k("incident"),
                            format!("there are only {} incidents", s.incidents.len()),
                        ));
                    }
                    interval(f, &k("enter_within"), enter_within)?;
                    interval(f, &k("leave_within"), leave_within)?;
                }
                Expectation::Category { category, or, .. } => {
                    for c in std::iter::once(category).chain(or) {
                        if !mta::config::model::BOUNCE_CATEGORIES.contains(&c.as_str()) {
                            return Err(invalid(
                                f,
                                &k("category"),
                                format!("`{c}` is not a bounce category"),
                            ));
                        }
                    }
                }
                Expectation::DkimVerified { share: sh } => share(f, &k("share"), *sh)?,
                Expectation::DeliveryTime {
                    provider,
                    percentile,
                    under,
                } => {
                    if !known(provider) {
                        return Err(invalid(
                            f,
                            &k("provider"),
                            format!("no provider profile named `{provider}`"),
                        ));
                    }
                    if !(0.0..=100.0).contains(percentile) {
                        return Err(invalid(f, &k("percentile"), "between 0 and 100"));
                    }
                    interval(f, &k("under"), under)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Every scenario file in `dir`, sorted.
pub fn scenario_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    Ok(v)
}
