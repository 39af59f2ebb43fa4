//! Mailbox provider profiles (`isp-profiles/*.toml`): which domains and MX hosts a provider has and
//! how it behaves (limits per source IP, mailbox population, TLS and authentication rules,
//! reputation, late bounces and complaints), with its real reply texts. Loaded with
//! `deny_unknown_fields`; every error names the file and the key.

use mta::config::values::{parse_interval, parse_size};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrong type (the message carries line, column and key).
    #[error("{file}: {message}")]
    Toml {
        /// The file.
        file: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key, dotted.
        key: String,
        /// Why.
        message: String,
    },
    /// Two profiles claim the same domain.
    #[error("domain `{domain}` is claimed by both `{first}` and `{second}`")]
    DuplicateDomain {
        /// The domain.
        domain: String,
        /// One profile.
        first: String,
        /// The other.
        second: String,
    },
}

/// When in the SMTP conversation a reply is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Instead of the 220 greeting.
    Banner,
    /// To EHLO/HELO.
    Ehlo,
    /// To MAIL FROM.
    Mail,
    /// To RCPT TO.
    Rcpt,
    /// To DATA.
    Data,
    /// After the message data.
    EndOfData,
}

/// A reply the provider gives, when, and whether it hangs up after it. The text may use `{ip}`
/// (sending IP), `{rcpt}`, `{domain}` (recipient domain) and `{sender_domain}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Response {
    /// Full reply line: code, optional enhanced status, text.
    pub reply: String,
    /// When it is given.
    pub at: Phase,
    /// Close the connection after it.
    #[serde(default)]
    pub disconnect: bool,
}

impl Response {
    /// The reply code (validated at load).
    pub fn code(&self) -> u16 {
        self.reply
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or(451)
    }

    /// The reply with placeholders filled in (the address is formatted only for a reply that
    /// names it).
    pub fn render(&self, ip: impl std::fmt::Display, rcpt: &str, sender_domain: &str) -> String {
        use std::borrow::Cow;
        let domain = rcpt.rsplit_once('@').map_or("", |(_, d)| d);
        // In this order, each on what the previous ones left; a placeholder that is not there
        // costs no copy (most replies have none or one).
        let mut out = Cow::Borrowed(self.reply.as_str());
        if out.contains("{ip}") {
            out = Cow::Owned(out.replace("{ip}", &ip.to_string()));
        }
        for (name, value) in [
            ("{rcpt}", rcpt),
            ("{domain}", domain),
            ("{sender_domain}", sender_domain),
        ] {
            if out.contains(name) {
                out = Cow::Owned(out.replace(name, value));
            }
        }
        out.into_owned()
    }
}

/// A count over a sliding window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Events allowed in the window.
    pub count: u64,
    /// The window, as an interval (`1m`, `1h`, `1d`).
    pub per: String,
    /// `per` parsed, on first use (a provider asks for every recipient).
    #[serde(skip)]
    parsed: std::sync::OnceLock<Duration>,
}

impl Window {
    /// The window length (validated at load).
    pub fn duration(&self) -> Duration {
        *self
            .parsed
            .get_or_init(|| parse_interval(&self.per).unwrap_or(Duration::from_secs(60)))
    }
}

/// An MX host of the provider.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mx {
    /// Host name.
    pub host: String,
    /// MX preference.
    pub preference: u16,
}

/// Limits per sending IP, enforced across all of the provider's MX hosts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Concurrent connections from one IP.
    pub connections: Option<u32>,
    /// Reply when `connections` is exceeded.
    pub on_connections: Option<Response>,
    /// Messages on one connection.
    pub messages_per_connection: Option<u32>,
    /// Reply when `messages_per_connection` is exceeded.
    pub on_messages_per_connection: Option<Response>,
    /// New connections from one IP per window.
    pub connect_rate: Option<Window>,
    /// Reply when `connect_rate` is exceeded.
    pub on_connect_rate: Option<Response>,
    /// Messages (accepted recipients) from one IP per sliding window; all windows apply.
    #[serde(default)]
    pub message_rates: Vec<Window>,
    /// Reply when a message-rate window is exceeded.
    pub on_message_rate: Option<Response>,
}

/// The mailbox population: shares of addresses in each bad state, drawn deterministically from the
/// address; scenario addresses named `unknown-*`, `full-*`, `disabled-*` are always in that state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mailboxes {
    /// Share of addresses that do not exist.
    pub unknown: f64,
    /// Reply for them.
    pub on_unknown: Response,
    /// Share of full mailboxes.
    pub full: f64,
    /// Reply for them.
    pub on_full: Response,
    /// Share of disabled accounts.
    pub disabled: f64,
    /// Reply for them.
    pub on_disabled: Response,
}

/// Greylisting: the first attempt of a (source IP, sender, recipient) triple is deferred.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Greylisting {
    /// On or off.
    pub enabled: bool,
    /// How long a new triple is deferred.
    pub delay: String,
    /// The deferral.
    pub on_greylisted: Response,
}

/// STARTTLS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// STARTTLS is offered.
    pub offered: bool,
    /// Mail over a clear connection is refused.
    pub required: bool,
    /// Reply when TLS is required but not used.
    pub on_missing: Option<Response>,
}

/// Sender authentication rules, checked for real (SPF, DKIM, DMARC) against the world's DNS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Every sender needs SPF or DKIM to pass.
    pub require_spf_or_dkim: bool,
    /// Reply when neither passes.
    pub on_unauthenticated: Option<Response>,
    /// Messages per day from one sending domain above which the bulk rules apply.
    pub bulk_threshold_per_day: Option<u64>,
    /// Bulk senders need SPF and DKIM both.
    #[serde(default)]
    pub bulk_require_spf_and_dkim: bool,
    /// Bulk senders need an aligned DMARC pass (p=none is enough).
    #[serde(default)]
    pub bulk_require_dmarc: bool,
    /// Bulk senders need one-click unsubscribe headers (RFC 8058).
    #[serde(default)]
    pub bulk_require_one_click_unsubscribe: bool,
    /// Reply when a bulk rule fails.
    pub on_bulk_failure: Option<Response>,
    /// A forward-confirmed PTR is required for the sending IP.
    #[serde(default)]
    pub require_ptr: bool,
    /// Reply when it is missing.
    pub on_missing_ptr: Option<Response>,
}

/// A reputation tier: below `below`, `share` of transactions get `response`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Score threshold.
    pub below: f64,
    /// Share of transactions affected (0..=1).
    pub share: f64,
    /// What they get.
    pub response: Response,
}

/// Per-IP reputation, moved by complaints and unknown-user hits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reputation {
    /// Starting score (0..=100).
    pub initial: f64,
    /// Points lost per complaint.
    pub complaint_penalty: f64,
    /// Points lost per unknown-user recipient.
    pub unknown_user_penalty: f64,
    /// Points regained per hour without incidents.
    pub recovery_per_hour: f64,
    /// Messages an hour from one IP up to which each complaint or unknown recipient costs its full
    /// penalty; above it the penalties shrink in proportion, so the score follows the complaint and
    /// unknown-user *rates*, as providers judge senders, not the raw counts (default 1,000).
    #[serde(default = "default_volume_reference")]
    pub volume_reference: f64,
    /// Tiers, from the worst.
    #[serde(default)]
    pub tiers: Vec<Tier>,
}

fn default_volume_reference() -> f64 {
    1000.0
}

/// What the provider sends back later.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    /// Share of accepted recipients that bounce later by DSN.
    pub late_bounce_share: f64,
    /// How long after acceptance the late DSN is sent.
    pub late_bounce_delay: String,
    /// Reply text quoted in late DSNs.
    pub late_bounce_diagnostic: String,
    /// Whether the provider sends per-message ARF complaint reports at all.
    pub sends_arf: bool,
    /// Share of delivered messages reported as complaints (when `sends_arf`).
    pub complaint_share: f64,
    /// How long after delivery the complaint comes.
    pub complaint_delay: String,
    /// The From address of reports.
    pub report_from: String,
    /// ARF `User-Agent`.
    pub arf_user_agent: Option<String>,
}

/// A mailbox provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name (`gmail`).
    pub name: String,
    /// Display name (`Gmail`).
    pub display_name: String,
    /// Recipient domains it hosts.
    pub domains: Vec<String>,
    /// Its MX hosts (each gets its own address in the world).
    pub mx: Vec<Mx>,
    /// The 220 greeting text after the code (`mx.google.com ESMTP … - gsmtp`).
    pub banner: String,
    /// Largest message accepted (`35M`).
    pub max_message_size: String,
    /// Reply when the message is too large.
    pub on_too_large: Response,
    /// Reply after accepted data; `{queue_id}` is filled in.
    pub accepted: String,
    /// Limits per source IP.
    pub limits: Limits,
    /// Mailbox population.
    pub mailboxes: Mailboxes,
    /// Greylisting.
    pub greylisting: Option<Greylisting>,
    /// STARTTLS.
    pub tls: Tls,
    /// Authentication rules.
    pub auth: Auth,
    /// Reputation.
    pub reputation: Reputation,
    /// Late bounces and complaints.
    pub feedback: Feedback,
}

fn invalid(file: &Path, key: &str, message: impl Into<String>) -> ProfileError {
    ProfileError::Invalid {
        file: file.to_path_buf(),
        key: key.to_string(),
        message: message.into(),
    }
}

fn check_reply(file: &Path, key: &str, reply: &str) -> Result<(), ProfileError> {
    let code: Option<u16> = reply.get(..3).and_then(|c| c.parse().ok());
    match code {
        Some(c)
            if (200..600).contains(&c) && reply.as_bytes().get(3).is_none_or(|b| *b == b' ') =>
        {
            Ok(())
        }
        _ => Err(invalid(
            file,
            key,
            format!("`{reply}` is not an SMTP reply (a 2xx-5xx code, a space, then text)"),
        )),
    }
}

fn check_response(file: &Path, key: &str, r: &Option<Response>) -> Result<(), ProfileError> {
    match r {
        Some(r) => check_reply(file, &format!("{key}.reply"), &r.reply),
        None => Ok(()),
    }
}

fn check_share(file: &Path, key: &str, v: f64) -> Result<(), ProfileError> {
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

fn check_interval(file: &Path, key: &str, v: &str) -> Result<(), ProfileError> {
    parse_interval(v)
        .map(|_| ())
        .map_err(|e| invalid(file, key, e))
}

impl Profile {
    /// Reads and validates one profile file.
    pub fn load(file: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(file).map_err(|source| ProfileError::Io {
            file: file.to_path_buf(),
            source,
        })?;
        Profile::parse(file, &text)
    }

    /// Parses and validates profile text; `file` names it in errors.
    pub fn parse(file: &Path, text: &str) -> Result<Profile, ProfileError> {
        let p: Profile = toml::from_str(text).map_err(|e| ProfileError::Toml {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        p.validate(file)?;
        Ok(p)
    }

    fn validate(&self, f: &Path) -> Result<(), ProfileError> {
        if self.domains.is_empty() {
            return Err(invalid(
                f,
                "domains",
                "a provider needs at least one domain",
            ));
        }
        if self.mx.is_empty() {
            return Err(invalid(f, "mx", "a provider needs at least one MX host"));
        }
        parse_size(&self.max_message_size).map_err(|e| invalid(f, "max_message_size", e))?;
        check_reply(f, "on_too_large.reply", &self.on_too_large.reply)?;
        check_reply(f, "accepted", &self.accepted)?;
        let l = &self.limits;
        for (k, r) in [
            ("limits.on_connections", &l.on_connections),
            (
                "limits.on_messages_per_connection",
                &l.on_messages_per_connection,
            ),
            ("limits.on_connect_rate", &l.on_connect_rate),
            ("limits.on_message_rate", &l.on_message_rate),
        ] {
            check_response(f, k, r)?;
        }
        for (limit, resp, k) in [
            (
                l.connections.is_some(),
                &l.on_connections,
                "limits.on_connections",
            ),
            (
                l.messages_per_connection.is_some(),
                &l.on_messages_per_connection,
                "limits.on_messages_per_connection",
            ),
            (
                l.connect_rate.is_some(),
                &l.on_connect_rate,
                "limits.on_connect_rate",
            ),
            (
                !l.message_rates.is_empty(),
                &l.on_message_rate,
                "limits.on_message_rate",
            ),
        ] {
            if limit && resp.is_none() {
                return Err(invalid(
                    f,
                    k,
                    "missing: a limit needs the reply given when it is exceeded",
                ));
            }
        }
        if let Some(w) = &l.connect_rate {
            check_interval(f, "limits.connect_rate.per", &w.per)?;
        }
        for (i, w) in l.message_rates.iter().enumerate() {
            check_interval(f, &format!("limits.message_rates[{i}].per"), &w.per)?;
        }
        let m = &self.mailboxes;
        check_share(f, "mailboxes.unknown", m.unknown)?;
        check_share(f, "mailboxes.full", m.full)?;
        check_share(f, "mailboxes.disabled", m.disabled)?;
        if m.unknown + m.full + m.disabled > 1.0 {
            return Err(invalid(f, "mailboxes", "the shares add up to more than 1"));
        }
        check_reply(f, "mailboxes.on_unknown.reply", &m.on_unknown.reply)?;
        check_reply(f, "mailboxes.on_full.reply", &m.on_full.reply)?;
        check_reply(f, "mailboxes.on_disabled.reply", &m.on_disabled.reply)?;
        if let Some(g) = &self.greylisting {
            check_interval(f, "greylisting.delay", &g.delay)?;
            check_reply(f, "greylisting.on_greylisted.reply", &g.on_greylisted.reply)?;
        }
        if self.tls.required && self.tls.on_missing.is_none() {
            return Err(invalid(
                f,
                "tls.on_missing",
                "missing: required TLS needs the reply for clear connections",
            ));
        }
        check_response(f, "tls.on_missing", &self.tls.on_missing)?;
        let a = &self.auth;
        check_response(f, "auth.on_unauthenticated", &a.on_unauthenticated)?;
        check_response(f, "auth.on_bulk_failure", &a.on_bulk_failure)?;
        check_response(f, "auth.on_missing_ptr", &a.on_missing_ptr)?;
        if a.require_spf_or_dkim && a.on_unauthenticated.is_none() {
            return Err(invalid(
                f,
                "auth.on_unauthenticated",
                "missing: require_spf_or_dkim needs its reply",
            ));
        }
        let r = &self.reputation;
        if !(0.0..=100.0).contains(&r.initial) {
            return Err(invalid(
                f,
                "reputation.initial",
                "a score is between 0 and 100",
            ));
        }
        for (i, t) in r.tiers.iter().enumerate() {
            check_share(f, &format!("reputation.tiers[{i}].share"), t.share)?;
            check_reply(
                f,
                &format!("reputation.tiers[{i}].response.reply"),
                &t.response.reply,
            )?;
        }
        let fb = &self.feedback;
        check_share(f, "feedback.late_bounce_share", fb.late_bounce_share)?;
        check_share(f, "feedback.complaint_share", fb.complaint_share)?;
        check_interval(f, "feedback.late_bounce_delay", &fb.late_bounce_delay)?;
        check_interval(f, "feedback.complaint_delay", &fb.complaint_delay)?;
        if !fb.sends_arf && fb.complaint_share > 0.0 {
            return Err(invalid(
                f,
                "feedback.complaint_share",
                "the provider sends no ARF reports (sends_arf = false), so the share must be 0",
            ));
        }
        Ok(())
    }

    /// The largest message accepted, in bytes.
    pub fn max_message_bytes(&self) -> u64 {
        parse_size(&self.max_message_size).unwrap_or(u64::MAX)
    }
}

/// Loads every `*.toml` in `dir` (sorted by file name) and checks that no domain is claimed twice.
pub fn load_dir(dir: &Path) -> Result<Vec<Profile>, ProfileError> {
    let rd = std::fs::read_dir(dir).map_err(|source| ProfileError::Io {
        file: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut out: Vec<Profile> = Vec::new();
    for f in files {
        let p = Profile::load(&f)?;
        for d in &p.domains {
            if let Some(other) = out.iter().find(|o| o.domains.contains(d)) {
                return Err(ProfileError::DuplicateDomain {
                    domain: d.clone(),
                    first: other.name.clone(),
                    second: p.name.clone(),
                });
            }
        }
        out.push(p);
    }
    Ok(out)
}
