//! DKIM signing through mail-auth, driven by the config's `domain-key` lines: loading keys once
//! (and again when the file changes), choosing the key for a message, signing with a sensible header
//! set (From over-signed), generating keys and their DNS records.

pub mod check;
pub mod keys;
pub mod verify;

pub use keys::{generate, KeyAlgorithm, KeyCache, LoadedKey};

use crate::config::model::{Config, DomainKey};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;

/// Why a message could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum DkimError {
    /// The key file could not be read or is not a usable key.
    #[error("DKIM key {path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// Why.
        reason: String,
    },
    /// mail-auth refused to sign (e.g. no signed header present).
    #[error("DKIM signing failed: {0}")]
    Sign(String),
}

/// Headers signed by default, in this order; `From` appears twice so that a second From cannot be
/// added without breaking the signature (over-signing). Headers a message lacks are still listed,
/// which also prevents their later addition.
pub const DEFAULT_HEADERS: &[&str] = &[
    "From",
    "From",
    "Sender",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "To",
    "Cc",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "In-Reply-To",
    "References",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
];

/// Picks the key for a message whose Sender (or From) domain is `author_domain`, sent on `vmta`
/// (in `pool`): the vMTA's keys first, then the pool's, then the global ones; the first key whose
/// domain equals the author domain or is a parent of it, or is `*`, wins (reference part A).
pub fn select_key<'a>(
    cfg: &'a Config,
    vmta: Option<&str>,
    pool: Option<&str>,
    author_domain: &str,
) -> Option<&'a DomainKey> {
    let author = author_domain.trim_end_matches('.').to_ascii_lowercase();
    let fits = |k: &&DomainKey| {
        k.domain == "*" || k.domain == author || author.ends_with(&format!(".{}", k.domain))
    };
    let vm = vmta
        .and_then(|v| cfg.vmtas.get(v))
        .map(|v| v.domain_keys.as_slice())
        .unwrap_or(&[]);
    let pl = pool
        .and_then(|p| cfg.pools.get(p))
        .map(|p| p.domain_keys.as_slice())
        .unwrap_or(&[]);
    vm.iter()
        .find(fits)
        .or_else(|| pl.iter().find(fits))
        .or_else(|| cfg.domain_keys.iter().find(fits))
}

/// The domain of the `Sender` header if present, else of `From` (the author domain DKIM keys are
/// chosen by).
pub fn author_domain(message: &[u8]) -> Option<String> {
    let header_end = find_header_end(message);
    let headers = std::str::from_utf8(&message[..header_end]).ok()?;
    let mut sender = None;
    let mut from = None;
    let mut current: Option<(String, String)> = None;
    let mut finish = |cur: Option<(String, String)>| {
        if let Some((n, v)) = cur {
            if n.eq_ignore_ascii_case("sender") && sender.is_none() {
                sender = Some(v);
            } else if n.eq_ignore_ascii_case("from") && from.is_none() {
                from = Some(v);
            }
        }
    };
    for line in headers.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = current.as_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        finish(current.take());
        if let Some((n, v)) = line.split_once(':') {
            current = Some((n.trim().to_string(), v.trim().to_string()));
        }
    }
    finish(current.take());
    let addr = sender.or(from)?;
    let addr = addr
        .rsplit_once('<')
        .map_or(addr.as_str(), |(_, a)| a.split('>').next().unwrap_or(a));
    addr.rsplit_once('@')
        .map(|(_, d)| {
            d.trim()
                .trim_end_matches(['>', ' ', ';'])
                .to_ascii_lowercase()
        })
        .filter(|d| !d.is_empty())
}

fn find_header_end(m: &[u8]) -> usize {
    m.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .or_else(|| m.windows(2).position(|w| w == b"\n\n").map(|p| p + 1))
        .unwrap_or(m.len())
}

/// Signs `message` (raw RFC 5322 bytes) and returns the `DKIM-Signature:` header field, folded,
/// ending in CRLF, to put in front of the message. Relaxed/relaxed canonicalization.
pub fn sign(
    message: &[u8],
    key: &LoadedKey,
    domain: &str,
    selector: &str,
    headers: &[&str],
    identity: Option<&str>,
) -> Result<String, DkimError> {
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let relaxed = mail_auth::dkim::Canonicalization::Relaxed;
    macro_rules! go {
        ($k:expr) => {{
            let mut s = DkimSigner::from_key($k)
                .domain(domain)
                .selector(selector)
                .headers(headers.clone())
                .header_canonicalization(relaxed)
                .body_canonicalization(relaxed);
            if let Some(i) = identity {
                s = s.agent_user_identifier(i);
            }
            s.sign(message)
                .map(|sig| sig.to_header())
                .map_err(|e| DkimError::Sign(e.to_string()))
        }};
    }
    match key {
        LoadedKey::Rsa { key, .. } => go!(keys::ByRef(key.as_ref())),
        LoadedKey::RsaSmall { key, .. } => go!(keys::ByRef(key.as_ref())),
        LoadedKey::Ed25519 { key, .. } => go!(keys::ByRef(key.as_ref())),
    }
}

/// Rewrites bare LF line ends as CRLF (what goes on the wire and what DKIM canonicalizes).
pub fn to_crlf(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 40);
    let mut prev = 0u8;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    #[test]
    fn key_selection_order_and_parent_domains() {
        let l = load_str(
            "t.conf",
            "domain-key g, example.com, /k/g.pem\ndomain-key any, *, /k/any.pem\n<virtual-mta v>\nsmtp-source-host 192.0.2.1 v.example.com\ndomain-key v, news.example.com, /k/v.pem\n</virtual-mta>\n<virtual-mta-pool p>\nvirtual-mta v\ndomain-key p, example.com, /k/p.pem\n</virtual-mta-pool>\n",
        );
        let cfg = l.config;
        let sel = |vm, pool, d: &str| select_key(&cfg, vm, pool, d).map(|k| k.selector.clone());
        assert_eq!(
            sel(Some("v"), Some("p"), "news.example.com"),
            Some("v".into()),
            "vMTA keys first"
        );
        assert_eq!(
            sel(Some("v"), Some("p"), "mail.news.example.com"),
            Some("v".into()),
            "a parent domain fits"
        );
        assert_eq!(
            sel(Some("v"), Some("p"), "example.com"),
            Some("p".into()),
            "then the pool's"
        );
        assert_eq!(
            sel(None, None, "Sub.Example.com"),
            Some("g".into()),
            "then global, case-insensitive"
        );
        assert_eq!(
            sel(None, None, "other.org"),
            Some("any".into()),
            "`*` fits any domain"
        );
        assert_eq!(
            sel(None, None, "notexample.com"),
            Some("any".into()),
            "a suffix is not a parent"
        );
    }

    #[test]
    fn author_domain_prefers_sender_and_unfolds() {
        let m = b"From: \"News\"\r\n <news@News.Example.com>\r\nSubject: x\r\n\r\nFrom: body@evil.example\r\n";
        assert_eq!(author_domain(m).as_deref(), Some("news.example.com"));
        let m = b"From: a@b.example\nSender: list@lists.example.org\n\nbody";
        assert_eq!(author_domain(m).as_deref(), Some("lists.example.org"));
        assert_eq!(author_domain(b"Subject: none\r\n\r\n"), None);
    }
}
