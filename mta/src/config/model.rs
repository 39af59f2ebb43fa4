//! The typed configuration model: listeners, sources, virtual MTAs, pools, domain blocks, pattern
//! lists, bounce categories, accounting files, spools, HTTP management, processors; built from the
//! syntax tree with every problem reported at its location.

use super::diag::Span;
use super::values::{Pattern, Value};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// One directive with its typed value and where it was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setting {
    /// Directive name (canonical, lower-case).
    pub name: String,
    /// Typed value.
    pub value: Value,
    /// Where the directive is.
    pub span: Span,
}

/// The settings written in one block, in file order (a later one overrides an earlier one).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Settings(pub Vec<Setting>);

impl Settings {
    /// The last setting of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Setting> {
        self.0.iter().rev().find(|s| s.name == name)
    }
}

/// The PowerMTA bounce categories (reference part A) plus `success`, which patterns may also name.
pub const BOUNCE_CATEGORIES: &[&str] = &[
    "bad-configuration",
    "bad-connection",
    "bad-domain",
    "bad-mailbox",
    "content-related",
    "inactive-mailbox",
    "invalid-sender",
    "message-expired",
    "no-answer-from-host",
    "other",
    "policy-related",
    "protocol-errors",
    "quota-issues",
    "relaying-issues",
    "routing-errors",
    "spam-related",
    "virus-related",
    "success",
];

/// Accounting record types (reference part A, "Record types").
pub const RECORD_TYPES: &[&str] = &["d", "b", "t", "tq", "r", "f", "rb", "rs"];

/// Accounting columns known to PowerMTA 5 (reference part A, "d/b fields" and "f/rb extras").
pub const ACCT_FIELDS: &[&str] = &[
    "type",
    "timeLogged",
    "timeQueued",
    "timeImprinted",
    "timeFirstAttempt",
    "totalSecondsQueued",
    "orig",
    "rcpt",
    "orcpt",
    "dsnAction",
    "dsnStatus",
    "dsnDiag",
    "dsnMta",
    "bounceCat",
    "srcType",
    "srcMta",
    "dlvType",
    "dlvSourceIp",
    "dlvDestinationIp",
    "dlvEsmtpAvailable",
    "dlvSize",
    "vmta",
    "jobId",
    "envId",
    "queue",
    "vmtaPool",
    "feedbackType",
    "format",
    "userAgent",
    "reportingMta",
    "reportedDomain",
    "repSourceIp",
    "rcvSourceIp",
    "dsnReportingMta",
];

/// A `<domain>` pattern (reference part A, "Domain patterns").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum DomainPattern {
    /// `*`: every domain.
    Any,
    /// `host.dom`: exactly that domain.
    Exact(String),
    /// `*.dom`: subdomains only.
    Subdomains(String),
    /// `[*.]dom`: the domain and its subdomains.
    DomainAndSubdomains(String),
    /// `[ip/mask]`: address literals in that network.
    Literal(IpNet),
    /// `{name}`: a special queue such as `{default}`.
    Special(String),
}

impl From<DomainPattern> for String {
    fn from(p: DomainPattern) -> String {
        p.to_string()
    }
}

impl std::fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainPattern::Any => f.write_str("*"),
            DomainPattern::Exact(d) => f.write_str(d),
            DomainPattern::Subdomains(d) => write!(f, "*.{d}"),
            DomainPattern::DomainAndSubdomains(d) => write!(f, "[*.]{d}"),
            DomainPattern::Literal(n) => write!(f, "[{n}]"),
            DomainPattern::Special(n) => write!(f, "{{{n}}}"),
        }
    }
}

fn labels(d: &str) -> u32 {
    d.split('.').count() as u32
}

impl DomainPattern {
    /// Parses one pattern; domain names are lower-cased.
    pub fn parse(s: &str) -> Result<DomainPattern, String> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        if s == "*" {
            return Ok(DomainPattern::Any);
        }
        if let Some(d) = s.strip_prefix("[*.]") {
            return valid_domain(d, &s).map(|_| DomainPattern::DomainAndSubdomains(d.to_string()));
        }
        if let Some(d) = s.strip_prefix("*.") {
            return valid_domain(d, &s).map(|_| DomainPattern::Subdomains(d.to_string()));
        }
        if let Some(inner) = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            return parse_cidr(inner).map(DomainPattern::Literal).map_err(|_| {
                format!("`[{inner}]` is not an address literal pattern ([ip] or [ip/mask])")
            });
        }
        if let Some(inner) = s.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
            return Ok(DomainPattern::Special(inner.to_string()));
        }
        valid_domain(&s, &s).map(|_| DomainPattern::Exact(s.clone()))
    }

    /// True if the pattern covers `domain` (lower-case, no trailing dot).
    pub fn matches(&self, domain: &str) -> bool {
        match self {
            DomainPattern::Any => true,
            DomainPattern::Exact(d) => d == domain,
            DomainPattern::Subdomains(d) => {
                domain.len() > d.len() + 1
                    && domain.ends_with(d.as_str())
                    && domain.as_bytes()[domain.len() - d.len() - 1] == b'.'
            }
            DomainPattern::DomainAndSubdomains(d) => {
                domain == d
                    || (domain.len() > d.len() + 1
                        && domain.ends_with(d.as_str())
                        && domain.as_bytes()[domain.len() - d.len() - 1] == b'.')
            }
            DomainPattern::Literal(net) => domain
                .strip_prefix('[')
                .and_then(|x| x.strip_suffix(']'))
                .and_then(|ip| ip.parse::<IpAddr>().ok())
                .is_some_and(|ip| net.contains(&ip)),
            DomainPattern::Special(n) => {
                domain.strip_prefix('{').and_then(|x| x.strip_suffix('}')) == Some(n.as_str())
            }
        }
    }

    /// Sort key: larger is more specific (`*` < `[*.]x` < `*.x` < `host.x`, more labels first).
    pub fn specificity(&self) -> (u32, u32) {
        match self {
            DomainPattern::Any => (0, 0),
            DomainPattern::DomainAndSubdomains(d) => (labels(d), 1),
            DomainPattern::Subdomains(d) => (labels(d), 2),
            DomainPattern::Exact(d) => (labels(d), 3),
            DomainPattern::Literal(n) => (u32::from(n.prefix_len()), 3),
            DomainPattern::Special(_) => (u32::MAX, 3),
        }
    }
}

fn valid_domain(d: &str, written: &str) -> Result<(), String> {
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{written}` is not a valid domain pattern (*, host.dom, *.dom, [*.]dom, [ip/mask])"
        ))
    }
}

/// Parses `0/0`, `10.0.0.0/8`, `1.2.3.4` (as /32), `::1`.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if s == "0/0" {
        return Ok(IpNet::from(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).trunc_to(0));
    }
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!("`{s}` is not an IP address or CIDR network"))
}

trait TruncTo {
    fn trunc_to(self, len: u8) -> IpNet;
}
impl TruncTo for IpNet {
    fn trunc_to(self, len: u8) -> IpNet {
        IpNet::new(self.addr(), len)
            .map(|n| n.trunc())
            .unwrap_or(self)
    }
}

/// A `<domain>` block at one level (global, pool or vMTA).
#[derive(Debug, Clone, Serialize)]
pub struct DomainBlock {
    /// The pattern this block applies to.
    pub pattern: DomainPattern,
    /// True when the pattern came from a `$MACRO` expansion (explicit blocks win over these).
    pub from_macro: bool,
    /// The settings written in it.
    pub settings: Settings,
    /// Where the block opens.
    pub span: Span,
}

/// What a `<source>` block applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum SourceSelector {
    /// Connections from this network.
    Net(IpNet),
    /// A named source: `{auth}`, `{pickup}` or a name a listener gives with `source=`.
    Named(String),
}

/// Named sources PowerMTA itself applies: after SMTP AUTH and to the pickup directory.
pub const BUILTIN_SOURCES: &[&str] = &["{auth}", "{pickup}"];

/// True if two source names name the same `<source>`: braces are optional, so a listener's
/// `source=injector` reaches `<source {injector}>` as well as `<source injector>`.
pub fn same_source_name(a: &str, b: &str) -> bool {
    fn bare(n: &str) -> &str {
        n.strip_prefix('{')
            .and_then(|n| n.strip_suffix('}'))
            .unwrap_or(n)
    }
    bare(a).eq_ignore_ascii_case(bare(b))
}

impl From<SourceSelector> for String {
    fn from(s: SourceSelector) -> String {
        match s {
            SourceSelector::Net(n) => n.to_string(),
            SourceSelector::Named(n) => n,
        }
    }
}

/// A `<source>` block.
#[derive(Debug, Clone, Serialize)]
pub struct SourceBlock {
    /// What it applies to.
    pub selector: SourceSelector,
    /// Its settings.
    pub settings: Settings,
    /// Where it opens.
    pub span: Span,
}

/// An inbound SMTP listener.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    /// The address and port to listen on.
    pub addr: SocketAddr,
    /// The named `<source>` its connections use, if any.
    pub source: Option<String>,
    /// A TLS certificate file for this listener, if any.
    pub tls_certificate: Option<PathBuf>,
    /// Where it is declared.
    pub span: Span,
}

/// An outbound source address and the host name said in EHLO from it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceHost {
    /// The address or network (several addresses are used round-robin).
    pub net: IpNet,
    /// The EHLO name; `None` means the vMTA's or global `host-name`.
    pub host_name: Option<String>,
    /// Where it is declared.
    pub span: Span,
}

/// A `domain-key SELECTOR, DOMAIN|*, KEYFILE` line.
#[derive(Debug, Clone, Serialize)]
pub struct DomainKey {
    /// The DKIM selector.
    pub selector: String,
    /// The signing domain, or `*` for any.
    pub domain: String,
    /// The private key file (resolved against the config file's directory).
    pub path: PathBuf,
    /// Where it is declared.
    pub span: Span,
}

/// A `<virtual-mta NAME>` block.
#[derive(Debug, Clone, Serialize)]
pub struct VirtualMta {
    /// Its name.
    pub name: String,
    /// Source addresses with their EHLO names.
    pub source_hosts: Vec<SourceHost>,
    /// Its `host-name`, if set.
    pub host_name: Option<String>,
    /// Its DKIM keys (tried before pool and global keys).
    pub domain_keys: Vec<DomainKey>,
    /// Other settings written directly in it (`max-smtp-out` for the whole vMTA ...).
    pub settings: Settings,
    /// Its own `<domain>` blocks.
    pub domains: Vec<DomainBlock>,
    /// Where it opens.
    pub span: Span,
}

/// A `<virtual-mta-pool NAME>` block.
#[derive(Debug, Clone, Serialize)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// Member vMTAs, in order (mail is spread round-robin over them).
    pub members: Vec<(String, Span)>,
    /// Pool-level DKIM keys.
    pub domain_keys: Vec<DomainKey>,
    /// Other settings written in it.
    pub settings: Settings,
    /// Its `<domain>` blocks.
    pub domains: Vec<DomainBlock>,
    /// Where it opens.
    pub span: Span,
}

/// An action of an `smtp-pattern-list` rule (reference part A, "smtp-pattern-list").
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "action", content = "after")]
pub enum PatternAction {
    /// `mode=backoff`.
    ModeBackoff,
    /// `mode=normal`.
    ModeNormal,
    /// `backoff-to-normal-after=INTERVAL`.
    BackoffToNormalAfter(#[serde(serialize_with = "ser_dur")] Duration),
    /// `skip-mx`.
    SkipMx,
    /// `bounce-queue`.
    BounceQueue,
    /// `bounce-rcpt` (4xx RCPT replies only).
    BounceRcpt,
    /// `defer-queue`.
    DeferQueue,
    /// `disable-source-ip`.
    DisableSourceIp,
    /// `reenable-after=INTERVAL` (with `disable-source-ip`).
    ReenableAfter(#[serde(serialize_with = "ser_dur")] Duration),
}

fn ser_dur<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::values::format_interval(*d))
}

/// One `reply /REGEX/ ACTIONS` rule.
#[derive(Debug, Clone, Serialize)]
pub struct PatternRule {
    /// The regex matched against the reply text.
    pub pattern: Pattern,
    /// What to do on a match.
    pub actions: Vec<PatternAction>,
    /// Where it is.
    pub span: Span,
}

/// An `<smtp-pattern-list NAME>`: the first matching rule wins.
#[derive(Debug, Clone, Serialize)]
pub struct SmtpPatternList {
    /// Its name.
    pub name: String,
    /// Rules in order.
    pub rules: Vec<PatternRule>,
    /// Where it opens.
    pub span: Span,
}

impl SmtpPatternList {
    /// True if some rule can put a queue into backoff mode.
    pub fn can_enter_backoff(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.actions.contains(&PatternAction::ModeBackoff))
    }
}

/// One `mail-from|rcpt-to|header NAME /REGEX/ key=value,...` line of a `<pattern-list>`.
#[derive(Debug, Clone, Serialize)]
pub struct RoutingRule {
    /// `mail-from`, `rcpt-to` or `header`.
    pub field: String,
    /// The header name for `header` rules.
    pub header: Option<String>,
    /// The regex.
    pub pattern: Pattern,
    /// `key=value` actions such as `virtual-mta=X`.
    pub actions: BTreeMap<String, String>,
    /// Where it is.
    pub span: Span,
}

/// A `<pattern-list NAME>` used by a `<source>` to route mail to vMTAs.
#[derive(Debug, Clone, Serialize)]
pub struct PatternList {
    /// Its name.
    pub name: String,
    /// Rules in order.
    pub rules: Vec<RoutingRule>,
    /// Where it opens.
    pub span: Span,
}

/// One `/REGEX/ category` line of `<bounce-category-patterns>`.
#[derive(Debug, Clone, Serialize)]
pub struct CategoryRule {
    /// The regex.
    pub pattern: Pattern,
    /// The bounce category it assigns.
    pub category: String,
    /// Where it is.
    pub span: Span,
}

/// Where accounting records go.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "target")]
pub enum AcctTarget {
    /// A CSV file.
    File(PathBuf),
    /// A program that reads the CSV on its standard input.
    Pipe(String),
}

/// A `<acct-file>` block.
#[derive(Debug, Clone, Serialize)]
pub struct AcctFile {
    /// File or pipe.
    pub target: AcctTarget,
    /// Record types written (`records`), default `d,b`.
    pub records: Vec<String>,
    /// `record-fields TYPE fields`: per record type (or `*`), the field list as written.
    pub record_fields: BTreeMap<String, Vec<String>>,
    /// Other settings (rotation, iso-times ...).
    pub settings: Settings,
    /// Where it opens.
    pub span: Span,
}

/// A `<spool DIR>` block.
#[derive(Debug, Clone, Serialize)]
pub struct SpoolDir {
    /// The directory.
    pub path: PathBuf,
    /// Its settings (`priority`, `deliver-only`, `min-free-space`).
    pub settings: Settings,
    /// Where it is declared.
    pub span: Span,
}

/// A `<smtp-user NAME>` block for SMTP AUTH.
#[derive(Debug, Clone, Serialize)]
pub struct SmtpUser {
    /// The user name.
    pub name: String,
    /// Its settings (`password`, `source`).
    pub settings: Settings,
    /// Where it opens.
    pub span: Span,
}

/// Access levels of the HTTP management interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLevel {
    /// No access.
    None,
    /// Read-only.
    Monitor,
    /// May act on queues.
    Operator,
    /// Everything.
    Admin,
}

/// One `http-access CIDR LEVEL` line.
#[derive(Debug, Clone, Serialize)]
pub struct HttpAccess {
    /// Who.
    pub net: IpNet,
    /// What they may do.
    pub level: AccessLevel,
    /// `monitor,deny-logs`.
    pub deny_logs: bool,
    /// Where it is.
    pub span: Span,
}

/// An `<address-list>` inside a processor.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AddressList {
    /// `address` lines: literal addresses or regexes.
    pub addresses: Vec<AddressMatch>,
    /// `domain` lines.
    pub domains: Vec<String>,
}

/// An address matcher.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum AddressMatch {
    /// A literal address, compared case-insensitively.
    Literal(String),
    /// A regex.
    Regex(Pattern),
}

impl AddressList {
    /// True if `addr` is on the list.
    pub fn matches(&self, addr: &str) -> bool {
        // Domains and literal addresses are kept lower-case: compared without copying `addr`.
        let domain = addr.rsplit_once('@').map_or("", |(_, d)| d);
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
            || self.addresses.iter().any(|a| match a {
                AddressMatch::Literal(l) => l.eq_ignore_ascii_case(addr),
                AddressMatch::Regex(p) => p.is_match(addr),
            })
    }
}

/// A `<bounce-processor>` or `<feedback-loop-processor>`.
#[derive(Debug, Clone, Serialize)]
pub struct Processor {
    /// The addresses it takes mail for.
    pub addresses: AddressList,
    /// Its settings.
    pub settings: Settings,
    /// Where it opens.
    pub span: Span,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    /// The main file.
    pub path: PathBuf,
    /// Top-level directives not modelled separately (host-name, total-max-smtp-out, log-file ...).
    pub global: Settings,
    /// Inbound listeners (none written means PowerMTA's implicit `0.0.0.0:25`).
    pub listeners: Vec<Listener>,
    /// `<source>` blocks in file order.
    pub sources: Vec<SourceBlock>,
    /// Virtual MTAs by name.
    pub vmtas: BTreeMap<String, VirtualMta>,
    /// Pools by name.
    pub pools: BTreeMap<String, Pool>,
    /// Global `<domain>` blocks in file order.
    pub domains: Vec<DomainBlock>,
    /// SMTP pattern lists by name.
    pub smtp_pattern_lists: BTreeMap<String, SmtpPatternList>,
    /// Routing pattern lists by name.
    pub pattern_lists: BTreeMap<String, PatternList>,
    /// `<bounce-category-patterns>` rules in order (the built-in defaults apply after them).
    pub bounce_category_patterns: Vec<CategoryRule>,
    /// Accounting files.
    pub acct_files: Vec<AcctFile>,
    /// Spool directories.
    pub spools: Vec<SpoolDir>,
    /// SMTP AUTH users by name.
    pub smtp_users: BTreeMap<String, SmtpUser>,
    /// Global `domain-key` lines.
    pub domain_keys: Vec<DomainKey>,
    /// Global `smtp-source-host` lines (the `{default}` vMTA's addresses).
    pub source_hosts: Vec<SourceHost>,
    /// `http-access` rules in order (matched top-down).
    pub http_access: Vec<HttpAccess>,
    /// `postmaster` addresses.
    pub postmaster: Vec<String>,
    /// `relay-domain` entries (local domains besides the host names).
    pub relay_domains: Vec<String>,
    /// DNS servers to query (`name-server`; empty means the system resolver).
    pub name_servers: Vec<SocketAddr>,
    /// Bounce processors.
    pub bounce_processors: Vec<Processor>,
    /// Feedback-loop processors.
    pub feedback_loop_processors: Vec<Processor>,
    /// `domain-macro` definitions, expanded.
    pub macros: BTreeMap<String, Vec<String>>,
}

pub use super::build::build;

/// The name a setting is stored under (`max-rcpt-per-transaction` is an alias of `max-rcpt-per-message`).
pub fn canonical_name(name: &str) -> &str {
    match name {
        "max-rcpt-per-transaction" => "max-rcpt-per-message",
        other => other,
    }
}

/// Parses `IP`, `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_host_port(s: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    if let Ok(ip) = s
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Some(SocketAddr::new(ip, default_port));
    }
    None
}

#[cfg(test)]
mod tests {
    /// A processor's address list matches whatever the case of the address or of the config.
    #[test]
    fn address_lists_match_without_regard_to_case() {
        let l = crate::config::load_str(
            "t.conf",
            "<bounce-processor>\n<address-list>\naddress FBL@Sender.test\ndomain Bounces.Sender.TEST\n</address-list>\n</bounce-processor>\n",
        );
        assert!(l.is_valid(), "{:?}", l.diagnostics);
        let list = &l.config.bounce_processors[0].addresses;
        for yes in [
            "fbl@sender.test",
            "FBL@SENDER.TEST",
            "x@bounces.sender.test",
            "X@Bounces.Sender.Test",
        ] {
            assert!(list.matches(yes), "{yes}");
        }
        for no in [
            "fbl2@sender.test",
            "fbl@other.test",
            "x@sub.bounces.sender.test",
            "bounces.sender.test",
        ] {
            assert!(!list.matches(no), "{no}");
        }
    }
}
