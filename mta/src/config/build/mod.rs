//! Building the typed model ([`super::model::Config`]) from the syntax tree: directive names
//! against the registry, macros, global directives, and the blocks that hold settings (domains,
//! sources); every problem reported at its location. The other blocks are in `blocks`.

mod blocks;

use super::diag::{Code, Diagnostics, Span};
use super::model::*;
use super::registry::{registry, Support, BLOCK_TAGS, PASSIVE_TAGS};
use super::syntax::{unquote, Block, Directive, Item};
use super::values::Kind;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

pub(super) struct Builder<'a> {
    cfg: Config,
    diags: &'a mut Diagnostics,
    raw_macros: BTreeMap<String, (String, Span)>,
    /// Macros already reported as part of a loop (reported once).
    looped: std::collections::BTreeSet<String>,
}

pub(super) fn config_dir(span: &Span) -> PathBuf {
    Path::new(&*span.file)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub(super) fn resolve_path(span: &Span, p: &str) -> PathBuf {
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
}
