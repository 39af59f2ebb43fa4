//! Who may do what on an inbound connection: the `<source>` rules (service, relaying, sizes,
//! recipients per message, authentication) and the local domains whose mail is taken in for the
//! bounce and feedback-loop processors. Decisions carry the SMTP reply to give.

use crate::config::effective::EffectiveSettings;
use crate::config::Config;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// A refusal: the reply code, enhanced status and text to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Reply code.
    pub code: u16,
    /// Enhanced status (RFC 3463).
    pub enhanced: &'static str,
    /// Text.
    pub text: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

fn refuse(code: u16, enhanced: &'static str, text: impl Into<String>) -> Refusal {
    Refusal {
        code,
        enhanced,
        text: text.into(),
    }
}

pub use crate::config::effective::local_domains;

/// The rules for one inbound connection.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    /// Effective `<source>` settings for the connection (re-evaluated after AUTH).
    pub source: EffectiveSettings,
    local: BTreeSet<String>,
    /// The address lists of the bounce and feedback-loop processors.
    processors: Vec<crate::config::model::AddressList>,
}

impl SessionPolicy {
    /// Rules for a connection from `peer` on a listener with source name `listener_source`;
    /// `Err` when the source has `smtp-service no` (reference part A: 521).
    pub fn connect(
        cfg: &Config,
        peer: IpAddr,
        listener_source: Option<&str>,
    ) -> Result<SessionPolicy, Refusal> {
        let source = cfg.source_settings(Some(peer), listener_source);
        if !source.bool("smtp-service") {
            return Err(refuse(521, "5.3.2", "host does not accept mail from you"));
        }
        Ok(SessionPolicy {
            source,
            local: local_domains(cfg),
            processors: cfg
                .bounce_processors
                .iter()
                .chain(&cfg.feedback_loop_processors)
                .map(|p| p.addresses.clone())
                .collect(),
        })
    }

    /// After a successful AUTH the `{auth}` source applies on top (named sources override).
    pub fn authenticated(&mut self, cfg: &Config, peer: IpAddr, listener_source: Option<&str>) {
        let mut eff = cfg.source_settings(Some(peer), listener_source);
        let auth = cfg.source_settings(None, Some("{auth}"));
        for (k, v) in auth.0 {
            if matches!(v.origin, crate::config::effective::Origin::Config { .. }) {
                eff.0.insert(k, v);
            }
        }
        self.source = eff;
    }

    /// The size limit (`max-message-size`), if any; 0 means none, as in the stock config.
    pub fn max_message_size(&self) -> Option<u64> {
        self.source.size("max-message-size").filter(|n| *n > 0)
    }

    /// MAIL FROM with a declared SIZE.
    pub fn mail(&self, declared_size: Option<u64>) -> Result<(), Refusal> {
        match (declared_size, self.max_message_size()) {
            (Some(n), Some(max)) if n > max => Err(refuse(
                552,
                "5.3.4",
                format!("message size {n} exceeds the limit of {max} bytes"),
            )),
            _ => Ok(()),
        }
    }

    /// One RCPT TO, given how many recipients the transaction already has and whether the session
    /// authenticated. Local domains are always accepted (bounces and complaints come in there);
    /// anything else needs relaying rights.
    pub fn rcpt(
        &self,
        rcpt: &str,
        accepted_so_far: usize,
        authenticated: bool,
    ) -> Result<(), Refusal> {
        let domain = rcpt
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
            .unwrap_or_default();
        if domain.is_empty() {
            return Err(refuse(501, "5.1.3", "recipient address needs a domain"));
        }
        if let Some(max) = self.source.int("max-rcpt-per-message").filter(|n| *n > 0) {
            if accepted_so_far as u64 >= max {
                return Err(refuse(
                    452,
                    "4.5.3",
                    format!("too many recipients (at most {max} per message)"),
                ));
            }
        }
        if self.local.contains(&domain) || self.processors.iter().any(|l| l.matches(rcpt)) {
            return Ok(());
        }
        if self.source.bool("require-auth") && !authenticated {
            return Err(refuse(530, "5.7.0", "authentication required"));
        }
        if self.source.bool("always-allow-relaying") || authenticated {
            return Ok(());
        }
        Err(refuse(550, "5.7.1", "relaying denied"))
    }

    /// True if `domain` is one the MTA takes mail for itself.
    pub fn is_local(&self, domain: &str) -> bool {
        self.local
            .contains(&domain.trim_end_matches('.').to_ascii_lowercase())
    }

    /// True if the MTA takes mail for `addr` itself: a local domain, or an address of a bounce or
    /// feedback-loop processor.
    pub fn takes(&self, addr: &str) -> bool {
        self.is_local(addr.rsplit_once('@').map_or("", |(_, d)| d))
            || self.processors.iter().any(|l| l.matches(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const CFG: &str = "host-name mta.example.com\nsmtp-listener 127.0.0.1:2525 source=inbound\nrelay-domain bounces.example.com\n<source 127.0.0.1>\nalways-allow-relaying yes\nmax-message-size 1M\n</source>\n<source 0/0>\nmax-rcpt-per-message 2\n</source>\n<source 192.0.2.0/24>\nsmtp-service no\n</source>\n<source {auth}>\nalways-allow-relaying yes\n</source>\n<source inbound>\nrequire-auth yes\n</source>\n";

    fn cfg() -> Config {
        let l = load_str("t.conf", CFG);
        assert!(l.is_valid(), "{:?}", l.diagnostics);
        l.config
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `always-allow-relaying yes` at top level lets every source relay (PowerMTA lists it as a
    /// global directive too); a `<source>` block can still say no.
    #[test]
    fn a_top_level_always_allow_relaying_applies_to_every_source() {
        let l = load_str(
            "t.conf",
            "host-name mta.example.com\nalways-allow-relaying yes\n<source 192.0.2.0/24>\nalways-allow-relaying no\n</source>\n",
        );
        assert!(l.is_valid(), "{:?}", l.diagnostics);
        let rcpt = |from: &str| {
            SessionPolicy::connect(&l.config, ip(from), None)
                .unwrap_or_else(|e| panic!("{e}"))
                .rcpt("u@gmail.com", 0, false)
                .map_err(|r| r.to_string())
        };
        assert_eq!(rcpt("198.51.100.1"), Ok(()));
        assert_eq!(rcpt("192.0.2.9"), Err("550 5.7.1 relaying denied".into()));
    }

    #[test]
    fn service_relaying_and_local_domains() {
        let c = cfg();
        let refused = SessionPolicy::connect(&c, ip("192.0.2.9"), None)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "521 5.3.2 host does not accept mail from you"
        );
        let inside =
            SessionPolicy::connect(&c, ip("127.0.0.1"), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(inside.rcpt("u@gmail.com", 0, false), Ok(()));
        let outside =
            SessionPolicy::connect(&c, ip("198.51.100.1"), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            outside
                .rcpt("u@gmail.com", 0, false)
                .map_err(|r| r.to_string()),
            Err("550 5.7.1 relaying denied".into())
        );
        assert_eq!(
            outside.rcpt("fbl@bounces.example.com", 0, false),
            Ok(()),
            "local domains take bounces"
        );
        assert_eq!(
            outside.rcpt("postmaster@MTA.example.com.", 0, false),
            Ok(()),
            "host-name is local"
        );
        assert_eq!(
            outside.rcpt("u@gmail.com", 0, true),
            Ok(()),
            "authenticated senders relay"
        );
        assert_eq!(
            outside
                .rcpt("x@bounces.example.com", 2, false)
                .map_err(|r| r.code),
            Err(452),
            "max-rcpt-per-message"
        );
        assert_eq!(
            outside.rcpt("nodomain", 0, false).map_err(|r| r.code),
            Err(501)
        );
    }

    #[test]
    fn sizes_and_auth_requirements() {
        let c = cfg();
        let p = SessionPolicy::connect(&c, ip("127.0.0.1"), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.mail(Some(2 << 20)).map_err(|r| (r.code, r.enhanced)),
            Err((552, "5.3.4"))
        );
        assert_eq!(p.mail(Some(1000)), Ok(()));
        assert_eq!(p.mail(None), Ok(()));
        let mut named = SessionPolicy::connect(&c, ip("198.51.100.1"), Some("inbound"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            named.rcpt("u@gmail.com", 0, false).map_err(|r| r.code),
            Err(530)
        );
        named.authenticated(&c, ip("198.51.100.1"), Some("inbound"));
        assert!(
            named.source.bool("always-allow-relaying"),
            "the {{auth}} source applies after AUTH"
        );
    }
}
