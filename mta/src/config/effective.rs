//! Effective settings: what applies to a queue (`domain/vmta`) or a connection's source after
//! merging defaults, global, pool and vMTA `<domain>` blocks (or `<source>` blocks), with where
//! each value came from.

use super::diag::Span;
use super::model::{Config, DomainBlock, SourceSelector};
use super::registry::{registry, Support};
use super::values::{Rate, Value};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// How long an idle outbound connection waits for more mail when the config does not set
/// `connection-idle-timeout`: Postfix's `smtp_connection_cache_time_limit` (2 s). Mail trickling
/// in then reuses the connection instead of opening one per message, which trips the providers'
/// connection-rate limits (PowerMTA documents 0, QUIT at once; an explicit 0 keeps that).
pub const DEFAULT_IDLE_KEEP: Duration = Duration::from_secs(2);

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "from", rename_all = "lowercase")]
pub enum Origin {
    /// PowerMTA's documented default.
    Default,
    /// Follows another setting (`backoff-max-msg-rate` defaults to `max-msg-rate`).
    Derived {
        /// The setting it follows.
        of: String,
    },
    /// Written in the config.
    Config {
        /// Where.
        at: Span,
        /// In which block (`<domain gmail.com>`, `<virtual-mta v1> <domain *>` ...).
        block: String,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Derived { of } => write!(f, "default (= {of})"),
            Origin::Config { at, block } => write!(f, "{at} {block}"),
        }
    }
}

/// One effective value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effective {
    /// The value; `None` when a directive has no default and is not set.
    pub value: Option<Value>,
    /// Where it came from.
    pub origin: Origin,
}

/// All effective settings of one scope, by directive name.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EffectiveSettings(pub BTreeMap<String, Effective>);

impl EffectiveSettings {
    /// The defaults of every acted-on directive documented for `block` (`domain` or `source`),
    /// computed once.
    fn defaults(block: &str) -> EffectiveSettings {
        static DOMAIN: OnceLock<EffectiveSettings> = OnceLock::new();
        static SOURCE: OnceLock<EffectiveSettings> = OnceLock::new();
        let cell = if block == "domain" { &DOMAIN } else { &SOURCE };
        cell.get_or_init(|| {
            let mut map = BTreeMap::new();
            for spec in registry().for_block(block) {
                if spec.support != Support::Acted
                    || matches!(spec.name, "include" | "max-rcpt-per-transaction")
                {
                    continue;
                }
                let value = spec.default.and_then(|d| spec.kind.parse(d).ok());
                map.insert(
                    spec.name.to_string(),
                    Effective {
                        value,
                        origin: Origin::Default,
                    },
                );
            }
            EffectiveSettings(map)
        })
        .clone()
    }

    fn apply(&mut self, settings: &super::model::Settings, block: &str) {
        for s in &settings.0 {
            let value = if s.value == Value::Cleared {
                None
            } else {
                Some(s.value.clone())
            };
            self.0.insert(
                s.name.clone(),
                Effective {
                    value,
                    origin: Origin::Config {
                        at: s.span.clone(),
                        block: block.to_string(),
                    },
                },
            );
        }
    }

    fn derive(&mut self, name: &str, from: &str) {
        if matches!(
            self.0.get(name),
            Some(Effective {
                origin: Origin::Config { .. },
                ..
            })
        ) {
            return;
        }
        let v = self.0.get(from).and_then(|e| e.value.clone());
        self.0.insert(
            name.to_string(),
            Effective {
                value: v,
                origin: Origin::Derived {
                    of: from.to_string(),
                },
            },
        );
    }

    /// The value of `name`, if set or defaulted.
    pub fn value(&self, name: &str) -> Option<&Value> {
        self.0.get(name).and_then(|e| e.value.as_ref())
    }

    /// A boolean setting (false when absent).
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.value(name), Some(Value::Bool(true)))
    }

    /// An integer setting; `unlimited` and absent give `None`.
    pub fn int(&self, name: &str) -> Option<u64> {
        match self.value(name) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }

    /// An interval setting; `never` and absent give `None`.
    pub fn interval(&self, name: &str) -> Option<Duration> {
        match self.value(name) {
            Some(Value::Interval(d)) => Some(*d),
            _ => None,
        }
    }

    /// An interval-list setting (empty when absent).
    pub fn intervals(&self, name: &str) -> Vec<Duration> {
        match self.value(name) {
            Some(Value::Intervals(l)) => l.clone(),
            Some(Value::Interval(d)) => vec![*d],
            _ => Vec::new(),
        }
    }

    /// A rate setting (unlimited when absent).
    pub fn rate(&self, name: &str) -> Rate {
        match self.value(name) {
            Some(Value::Rate(r)) => *r,
            _ => Rate::UNLIMITED,
        }
    }

    /// A size setting; `unlimited` and absent give `None`.
    pub fn size(&self, name: &str) -> Option<u64> {
        match self.value(name) {
            Some(Value::Size(n)) => Some(*n),
            _ => None,
        }
    }

    /// A text setting.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.value(name) {
            Some(Value::Text(t)) => Some(t),
            _ => None,
        }
    }
}

fn describe(level: &str, b: &DomainBlock) -> String {
    let m = if b.from_macro { " (from macro)" } else { "" };
    if level.is_empty() {
        format!("<domain {}>{m}", b.pattern)
    } else {
        format!("{level} <domain {}>{m}", b.pattern)
    }
}

/// A matching block with its sort key: (specificity, level, explicit, file order), label, block.
type Layered<'a> = ((u32, u32), u8, bool, usize, String, &'a DomainBlock);

impl Config {
    /// Every `domain-key` line: global, then each vMTA's, then each pool's.
    pub fn all_domain_keys(&self) -> impl Iterator<Item = &super::model::DomainKey> {
        self.domain_keys
            .iter()
            .chain(self.vmtas.values().flat_map(|v| v.domain_keys.iter()))
            .chain(self.pools.values().flat_map(|p| p.domain_keys.iter()))
    }

    /// The pools `vmta` belongs to, in name order.
    pub fn pools_of(&self, vmta: &str) -> Vec<&str> {
        self.pools
            .values()
            .filter(|p| p.members.iter().any(|(m, _)| m == vmta))
            .map(|p| p.name.as_str())
            .collect()
    }

    /// Effective `<domain>` settings for the queue `domain/vmta` (`vmta` = None for `{default}`):
    /// defaults, then every matching block from the most general pattern to the most specific; for
    /// patterns equally specific the vMTA's block beats the pool's, which beats the global one, and an
    /// explicit pattern beats one expanded from a macro. So the most specific pattern always wins, and
    /// a vMTA-level `<domain gmail.com>` overrides the global `<domain gmail.com>` it inherits from.
    pub fn domain_settings(&self, domain: &str, vmta: Option<&str>) -> EffectiveSettings {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut layers: Vec<(u8, String, &[DomainBlock])> = vec![(0, String::new(), &self.domains)];
        if let Some(v) = vmta {
            // A vMTA in several pools with <domain> blocks is a check-config error; use the first.
            if let Some(pool) = self
                .pools_of(v)
                .into_iter()
                .filter_map(|p| self.pools.get(p))
                .find(|p| !p.domains.is_empty())
            {
                layers.push((
                    1,
                    format!("<virtual-mta-pool {}>", pool.name),
                    &pool.domains,
                ));
            }
            if let Some(vm) = self.vmtas.get(v) {
                layers.push((2, format!("<virtual-mta {}>", vm.name), &vm.domains));
            }
        }
        let mut found: Vec<Layered> = Vec::new();
        for (level, label, blocks) in &layers {
            for (i, b) in blocks
                .iter()
                .enumerate()
                .filter(|(_, b)| b.pattern.matches(&domain))
            {
                found.push((
                    b.pattern.specificity(),
                    *level,
                    !b.from_macro,
                    i,
                    describe(label, b),
                    b,
                ));
            }
        }
        found.sort_by_key(|a| (a.0, a.1, a.2, a.3));
        let mut eff = EffectiveSettings::defaults("domain");
        for (_, _, _, _, label, b) in found {
            eff.apply(&b.settings, &label);
        }
        eff.derive("backoff-max-msg-rate", "max-msg-rate");
        eff.derive("backoff-max-connect-rate", "max-connect-rate");
        eff
    }

    /// Effective `<source>` settings for a connection from `ip` (if known) arriving on a listener
    /// with source name `name` (if any): defaults, then matching networks from the widest to the
    /// narrowest, then the named source, which overrides the address match.
    pub fn source_settings(&self, ip: Option<IpAddr>, name: Option<&str>) -> EffectiveSettings {
        let mut eff = EffectiveSettings::defaults("source");
        // A source directive written at top level (PowerMTA lists `always-allow-relaying` there
        // too) is every source's default; `<source>` blocks override it.
        let top = super::model::Settings(
            self.global
                .0
                .iter()
                .filter(|s| eff.0.contains_key(&s.name))
                .cloned()
                .collect(),
        );
        eff.apply(&top, "global");
        if let Some(ip) = ip {
            let mut nets: Vec<(u8, usize, &super::model::SourceBlock)> = self
                .sources
                .iter()
                .enumerate()
                .filter_map(|(i, s)| match &s.selector {
                    SourceSelector::Net(n) if n.contains(&ip) || (n.prefix_len() == 0) => {
                        Some((n.prefix_len(), i, s))
                    }
                    _ => None,
                })
                .collect();
            nets.sort_by_key(|(len, i, _)| (*len, *i));
            for (_, _, s) in nets {
                let label = format!("<source {}>", String::from(s.selector.clone()));
                eff.apply(&s.settings, &label);
            }
        }
        if let Some(n) = name {
            for s in self
                .sources
                .iter()
                .filter(|s| {
                    matches!(&s.selector, SourceSelector::Named(m) if super::model::same_source_name(m, n))
                })
            {
                eff.apply(&s.settings, &format!("<source {n}>"));
            }
        }
        eff
    }

    /// Every queue name (`domain/vmta`) that `pattern` selects: `*` for the domain or the vMTA part
    /// expands to every explicitly configured domain pattern or vMTA.
    pub fn expand_queue(&self, pattern: &str) -> Result<Vec<(String, Option<String>)>, String> {
        let (dom, vm) = pattern.split_once('/').unwrap_or((pattern, "*"));
        if dom.is_empty() || vm.is_empty() {
            return Err(format!(
                "`{pattern}` is not a queue name (DOMAIN/VMTA, e.g. gmail.com/vmta-1)"
            ));
        }
        let vmtas: Vec<Option<String>> = match vm {
            "*" if self.vmtas.is_empty() => vec![None],
            "*" => self.vmtas.keys().cloned().map(Some).collect(),
            "{default}" => vec![None],
            v if self.vmtas.contains_key(v) => vec![Some(v.to_string())],
            v => {
                let hint = super::registry::closest(v, self.vmtas.keys().map(String::as_str))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(format!("no virtual-mta named `{v}`{hint}"));
            }
        };
        let domains: Vec<String> = if dom == "*" {
            let mut all: Vec<String> = self.domains.iter().map(|b| b.pattern.to_string()).collect();
            all.extend(
                self.vmtas
                    .values()
                    .flat_map(|v| v.domains.iter().map(|b| b.pattern.to_string())),
            );
            all.extend(
                self.pools
                    .values()
                    .flat_map(|p| p.domains.iter().map(|b| b.pattern.to_string())),
            );
            all.sort();
            all.dedup();
            all
        } else {
            vec![dom.to_ascii_lowercase()]
        };
        Ok(domains
            .into_iter()
            .flat_map(|d| vmtas.iter().map(move |v| (d.clone(), v.clone())))
            .collect())
    }
}

/// The settings a queue's delivery and shaping code reads, typed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueSettings {
    /// `max-smtp-out`.
    pub max_smtp_out: u64,
    /// `backoff-max-smtp-out`.
    pub backoff_max_smtp_out: u64,
    /// `max-msg-per-connection` (0 = unlimited).
    pub max_msg_per_connection: u64,
    /// `max-msg-rate` (attempted recipients).
    pub max_msg_rate: Rate,
    /// `backoff-max-msg-rate`.
    pub backoff_max_msg_rate: Rate,
    /// `max-connect-rate`.
    pub max_connect_rate: Rate,
    /// `backoff-max-connect-rate`.
    pub backoff_max_connect_rate: Rate,
    /// `max-rcpt-per-message` (`None` = unlimited).
    pub max_rcpt_per_message: Option<u64>,
    /// `retry-after` list.
    pub retry_after: Vec<Duration>,
    /// `backoff-retry-after` list.
    pub backoff_retry_after: Vec<Duration>,
    /// `retry-recipients-after`.
    pub retry_recipients_after: Option<Duration>,
    /// `connection-idle-timeout`: how long an outbound connection with nothing to send waits
    /// for more mail before QUIT (`None`: QUIT at once, as an explicit 0 says; when the config
    /// does not set it, [`DEFAULT_IDLE_KEEP`]).
    pub connection_idle_timeout: Option<Duration>,
    /// `bounce-after`.
    pub bounce_after: Option<Duration>,
    /// `backoff-to-normal-after` (`None` = never).
    pub backoff_to_normal_after: Option<Duration>,
    /// `backoff-to-normal-after-delivery`.
    pub backoff_to_normal_after_delivery: bool,
    /// `smtp-pattern-list` name.
    pub smtp_pattern_list: Option<String>,
    /// `use-starttls`.
    pub use_starttls: bool,
    /// `require-starttls`.
    pub require_starttls: bool,
    /// `dkim-sign` is `yes`.
    pub dkim_sign: bool,
    /// `dkim-identity`: `sender-or-from` (default) or an address / `@domain` for `i=`.
    pub dkim_identity: Option<String>,
    /// `smtp-hosts` override as written.
    pub smtp_hosts: Option<String>,
    /// `default-smtp-port`.
    pub default_smtp_port: u16,
    /// `connect-timeout`.
    pub connect_timeout: Option<Duration>,
    /// `smtp-greeting-timeout`.
    pub greeting_timeout: Option<Duration>,
    /// `data-send-timeout`.
    pub data_send_timeout: Option<Duration>,
    /// `bounce-upon-no-mx`.
    pub bounce_upon_no_mx: bool,
    /// `disable-mx-rollup`.
    pub disable_mx_rollup: bool,
    /// `queue-to`.
    pub queue_to: Option<String>,
}

impl QueueSettings {
    /// Reads the typed settings out of effective settings.
    pub fn from_effective(e: &EffectiveSettings) -> QueueSettings {
        let rcpt = match e.value("max-rcpt-per-message") {
            Some(Value::Int(0)) | Some(Value::Unlimited) | None => None,
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        };
        QueueSettings {
            max_smtp_out: e.int("max-smtp-out").unwrap_or(20),
            backoff_max_smtp_out: e.int("backoff-max-smtp-out").unwrap_or(20),
            max_msg_per_connection: e.int("max-msg-per-connection").unwrap_or(0),
            max_msg_rate: e.rate("max-msg-rate"),
            backoff_max_msg_rate: e.rate("backoff-max-msg-rate"),
            max_connect_rate: e.rate("max-connect-rate"),
            backoff_max_connect_rate: e.rate("backoff-max-connect-rate"),
            max_rcpt_per_message: rcpt,
            retry_after: e.intervals("retry-after"),
            backoff_retry_after: e.intervals("backoff-retry-after"),
            retry_recipients_after: e.interval("retry-recipients-after"),
            connection_idle_timeout: match e.0.get("connection-idle-timeout") {
                Some(Effective {
                    origin: Origin::Config { .. },
                    ..
                }) => e
                    .interval("connection-idle-timeout")
                    .filter(|d| !d.is_zero()),
                _ => Some(DEFAULT_IDLE_KEEP),
            },
            bounce_after: e.interval("bounce-after"),
            backoff_to_normal_after: e.interval("backoff-to-normal-after"),
            backoff_to_normal_after_delivery: e.bool("backoff-to-normal-after-delivery"),
            smtp_pattern_list: e.text("smtp-pattern-list").map(str::to_string),
            use_starttls: e.bool("use-starttls"),
            require_starttls: e.bool("require-starttls"),
            dkim_sign: e.bool("dkim-sign"),
            dkim_identity: e.text("dkim-identity").map(str::to_string),
            smtp_hosts: e.text("smtp-hosts").map(str::to_string),
            default_smtp_port: e
                .int("default-smtp-port")
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(25),
            connect_timeout: e.interval("connect-timeout"),
            greeting_timeout: e.interval("smtp-greeting-timeout"),
            data_send_timeout: e.interval("data-send-timeout"),
            bounce_upon_no_mx: e.bool("bounce-upon-no-mx"),
            disable_mx_rollup: e.bool("disable-mx-rollup"),
            queue_to: e.text("queue-to").map(str::to_string),
        }
    }
}

/// Where the management server listens: `http-mgmt-port PORT` binds 127.0.0.1 (loopback only,
/// our default); the extension form `http-mgmt-port IP:PORT` binds that address. `None` when
/// the config has no `http-mgmt-port`.
pub fn mgmt_listen_addr(cfg: &Config) -> Result<Option<std::net::SocketAddr>, String> {
    let Some(s) = cfg.global.get("http-mgmt-port") else {
        return Ok(None);
    };
    let text = match &s.value {
        super::values::Value::Int(p) => p.to_string(),
        super::values::Value::Text(t) => t.clone(),
        other => other.to_string(),
    };
    super::values::parse_listen(&text)
        .map(Some)
        .map_err(|e| format!("{}: http-mgmt-port: {e}", s.span))
}

/// The domains the MTA takes mail for itself: `relay-domain` entries and every `host-name`.
pub fn local_domains(cfg: &Config) -> std::collections::BTreeSet<String> {
    let mut out: std::collections::BTreeSet<String> = cfg.relay_domains.iter().cloned().collect();
    if let Some(super::values::Value::Text(h)) = cfg.global.get("host-name").map(|s| &s.value) {
        out.insert(h.to_ascii_lowercase());
    }
    out.extend(cfg.vmtas.values().filter_map(|v| v.host_name.clone()));
    out.extend(
        cfg.vmtas
            .values()
            .flat_map(|v| v.source_hosts.iter().filter_map(|h| h.host_name.clone())),
    );
    // The processors' `domain` lines are taken in here too; their single addresses are matched
    // one by one ([`SessionPolicy::takes`]).
    for p in cfg
        .bounce_processors
        .iter()
        .chain(&cfg.feedback_loop_processors)
    {
        out.extend(p.addresses.domains.iter().map(|d| d.to_ascii_lowercase()));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;
    use crate::config::values::Value;

    fn cfg(text: &str) -> crate::config::Config {
        let l = load_str("t.conf", text);
        assert!(l.is_valid(), "{:#?}", l.diagnostics);
        l.config
    }

    fn smtp_out(c: &crate::config::Config, dom: &str, vmta: Option<&str>) -> Option<u64> {
        c.domain_settings(dom, vmta).int("max-smtp-out")
    }

    #[test]
    fn most_specific_pattern_wins_regardless_of_file_order() {
        let c = cfg("<domain a.example.com>\nmax-smtp-out 4\n</domain>\n<domain *.example.com>\nmax-smtp-out 3\n</domain>\n<domain [*.]example.com>\nmax-smtp-out 2\nmax-msg-per-connection 7\n</domain>\n<domain *>\nmax-smtp-out 1\n</domain>\n");
        assert_eq!(smtp_out(&c, "a.example.com", None), Some(4));
        assert_eq!(smtp_out(&c, "b.example.com", None), Some(3));
        assert_eq!(
            smtp_out(&c, "example.com", None),
            Some(2),
            "*.x does not cover x itself"
        );
        assert_eq!(smtp_out(&c, "other.org", None), Some(1));
        // Settings merge: the general block still supplies what the specific one leaves out.
        assert_eq!(
            c.domain_settings("a.example.com", None)
                .int("max-msg-per-connection"),
            Some(7)
        );
        // Matching is case-insensitive and ignores a trailing dot.
        assert_eq!(smtp_out(&c, "A.Example.COM.", None), Some(4));
    }

    #[test]
    fn vmta_over_pool_over_global_for_equal_patterns() {
        let text = "<virtual-mta v1>\nsmtp-source-host 192.0.2.1 v1.example.com\n<domain gmail.com>\nmax-smtp-out 3\n</domain>\n<domain *>\nmax-msg-rate 5/m\n</domain>\n</virtual-mta>\n<virtual-mta v2>\nsmtp-source-host 192.0.2.2 v2.example.com\n</virtual-mta>\n<virtual-mta-pool p>\nvirtual-mta v1\nvirtual-mta v2\n<domain gmail.com>\nmax-smtp-out 5\nretry-after 7m\n</domain>\n</virtual-mta-pool>\n<domain gmail.com>\nmax-smtp-out 10\nbounce-after 1d\nmax-msg-rate 100/m\n</domain>\n";
        let c = cfg(text);
        assert_eq!(smtp_out(&c, "gmail.com", Some("v1")), Some(3));
        assert_eq!(smtp_out(&c, "gmail.com", Some("v2")), Some(5));
        assert_eq!(smtp_out(&c, "gmail.com", None), Some(10));
        let e = c.domain_settings("gmail.com", Some("v1"));
        assert_eq!(
            e.interval("bounce-after").map(|d| d.as_secs()),
            Some(86_400),
            "inherited from global"
        );
        assert_eq!(
            e.intervals("retry-after").first().map(|d| d.as_secs()),
            Some(420),
            "inherited from the pool"
        );
        // The vMTA's `<domain *>` does not override the global, more specific `<domain gmail.com>`.
        assert_eq!(e.rate("max-msg-rate").to_string(), "100/m");
        assert_eq!(
            c.domain_settings("yahoo.com", Some("v1"))
                .rate("max-msg-rate")
                .to_string(),
            "5/m"
        );
    }

    #[test]
    fn explicit_beats_macro_and_clearing_and_derived_defaults() {
        let c = cfg("<domain gmail.com>\nmax-smtp-out 9\n</domain>\ndomain-macro big gmail.com,yahoo.com\n<domain $big>\nmax-smtp-out 2\nmax-msg-rate 60/m\n</domain>\n<domain yahoo.com>\nmax-msg-rate \"\"\n</domain>\n");
        assert_eq!(
            smtp_out(&c, "gmail.com", None),
            Some(9),
            "explicit block wins though the macro block is later"
        );
        assert_eq!(smtp_out(&c, "yahoo.com", None), Some(2));
        let y = c.domain_settings("yahoo.com", None);
        assert_eq!(
            y.value("max-msg-rate"),
            None,
            "\"\" clears the inherited value"
        );
        let g = c.domain_settings("gmail.com", None);
        assert_eq!(
            g.rate("backoff-max-msg-rate").to_string(),
            "60/m",
            "backoff rate follows max-msg-rate"
        );
        assert_eq!(g.int("max-rcpt-per-message"), Some(1000));
        assert_eq!(g.value("use-starttls"), Some(&Value::Bool(true)));
        assert_eq!(
            g.interval("bounce-after").map(|d| d.as_secs()),
            Some(4 * 86_400 + 12 * 3600)
        );
    }

    #[test]
    fn macros_nest() {
        let c = cfg("domain-macro ms hotmail.com,$ms2\ndomain-macro ms2 live.com,msn.com\n<domain $ms>\nmax-smtp-out 4\n</domain>\n");
        for d in ["hotmail.com", "live.com", "msn.com"] {
            assert_eq!(smtp_out(&c, d, None), Some(4), "{d}");
        }
        assert_eq!(smtp_out(&c, "gmail.com", None), Some(20));
    }

    #[test]
    fn source_precedence() {
        let c = cfg("<source 0/0>\nsmtp-service no\nmax-message-size 1M\n</source>\n<source 10.0.0.0/8>\nsmtp-service yes\n</source>\n<source 10.1.0.0/16>\nmax-message-size 5M\n</source>\n<source {auth}>\nalways-allow-relaying yes\nmax-message-size 9M\n</source>\n");
        let s = |ip: &str, name: Option<&str>| c.source_settings(ip.parse().ok(), name);
        assert!(!s("192.0.2.1", None).bool("smtp-service"));
        assert!(s("10.9.9.9", None).bool("smtp-service"));
        assert_eq!(s("10.1.2.3", None).size("max-message-size"), Some(5 << 20));
        assert_eq!(s("10.9.9.9", None).size("max-message-size"), Some(1 << 20));
        let auth = s("192.0.2.1", Some("{auth}"));
        assert!(auth.bool("always-allow-relaying"));
        assert_eq!(
            auth.size("max-message-size"),
            Some(9 << 20),
            "a named source overrides the address match"
        );
        assert!(!s("192.0.2.1", None).bool("always-allow-relaying"));
        // Braces are optional in a named source: `source=injector` reaches `<source {injector}>`.
        let c = cfg("smtp-listener 0/0:587 source=injector\n<virtual-mta v>\nsmtp-source-host 192.0.2.9 v.example.com\n</virtual-mta>\n<source {injector}>\ndefault-virtual-mta v\n</source>\n");
        for name in ["injector", "{injector}"] {
            let eff = c.source_settings("192.0.2.1".parse().ok(), Some(name));
            assert_eq!(eff.text("default-virtual-mta"), Some("v"), "{name}");
        }
        // At top level it is every source's default, and a <source> block still overrides it.
        let c = cfg("always-allow-relaying yes\nhost-name mta.example.com\n<source 10.0.0.0/8>\nalways-allow-relaying no\n</source>\n");
        let s = |ip: &str| c.source_settings(ip.parse().ok(), None);
        assert!(s("192.0.2.1").bool("always-allow-relaying"));
        assert!(!s("10.1.2.3").bool("always-allow-relaying"));
        assert!(
            !s("192.0.2.1").0.contains_key("host-name"),
            "only source directives"
        );
    }
}
