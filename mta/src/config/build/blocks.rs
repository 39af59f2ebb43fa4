//! Building the model, continued: virtual MTAs and pools, pattern lists, bounce categories,
//! accounting files, spools, SMTP users, listeners and processors.

use super::{resolve_path, Builder};
use crate::config::diag::{Code, Span};
use crate::config::model::*;
use crate::config::syntax::{unquote, Block, Item};
use crate::config::values::{split_regex, Value};
use std::collections::BTreeMap;

impl Builder<'_> {
    pub(super) fn vmta_block(&mut self, blk: &Block) {
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

    pub(super) fn pool_block(&mut self, blk: &Block) {
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

    pub(super) fn smtp_pattern_list(&mut self, blk: &Block) {
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
                let mut diag = crate::config::diag::Diagnostic::error(Code::Misplaced, Some(d.span.clone()), format!("`{}` is not valid in <smtp-pattern-list> (rules are `reply /REGEX/ ACTION[,ACTION…]`)", d.name));
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

    pub(super) fn pattern_actions(&mut self, text: &str, at: &Span) -> Option<Vec<PatternAction>> {
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
            let dur = |v: Option<&str>| v.map(crate::config::values::parse_interval);
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
                    let mut d =
                        crate::config::diag::Diagnostic::error(Code::BadValue, Some(at.clone()), e);
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
                    if let Some(s) = crate::config::registry::closest(&probe, known.iter().copied())
                    {
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

    pub(super) fn pattern_list(&mut self, blk: &Block) {
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

    pub(super) fn category_patterns(&mut self, blk: &Block) {
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
                        let mut diag = crate::config::diag::Diagnostic::error(
                            Code::BadValue,
                            Some(d.span.clone()),
                            if cat.is_empty() {
                                "bounce category missing after the regex".to_string()
                            } else {
                                format!("unknown bounce category `{cat}`")
                            },
                        );
                        if let Some(s) = crate::config::registry::closest(
                            &cat,
                            BOUNCE_CATEGORIES.iter().copied(),
                        ) {
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

    pub(super) fn acct_file(&mut self, blk: &Block) {
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
                            let mut diag = crate::config::diag::Diagnostic::error(
                                Code::BadValue,
                                Some(d.value_span.clone()),
                                format!("unknown accounting field `{bare}`"),
                            );
                            if let Some(s) =
                                crate::config::registry::closest(bare, ACCT_FIELDS.iter().copied())
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

    pub(super) fn spool_block(&mut self, blk: &Block) {
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

    pub(super) fn smtp_user(&mut self, blk: &Block) {
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

    pub(super) fn listener_block(&mut self, blk: &Block) {
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

    pub(super) fn processor(&mut self, blk: &Block) -> Processor {
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
