//! The typed configuration model: listeners, sources, virtual MTAs, pools, domain blocks, pattern
//! lists, bounce categories, accounting files, spools, HTTP management, processors; built from the
//! syntax tree with every problem reported at its location.

use super::diag::{Code, Diagnostics, Span};
use super::registry::{registry, Support, BLOCK_TAGS, PASSIVE_TAGS};
use super::syntax::{unquote, Block, Directive, Item};
use super::values::{split_regex, Kind, Pattern, Value};
use ipnet::IpNet;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
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

/// Builds the model from the syntax tree; problems go to `diags`.
pub fn build(path: &Path, items: &[Item], diags: &mut Diagnostics) -> Config {
    let mut b = Builder {
        cfg: Config {
            path: path.to_path_buf(),
            ..Config::default()
        },
        diags,
        raw_macros: BTreeMap::new(),
        looped: std::collections::BTreeSet::new(),
    };
    b.collect_macros(items);
    for item in items {
        match item {
            Item::Directive(d) => b.global_directive(d),
            Item::Block(blk) => b.top_block(blk),
        }
    }
    b.cfg
}

struct Builder<'a> {
    cfg: Config,
    diags: &'a mut Diagnostics,
    raw_macros: BTreeMap<String, (String, Span)>,
    /// Macros already reported as part of a loop (reported once).
    looped: std::collections::BTreeSet<String>,
}

fn config_dir(span: &Span) -> PathBuf {
    Path::new(&*span.file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn resolve_path(span: &Span, p: &str) -> PathBuf {
    let pb = PathBuf::from(p);
    if pb.is_absolute() {
        pb
    } else {
        config_dir(span).join(pb)
    }
}

impl Builder<'_> {
    /// Checks a directive's name against the registry for `block`; returns its value kind if it
    /// should be parsed further.
    fn check_name(&mut self, d: &Directive, block: &str) -> Option<Kind> {
        let reg = registry();
        let Some(spec) = reg.get(&d.name) else {
            let mut diag = super::diag::Diagnostic::error(
                Code::UnknownDirective,
                Some(d.span.clone()),
                format!("unknown directive `{}`", d.name),
            );
            if let Some(s) = reg.suggest(&d.name) {
                diag = diag.with_hint(format!("did you mean `{s}`?"));
            }
            self.diags.push(diag);
            return None;
        };
        if !spec.blocks.contains(block) {
            let places: Vec<String> = spec
                .blocks
                .iter()
                .map(|b| {
                    if *b == "global" {
                        "the top level".to_string()
                    } else {
                        format!("<{b}>")
                    }
                })
                .collect();
            let here = if block == "global" {
                "at the top level".to_string()
            } else {
                format!("inside <{block}>")
            };
            if spec.support == Support::Acted {
                self.diags.error(
                    Code::Misplaced,
                    &d.span,
                    format!(
                        "`{}` is not valid {here}; it belongs in {}",
                        d.name,
                        places.join(" or ")
                    ),
                );
                return None;
            }
            self.diags.warn(
                Code::Misplaced,
                &d.span,
                format!(
                    "`{}` is documented for {}, not {here}; mtasim ignores it here",
                    d.name,
                    places.join(" or ")
                ),
            );
            return None;
        }
        match spec.support {
            Support::Acted => Some(spec.kind),
            Support::Ignored => {
                self.diags.warn(Code::NotActedOn,
                    &d.span,
                    format!("`{}` is a PowerMTA directive that mtasim does not act on yet; it is ignored", d.name),
                );
                None
            }
            Support::Legacy(why) => {
                self.diags.warn(
                    Code::Deprecated,
                    &d.span,
                    format!("`{}` is legacy: {why}; it is ignored", d.name),
                );
                None
            }
        }
    }

    /// Parses a generic directive into `settings`.
    fn generic(&mut self, d: &Directive, block: &str, settings: &mut Settings) {
        let Some(kind) = self.check_name(d, block) else {
            return;
        };
        match kind.parse(&d.value) {
            Ok(value) => {
                let name = canonical_name(&d.name).to_string();
                settings.0.push(Setting {
                    name,
                    value,
                    span: d.span.clone(),
                })
            }
            Err(e) => self
                .diags
                .error(Code::BadValue, &d.value_span, format!("`{}`: {e}", d.name)),
        }
    }

    fn collect_macros(&mut self, items: &[Item]) {
        for item in items {
            if let Item::Directive(d) = item {
                if d.name == "domain-macro" {
                    let mut parts = d.value.splitn(2, char::is_whitespace);
                    let name = parts.next().unwrap_or("").to_string();
                    let list = parts.next().unwrap_or("").trim().to_string();
                    if name.is_empty() || list.is_empty() {
                        self.diags.error(
                            Code::BadValue,
                            &d.value_span,
                            "`domain-macro` needs a name and a comma-separated list of domains",
                        );
                        continue;
                    }
                    if let Some((_, prev)) = self.raw_macros.get(&name) {
                        self.diags.error(
                            Code::Duplicate,
                            &d.span,
                            format!("domain-macro `{name}` is defined twice (first at {prev})"),
                        );
                        continue;
                    }
                    self.raw_macros.insert(name, (list, d.value_span.clone()));
                }
            }
        }
        let names: Vec<String> = self.raw_macros.keys().cloned().collect();
        for n in names {
            let mut stack = Vec::new();
            if let Some(v) = self.expand_macro(&n, &mut stack) {
                self.cfg.macros.insert(n, v);
            }
        }
    }

    fn expand_macro(&mut self, name: &str, stack: &mut Vec<String>) -> Option<Vec<String>> {
        if let Some(done) = self.cfg.macros.get(name) {
            return Some(done.clone());
        }
        if self.looped.contains(name) {
            return None;
        }
        let (list, span) = self.raw_macros.get(name)?.clone();
        if let Some(at) = stack.iter().position(|s| s == name) {
            stack.push(name.to_string());
            self.looped.extend(stack[at..].iter().cloned());
            self.diags.error(
                Code::MacroLoop,
                &span,
                format!("domain-macro loop: ${}", stack[at..].join(" -> $")),
            );
            return None;
        }
        stack.push(name.to_string());
        let mut out = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some(inner) = part.strip_prefix('$') {
                if !self.raw_macros.contains_key(inner) {
                    self.diags.error(
                        Code::UndefinedMacro,
                        &span,
                        format!("domain-macro `{name}` uses undefined macro `${inner}`"),
                    );
                    continue;
                }
                match self.expand_macro(inner, stack) {
                    Some(v) => out.extend(v),
                    None => {
                        stack.pop();
                        return None;
                    }
                }
            } else {
                out.push(part.to_string());
            }
        }
        stack.pop();
        Some(out)
    }

    fn global_directive(&mut self, d: &Directive) {
        match d.name.as_str() {
            "domain-macro" => {} // collected first
            "smtp-listener" => {
                if self.check_name(d, "global").is_none() {
                    return;
                }
                let mut parts = d.value.split_whitespace();
                let addr = parts.next().unwrap_or("");
                let mut source = None;
                for p in parts {
                    match p.split_once('=') {
                        Some(("source", v)) if !v.is_empty() => source = Some(v.to_string()),
                        _ => self.diags.error(
                            Code::BadValue,
                            &d.value_span,
                            format!("`smtp-listener`: unexpected `{p}` (expected source=NAME)"),
                        ),
                    }
                }
                if let Some(a) = self.listener_addr(addr, &d.value_span) {
                    self.cfg.listeners.push(Listener {
                        addr: a,
                        source,
                        tls_certificate: None,
                        span: d.span.clone(),
                    });
                }
            }
            "smtp-source-host" => {
                if self.check_name(d, "global").is_some() {
                    if let Some(h) = self.source_host(d) {
                        self.cfg.source_hosts.push(h);
                    }
                }
            }
            "domain-key" => {
                if self.check_name(d, "global").is_some() {
                    if let Some(k) = self.domain_key(d) {
                        self.cfg.domain_keys.push(k);
                    }
                }
            }
            "http-access" => {
                if self.check_name(d, "global").is_some() {
                    self.http_access(d);
                }
            }
            "postmaster" => {
                if self.check_name(d, "global").is_some() {
                    self.cfg.postmaster.push(unquote(&d.value).to_string());
                }
            }
            "relay-domain" => {
                if self.check_name(d, "global").is_some() {
                    for dom in d.value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        self.cfg.relay_domains.push(dom.to_ascii_lowercase());
                    }
                }
            }
            "name-server" => {
                if self.check_name(d, "global").is_some() {
                    for ns in d
                        .value
                        .split([',', ' '])
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                    {
                        match parse_host_port(ns, 53) {
                            Some(a) => self.cfg.name_servers.push(a),
                            None => self.diags.error(
                                Code::BadValue,
                                &d.value_span,
                                format!("`name-server`: `{ns}` is not IP or IP:PORT"),
                            ),
                        }
                    }
                }
            }
            "spool" => {
                if self.check_name(d, "global").is_some() {
                    self.diags.warn(
                        Code::Deprecated,
                        &d.span,
                        "`spool DIR` is deprecated; write `<spool DIR>` … `</spool>`",
                    );
                    let p = unquote(&d.value);
                    if p.is_empty() {
                        self.diags.error(
                            Code::BadValue,
                            &d.value_span,
                            "`spool` needs a directory",
                        );
                    } else {
                        self.cfg.spools.push(SpoolDir {
                            path: resolve_path(&d.span, p),
                            settings: Settings::default(),
                            span: d.span.clone(),
                        });
                    }
                }
            }
            _ => {
                let mut g = std::mem::take(&mut self.cfg.global);
                self.generic(d, "global", &mut g);
                self.cfg.global = g;
            }
        }
    }

    fn listener_addr(&mut self, addr: &str, at: &Span) -> Option<SocketAddr> {
        let Some((host, port)) = addr.rsplit_once(':') else {
            self.diags.error(
                Code::BadValue,
                at,
                format!("`{addr}` is not ADDRESS:PORT (e.g. 0/0:25, 127.0.0.1:2525)"),
            );
            return None;
        };
        let Ok(port) = port.parse::<u16>() else {
            self.diags
                .error(Code::BadValue, at, format!("`{port}` is not a port number"));
            return None;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        match parse_cidr(host) {
            Ok(net) => Some(SocketAddr::new(net.network(), port)),
            Err(e) => {
                self.diags.error(Code::BadValue, at, e);
                None
            }
        }
    }

    fn source_host(&mut self, d: &Directive) -> Option<SourceHost> {
        let mut parts = d.value.split_whitespace();
        let ip = parts.next().unwrap_or("");
        let host = parts
            .next()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        if parts.next().is_some() {
            self.diags.error(
                Code::BadValue,
                &d.value_span,
                "`smtp-source-host` takes an address and one host name",
            );
            return None;
        }
        if ip.is_empty() {
            self.diags.error(
                Code::BadValue,
                &d.value_span,
                "`smtp-source-host`: argument missing (expected IP HOSTNAME)",
            );
            return None;
        }
        match parse_cidr(ip) {
            Ok(net) => Some(SourceHost {
                net,
                host_name: host,
                span: d.span.clone(),
            }),
            Err(e) => {
                self.diags.error(
                    Code::BadValue,
                    &d.value_span,
                    format!("`smtp-source-host`: {e}"),
                );
                None
            }
        }
    }

    fn domain_key(&mut self, d: &Directive) -> Option<DomainKey> {
        let parts: Vec<&str> = d.value.split(',').map(str::trim).collect();
        if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
            self.diags.error(
                Code::BadValue,
                &d.value_span,
                "`domain-key` expects SELECTOR, DOMAIN|*, KEYFILE",
            );
            return None;
        }
        Some(DomainKey {
            selector: parts[0].to_string(),
            domain: parts[1].trim_end_matches('.').to_ascii_lowercase(),
            path: resolve_path(&d.span, unquote(parts[2])),
            span: d.span.clone(),
        })
    }

    fn http_access(&mut self, d: &Directive) {
        let mut parts = d.value.split_whitespace();
        let (Some(net), Some(level), None) = (parts.next(), parts.next(), parts.next()) else {
            self.diags.error(
                Code::BadValue,
                &d.value_span,
                "`http-access` expects CIDR LEVEL (none, monitor, operator or admin)",
            );
            return;
        };
        let net = match parse_cidr(net) {
            Ok(n) => n,
            Err(e) => {
                self.diags
                    .error(Code::BadValue, &d.value_span, format!("`http-access`: {e}"));
                return;
            }
        };
        let mut words = level.split(',');
        let lvl = match words.next().unwrap_or("").to_ascii_lowercase().as_str() {
            "none" => AccessLevel::None,
            "monitor" => AccessLevel::Monitor,
            "operator" => AccessLevel::Operator,
            "admin" => AccessLevel::Admin,
            other => {
                self.diags.error(
                    Code::BadValue,
                    &d.value_span,
                    format!(
                        "`http-access`: unknown level `{other}` (none, monitor, operator, admin)"
                    ),
                );
                return;
            }
        };
        let mut deny_logs = false;
        for w in words {
            if w.eq_ignore_ascii_case("deny-logs") {
                deny_logs = true;
            } else {
                self.diags.error(
                    Code::BadValue,
                    &d.value_span,
                    format!("`http-access`: unknown option `{w}` (deny-logs)"),
                );
            }
        }
        self.cfg.http_access.push(HttpAccess {
            net,
            level: lvl,
            deny_logs,
            span: d.span.clone(),
        });
    }

    fn top_block(&mut self, blk: &Block) {
        match blk.tag.as_str() {
            "domain" => {
                let blocks = self.domain_blocks(blk);
                self.cfg.domains.extend(blocks);
            }
            "source" => self.source_block(blk),
            "virtual-mta" => self.vmta_block(blk),
            "virtual-mta-pool" => self.pool_block(blk),
            "smtp-pattern-list" => self.smtp_pattern_list(blk),
            "pattern-list" => self.pattern_list(blk),
            "bounce-category-patterns" => self.category_patterns(blk),
            "acct-file" => self.acct_file(blk),
            "spool" => self.spool_block(blk),
            "smtp-user" => self.smtp_user(blk),
            "smtp-listener" => self.listener_block(blk),
            "bounce-processor" => {
                let p = self.processor(blk);
                self.cfg.bounce_processors.push(p);
            }
            "feedback-loop-processor" => {
                let p = self.processor(blk);
                self.cfg.feedback_loop_processors.push(p);
            }
            other => self.other_block(blk, other, "at the top level"),
        }
    }

    fn other_block(&mut self, blk: &Block, tag: &str, here: &str) {
        if PASSIVE_TAGS.contains(&tag) {
            self.diags.warn(
                Code::NotActedOn,
                &blk.span,
                format!(
                    "<{tag}> is a PowerMTA block that mtasim does not act on yet; it is ignored"
                ),
            );
            return;
        }
        if BLOCK_TAGS.contains(&tag) {
            self.diags.error(
                Code::Misplaced,
                &blk.span,
                format!("<{tag}> is not valid {here}"),
            );
            return;
        }
        let mut d = super::diag::Diagnostic::error(
            Code::UnknownBlock,
            Some(blk.span.clone()),
            format!("unknown block <{tag}>"),
        );
        if let Some(s) = super::registry::closest(tag, BLOCK_TAGS.iter().copied()) {
            d = d.with_hint(format!("did you mean <{s}>?"));
        }
        self.diags.push(d);
    }

    /// Expands a `<domain>` block's argument (patterns, `$MACRO`s) into one block per pattern.
    fn domain_blocks(&mut self, blk: &Block) -> Vec<DomainBlock> {
        let settings = self.plain_settings(blk, "domain");
        if blk.arg.is_empty() {
            self.diags.error(
                Code::BadValue,
                &blk.span,
                "<domain> needs a pattern (*, host.dom, *.dom, [*.]dom or $MACRO)",
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for part in blk.arg.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (names, from_macro) = if let Some(m) = part.strip_prefix('$') {
                match self.cfg.macros.get(m) {
                    Some(list) => (list.clone(), true),
                    None => {
                        let mut d = super::diag::Diagnostic::error(
                            Code::UndefinedMacro,
                            Some(blk.arg_span.clone()),
                            format!("undefined domain-macro `${m}`"),
                        );
                        if let Some(s) =
                            super::registry::closest(m, self.raw_macros.keys().map(String::as_str))
                        {
                            d = d.with_hint(format!("did you mean `${s}`?"));
                        }
                        self.diags.push(d);
                        continue;
                    }
                }
            } else {
                (vec![part.to_string()], false)
            };
            for n in names {
                match DomainPattern::parse(&n) {
                    Ok(pattern) => out.push(DomainBlock {
                        pattern,
                        from_macro,
                        settings: settings.clone(),
                        span: blk.span.clone(),
                    }),
                    Err(e) => self.diags.error(Code::BadValue, &blk.arg_span, e),
                }
            }
        }
        out
    }

    /// The settings of a block that holds only directives (nested blocks are reported).
    fn plain_settings(&mut self, blk: &Block, tag: &str) -> Settings {
        let mut settings = Settings::default();
        for item in &blk.items {
            match item {
                Item::Directive(d) => self.generic(d, tag, &mut settings),
                Item::Block(inner) => {
                    self.other_block(inner, &inner.tag.clone(), &format!("inside <{tag}>"))
                }
            }
        }
        settings
    }

    fn source_block(&mut self, blk: &Block) {
        let arg = blk.arg.trim();
        let selector = if arg.is_empty() {
            self.diags.error(Code::BadValue, &blk.span, "<source> needs an address, network or name ({auth}, {pickup}, a listener's source=NAME)");
            return;
        } else if let Ok(net) = parse_cidr(arg) {
            SourceSelector::Net(net)
        } else if arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "{}-_.".contains(c))
            && !arg
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '/')
        {
            SourceSelector::Named(arg.to_string())
        } else {
            self.diags.error(
                Code::BadValue,
                &blk.arg_span,
                format!("`{arg}` is neither an address/network nor a source name"),
            );
            return;
        };
        let settings = self.plain_settings(blk, "source");
        self.cfg.sources.push(SourceBlock {
            selector,
            settings,
            span: blk.span.clone(),
        });
    }

    fn named(&mut self, blk: &Block, what: &str) -> Option<String> {
        let name = blk.arg.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            self.diags.error(
                Code::BadValue,
                &blk.span,
                format!("<{what}> needs one name"),
            );
            return None;
        }
        Some(name.to_string())
    }

    fn vmta_block(&mut self, blk: &Block) {
        let Some(name) = self.named(blk, "virtual-mta") else {
            return;
        };
        let mut v = VirtualMta {
            name: name.clone(),
            source_hosts: Vec::new(),
            host_name: None,
            domain_keys: Vec::new(),
            settings: Settings::default(),
            domains: Vec::new(),
            span: blk.span.clone(),
        };
        for item in &blk.items {
            match item {
                Item::Directive(d) => match d.name.as_str() {
                    "smtp-source-host" => {
                        if let Some(h) = self.source_host(d) {
                            v.source_hosts.push(h);
                        }
                    }
                    "domain-key" => {
                        if let Some(k) = self.domain_key(d) {
                            v.domain_keys.push(k);
                        }
                    }
                    "host-name" => {
                        let h = unquote(&d.value).trim_end_matches('.').to_ascii_lowercase();
                        if h.is_empty() {
                            self.diags.error(
                                Code::BadValue,
                                &d.value_span,
                                "`host-name`: argument missing",
                            );
                        } else {
                            v.host_name = Some(h);
                        }
                    }
                    _ => self.generic(d, "virtual-mta", &mut v.settings),
                },
                Item::Block(inner) if inner.tag == "domain" => {
                    let bl = self.domain_blocks(inner);
                    v.domains.extend(bl);
                }
                Item::Block(inner) => {
                    self.other_block(inner, &inner.tag.clone(), "inside <virtual-mta>")
                }
            }
        }
        if let Some(prev) = self.cfg.vmtas.get(&name) {
            self.diags.error(
                Code::Duplicate,
                &blk.span,
                format!(
                    "virtual-mta `{name}` is defined twice (first at {})",
                    prev.span
                ),
            );
            return;
        }
        if self.cfg.pools.contains_key(&name) {
            self.diags.error(
                Code::Duplicate,
                &blk.span,
                format!("`{name}` is already the name of a virtual-mta-pool"),
            );
            return;
        }
        self.cfg.vmtas.insert(name, v);
    }

    fn pool_block(&mut self, blk: &Block) {
        let Some(name) = self.named(blk, "virtual-mta-pool") else {
            return;
        };
        let mut p = Pool {
            name: name.clone(),
            members: Vec::new(),
            domain_keys: Vec::new(),
            settings: Settings::default(),
            domains: Vec::new(),
            span: blk.span.clone(),
        };
        for item in &blk.items {
            match item {
                Item::Directive(d) => match d.name.as_str() {
                    "virtual-mta" => {
                        let m = unquote(&d.value);
                        if m.is_empty() || m.contains(char::is_whitespace) {
                            self.diags.error(
                                Code::BadValue,
                                &d.value_span,
                                "`virtual-mta` in a pool names one virtual MTA",
                            );
                        } else {
                            p.members.push((m.to_string(), d.value_span.clone()));
                        }
                    }
                    "domain-key" => {
                        if let Some(k) = self.domain_key(d) {
                            p.domain_keys.push(k);
                        }
                    }
                    _ => self.generic(d, "virtual-mta-pool", &mut p.settings),
                },
                Item::Block(inner) if inner.tag == "domain" => {
                    let bl = self.domain_blocks(inner);
                    p.domains.extend(bl);
                }
                Item::Block(inner) => {
                    self.other_block(inner, &inner.tag.clone(), "inside <virtual-mta-pool>")
                }
            }
        }
        if let Some(prev) = self.cfg.pools.get(&name) {
            self.diags.error(
                Code::Duplicate,
                &blk.span,
                format!(
                    "virtual-mta-pool `{name}` is defined twice (first at {})",
                    prev.span
                ),
            );
            return;
        }
        self.cfg.pools.insert(name, p);
    }

    fn smtp_pattern_list(&mut self, blk: &Block) {
        let Some(name) = self.named(blk, "smtp-pattern-list") else {
            return;
        };
        let mut list = SmtpPatternList {
            name: name.clone(),
            rules: Vec::new(),
            span: blk.span.clone(),
        };
        for item in &blk.items {
            let Item::Directive(d) = item else {
                if let Item::Block(inner) = item {
                    self.other_block(inner, &inner.tag.clone(), "inside <smtp-pattern-list>");
                }
                continue;
            };
            if d.name != "reply" {
                let mut diag = super::diag::Diagnostic::error(Code::Misplaced, Some(d.span.clone()), format!("`{}` is not valid in <smtp-pattern-list> (rules are `reply /REGEX/ ACTION[,ACTION…]`)", d.name));
                if strsim::jaro_winkler(&d.name, "reply") > 0.8 {
                    diag = diag.with_hint("did you mean `reply`?");
                }
                self.diags.push(diag);
                continue;
            }
            let value_text = d.value.clone();
            match split_regex(&value_text) {
                Ok((pattern, rest)) => {
                    if let Some(actions) = self.pattern_actions(rest, &d.value_span) {
                        list.rules.push(PatternRule {
                            pattern,
                            actions,
                            span: d.span.clone(),
                        });
                    }
                }
                Err(e) => self.diags.error(Code::BadValue, &d.value_span, e),
            }
        }
        if let Some(prev) = self.cfg.smtp_pattern_lists.get(&name) {
            self.diags.error(
                Code::Duplicate,
                &blk.span,
                format!(
                    "smtp-pattern-list `{name}` is defined twice (first at {})",
                    prev.span
                ),
            );
            return;
        }
        self.cfg.smtp_pattern_lists.insert(name, list);
    }

    fn pattern_actions(&mut self, text: &str, at: &Span) -> Option<Vec<PatternAction>> {
        if text.trim().is_empty() {
            self.diags.error(Code::BadValue, at, "the rule has no action (mode=backoff, mode=normal, backoff-to-normal-after=, skip-mx, bounce-queue, bounce-rcpt, defer-queue, disable-source-ip, reenable-after=)");
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for raw in text.split(',').map(str::trim) {
            let (k, v) = raw
                .split_once('=')
                .map_or((raw, None), |(k, v)| (k.trim(), Some(v.trim())));
            let k = k.to_ascii_lowercase();
            let dur = |v: Option<&str>| v.map(super::values::parse_interval);
            let action = match (k.as_str(), v) {
                ("mode", Some(m)) if m.eq_ignore_ascii_case("backoff") => {
                    Ok(PatternAction::ModeBackoff)
                }
                ("mode", Some(m)) if m.eq_ignore_ascii_case("normal") => {
                    Ok(PatternAction::ModeNormal)
                }
                ("mode", _) => Err("`mode=` takes backoff or normal".to_string()),
                ("backoff-to-normal-after", Some(_)) => match dur(v) {
                    Some(Ok(d)) if out.contains(&PatternAction::ModeBackoff) => {
                        Ok(PatternAction::BackoffToNormalAfter(d))
                    }
                    Some(Ok(_)) => Err(
                        "`backoff-to-normal-after=` must follow `mode=backoff` in the same rule"
                            .to_string(),
                    ),
                    Some(Err(e)) => Err(e),
                    None => Err("interval missing".into()),
                },
                ("reenable-after", Some(_)) => match dur(v) {
                    Some(Ok(d)) if out.contains(&PatternAction::DisableSourceIp) => {
                        Ok(PatternAction::ReenableAfter(d))
                    }
                    Some(Ok(_)) => Err(
                        "`reenable-after=` must follow `disable-source-ip` in the same rule"
                            .to_string(),
                    ),
                    Some(Err(e)) => Err(e),
                    None => Err("interval missing".into()),
                },
                ("skip-mx", None) => Ok(PatternAction::SkipMx),
                ("bounce-queue", None) => Ok(PatternAction::BounceQueue),
                ("bounce-rcpt", None) => Ok(PatternAction::BounceRcpt),
                ("defer-queue", None) => Ok(PatternAction::DeferQueue),
                ("disable-source-ip", None) => Ok(PatternAction::DisableSourceIp),
                _ => Err(format!("unknown action `{raw}`")),
            };
            match action {
                Ok(a) => out.push(a),
                Err(e) => {
                    let mut d = super::diag::Diagnostic::error(Code::BadValue, Some(at.clone()), e);
                    let known = [
                        "mode=backoff",
                        "mode=normal",
                        "backoff-to-normal-after",
                        "skip-mx",
                        "bounce-queue",
                        "bounce-rcpt",
                        "defer-queue",
                        "disable-source-ip",
                        "reenable-after",
                    ];
                    let probe = if k == "mode" {
                        raw.to_ascii_lowercase()
                    } else {
                        k.clone()
                    };
                    if let Some(s) = super::registry::closest(&probe, known.iter().copied()) {
                        if s != probe {
                            d = d.with_hint(format!("did you mean `{s}`?"));
                        }
                    }
                    self.diags.push(d);
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn pattern_list(&mut self, blk: &Block) {
        let Some(name) = self.named(blk, "pattern-list") else {
            return;
        };
        let mut list = PatternList {
            name: name.clone(),
            rules: Vec::new(),
            span: blk.span.clone(),
        };
        for item in &blk.items {
            let Item::Directive(d) = item else {
                if let Item::Block(inner) = item {
                    self.other_block(inner, &inner.tag.clone(), "inside <pattern-list>");
                }
                continue;
            };
            if self.check_name(d, "pattern-list").is_none() {
                continue;
            }
            let value_text = d.value.clone();
            let (header, rest) = if d.name == "header" {
                let mut sp = value_text.splitn(2, char::is_whitespace);
                let h = sp.next().unwrap_or("").to_string();
                (Some(h), sp.next().unwrap_or("").to_string())
            } else {
                (None, value_text)
            };
            let (pattern, actions_text) = match split_regex(&rest) {
                Ok(x) => x,
                Err(e) => {
                    self.diags.error(Code::BadValue, &d.value_span, e);
                    continue;
                }
            };
            let mut actions = BTreeMap::new();
            for a in actions_text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                match a.split_once('=') {
                    Some((k, v)) => {
                        actions.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                    None => self.diags.error(
                        Code::BadValue,
                        &d.value_span,
                        format!(
                            "pattern-list action `{a}` is not KEY=VALUE (e.g. virtual-mta=NAME)"
                        ),
                    ),
                }
            }
            if actions.is_empty() {
                self.diags.error(
                    Code::BadValue,
                    &d.value_span,
                    "pattern-list rule has no action (e.g. virtual-mta=NAME)",
                );
                continue;
            }
            list.rules.push(RoutingRule {
                field: d.name.clone(),
                header,
                pattern,
                actions,
                span: d.span.clone(),
            });
        }
        self.cfg.pattern_lists.insert(name, list);
    }

    fn category_patterns(&mut self, blk: &Block) {
        for item in &blk.items {
            let Item::Directive(d) = item else {
                if let Item::Block(inner) = item {
                    self.other_block(
                        inner,
                        &inner.tag.clone(),
                        "inside <bounce-category-patterns>",
                    );
                }
                continue;
            };
            match split_regex(&d.text) {
                Ok((pattern, cat)) => {
                    let cat = cat.trim().to_ascii_lowercase();
                    if BOUNCE_CATEGORIES.contains(&cat.as_str()) {
                        self.cfg.bounce_category_patterns.push(CategoryRule {
                            pattern,
                            category: cat,
                            span: d.span.clone(),
                        });
                    } else {
                        let mut diag = super::diag::Diagnostic::error(
                            Code::BadValue,
                            Some(d.span.clone()),
                            if cat.is_empty() {
                                "bounce category missing after the regex".to_string()
                            } else {
                                format!("unknown bounce category `{cat}`")
                            },
                        );
                        if let Some(s) =
                            super::registry::closest(&cat, BOUNCE_CATEGORIES.iter().copied())
                        {
                            diag = diag.with_hint(format!("did you mean `{s}`?"));
                        }
                        self.diags.push(diag);
                    }
                }
                Err(e) => self.diags.error(
                    Code::BadValue,
                    &d.span,
                    format!("{e} (lines here are `/REGEX/ category`)"),
                ),
            }
        }
    }

    fn acct_file(&mut self, blk: &Block) {
        let arg = unquote(&blk.arg);
        let target = if let Some(cmd) = arg.strip_prefix('|') {
            if cmd.trim().is_empty() {
                self.diags.error(
                    Code::BadValue,
                    &blk.arg_span,
                    "<acct-file |PROGRAM> needs a program",
                );
                return;
            }
            AcctTarget::Pipe(cmd.trim().to_string())
        } else if arg.is_empty() {
            self.diags.error(
                Code::BadValue,
                &blk.span,
                "<acct-file> needs a file path or |program",
            );
            return;
        } else {
            AcctTarget::File(resolve_path(&blk.span, arg))
        };
        let mut a = AcctFile {
            target,
            records: vec!["d".into(), "b".into()],
            record_fields: BTreeMap::new(),
            settings: Settings::default(),
            span: blk.span.clone(),
        };
        for item in &blk.items {
            let Item::Directive(d) = item else {
                if let Item::Block(inner) = item {
                    self.other_block(inner, &inner.tag.clone(), "inside <acct-file>");
                }
                continue;
            };
            match d.name.as_str() {
                "records" => {
                    let mut recs = Vec::new();
                    for r in d
                        .value
                        .split(',')
                        .map(|s| s.trim().to_ascii_lowercase())
                        .filter(|s| !s.is_empty())
                    {
                        if RECORD_TYPES.contains(&r.as_str()) {
                            recs.push(r);
                        } else {
                            self.diags.error(
                                Code::BadValue,
                                &d.value_span,
                                format!("unknown record type `{r}` (d, b, t, tq, r, f, rb, rs)"),
                            );
                        }
                    }
                    if recs.is_empty() {
                        self.diags.error(
                            Code::BadValue,
                            &d.value_span,
                            "`records` needs at least one record type",
                        );
                    } else {
                        a.records = recs;
                    }
                }
                "record-fields" => {
                    let mut sp = d.value.splitn(2, char::is_whitespace);
                    let ty = sp.next().unwrap_or("").to_ascii_lowercase();
                    let fields: Vec<String> = sp
                        .next()
                        .unwrap_or("")
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect();
                    if ty != "*" && !RECORD_TYPES.contains(&ty.as_str()) {
                        self.diags.error(
                            Code::BadValue,
                            &d.value_span,
                            format!("`record-fields`: unknown record type `{ty}`"),
                        );
                        continue;
                    }
                    if fields.is_empty() {
                        self.diags.error(
                            Code::BadValue,
                            &d.value_span,
                            "`record-fields` expects TYPE FIELD[,FIELD…] (e.g. d *,header_X-Job)",
                        );
                        continue;
                    }
                    for f in &fields {
                        let bare = f.trim_start_matches('!');
                        if bare != "*"
                            && !bare.starts_with("header_")
                            && !ACCT_FIELDS.contains(&bare)
                        {
                            let mut diag = super::diag::Diagnostic::error(
                                Code::BadValue,
                                Some(d.value_span.clone()),
                                format!("unknown accounting field `{bare}`"),
                            );
                            if let Some(s) =
                                super::registry::closest(bare, ACCT_FIELDS.iter().copied())
                            {
                                diag = diag.with_hint(format!("did you mean `{s}`?"));
                            }
                            self.diags.push(diag);
                        }
                    }
                    a.record_fields.insert(ty, fields);
                }
                _ => self.generic(d, "acct-file", &mut a.settings),
            }
        }
        self.cfg.acct_files.push(a);
    }

    fn spool_block(&mut self, blk: &Block) {
        let p = unquote(&blk.arg);
        if p.is_empty() {
            self.diags
                .error(Code::BadValue, &blk.span, "<spool> needs a directory");
            return;
        }
        let settings = self.plain_settings(blk, "spool");
        self.cfg.spools.push(SpoolDir {
            path: resolve_path(&blk.span, p),
            settings,
            span: blk.span.clone(),
        });
    }

    fn smtp_user(&mut self, blk: &Block) {
        let Some(name) = self.named(blk, "smtp-user") else {
            return;
        };
        let settings = self.plain_settings(blk, "smtp-user");
        if settings.get("password").is_none() {
            self.diags.warn(
                Code::NoEffect,
                &blk.span,
                format!("smtp-user `{name}` has no password: it can never authenticate"),
            );
        }
        self.cfg.smtp_users.insert(
            name.clone(),
            SmtpUser {
                name,
                settings,
                span: blk.span.clone(),
            },
        );
    }

    fn listener_block(&mut self, blk: &Block) {
        let Some(addr) = self.listener_addr(blk.arg.trim(), &blk.arg_span) else {
            return;
        };
        let settings = self.plain_settings(blk, "smtp-listener");
        let text = |n: &str| match settings.get(n).map(|s| &s.value) {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        };
        let source = text("source");
        let tls_certificate = text("tls-certificate").map(|p| resolve_path(&blk.span, &p));
        self.cfg.listeners.push(Listener {
            addr,
            source,
            tls_certificate,
            span: blk.span.clone(),
        });
    }

    fn processor(&mut self, blk: &Block) -> Processor {
        let kind = blk.tag.clone();
        let mut p = Processor {
            addresses: AddressList::default(),
            settings: Settings::default(),
            span: blk.span.clone(),
        };
        let mut saw_list = false;
        for item in &blk.items {
            match item {
                Item::Directive(d) => self.generic(d, &kind, &mut p.settings),
                Item::Block(inner) if inner.tag == "address-list" => {
                    saw_list = true;
                    for it in &inner.items {
                        let Item::Directive(d) = it else { continue };
                        if self.check_name(d, "address-list").is_none() {
                            continue;
                        }
                        let v = unquote(&d.value);
                        match d.name.as_str() {
                            "address" if v.starts_with('/') => match split_regex(&d.value) {
                                Ok((pat, "")) => {
                                    p.addresses.addresses.push(AddressMatch::Regex(pat))
                                }
                                Ok(_) => self.diags.error(
                                    Code::BadValue,
                                    &d.value_span,
                                    "unexpected text after the address regex",
                                ),
                                Err(e) => self.diags.error(Code::BadValue, &d.value_span, e),
                            },
                            "address" if v.contains('@') => p
                                .addresses
                                .addresses
                                .push(AddressMatch::Literal(v.to_ascii_lowercase())),
                            "address" => self.diags.error(
                                Code::BadValue,
                                &d.value_span,
                                format!("`{v}` is neither an address nor a /regex/"),
                            ),
                            "domain" => p.addresses.domains.push(v.to_ascii_lowercase()),
                            _ => self.diags.warn(
                                Code::NotActedOn,
                                &d.span,
                                format!("`{}` in <address-list> is not acted on yet", d.name),
                            ),
                        }
                    }
                }
                Item::Block(inner) => {
                    self.other_block(inner, &inner.tag.clone(), &format!("inside <{kind}>"))
                }
            }
        }
        if !saw_list {
            self.diags.warn(
                Code::NoEffect,
                &blk.span,
                format!("<{kind}> has no <address-list>: it will never see any mail"),
            );
        }
        p
    }
}

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
