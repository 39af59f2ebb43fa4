//! vMTA selection as PowerMTA does it (reference part A, "VMTA selection precedence"):
//! the `X-Virtual-MTA` header when the source has `process-x-virtual-mta`, then the source's
//! `<pattern-list>` (mail-from, rcpt-to, header rules), then its `default-virtual-mta`; a pool name
//! picks its members round-robin.

use crate::config::effective::EffectiveSettings;
use crate::config::Config;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// The vMTA (and pool) a recipient is queued on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VmtaChoice {
    /// The vMTA; `None` is `{default}`.
    pub vmta: Option<String>,
    /// The pool it was picked from, if any.
    pub pool: Option<String>,
}

/// Round-robin positions per pool (shared by every session, so the spread is even overall).
#[derive(Debug, Default)]
pub struct PoolCursors(Mutex<BTreeMap<String, usize>>);

impl PoolCursors {
    fn next(&self, pool: &str, len: usize) -> usize {
        let Ok(mut m) = self.0.lock() else { return 0 };
        let c = m.entry(pool.to_string()).or_insert(0);
        let i = *c % len.max(1);
        *c = c.wrapping_add(1);
        i
    }
}

/// What the selection looks at for one recipient.
#[derive(Debug, Clone, Copy)]
pub struct SelectInput<'a> {
    /// The `X-Virtual-MTA` header value, if the message has one.
    pub x_virtual_mta: Option<&'a str>,
    /// Envelope sender.
    pub mail_from: &'a str,
    /// The recipient.
    pub rcpt: &'a str,
    /// The message headers (name, value).
    pub headers: &'a [(String, String)],
    /// The local address the message came in on (for `default-virtual-mta by-smtp-source-ip`).
    pub local_ip: Option<IpAddr>,
}

/// Resolves a vMTA or pool name to a choice; `Err` with the reason if it names nothing.
pub fn resolve_name(cfg: &Config, name: &str, cursors: &PoolCursors) -> Result<VmtaChoice, String> {
    if cfg.vmtas.contains_key(name) {
        return Ok(VmtaChoice {
            vmta: Some(name.to_string()),
            pool: None,
        });
    }
    if let Some(pool) = cfg.pools.get(name) {
        let members: Vec<&str> = pool
            .members
            .iter()
            .map(|(m, _)| m.as_str())
            .filter(|m| cfg.vmtas.contains_key(*m))
            .collect();
        if members.is_empty() {
            return Err(format!(
                "virtual-mta-pool `{name}` has no usable virtual-mta"
            ));
        }
        let i = cursors.next(name, members.len());
        return Ok(VmtaChoice {
            vmta: Some(members[i].to_string()),
            pool: Some(name.to_string()),
        });
    }
    Err(format!("`{name}` is not a virtual-mta or virtual-mta-pool"))
}

/// Picks the vMTA for one recipient. `Err` carries the reason for an `X-Virtual-MTA` naming no
/// vMTA when the source says `reject-invalid-virtual-mta` (the default).
pub fn choose(
    cfg: &Config,
    source: &EffectiveSettings,
    input: &SelectInput<'_>,
    cursors: &PoolCursors,
) -> Result<VmtaChoice, String> {
    if source.bool("process-x-virtual-mta") {
        if let Some(name) = input.x_virtual_mta.map(str::trim).filter(|n| !n.is_empty()) {
            match resolve_name(cfg, name, cursors) {
                Ok(c) => return Ok(c),
                Err(e) if source.bool("reject-invalid-virtual-mta") => {
                    return Err(format!("X-Virtual-MTA: {e}"))
                }
                Err(_) => {}
            }
        }
    }
    if let Some(list) = source
        .text("pattern-list")
        .and_then(|n| cfg.pattern_lists.get(n))
    {
        for rule in &list.rules {
            let subject: Option<&str> = match (rule.field.as_str(), &rule.header) {
                ("mail-from", _) => Some(input.mail_from),
                ("rcpt-to", _) => Some(input.rcpt),
                ("header", Some(h)) => input
                    .headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(h))
                    .map(|(_, v)| v.as_str()),
                _ => None,
            };
            if subject.is_some_and(|s| rule.pattern.is_match(s)) {
                if let Some(target) = rule.actions.get("virtual-mta") {
                    if let Ok(c) = resolve_name(cfg, target, cursors) {
                        return Ok(c);
                    }
                }
            }
        }
    }
    match source.text("default-virtual-mta") {
        Some("by-smtp-source-ip") => {
            let hit = input.local_ip.and_then(|ip| {
                cfg.vmtas
                    .values()
                    .find(|v| v.source_hosts.iter().any(|h| h.net.contains(&ip)))
            });
            Ok(VmtaChoice {
                vmta: hit.map(|v| v.name.clone()),
                pool: None,
            })
        }
        Some(name) => Ok(resolve_name(cfg, name, cursors).unwrap_or_default()),
        None => Ok(VmtaChoice::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const CFG: &str = "<virtual-mta a>\nsmtp-source-host 192.0.2.1 a.example.com\n</virtual-mta>\n<virtual-mta b>\nsmtp-source-host 192.0.2.2 b.example.com\n</virtual-mta>\n<virtual-mta c>\nsmtp-source-host 192.0.2.3 c.example.com\n</virtual-mta>\n<virtual-mta-pool p>\nvirtual-mta a\nvirtual-mta b\n</virtual-mta-pool>\n<pattern-list routes>\nmail-from /@transactional\\.example\\.com$/ virtual-mta=c\nheader X-Campaign /^promo/ virtual-mta=a\n</pattern-list>\n<source 127.0.0.1>\nprocess-x-virtual-mta yes\npattern-list routes\ndefault-virtual-mta p\n</source>\n<source 10.0.0.0/8>\ndefault-virtual-mta by-smtp-source-ip\n</source>\n";

    fn input<'a>(
        x: Option<&'a str>,
        from: &'a str,
        headers: &'a [(String, String)],
    ) -> SelectInput<'a> {
        SelectInput {
            x_virtual_mta: x,
            mail_from: from,
            rcpt: "u@gmail.com",
            headers,
            local_ip: None,
        }
    }

    #[test]
    fn precedence_header_then_patterns_then_default_pool_round_robin() {
        let l = load_str("t.conf", CFG);
        assert!(l.is_valid(), "{:?}", l.diagnostics);
        let cfg = l.config;
        let src = cfg.source_settings("127.0.0.1".parse().ok(), None);
        let cur = PoolCursors::default();
        let none: Vec<(String, String)> = Vec::new();
        let pick = |x, from, h: &[(String, String)]| {
            choose(&cfg, &src, &input(x, from, h), &cur).map(|c| c.vmta.unwrap_or_default())
        };
        assert_eq!(
            pick(Some("b"), "x@transactional.example.com", &none),
            Ok("b".into()),
            "header first"
        );
        assert_eq!(
            pick(None, "x@transactional.example.com", &none),
            Ok("c".into()),
            "then mail-from rule"
        );
        let promo = vec![("x-campaign".to_string(), "promo-42".to_string())];
        assert_eq!(
            pick(None, "news@example.com", &promo),
            Ok("a".into()),
            "header rule, case-insensitive name"
        );
        let rr: Vec<String> = (0..4)
            .filter_map(|_| pick(None, "news@example.com", &none).ok())
            .collect();
        assert_eq!(rr, vec!["a", "b", "a", "b"], "pool round-robin");
        assert!(
            pick(Some("nope"), "news@example.com", &none).is_err(),
            "invalid X-Virtual-MTA is rejected by default"
        );
        // A source without process-x-virtual-mta ignores the header.
        let other = cfg.source_settings("10.1.1.1".parse().ok(), None);
        let by_ip = SelectInput {
            local_ip: "192.0.2.3".parse().ok(),
            ..input(Some("a"), "n@example.com", &none)
        };
        assert_eq!(
            choose(&cfg, &other, &by_ip, &cur).map(|c| c.vmta),
            Ok(Some("c".into())),
            "by-smtp-source-ip"
        );
        let nobody = cfg.source_settings("198.51.100.1".parse().ok(), None);
        assert_eq!(
            choose(&cfg, &nobody, &input(None, "n@example.com", &none), &cur),
            Ok(VmtaChoice::default()),
            "{{default}}"
        );
    }
}
