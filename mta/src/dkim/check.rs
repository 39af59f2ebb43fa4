//! `mta dkim check`: looks every configured `domain-key` up in DNS (`SELECTOR._domainkey.DOMAIN`)
//! and says whether the published public key is the one that goes with the private key file.

use crate::config::Config;
use crate::dns::Resolver;
use serde::Serialize;

/// The outcome for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status", content = "detail")]
pub enum KeyStatus {
    /// The published key matches.
    Match,
    /// A key is published but it is another one.
    Mismatch(String),
    /// Nothing is published under that name.
    Missing(String),
    /// The look-up failed (SERVFAIL, timeout): try again.
    DnsError(String),
    /// The private key file is unusable.
    BadKey(String),
    /// `domain-key S, *, FILE` signs for any domain: there is no single name to check.
    Wildcard,
}

/// One configured key and what DNS says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyCheck {
    /// Selector.
    pub selector: String,
    /// Domain.
    pub domain: String,
    /// The key file.
    pub file: String,
    /// Where it is configured (file:line:col).
    pub at: String,
    /// The outcome.
    #[serde(flatten)]
    pub status: KeyStatus,
}

/// The `p=` tag of a DKIM key record, without whitespace.
pub fn p_tag(txt: &str) -> Option<String> {
    txt.split(';').find_map(|t| {
        let (k, v) = t.split_once('=')?;
        (k.trim() == "p").then(|| v.chars().filter(|c| !c.is_whitespace()).collect())
    })
}

/// Checks every `domain-key` of `cfg` (global, vMTA and pool level) through `dns`.
pub async fn check_config(cfg: &Config, dns: &dyn Resolver) -> Vec<KeyCheck> {
    let keys = cfg.all_domain_keys();
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for k in keys {
        if !seen.insert((k.selector.clone(), k.domain.clone(), k.path.clone())) {
            continue;
        }
        let mut check = KeyCheck {
            selector: k.selector.clone(),
            domain: k.domain.clone(),
            file: k.path.display().to_string(),
            at: k.span.to_string(),
            status: KeyStatus::Wildcard,
        };
        if k.domain == "*" {
            out.push(check);
            continue;
        }
        let expected = match super::keys::public_txt(&k.path) {
            Ok(t) => p_tag(&t).unwrap_or_default(),
            Err(e) => {
                check.status = KeyStatus::BadKey(e.to_string());
                out.push(check);
                continue;
            }
        };
        let name = format!("{}._domainkey.{}", k.selector, k.domain);
        check.status = match dns.txt(&name).await {
            Ok(records) => {
                let published: Vec<String> = records.iter().filter_map(|r| p_tag(r)).collect();
                if published.contains(&expected) {
                    KeyStatus::Match
                } else if published.is_empty() {
                    KeyStatus::Missing(format!("{name}: TXT records but no p= tag"))
                } else if published.iter().all(|p| p.is_empty()) {
                    KeyStatus::Mismatch(format!("{name}: the key is revoked (empty p=)"))
                } else {
                    KeyStatus::Mismatch(format!(
                        "{name}: publishes another key (p={}...)",
                        published[0].chars().take(24).collect::<String>()
                    ))
                }
            }
            Err(e) if e.is_temporary() => KeyStatus::DnsError(e.to_string()),
            Err(e) => KeyStatus::Missing(format!("{name}: {e}")),
        };
        out.push(check);
    }
    out
}

/// The checks as text, one line each.
pub fn render(checks: &[KeyCheck]) -> String {
    let mut o = String::new();
    for c in checks {
        let (word, detail) = match &c.status {
            KeyStatus::Match => ("ok", "published key matches the private key".to_string()),
            KeyStatus::Mismatch(d) => ("MISMATCH", d.clone()),
            KeyStatus::Missing(d) => ("MISSING", d.clone()),
            KeyStatus::DnsError(d) => ("DNS ERROR", d.clone()),
            KeyStatus::BadKey(d) => ("BAD KEY", d.clone()),
            KeyStatus::Wildcard => (
                "skipped",
                "signs for any domain (*): check each sending domain's record".to_string(),
            ),
        };
        o.push_str(&format!(
            "{}: {}._domainkey.{} ({}): {word}: {detail}\n",
            c.at, c.selector, c.domain, c.file
        ));
    }
    o
}
