//! Binding a scenario to the config under test. The names a scenario's traffic uses (the vMTA or
//! pool in `vmta`, the sender's domain) are roles: each is bound to a name the config has, by
//! `--map`, by the same name, or automatically where the config leaves one choice (its only pool,
//! the only pool named for the stream's purpose, the only domain it signs for). What cannot be
//! bound is an error before the run that lists what the scenario needs and what the config offers.

use crate::scenario::{Expectation, Loaded, Purpose, SenderRole, VmtaKind, VmtaRole};
use mta::config::Config;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The two kinds of role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RoleKind {
    /// A vMTA or pool name (`traffic.vmta`).
    Vmta,
    /// A sender domain (the domain of `traffic.sender`).
    Sender,
    /// The envelope sender's domain (`traffic.mail_from`), where DSNs and complaints return.
    ReturnPath,
}

impl RoleKind {
    fn word(self) -> &'static str {
        match self {
            RoleKind::Vmta => "vmta",
            RoleKind::Sender => "sender",
            RoleKind::ReturnPath => "return-path",
        }
    }
}

/// An explicit binding: `vmta:pool-marketing=pool-main` or `sender:news.example.com=mail.example.net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleMap {
    /// Which kind of role.
    pub kind: RoleKind,
    /// The scenario's name.
    pub from: String,
    /// The config's name.
    pub to: String,
}

impl std::str::FromStr for RoleMap {
    type Err = String;

    fn from_str(s: &str) -> Result<RoleMap, String> {
        let bad = || {
            format!("`{s}`: a mapping is vmta:SCENARIO-NAME=CONFIG-NAME or sender:SCENARIO-DOMAIN=CONFIG-DOMAIN")
        };
        let (kind, rest) = s.split_once(':').ok_or_else(bad)?;
        let kind = match kind.trim() {
            "vmta" => RoleKind::Vmta,
            "sender" => RoleKind::Sender,
            "return-path" => RoleKind::ReturnPath,
            _ => return Err(bad()),
        };
        let (from, to) = rest.split_once('=').ok_or_else(bad)?;
        let (from, to) = (from.trim(), to.trim());
        if from.is_empty() || to.is_empty() {
            return Err(bad());
        }
        Ok(RoleMap {
            kind,
            from: from.to_string(),
            to: to.to_string(),
        })
    }
}

/// Reads a mapping file: TOML with `[vmta]`, `[sender]` and `[return-path]` tables of `"scenario name" = "config name"`.
pub fn read_map_file(path: &Path) -> Result<Vec<RoleMap>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        vmta: BTreeMap<String, String>,
        #[serde(default)]
        sender: BTreeMap<String, String>,
        #[serde(default, rename = "return-path")]
        return_path: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let f: File = toml::from_str(&text)
        .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let maps = |kind, m: BTreeMap<String, String>| {
        m.into_iter()
            .map(move |(from, to)| RoleMap { kind, from, to })
    };
    Ok(maps(RoleKind::Vmta, f.vmta)
        .chain(maps(RoleKind::Sender, f.sender))
        .chain(maps(RoleKind::ReturnPath, f.return_path))
        .collect())
}

/// One role bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// Which kind.
    pub kind: RoleKind,
    /// The scenario's name.
    pub role: String,
    /// The config's name; `None` for a vMTA role in a config without vMTAs (no header is sent).
    pub to: Option<String>,
    /// Why, in words.
    pub why: String,
}

/// Every role of a scenario, bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// In scenario order: vMTA roles, then sender roles.
    pub roles: Vec<Bound>,
}

/// Roles that could not be bound, with what the config offers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct BindError {
    /// The config file.
    pub config: String,
    /// One line per role left unbound.
    pub unbound: Vec<String>,
    /// What the config has, one line per kind.
    pub offers: Vec<String>,
}

impl BindError {
    fn describe(&self) -> String {
        let mut o = format!(
            "the scenario needs what {} does not clearly offer:\n",
            self.config
        );
        for u in &self.unbound {
            o.push_str(&format!("  - {u}\n"));
        }
        o.push_str("the config offers:\n");
        for x in &self.offers {
            o.push_str(&format!("  - {x}\n"));
        }
        o.push_str(
            "bind each with --map vmta:SCENARIO-NAME=CONFIG-NAME or --map sender:SCENARIO-DOMAIN=CONFIG-DOMAIN (or --map-file FILE)",
        );
        o
    }
}

const MARKETING: &[&str] = &[
    "mkt", "market", "bulk", "news", "promo", "campaign", "blast", "mass", "ads",
];
const TRANSACTIONAL: &[&str] = &[
    "tx", "trans", "notif", "alert", "system", "receipt", "order", "account", "critical", "otp",
];

/// True if a word of `name` (split at `-`, `_`, `.`) starts with a keyword of `purpose`.
fn named_for(name: &str, purpose: Purpose) -> bool {
    let words = match purpose {
        Purpose::Marketing => MARKETING,
        Purpose::Transactional => TRANSACTIONAL,
    };
    name.to_ascii_lowercase()
        .split(['-', '_', '.'])
        .any(|w| words.iter().any(|k| w.starts_with(k)))
}

fn purpose_word(p: Purpose) -> &'static str {
    match p {
        Purpose::Marketing => "marketing",
        Purpose::Transactional => "transactional",
    }
}

/// The domains `cfg` signs for by name (lower-cased), and whether it has a `*` key.
pub fn signing_domains(cfg: &Config) -> (BTreeSet<String>, bool) {
    let keys = cfg.all_domain_keys();
    let mut names = BTreeSet::new();
    let mut any = false;
    for k in keys {
        if k.domain == "*" {
            any = true;
        } else {
            names.insert(k.domain.to_ascii_lowercase());
        }
    }
    (names, any)
}

fn list(v: &[&String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    }
}

fn vmta_need(name: &str, r: &VmtaRole) -> String {
    if let Some(d) = &r.description {
        return format!("vmta `{name}` ({d})");
    }
    let kind = match r.kind {
        VmtaKind::Pool => "a pool",
        VmtaKind::Vmta => "a virtual MTA",
        VmtaKind::Any => "a virtual MTA or pool",
    };
    match r.purpose {
        Some(p) => format!("vmta `{name}` ({kind} for {} mail)", purpose_word(p)),
        None => format!("vmta `{name}` ({kind})"),
    }
}

fn sender_need(name: &str, r: &SenderRole) -> String {
    if let Some(d) = &r.description {
        return format!("sender `{name}` ({d})");
    }
    let what = if r.dkim {
        "a sender domain the config signs for"
    } else {
        "a sender domain"
    };
    match r.purpose {
        Some(p) => format!("sender `{name}` ({what}, {} mail)", purpose_word(p)),
        None => format!("sender `{name}` ({what})"),
    }
}

/// Binds every role of `l` to `cfg` (read from `config_name`), explicit maps first.
pub fn bind(
    l: &Loaded,
    cfg: &Config,
    config_name: &str,
    maps: &[RoleMap],
) -> Result<Binding, BindError> {
    let s = &l.scenario;
    let mut roles = Vec::new();
    let mut unbound = Vec::new();
    for m in maps {
        let used = match m.kind {
            RoleKind::Vmta => s.traffic.iter().any(|t| t.vmta.as_deref() == Some(&m.from)),
            RoleKind::Sender => s
                .traffic
                .iter()
                .any(|t| t.sender_domain() == m.from.to_ascii_lowercase()),
            RoleKind::ReturnPath => s
                .traffic
                .iter()
                .any(|t| return_domain(t) == Some(m.from.to_ascii_lowercase())),
        };
        if !used {
            unbound.push(format!(
                "--map {}:{}={}: the scenario uses no {} `{}`",
                m.kind.word(),
                m.from,
                m.to,
                m.kind.word(),
                m.from
            ));
        }
    }
    let map = |kind: RoleKind, name: &str| {
        maps.iter()
            .find(|m| m.kind == kind && m.from.eq_ignore_ascii_case(name))
    };
    // vMTA roles, in traffic order.
    let mut seen = BTreeSet::new();
    for t in &s.traffic {
        let Some(name) = &t.vmta else { continue };
        if !seen.insert(name.clone()) {
            continue;
        }
        let need = s.roles.vmta.get(name).cloned().unwrap_or_default();
        match bind_vmta(cfg, name, &need, map(RoleKind::Vmta, name)) {
            Ok((to, why)) => roles.push(Bound {
                kind: RoleKind::Vmta,
                role: name.clone(),
                to,
                why,
            }),
            Err(e) => unbound.push(format!("{}: {e}", vmta_need(name, &need))),
        }
    }
    // Sender roles: the config's signing domains, those of the stream's bound vMTA first.
    let (signs, any_key) = signing_domains(cfg);
    let mut seen = BTreeSet::new();
    for t in &s.traffic {
        let d = t.sender_domain();
        if !seen.insert(d.clone()) {
            continue;
        }
        let need = s
            .roles
            .sender
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&d))
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        let bound_vmta = t.vmta.as_ref().and_then(|v| {
            roles
                .iter()
                .find(|b| b.kind == RoleKind::Vmta && &b.role == v)
                .and_then(|b| b.to.clone())
        });
        let own = bound_vmta.map(|v| own_keys(cfg, &v)).unwrap_or_default();
        let explicit = map(RoleKind::Sender, &d);
        match bind_sender(&d, &need, explicit, &signs, any_key, &own) {
            Ok((to, why)) => roles.push(Bound {
                kind: RoleKind::Sender,
                role: d.clone(),
                to: Some(to),
                why,
            }),
            Err(e) => unbound.push(format!("{}: {e}", sender_need(&d, &need))),
        }
    }
    // Return paths (an envelope sender of its own): where the config takes DSNs in.
    let local = mta::receive::local_domains(cfg);
    let processors: BTreeSet<String> = cfg
        .bounce_processors
        .iter()
        .flat_map(|p| p.addresses.domains.iter().map(|d| d.to_ascii_lowercase()))
        .collect();
    let mut seen = BTreeSet::new();
    for t in &s.traffic {
        let Some(d) = return_domain(t) else { continue };
        if !seen.insert(d.clone()) {
            continue;
        }
        let swapped = Binding {
            roles: roles.clone(),
        }
        .swap_senders(&d);
        let (to, why) = match map(RoleKind::ReturnPath, &d) {
            Some(m) => (m.to.to_ascii_lowercase(), "--map".to_string()),
            None if local.contains(&swapped) => {
                (swapped, "the config takes mail for it (bounce processing)".into())
            }
            None => match processors.iter().collect::<Vec<_>>().as_slice() {
                [only] => (
                    (*only).clone(),
                    "the config's only bounce-processor domain".into(),
                ),
                _ => (
                    swapped,
                    "kept: the config has no single bounce-processor domain, so late DSNs to it are not processed".into(),
                ),
            },
        };
        roles.push(Bound {
            kind: RoleKind::ReturnPath,
            role: d,
            to: Some(to),
            why,
        });
    }
    if unbound.is_empty() {
        return Ok(Binding { roles });
    }
    let pools: Vec<&String> = cfg.pools.keys().collect();
    let vmtas: Vec<&String> = cfg.vmtas.keys().collect();
    let doms: Vec<&String> = signs.iter().collect();
    Err(BindError {
        config: config_name.to_string(),
        unbound,
        offers: vec![
            format!("pools: {}", list(&pools)),
            format!("virtual MTAs: {}", list(&vmtas)),
            format!(
                "domains it signs for (domain-key): {}{}",
                list(&doms),
                if any_key { " (and `*`)" } else { "" }
            ),
        ],
    })
}

/// The domains of the keys a vMTA or pool (and a pool's members) carries itself.
fn own_keys(cfg: &Config, name: &str) -> BTreeSet<String> {
    let mut keys: Vec<&mta::config::model::DomainKey> = Vec::new();
    if let Some(p) = cfg.pools.get(name) {
        keys.extend(&p.domain_keys);
        for (m, _) in &p.members {
            keys.extend(cfg.vmtas.get(m).into_iter().flat_map(|v| &v.domain_keys));
        }
    }
    keys.extend(cfg.vmtas.get(name).into_iter().flat_map(|v| &v.domain_keys));
    keys.iter()
        .filter(|k| k.domain != "*")
        .map(|k| k.domain.to_ascii_lowercase())
        .collect()
}

fn bind_vmta(
    cfg: &Config,
    name: &str,
    need: &VmtaRole,
    explicit: Option<&RoleMap>,
) -> Result<(Option<String>, String), String> {
    let exists = |n: &str| cfg.vmtas.contains_key(n) || cfg.pools.contains_key(n);
    if let Some(m) = explicit {
        return if exists(&m.to) {
            Ok((Some(m.to.clone()), "--map".into()))
        } else {
            Err(format!(
                "--map names `{}`, which the config does not have",
                m.to
            ))
        };
    }
    if exists(name) {
        return Ok((
            Some(name.to_string()),
            "the config has it by that name".into(),
        ));
    }
    let (candidates, what): (Vec<&String>, &str) = match need.kind {
        VmtaKind::Pool => (cfg.pools.keys().collect(), "pool"),
        VmtaKind::Vmta => (cfg.vmtas.keys().collect(), "virtual MTA"),
        VmtaKind::Any if !cfg.pools.is_empty() => (cfg.pools.keys().collect(), "pool"),
        VmtaKind::Any => (cfg.vmtas.keys().collect(), "virtual MTA"),
    };
    if candidates.is_empty() {
        if cfg.vmtas.is_empty() {
            return Ok((
                None,
                "the config has no virtual MTAs: mail goes from its default addresses".into(),
            ));
        }
        return Err(format!("the config has no {what}"));
    }
    if let [only] = candidates.as_slice() {
        return Ok((Some((*only).clone()), format!("the config's only {what}")));
    }
    if let Some(p) = need.purpose {
        let named: Vec<&&String> = candidates.iter().filter(|c| named_for(c, p)).collect();
        if let [only] = named.as_slice() {
            return Ok((
                Some((**only).clone()),
                format!(
                    "the config's only {what} named for {} mail",
                    purpose_word(p)
                ),
            ));
        }
    }
    Err(format!(
        "the config has {} {what}s ({}) and none by this name; which one?",
        candidates.len(),
        list(&candidates)
    ))
}

fn bind_sender(
    domain: &str,
    need: &SenderRole,
    explicit: Option<&RoleMap>,
    signs: &BTreeSet<String>,
    any_key: bool,
    own: &BTreeSet<String>,
) -> Result<(String, String), String> {
    if let Some(m) = explicit {
        return Ok((m.to.to_ascii_lowercase(), "--map".into()));
    }
    if signs.contains(domain) {
        return Ok((domain.to_string(), "the config signs for it".into()));
    }
    if any_key {
        return Ok((
            domain.to_string(),
            "the config signs for any domain (`domain-key` for `*`)".into(),
        ));
    }
    if signs.is_empty() {
        let why = if need.dkim {
            "the config signs for no domain (no domain-key): its mail goes out unsigned"
        } else {
            "kept: the config signs for no domain"
        };
        return Ok((domain.to_string(), why.into()));
    }
    for (pool, what) in [(own, "its vMTA's "), (signs, "")] {
        let c: Vec<&String> = pool.iter().collect();
        if let [only] = c.as_slice() {
            return Ok((
                (*only).clone(),
                format!("the only domain {what}keys sign for"),
            ));
        }
        if let Some(p) = need.purpose {
            let named: Vec<&&String> = c.iter().filter(|d| named_for(d, p)).collect();
            if let [only] = named.as_slice() {
                return Ok((
                    (**only).clone(),
                    format!("the only signing domain named for {} mail", purpose_word(p)),
                ));
            }
        }
    }
    Err(format!(
        "the config signs for {} domains ({}) and not this one; which one?",
        signs.len(),
        list(&signs.iter().collect::<Vec<_>>())
    ))
}

/// The domain of a stream's own envelope sender, if it has one.
fn return_domain(t: &crate::scenario::Traffic) -> Option<String> {
    t.mail_from
        .as_deref()
        .and_then(|m| m.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase())
}

/// Replaces domain `from` with `to` in an address or text, where it stands as a whole domain
/// (`news.example.com` in `b@bounces.news.example.com`, not in `anews.example.com`).
fn replace_domain(text: &str, from: &str, to: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(off) = lower[i..].find(from) {
        let at = i + off;
        let end = at + from.len();
        let before_ok = at == 0 || !is_label_char(lower.as_bytes()[at - 1]);
        let after_ok = end == lower.len() || !is_label_char(lower.as_bytes()[end]);
        out.push_str(&text[i..at]);
        out.push_str(if before_ok && after_ok {
            to
        } else {
            &text[at..end]
        });
        i = end;
    }
    out.push_str(&text[i..]);
    out
}

fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

impl Binding {
    /// True if every role keeps its own name.
    pub fn is_identity(&self) -> bool {
        self.roles
            .iter()
            .all(|b| b.to.as_deref() == Some(b.role.as_str()))
    }

    /// One line per role that changed name, for the run's notes.
    pub fn notes(&self) -> Vec<String> {
        self.roles
            .iter()
            .filter(|b| b.to.as_deref() != Some(b.role.as_str()))
            .map(|b| {
                format!(
                    "role {} `{}` bound to {} ({})",
                    b.kind.word(),
                    b.role,
                    b.to.as_deref()
                        .map_or("no X-Virtual-MTA header".into(), |t| format!("`{t}`")),
                    b.why
                )
            })
            .collect()
    }

    fn to(&self, kind: RoleKind, role: &str) -> Option<&Bound> {
        self.roles
            .iter()
            .find(|b| b.kind == kind && b.role.eq_ignore_ascii_case(role))
    }

    /// `text` with every sender domain replaced by its binding.
    fn swap_senders(&self, text: &str) -> String {
        self.roles
            .iter()
            .filter(|b| b.kind == RoleKind::Sender)
            .filter_map(|b| b.to.as_deref().map(|t| (b.role.as_str(), t)))
            .filter(|(a, b)| a != b)
            .fold(text.to_string(), |t, (a, b)| replace_domain(&t, a, b))
    }

    /// The scenario with its roles replaced by the config's names.
    pub fn apply(&self, l: &Loaded) -> Loaded {
        let mut out = l.clone();
        let senders: Vec<(String, String)> = self
            .roles
            .iter()
            .filter(|b| b.kind == RoleKind::Sender)
            .filter_map(|b| b.to.clone().map(|t| (b.role.clone(), t)))
            .filter(|(a, b)| a != b)
            .collect();
        let swap = |text: &str| {
            senders
                .iter()
                .fold(text.to_string(), |t, (a, b)| replace_domain(&t, a, b))
        };
        let s = &mut out.scenario;
        for t in &mut s.traffic {
            if let Some(v) = t.vmta.clone() {
                t.vmta = self
                    .to(RoleKind::Vmta, &v)
                    .map_or(Some(v), |b| b.to.clone());
            }
            t.sender = swap(&t.sender);
            t.mail_from = t.mail_from.as_deref().map(|m| match m.rsplit_once('@') {
                Some((local, d)) => match self.to(RoleKind::ReturnPath, d) {
                    Some(Bound { to: Some(to), .. }) => format!("{local}@{to}"),
                    _ => swap(m),
                },
                None => swap(m),
            });
            for v in t.headers.values_mut() {
                *v = swap(v);
            }
        }
        s.fbl_address = s.fbl_address.as_deref().map(swap);
        for e in &mut s.expectations {
            if let Expectation::Backoff { queue, .. } = e {
                if let Some((d, v)) = queue.split_once('/') {
                    if let Some(b) = self.to(RoleKind::Vmta, v) {
                        *queue = format!("{d}/{}", b.to.as_deref().unwrap_or("*"));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_replaced_whole() {
        assert_eq!(
            replace_domain(
                "b@bounces.News.example.com",
                "news.example.com",
                "m.example.net"
            ),
            "b@bounces.m.example.net"
        );
        assert_eq!(
            replace_domain(
                "<https://anews.example.com/u/{id}>",
                "news.example.com",
                "x.net"
            ),
            "<https://anews.example.com/u/{id}>"
        );
        assert_eq!(
            replace_domain("a@news.example.com", "news.example.com", "x.net"),
            "a@x.net"
        );
    }

    #[test]
    fn purpose_words() {
        assert!(named_for("pool-marketing", Purpose::Marketing));
        assert!(named_for("tx-pool", Purpose::Transactional));
        assert!(!named_for("pool-main", Purpose::Marketing));
        assert!(!named_for("ntx", Purpose::Transactional));
    }

    #[test]
    fn maps_parse() {
        let m: RoleMap = "vmta:pool-marketing=pool-main"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (m.kind, m.from.as_str(), m.to.as_str()),
            (RoleKind::Vmta, "pool-marketing", "pool-main")
        );
        assert!("pool=x".parse::<RoleMap>().is_err());
        assert!("vmta:a=".parse::<RoleMap>().is_err());
    }
}
