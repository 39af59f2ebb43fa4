//! Text and JSON output of `mta check-config` and `mta show settings --config`.

use super::effective::{EffectiveSettings, Origin};
use super::{Config, Loaded, Severity};
use serde_json::{json, Value as Json};

/// Output format for people or scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
}

/// Output format of `mta check-config`: the common ones plus GitHub Actions annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
    /// One GitHub Actions workflow command (`::error file=…::…`) per diagnostic.
    Github,
}

impl From<Format> for CheckFormat {
    fn from(f: Format) -> CheckFormat {
        match f {
            Format::Text => CheckFormat::Text,
            Format::Json => CheckFormat::Json,
        }
    }
}

/// A one-line inventory of what the config defines.
pub fn summary(cfg: &Config) -> String {
    let dom_blocks = cfg.domains.len()
        + cfg.vmtas.values().map(|v| v.domains.len()).sum::<usize>()
        + cfg.pools.values().map(|p| p.domains.len()).sum::<usize>();
    format!(
        "{} listener(s), {} source block(s), {} virtual MTA(s), {} pool(s), {} domain block(s), {} smtp-pattern-list(s), {} bounce-category pattern(s), {} acct-file(s), {} spool(s), {} DKIM key(s)",
        cfg.listeners.len(),
        cfg.sources.len(),
        cfg.vmtas.len(),
        cfg.pools.len(),
        dom_blocks,
        cfg.smtp_pattern_lists.len(),
        cfg.bounce_category_patterns.len(),
        cfg.acct_files.len(),
        cfg.spools.len(),
        cfg.domain_keys.len() + cfg.vmtas.values().map(|v| v.domain_keys.len()).sum::<usize>() + cfg.pools.values().map(|p| p.domain_keys.len()).sum::<usize>(),
    )
}

/// The report `mta check-config` prints.
pub fn check_report(loaded: &Loaded, format: impl Into<CheckFormat>) -> String {
    let file = loaded.config.path.display().to_string();
    match format.into() {
        CheckFormat::Github => github_report(loaded, &file),
        CheckFormat::Text => {
            let mut out = String::new();
            for d in &loaded.diagnostics {
                out.push_str(&d.to_string());
                out.push('\n');
            }
            out.push_str(&verdict_line(loaded, &file));
            if loaded.is_valid() {
                out.push_str(&format!("{file}: {}\n", summary(&loaded.config)));
            }
            out
        }
        CheckFormat::Json => {
            let diags: Vec<Json> = loaded
                .diagnostics
                .iter()
                .map(|d| {
                    let mut o = json!({
                        "severity": match d.severity { Severity::Error => "error", Severity::Warning => "warning" },
                        "code": d.code.as_str(),
                        "file": d.span.as_ref().map(|s| s.file.to_string()),
                        "line": d.span.as_ref().map(|s| s.line),
                        "column": d.span.as_ref().map(|s| s.col),
                        "message": d.message,
                    });
                    if let (Some(h), Some(obj)) = (&d.hint, o.as_object_mut()) {
                        obj.insert("hint".into(), json!(h));
                    }
                    o
                })
                .collect();
            let v = json!({
                "file": file,
                "valid": loaded.is_valid(),
                "errors": loaded.errors(),
                "warnings": loaded.warnings(),
                "diagnostics": diags,
                "summary": summary(&loaded.config),
            });
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
        }
    }
}

/// GitHub's escaping of a workflow command's message: `%`, CR and LF.
fn gh_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// GitHub's escaping of a workflow command's property value: the message escapes plus `:` and `,`.
fn gh_property(s: &str) -> String {
    gh_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// One `::error …::` / `::warning …::` line per diagnostic, then the verdict as a plain log line.
fn github_report(loaded: &Loaded, file: &str) -> String {
    let mut out = String::new();
    for d in &loaded.diagnostics {
        let kind = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut props = Vec::new();
        if let Some(s) = &d.span {
            props.push(format!("file={}", gh_property(&s.file)));
            if s.line > 0 {
                props.push(format!("line={}", s.line));
                props.push(format!("col={}", s.col));
            }
        }
        props.push(format!(
            "title={}",
            gh_property(&format!("mta check-config ({})", d.code))
        ));
        let mut msg = d.message.clone();
        if let Some(h) = &d.hint {
            msg.push_str(&format!(" ({h})"));
        }
        out.push_str(&format!(
            "::{kind} {}::{}\n",
            props.join(","),
            gh_data(&msg)
        ));
    }
    out.push_str(&verdict_line(loaded, file));
    out
}

/// `FILE: valid|INVALID: N error(s), M warning(s)` and a line end.
fn verdict_line(loaded: &Loaded, file: &str) -> String {
    let verdict = if loaded.is_valid() {
        "valid"
    } else {
        "INVALID"
    };
    format!(
        "{file}: {verdict}: {} error(s), {} warning(s)\n",
        loaded.errors(),
        loaded.warnings()
    )
}

fn vmta_lines(cfg: &Config, vmta: Option<&str>) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let (hosts, host_name) = match vmta.and_then(|v| cfg.vmtas.get(v)) {
        Some(v) => (&v.source_hosts, v.host_name.clone()),
        None => (&cfg.source_hosts, None),
    };
    let global_host = cfg.global.get("host-name").map(|s| s.value.to_string());
    for h in hosts {
        let name = h
            .host_name
            .clone()
            .or_else(|| host_name.clone())
            .or_else(|| global_host.clone())
            .unwrap_or_else(|| "(machine host name)".into());
        out.push((
            "smtp-source-host".into(),
            format!("{} {name}", h.net),
            h.span.to_string(),
        ));
    }
    if let Some(v) = vmta {
        let pools = cfg.pools_of(v);
        if !pools.is_empty() {
            out.push((
                "virtual-mta-pool".into(),
                pools.join(", "),
                "membership".into(),
            ));
        }
    }
    out
}

/// The report `mta show settings --config FILE QUEUE` prints for every queue the pattern selects.
pub fn settings_report(cfg: &Config, queue: &str, format: Format) -> Result<String, String> {
    let queues = cfg.expand_queue(queue)?;
    let mut text = String::new();
    let mut json_queues = Vec::new();
    for (domain, vmta) in &queues {
        let eff: EffectiveSettings = cfg.domain_settings(domain, vmta.as_deref());
        let qname = format!("{domain}/{}", vmta.as_deref().unwrap_or("{default}"));
        match format {
            Format::Text => {
                text.push_str(&format!("queue {qname}\n"));
                let mut rows: Vec<(String, String, String)> = vmta_lines(cfg, vmta.as_deref());
                for (name, e) in &eff.0 {
                    let v = e
                        .value
                        .as_ref()
                        .map_or("(none)".to_string(), |v| v.to_string());
                    rows.push((name.clone(), v, e.origin.to_string()));
                }
                let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
                let w1 = rows
                    .iter()
                    .map(|r| r.1.chars().count())
                    .max()
                    .unwrap_or(0)
                    .min(40);
                for (n, v, o) in rows {
                    text.push_str(&format!("  {n:<w0$}  {v:<w1$}  {o}\n"));
                }
                text.push('\n');
            }
            Format::Json => {
                let settings: serde_json::Map<String, Json> = eff
                    .0
                    .iter()
                    .map(|(n, e)| {
                        let origin = match &e.origin {
                            Origin::Default => json!({"from": "default"}),
                            Origin::Derived { of } => json!({"from": "derived", "of": of}),
                            Origin::Config { at, block } => json!({"from": "config", "file": at.file.to_string(), "line": at.line, "column": at.col, "block": block}),
                        };
                        (n.clone(), json!({"value": e.value.as_ref().map(|v| v.to_string()), "origin": origin}))
                    })
                    .collect();
                let vm: Vec<Json> = vmta_lines(cfg, vmta.as_deref())
                    .into_iter()
                    .map(|(n, v, o)| json!({"name": n, "value": v, "origin": o}))
                    .collect();
                json_queues.push(json!({"queue": qname, "vmta": vm, "settings": settings}));
            }
        }
    }
    Ok(match format {
        Format::Text => text,
        Format::Json => {
            serde_json::to_string_pretty(&json!({ "queues": json_queues })).unwrap_or_default()
                + "\n"
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_escapes_follow_the_workflow_command_rules() {
        assert_eq!(gh_data("50% a:b,c\r\nd"), "50%25 a:b,c%0D%0Ad");
        assert_eq!(gh_property("50% a:b,c\nd"), "50%25 a%3Ab%2Cc%0Ad");
    }

    #[test]
    fn github_report_puts_code_and_location_in_the_properties() {
        let l = super::super::load_str("a,b:c.conf", "smtp-sorce-host 1.2.3.4 x\n");
        let out = check_report(&l, CheckFormat::Github);
        assert!(out.starts_with("::warning title=mta check-config (no-spool)::"));
        assert!(
            out.lines().any(|l| l.starts_with("::error file=a%2Cb%3Ac.conf,line=1,col=1,title=mta check-config (unknown-directive)::unknown directive `smtp-sorce-host` (did you mean")),
            "{out}"
        );
    }
}
