//! What a run found, in the order an operator should read it: mail the MTA refused at injection,
//! a reason most mail bounced for (with the config's part in it, e.g. a sender domain it does not
//! sign for), and why a backoff expectation failed (no pattern rule matches the provider's reply,
//! a rule that defers instead, a `backoff-to-normal-after` that holds the queue too long).

use crate::expect::{queue_matches, Observed};
use crate::inject::StreamStats;
use crate::report::Verdict;
use crate::scenario::{Expectation, IncidentKind, Loaded};
use mta::config::effective::Origin;
use mta::config::model::PatternAction;
use mta::config::Config;

/// A failing verdict per stream the MTA refused mail of (streams it took in full add none).
pub fn injection_verdicts(streams: &[StreamStats]) -> Vec<Verdict> {
    streams
        .iter()
        .filter(|s| s.refused > 0 || (s.accepted == 0 && s.planned > 0))
        .map(|s| Verdict {
            expectation: format!("traffic `{}` taken by the MTA", s.name),
            passed: false,
            exercised: true,
            expected: format!("{} messages accepted", s.planned),
            observed: match s.top_reply() {
                Some((r, n)) => format!("{} of {} refused; {n} with: {r}", s.refused, s.planned),
                None => format!(
                    "none accepted: {}",
                    s.errors.first().map_or("no connection", |e| e.as_str())
                ),
            },
            location: "injection".into(),
        })
        .collect()
}

/// A failing verdict when most accepted mail bounced for one reason, or as unauthenticated, and
/// the scenario does not expect that category (no `category` expectation with a minimum for it):
/// its other verdicts would then speak of mail that never reached the providers' mailboxes.
pub fn bounce_verdict(l: &Loaded, o: &Observed) -> Option<Verdict> {
    let accepted = o
        .tally
        .totals
        .accepted
        .saturating_sub(o.tally.dsns_accepted);
    let top = o
        .tally
        .bounce_reasons
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
    let unauthenticated: u64 = o
        .tally
        .bounce_reasons
        .iter()
        .filter(|((_, _, r), _)| is_auth_failure(r))
        .map(|(_, n)| *n)
        .sum();
    let ((provider, cat, reply), n) = top;
    let observed = if n * 2 > accepted {
        format!("{n} of {accepted} bounced at {provider} ({cat}): {reply}")
    } else if unauthenticated * 2 > accepted {
        format!("{unauthenticated} of {accepted} bounced as unauthenticated ({provider}: {reply})")
    } else {
        return None;
    };
    let wanted = l.scenario.expectations.iter().any(|e| {
        matches!(e, Expectation::Category { category, or, min: Some(m), .. } if (category == cat || or.contains(cat)) && *m > 0)
    });
    // Mailbox states and expiry are what a scenario drives with its addresses and outages; a
    // policy or spam refusal is expected only if one of its incidents gives that reply.
    let driven = matches!(
        cat.as_str(),
        "bad-mailbox" | "inactive-mailbox" | "quota-issues" | "message-expired"
    ) || l.scenario.incidents.iter().any(|i| match &i.kind {
        IncidentKind::Reply { reply: r, .. } | IncidentKind::Blocklist { reply: r, .. } => {
            let head = r.split('{').next().unwrap_or(r).trim();
            !head.is_empty() && reply.contains(head)
        }
        _ => false,
    });
    let expected = wanted && driven && n * 2 > accepted;
    (!expected).then(|| Verdict {
        expectation: "accepted mail not mostly bounced for a reason the scenario does not expect"
            .into(),
        passed: false,
        exercised: true,
        expected: "most accepted mail delivered, or bounced as the scenario expects".into(),
        observed,
        location: "accounting b records".into(),
    })
}

/// The findings of a run, most important first.
pub fn findings(
    l: &Loaded,
    cfg: &Config,
    o: &Observed,
    streams: &[StreamStats],
    verdicts: &[Verdict],
) -> Vec<String> {
    let mut out = Vec::new();
    for s in streams {
        if let Some((r, n)) = s.top_reply() {
            out.push(format!(
                "traffic `{}`: {} of {} messages refused by the MTA at injection ({n}: {r})",
                s.name, s.refused, s.planned
            ));
        } else if s.accepted == 0 && s.planned > 0 {
            out.push(format!(
                "traffic `{}`: no message reached the MTA ({})",
                s.name,
                s.errors.first().map_or("no connection", |e| e.as_str())
            ));
        }
    }
    let accepted = o.tally.totals.accepted;
    if accepted == 0 && out.is_empty() {
        out.push("the MTA accepted no message".into());
    }
    out.extend(bounce_findings(l, cfg, o, accepted));
    for (e, v) in l.scenario.expectations.iter().zip(verdicts) {
        if v.passed || !v.exercised {
            continue;
        }
        let f = match e {
            Expectation::Backoff {
                queue, incident, ..
            } => backoff_finding(l, cfg, o, queue, *incident, &v.observed),
            Expectation::FeedbackRecords { .. } => feedback_finding(l, cfg),
            Expectation::DkimVerified { .. } => {
                for f in auth_findings(l, cfg) {
                    if !out.contains(&f) {
                        out.push(f);
                    }
                }
                None
            }
            Expectation::Category { category, .. } if category == "message-expired" => {
                expiry_finding(l, cfg)
            }
            _ => None,
        };
        out.extend(f);
    }
    out
}

/// Why complaints did not become `f` records: where the providers send them, and whether the
/// config takes that address in with a feedback-loop processor.
fn feedback_finding(l: &Loaded, cfg: &Config) -> Option<String> {
    let t = l.scenario.traffic.first()?;
    let to = l
        .scenario
        .fbl_address
        .clone()
        .unwrap_or_else(|| format!("fbl@fbl.{}", t.sender_domain()));
    let file = cfg.path.display();
    if cfg.feedback_loop_processors.is_empty() {
        return Some(format!(
            "complaints (ARF) go to {to}, and {file} has no <feedback-loop-processor>: none becomes an f record"
        ));
    }
    let taken = cfg
        .feedback_loop_processors
        .iter()
        .any(|p| p.addresses.matches(&to));
    (!taken).then(|| {
        format!("complaints (ARF) go to {to}, which no <feedback-loop-processor> address-list in {file} matches")
    })
}

/// Why mail did not expire: a `bounce-after` in force for the traffic's domains that is longer
/// than the scenario.
fn expiry_finding(l: &Loaded, cfg: &Config) -> Option<String> {
    let t = l.scenario.traffic.first()?;
    let d = t.domains.keys().next()?;
    let eff = cfg.domain_settings(d, t.vmta.as_deref());
    if eff.interval("bounce-after")? < l.duration {
        return None;
    }
    let s = eff.0.get("bounce-after")?;
    let after = s.value.as_ref().map_or("-".into(), |v| v.to_string());
    Some(format!(
        "messages to {d} are kept for bounce-after {after} ({}), longer than the scenario's {}: mail still queued when the provider came back was delivered, not expired",
        origin(&s.origin),
        l.scenario.duration
    ))
}

/// The reason most accepted mail bounced for, if one did (then also the next reasons covering a
/// tenth or more, at most three in all), or else authentication, if most mail bounced for want of
/// it at one provider or another; and what in the config explains an authentication failure among
/// them. The MTA's own DSNs count neither as accepted mail nor as bounces.
fn bounce_findings(l: &Loaded, cfg: &Config, o: &Observed, accepted: u64) -> Vec<String> {
    let accepted = accepted.saturating_sub(o.tally.dsns_accepted);
    let mut reasons: Vec<(&(String, String, String), &u64)> =
        o.tally.bounce_reasons.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut out = Vec::new();
    let mut auth = false;
    let most_mail = reasons.first().is_some_and(|(_, n)| **n * 2 > accepted);
    let unauthenticated: u64 = reasons
        .iter()
        .filter(|((_, _, r), _)| is_auth_failure(r))
        .map(|(_, n)| **n)
        .sum();
    if !most_mail && unauthenticated * 2 > accepted {
        out.push(format!(
            "most mail: {unauthenticated} of {accepted} accepted recipients bounced as unauthenticated"
        ));
        for ((provider, cat, reply), n) in reasons
            .iter()
            .filter(|((_, _, r), _)| is_auth_failure(r))
            .take(3)
        {
            out.push(format!("{n} at {provider} ({cat}): {reply}"));
        }
        return [out, auth_findings(l, cfg)].concat();
    }
    for ((provider, cat, reply), n) in reasons.into_iter().take(3) {
        if !most_mail || n * 10 < accepted {
            break;
        }
        let most = if out.is_empty() { "most mail: " } else { "" };
        out.push(format!(
            "{most}{n} of {accepted} accepted recipients bounced at {provider} ({cat}): {reply}"
        ));
        auth |= is_auth_failure(reply);
    }
    if auth {
        out.extend(auth_findings(l, cfg));
    }
    out
}

/// Replies of providers refusing unauthenticated mail (SPF/DKIM/DMARC).
fn is_auth_failure(reply: &str) -> bool {
    let r = reply.to_ascii_lowercase();
    ["5.7.26", "5.7.9 ", "5.7.515", "5.7.27", "4.7.30", "4.7.27"]
        .iter()
        .any(|c| r.contains(c))
        || r.contains("unauthenticated")
        || r.contains("dmarc")
        || r.contains("failing both spf and dkim")
}

/// For each sender domain of the traffic: the config signs for it nowhere, or not on some of the
/// vMTAs its stream goes out from.
fn auth_findings(l: &Loaded, cfg: &Config) -> Vec<String> {
    let (signs, any) = crate::bind::signing_domains(cfg);
    let file = cfg.path.display();
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for t in &l.scenario.traffic {
        let d = t.sender_domain();
        if !seen.insert((d.clone(), t.vmta.clone())) {
            continue;
        }
        if !any && !signs.contains(&d) {
            let has = if signs.is_empty() {
                "no domain (no domain-key)".to_string()
            } else {
                signs.iter().cloned().collect::<Vec<_>>().join(", ") + " only"
            };
            out.push(format!(
                "mail not authenticated for {d}: {file} signs for {has}, and the world publishes SPF and DKIM for the domains it signs for"
            ));
            continue;
        }
        // Mail without X-Virtual-MTA goes where the injection source's default-virtual-mta says.
        let route = t.vmta.clone().or_else(|| {
            cfg.sources
                .iter()
                .find_map(|s| match &s.settings.get("default-virtual-mta")?.value {
                    mta::config::values::Value::Text(v) => Some(v.clone()),
                    _ => None,
                })
        });
        let vmtas: Vec<String> = match route.as_deref() {
            Some(p) if cfg.pools.contains_key(p) => cfg.pools[p]
                .members
                .iter()
                .map(|(m, _)| m.clone())
                .collect(),
            Some(v) => vec![v.to_string()],
            None => Vec::new(),
        };
        let keyed = |v: &str| {
            let fits = |k: &mta::config::model::DomainKey| {
                k.domain == "*" || k.domain.eq_ignore_ascii_case(&d)
            };
            cfg.domain_keys.iter().any(fits)
                || cfg
                    .vmtas
                    .get(v)
                    .is_some_and(|x| x.domain_keys.iter().any(fits))
                || route
                    .as_deref()
                    .and_then(|p| cfg.pools.get(p))
                    .is_some_and(|p| p.domain_keys.iter().any(fits))
        };
        let bare: Vec<&String> = vmtas.iter().filter(|v| !keyed(v)).collect();
        if !bare.is_empty() {
            out.push(format!(
                "vMTA {} of `{}` has no DKIM key for {d} in {file}: its mail goes out unsigned",
                bare.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                route.as_deref().unwrap_or("")
            ));
        }
    }
    out
}

fn origin(o: &Origin) -> String {
    match o {
        Origin::Config { at, block } => format!("{at}, {block}"),
        other => other.to_string(),
    }
}

/// Why queues `queue` did not back off (or not back in time) for incident `index`.
fn backoff_finding(
    l: &Loaded,
    cfg: &Config,
    o: &Observed,
    queue: &str,
    index: usize,
    observed: &str,
) -> Option<String> {
    let inc = l.scenario.incidents.get(index)?;
    let IncidentKind::Reply { reply, .. } = &inc.kind else {
        return None;
    };
    let reply = reply.replace("{ip}", "192.0.2.1");
    let domain = queue.split('/').next().unwrap_or(queue);
    // The vMTA of a queue that saw the incident, else the pattern's, else none.
    let vmta = o
        .modes
        .keys()
        .find(|q| queue_matches(queue, q))
        .and_then(|q| q.split_once('/').map(|(_, v)| v.to_string()))
        .or_else(|| queue.split_once('/').map(|(_, v)| v.to_string()))
        .filter(|v| v != "*" && !v.starts_with('{'));
    let eff = cfg.domain_settings(domain, vmta.as_deref());
    let file = cfg.path.display();
    let short: String = reply.chars().take(60).collect();
    let Some(list_name) = eff.text("smtp-pattern-list") else {
        return Some(format!(
            "{domain} backoff: no smtp-pattern-list applies to {domain} in {file}, so `{short}` cannot put its queues into backoff"
        ));
    };
    let list = cfg.smtp_pattern_lists.get(list_name)?;
    let Some(rule) = mta::shaping::match_reply(list, &reply) else {
        return Some(format!(
            "{domain} backoff never entered: no rule of smtp-pattern-list `{list_name}` ({}) matches `{short}`",
            list.span
        ));
    };
    if !rule.actions.contains(&PatternAction::ModeBackoff) {
        return Some(format!(
            "{domain} backoff never entered: the first rule of `{list_name}` matching `{short}` ({}) does not say mode=backoff",
            rule.span
        ));
    }
    if observed.starts_with("never") {
        return None;
    }
    // Entered, but back too late: what decides the return.
    let rule_after = rule.actions.iter().find_map(|a| match a {
        PatternAction::BackoffToNormalAfter(d) => Some(*d),
        _ => None,
    });
    let setting = eff.0.get("backoff-to-normal-after");
    let (after, from) = match (rule_after, setting) {
        (Some(d), _) => (
            mta::config::values::format_interval(d),
            format!("rule at {}", rule.span),
        ),
        (None, Some(s)) => (
            s.value.as_ref().map_or("-".into(), |v| v.to_string()),
            origin(&s.origin),
        ),
        (None, None) => return None,
    };
    Some(format!(
        "{domain} stayed in backoff too long ({observed}): backoff-to-normal-after {after} ({from}) holds it there after the provider recovers"
    ))
}
