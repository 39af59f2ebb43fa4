//! Semantic checks beyond syntax (`mta check-config`): cross-references, settings that cannot work,
//! unsafe access, key files and paths, and throttles far above what mailbox providers tolerate.

use super::diag::{Code, Diagnostic, Diagnostics, Span};
use super::effective::Origin;
use super::model::{AccessLevel, Config, DomainBlock, DomainPattern, SourceSelector};
use super::values::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// All checks, including those that look at this machine's files (key files, spool, accounting
/// and log paths), through `host`.
pub fn run(cfg: &Config, host: &super::host::HostPaths, diags: &mut Diagnostics) {
    run_static(cfg, diags);
    super::host::run(cfg, host, diags);
}

/// The checks that need only the model.
pub fn run_static(cfg: &Config, diags: &mut Diagnostics) {
    check_vmtas_and_pools(cfg, diags);
    check_references(cfg, diags);
    check_domain_blocks(cfg, diags);
    check_http(cfg, diags);
    check_throttles(cfg, diags);
    check_misc(cfg, diags);
}

fn check_vmtas_and_pools(cfg: &Config, diags: &mut Diagnostics) {
    for v in cfg.vmtas.values() {
        if v.source_hosts.is_empty() {
            diags.warn(Code::NoSourceHost,
                &v.span,
                format!("virtual-mta `{}` has no smtp-source-host: it sends from the machine's default address with the global host-name", v.name),
            );
        }
    }
    for p in cfg.pools.values() {
        if p.members.is_empty() {
            diags.error(
                Code::EmptyPool,
                &p.span,
                format!("virtual-mta-pool `{}` has no virtual-mta", p.name),
            );
        }
        let mut seen = BTreeSet::new();
        for (m, span) in &p.members {
            if !seen.insert(m) {
                diags.warn(
                    Code::Duplicate,
                    span,
                    format!("virtual-mta `{m}` is listed twice in pool `{}`", p.name),
                );
            }
            if !cfg.vmtas.contains_key(m) {
                let mut d = Diagnostic::error(
                    Code::UndefinedVmta,
                    Some(span.clone()),
                    format!(
                        "pool `{}` names virtual-mta `{m}`, which is not defined",
                        p.name
                    ),
                );
                if let Some(s) = super::registry::closest(m, cfg.vmtas.keys().map(String::as_str)) {
                    d = d.with_hint(format!("did you mean `{s}`?"));
                }
                diags.push(d);
            }
        }
    }
    // A vMTA in two pools that both hold <domain> blocks: its settings would be ambiguous
    // (reference part A, "Precedence").
    for v in cfg.vmtas.keys() {
        let with_domains: Vec<&str> = cfg
            .pools_of(v)
            .into_iter()
            .filter(|p| cfg.pools.get(*p).is_some_and(|p| !p.domains.is_empty()))
            .collect();
        if with_domains.len() > 1 {
            let span = cfg.pools.get(with_domains[1]).map(|p| p.span.clone());
            diags.push(Diagnostic::error(Code::AmbiguousDomainSettings,
                span,
                format!("virtual-mta `{v}` is in pools `{}`, which all hold <domain> blocks: its domain settings would be ambiguous", with_domains.join("`, `")),
            ));
        }
    }
}

fn vmta_or_pool_exists(cfg: &Config, name: &str) -> bool {
    cfg.vmtas.contains_key(name) || cfg.pools.contains_key(name)
}

fn missing_target(cfg: &Config, span: &Span, what: &str, name: &str) -> Diagnostic {
    let mut d = Diagnostic::error(
        Code::UndefinedVmta,
        Some(span.clone()),
        format!("{what} `{name}` is not a defined virtual-mta or virtual-mta-pool"),
    );
    let all = cfg.vmtas.keys().chain(cfg.pools.keys()).map(String::as_str);
    if let Some(s) = super::registry::closest(name, all) {
        d = d.with_hint(format!("did you mean `{s}`?"));
    }
    d
}

fn check_references(cfg: &Config, diags: &mut Diagnostics) {
    for s in &cfg.sources {
        if let Some(st) = s.settings.get("default-virtual-mta") {
            if let Value::Text(name) = &st.value {
                if name != "by-smtp-source-ip" && !vmta_or_pool_exists(cfg, name) {
                    diags.push(missing_target(cfg, &st.span, "default-virtual-mta", name));
                }
            }
        }
        if let Some(st) = s.settings.get("pattern-list") {
            if let Value::Text(name) = &st.value {
                if !cfg.pattern_lists.contains_key(name) {
                    diags.error(
                        Code::UndefinedPatternList,
                        &st.span,
                        format!("pattern-list `{name}` is not defined"),
                    );
                }
            }
        }
    }
    for list in cfg.pattern_lists.values() {
        for r in &list.rules {
            if let Some(v) = r.actions.get("virtual-mta") {
                if !vmta_or_pool_exists(cfg, v) {
                    diags.push(missing_target(cfg, &r.span, "virtual-mta", v));
                }
            }
        }
    }
    let mut listen_at = BTreeMap::new();
    for l in &cfg.listeners {
        if let Some(prev) = listen_at.insert(l.addr, l.span.clone()) {
            diags.error(
                Code::Duplicate,
                &l.span,
                format!("a listener on {} is already declared at {prev}", l.addr),
            );
        }
    }
    check_sources(cfg, diags);
}

/// Named sources and what names them: a listener's `source=NAME` or an smtp-user's `source NAME`
/// must have its `<source NAME>` (else the mail silently loses that block's settings, such as
/// `default-virtual-mta`), and a named `<source>` that nothing reaches is a mistake too.
fn check_sources(cfg: &Config, diags: &mut Diagnostics) {
    use super::model::{same_source_name, BUILTIN_SOURCES};
    let named: Vec<(&str, &Span)> = cfg
        .sources
        .iter()
        .filter_map(|s| match &s.selector {
            SourceSelector::Named(n) => Some((n.as_str(), &s.span)),
            SourceSelector::Net(_) => None,
        })
        .collect();
    let exists = |n: &str| named.iter().any(|(m, _)| same_source_name(m, n));
    let mut refs: Vec<(&str, &Span, String)> = cfg
        .listeners
        .iter()
        .filter_map(|l| {
            let src = l.source.as_deref()?;
            Some((src, &l.span, format!("listener {}", l.addr)))
        })
        .collect();
    for u in cfg.smtp_users.values() {
        if let Some(st) = u.settings.get("source") {
            if let Value::Text(name) = &st.value {
                refs.push((name, &st.span, format!("smtp-user `{}`", u.name)));
            }
        }
    }
    for (src, span, who) in &refs {
        if exists(src) {
            continue;
        }
        let mut d = Diagnostic::error(
            Code::UndefinedSource,
            Some((*span).clone()),
            format!("{who} names source `{src}`, but no <source {src}> exists: its mail gets only the address-matched <source> settings (no default-virtual-mta from a named block)"),
        );
        let names = named.iter().map(|(n, _)| *n);
        d = match super::registry::closest(src, names) {
            Some(c) => d.with_hint(format!("did you mean `{c}`? (the <source {c}> block)")),
            None => d.with_hint(format!("add a `<source {src}>` block (`<source {{{src}}}>` is the same source), or drop `source={src}`")),
        };
        diags.push(d);
    }
    for (n, span) in &named {
        if BUILTIN_SOURCES.iter().any(|b| same_source_name(b, n))
            || refs.iter().any(|(r, _, _)| same_source_name(r, n))
        {
            continue;
        }
        let bare = n.trim_start_matches('{').trim_end_matches('}');
        let mut d = Diagnostic::error(
            Code::UnreachedSource,
            Some((*span).clone()),
            format!("<source {n}> is a named source that no smtp-listener (source={bare}) or smtp-user reaches: its settings never apply"),
        );
        let dangling = refs.iter().map(|(r, _, _)| *r).filter(|r| !exists(r));
        d = match super::registry::closest(bare, dangling) {
            Some(c) => d.with_hint(format!("a listener names `{c}`: did you mean <source {c}>?")),
            None => d.with_hint(format!("add `source={bare}` to the smtp-listener its mail arrives on (e.g. `smtp-listener 0/0:587 source={bare}`), or give the block an address (`<source 10.0.0.0/8>`)")),
        };
        diags.push(d);
    }
}

/// Every `<domain>` block with the level it sits at and a vMTA to evaluate it for.
fn all_domain_blocks(cfg: &Config) -> Vec<(&DomainBlock, Option<String>)> {
    let mut out: Vec<(&DomainBlock, Option<String>)> =
        cfg.domains.iter().map(|b| (b, None)).collect();
    for p in cfg.pools.values() {
        let first = p.members.first().map(|(m, _)| m.clone());
        out.extend(p.domains.iter().map(|b| (b, first.clone())));
    }
    for v in cfg.vmtas.values() {
        out.extend(v.domains.iter().map(|b| (b, Some(v.name.clone()))));
    }
    out
}

/// A domain the pattern covers, to evaluate effective settings with.
fn sample_domain(p: &DomainPattern) -> String {
    match p {
        DomainPattern::Any => "example.invalid".into(),
        DomainPattern::Exact(d) | DomainPattern::DomainAndSubdomains(d) => d.clone(),
        DomainPattern::Subdomains(d) => format!("sub.{d}"),
        DomainPattern::Literal(n) => format!("[{}]", n.addr()),
        DomainPattern::Special(n) => format!("{{{n}}}"),
    }
}

fn check_domain_blocks(cfg: &Config, diags: &mut Diagnostics) {
    for (b, vmta) in all_domain_blocks(cfg) {
        if let Some(s) = b.settings.get("max-smtp-out") {
            if s.value == Value::Int(0) {
                diags.error(Code::StopsDelivery, &s.span, format!("max-smtp-out 0 for <domain {}>: no connection may ever open, so its mail can only expire", b.pattern));
            }
        }
        if let Some(s) = b.settings.get("smtp-pattern-list") {
            if let Value::Text(name) = &s.value {
                if !cfg.smtp_pattern_lists.contains_key(name) {
                    let mut d = Diagnostic::error(
                        Code::UndefinedPatternList,
                        Some(s.span.clone()),
                        format!("smtp-pattern-list `{name}` is not defined"),
                    );
                    if let Some(h) = super::registry::closest(
                        name,
                        cfg.smtp_pattern_lists.keys().map(String::as_str),
                    ) {
                        d = d.with_hint(format!("did you mean `{h}`?"));
                    }
                    diags.push(d);
                }
            }
        }
        let backoff: Vec<_> = b
            .settings
            .0
            .iter()
            .filter(|s| s.name.starts_with("backoff-") && s.name != "backoff-notify")
            .collect();
        if let Some(first) = backoff.first() {
            // The block may be a default (`*`) for more specific blocks: it is useful if any domain
            // it covers ends up with a pattern list that can enter backoff.
            let mut samples = vec![sample_domain(&b.pattern)];
            samples.extend(
                all_domain_blocks(cfg)
                    .iter()
                    .map(|(o, _)| sample_domain(&o.pattern))
                    .filter(|d| b.pattern.matches(d)),
            );
            let can = samples.iter().any(|d| {
                cfg.domain_settings(d, vmta.as_deref())
                    .text("smtp-pattern-list")
                    .and_then(|n| cfg.smtp_pattern_lists.get(n))
                    .is_some_and(|l| l.can_enter_backoff())
            });
            if !can {
                diags.warn(Code::NoEffect,
                    &first.span,
                    format!("`{}` in <domain {}> has no effect: no smtp-pattern-list in force there has a `mode=backoff` rule, so the queue never enters backoff", first.name, b.pattern),
                );
            }
        }
        for s in &b.settings.0 {
            if let (Value::Rate(r), true) = (
                &s.value,
                s.name.ends_with("msg-rate") || s.name.ends_with("connect-rate"),
            ) {
                if r.count == Some(0) {
                    diags.warn(
                        Code::StopsDelivery,
                        &s.span,
                        format!(
                            "`{} 0` stops all delivery for <domain {}>",
                            s.name, b.pattern
                        ),
                    );
                }
            }
        }
    }
}

fn check_http(cfg: &Config, diags: &mut Diagnostics) {
    for a in &cfg.http_access {
        if a.net.prefix_len() == 0 && a.level >= AccessLevel::Operator {
            diags.warn(Code::OpenAccess,
                &a.span,
                format!("http-access {} {:?}: anyone who can reach the management port may change queues; restrict it to your admin network", a.net, a.level).to_lowercase(),
            );
        }
    }
}

/// What practitioners' public configs use per provider (reference part B, "Practitioner throttles").
struct Tolerance {
    domains: &'static [&'static str],
    provider: &'static str,
    max_smtp_out: Option<(u64, &'static str)>,
    max_msg_per_connection: Option<(u64, &'static str)>,
    max_msg_rate_per_min: Option<(f64, &'static str)>,
}

const SOURCE: &str = "shared/reference/pmta-and-isps.md part B, practitioner throttles";

const TOLERANCES: &[Tolerance] = &[
    Tolerance {
        domains: &["gmail.com", "googlemail.com"],
        provider: "Gmail",
        max_smtp_out: Some((20, "10–20")),
        max_msg_per_connection: Some((100, "20–100")),
        max_msg_rate_per_min: None,
    },
    Tolerance {
        domains: &["hotmail.com", "outlook.com", "live.com", "msn.com"],
        provider: "Outlook.com",
        max_smtp_out: Some((20, "20")),
        max_msg_per_connection: Some((100, "100")),
        max_msg_rate_per_min: Some((2500.0, "2500/m")),
    },
    Tolerance {
        domains: &["yahoo.com", "aol.com"],
        provider: "Yahoo",
        max_smtp_out: Some((300, "20–300")),
        max_msg_per_connection: None,
        max_msg_rate_per_min: None,
    },
    Tolerance {
        domains: &["comcast.net", "cox.net", "att.net"],
        provider: "Comcast/Cox/AT&T",
        max_smtp_out: Some((3, "2–3")),
        max_msg_per_connection: None,
        max_msg_rate_per_min: None,
    },
];

/// How far above the top of the practitioners' range a value must be to warn.
const FAR_ABOVE: f64 = 2.0;

/// A too-high setting: its value as shown, the domains it applies to, the practitioners' ranges.
type Finding = (String, BTreeSet<&'static str>, BTreeSet<String>);

fn check_throttles(cfg: &Config, diags: &mut Diagnostics) {
    // vMTAs without <domain> blocks of their own see exactly what their pool (or the global level)
    // gives: evaluate one representative per pool, plus every vMTA with blocks of its own.
    let mut vmtas: Vec<Option<&str>> = vec![None];
    let mut pools_seen = BTreeSet::new();
    for v in cfg.vmtas.values() {
        let pool = cfg
            .pools_of(&v.name)
            .into_iter()
            .find(|p| cfg.pools.get(*p).is_some_and(|p| !p.domains.is_empty()));
        if !v.domains.is_empty() || pool.is_some_and(|p| pools_seen.insert(p)) {
            vmtas.push(Some(v.name.as_str()));
        }
    }
    // One warning per written setting, naming every provider domain it is far too high for.
    let mut found: BTreeMap<(Span, &'static str), Finding> = BTreeMap::new();
    for t in TOLERANCES {
        for dom in t.domains {
            for v in &vmtas {
                let eff = cfg.domain_settings(dom, *v);
                let mut check = |name: &'static str,
                                 observed: Option<f64>,
                                 limit: Option<(f64, &str)>,
                                 shown: String| {
                    let (Some(obs), Some((top, range))) = (observed, limit) else {
                        return;
                    };
                    let Some(Origin::Config { at, .. }) = eff.0.get(name).map(|e| &e.origin) else {
                        return;
                    };
                    if obs > top * FAR_ABOVE {
                        let e = found
                            .entry((at.clone(), name))
                            .or_insert_with(|| (shown, BTreeSet::new(), BTreeSet::new()));
                        e.1.insert(dom);
                        e.2.insert(format!("{} {range}", t.provider));
                    }
                };
                check(
                    "max-smtp-out",
                    eff.int("max-smtp-out").map(|n| n as f64),
                    t.max_smtp_out.map(|(n, r)| (n as f64, r)),
                    eff.value("max-smtp-out")
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                );
                let mpc = eff
                    .int("max-msg-per-connection")
                    .filter(|n| *n > 0)
                    .map(|n| n as f64);
                check(
                    "max-msg-per-connection",
                    mpc,
                    t.max_msg_per_connection.map(|(n, r)| (n as f64, r)),
                    eff.value("max-msg-per-connection")
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                );
                let rate = eff.rate("max-msg-rate").per_second().map(|r| r * 60.0);
                check(
                    "max-msg-rate",
                    rate,
                    t.max_msg_rate_per_min,
                    eff.value("max-msg-rate")
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                );
            }
        }
    }
    for ((at, name), (shown, doms, ranges)) in found {
        let doms: Vec<&str> = doms.into_iter().collect();
        let ranges: Vec<String> = ranges.into_iter().collect();
        diags.push(Diagnostic::warning(Code::ThrottleTooHigh,
            Some(at),
            format!("{name} {shown} applies to {}: far above what practitioners use there ({}; {SOURCE})", doms.join(", "), ranges.join("; ")),
        ));
    }
}

fn check_misc(cfg: &Config, diags: &mut Diagnostics) {
    if cfg.spools.is_empty() {
        diags.push(Diagnostic::warning(
            Code::NoSpool,
            None,
            "no <spool> directory: `mta run` needs one (simulated runs keep the spool in memory)",
        ));
    }
    for a in &cfg.acct_files {
        for ty in a.record_fields.keys() {
            if ty != "*" && !a.records.contains(ty) {
                diags.warn(
                    Code::NoEffect,
                    &a.span,
                    format!(
                        "record-fields for `{ty}` records, but `records` does not include `{ty}`"
                    ),
                );
            }
        }
    }
    if let Some(s) = cfg.global.get("http-mgmt-port") {
        let text = match &s.value {
            Value::Int(p) => p.to_string(),
            other => other.to_string(),
        };
        if let Err(e) = super::values::parse_listen(&text) {
            diags.error(Code::BadValue, &s.span, format!("http-mgmt-port: {e}"));
        }
    }
    if let Some(s) = cfg.global.get("suppress-after") {
        if let Err(e) = super::values::SuppressPolicy::parse(&s.value.to_string()) {
            diags.error(Code::BadValue, &s.span, format!("suppress-after: {e}"));
        }
    }
}

/// What a DKIM private key file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyInfo {
    /// An RSA key of this many bits.
    Rsa(usize),
    /// An Ed25519 key.
    Ed25519,
}

/// Reads a PEM private key (PKCS#1 RSA or PKCS#8 RSA/Ed25519) and says what it is.
pub fn inspect_key(path: &Path) -> Result<KeyInfo, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| {
        "is not a PEM private key (expected BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)".to_string()
    })?;
    match key {
        PrivateKeyDer::Pkcs1(k) => rsa_info(k.secret_pkcs1_der(), |d| {
            aws_lc_rs::rsa::KeyPair::from_der(d)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
        PrivateKeyDer::Pkcs8(k) => {
            let der = k.secret_pkcs8_der();
            if let Some(pkcs1) = pkcs8_rsa_inner(der) {
                return rsa_info(pkcs1, |_| {
                    aws_lc_rs::rsa::KeyPair::from_pkcs8(der)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                });
            }
            aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map(|_| KeyInfo::Ed25519)
                .map_err(|_| "holds a PKCS#8 key that is neither RSA nor Ed25519".to_string())
        }
        PrivateKeyDer::Sec1(_) => {
            Err("holds an EC (ECDSA) key, which DKIM does not use: use RSA or Ed25519".into())
        }
        _ => Err("holds an unsupported key type".into()),
    }
}

/// Size of an RSA key from its PKCS#1 DER; keys of 2048 bits and more are also fully validated by
/// `validate` (aws-lc refuses smaller ones outright, so their size is all that can be reported).
fn rsa_info(
    pkcs1: &[u8],
    validate: impl Fn(&[u8]) -> Result<(), String>,
) -> Result<KeyInfo, String> {
    let bits = rsa_modulus_bits(pkcs1).ok_or_else(|| "holds a malformed RSA key".to_string())?;
    if bits >= 2048 {
        validate(pkcs1).map_err(|e| format!("holds an invalid RSA key: {e}"))?;
    }
    Ok(KeyInfo::Rsa(bits))
}

/// One DER element: (tag, content, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (len0 as usize, rest)
    } else {
        let n = (len0 & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (
            rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize),
            &rest[n..],
        )
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The modulus size in bits of a PKCS#1 RSAPrivateKey.
fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let (0x30, seq, _) = der(pkcs1)? else {
        return None;
    };
    let (0x02, _version, rest) = der(seq)? else {
        return None;
    };
    let (0x02, modulus, _) = der(rest)? else {
        return None;
    };
    let m: Vec<u8> = modulus.iter().copied().skip_while(|b| *b == 0).collect();
    let first = *m.first()?;
    Some(m.len() * 8 - first.leading_zeros() as usize)
}

/// The PKCS#1 key inside a PKCS#8 wrapper when the algorithm is rsaEncryption.
fn pkcs8_rsa_inner(pkcs8: &[u8]) -> Option<&[u8]> {
    const RSA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (0x30, seq, _) = der(pkcs8)? else {
        return None;
    };
    let (0x02, _version, rest) = der(seq)? else {
        return None;
    };
    let (0x30, alg, rest) = der(rest)? else {
        return None;
    };
    let (0x06, oid, _) = der(alg)? else {
        return None;
    };
    if oid != RSA_OID {
        return None;
    }
    let (0x04, inner, _) = der(rest)? else {
        return None;
    };
    Some(inner)
}
