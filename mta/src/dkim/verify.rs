//! DKIM verification against a fixed set of published key records, answered from memory (test
//! worlds, checks): mail-auth's verifier with its TXT cache filled in, never asking a DNS server.

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// TXT records by name, as mail-auth's cache. When `authoritative`, a name not held does not
/// exist; otherwise it is looked up in DNS.
#[derive(Default)]
struct TxtCache(Mutex<HashMap<Box<str>, Txt>>, bool);

impl ResolverCache<Box<str>, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        // The published records are the whole world: any other name does not exist (so nothing
        // is ever asked of a real DNS server, and simulated time never waits for one).
        let held = self.0.lock().ok()?.get(name).cloned();
        if held.is_some() || !self.1 {
            return held;
        }
        Some(Txt::Error(mail_auth::Error::Dns(
            mail_auth::DnsError::RecordNotFound(
                mail_auth::hickory_resolver::proto::op::ResponseCode::NXDomain,
            ),
        )))
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().ok()?.remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _: std::time::Instant) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(key, value);
        }
    }
}

/// What a receiver concludes about a message's authentication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthVerdict {
    /// SPF passed for the MAIL FROM identity.
    pub spf: bool,
    /// A DKIM signature verified.
    pub dkim: bool,
    /// DMARC passed (an aligned SPF or DKIM pass under a published policy).
    pub dmarc: bool,
}

/// Verifies DKIM signatures against published `selector._domainkey.domain` records.
#[derive(Clone)]
pub struct Verifier {
    auth: Arc<MessageAuthenticator>,
    cache: Arc<TxtCache>,
    names: Arc<Mutex<Vec<String>>>,
}

impl Verifier {
    /// A verifier with no keys yet.
    pub fn new() -> Result<Verifier, String> {
        use mail_auth::hickory_resolver::config::{
            ConnectionConfig, NameServerConfig, ResolverConfig,
        };
        // Never queried: look-ups are answered from the cache or refused before asking.
        let mut conn = ConnectionConfig::udp();
        conn.port = 9;
        let rc = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            std::net::IpAddr::from([127, 0, 0, 1]),
            true,
            vec![conn],
        )]);
        let auth = MessageAuthenticator::new(rc, Default::default()).map_err(|e| e.to_string())?;
        Ok(Verifier {
            auth: Arc::new(auth),
            cache: Arc::new(TxtCache(Mutex::default(), true)),
            names: Arc::default(),
        })
    }

    /// A verifier that looks every record up in DNS at `server` (UDP and TCP), as a receiving
    /// provider does: keys and policies come from what that server publishes.
    pub fn with_dns(server: std::net::SocketAddr) -> Result<Verifier, String> {
        use mail_auth::hickory_resolver::config::{
            ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
        };
        let mut udp = ConnectionConfig::udp();
        udp.port = server.port();
        let mut tcp = ConnectionConfig::tcp();
        tcp.port = server.port();
        let rc = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            server.ip(),
            true,
            vec![udp, tcp],
        )]);
        let mut opts = ResolverOpts::default();
        opts.timeout = std::time::Duration::from_secs(2);
        let auth = MessageAuthenticator::new(rc, opts).map_err(|e| e.to_string())?;
        Ok(Verifier {
            auth: Arc::new(auth),
            cache: Arc::new(TxtCache(Mutex::default(), false)),
            names: Arc::default(),
        })
    }

    /// Publishes `txt` (`v=DKIM1; k=…; p=…`) for `selector` under `domain`.
    pub fn publish(&self, selector: &str, domain: &str, txt: &str) -> Result<(), String> {
        let key = DomainKey::parse(txt.as_bytes()).map_err(|e| e.to_string())?;
        let name = format!(
            "{selector}._domainkey.{}.",
            domain.trim_end_matches('.').to_ascii_lowercase()
        );
        self.cache.insert(
            name.clone().into_boxed_str(),
            Txt::from(key),
            std::time::Instant::now() + std::time::Duration::from_secs(86_400 * 3650),
        );
        if let Ok(mut n) = self.names.lock() {
            n.push(name);
        }
        Ok(())
    }

    /// Publishes a TXT record at `name`: an SPF (`v=spf1`) or DMARC (`v=DMARC1`) record for
    /// [`Verifier::authenticate`]; other records are ignored.
    pub fn publish_txt(&self, name: &str, txt: &str) -> Result<(), String> {
        let name = format!("{}.", name.trim_end_matches('.').to_ascii_lowercase());
        let record = if txt.starts_with("v=spf1") {
            Txt::from(mail_auth::spf::Spf::parse(txt.as_bytes()).map_err(|e| e.to_string())?)
        } else if txt.starts_with("v=DMARC1") {
            Txt::from(mail_auth::dmarc::Dmarc::parse(txt.as_bytes()).map_err(|e| e.to_string())?)
        } else {
            return Ok(());
        };
        self.cache.insert(
            name.into_boxed_str(),
            record,
            std::time::Instant::now() + std::time::Duration::from_secs(86_400 * 3650),
        );
        Ok(())
    }

    /// SPF (MAIL FROM identity, `ip` and `helo`), DKIM and DMARC for one message, as a receiving
    /// provider evaluates them, answered from the published records.
    pub async fn authenticate(
        &self,
        message: &[u8],
        ip: std::net::IpAddr,
        helo: &str,
        mail_from: &str,
    ) -> AuthVerdict {
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            return AuthVerdict::default();
        };
        let dkim = self
            .auth
            .verify_dkim(Parameters::new(&parsed).with_txt_cache(self.cache.as_ref()))
            .await;
        let sender = spf_identity(helo, mail_from);
        let spf = self.verify_spf(ip, helo, &sender).await;
        let mail_from_domain = sender.rsplit_once('@').map_or(helo, |(_, d)| d);
        let dmarc = self
            .auth
            .verify_dmarc(
                Parameters::new(mail_auth::dmarc::verify::DmarcParameters::new(
                    &parsed,
                    &dkim,
                    mail_from_domain,
                    &spf,
                ))
                .with_txt_cache(self.cache.as_ref()),
            )
            .await;
        AuthVerdict {
            spf: spf.result() == mail_auth::SpfResult::Pass,
            dkim: dkim.iter().any(|o| o.result() == &DkimResult::Pass),
            dmarc: dmarc.dkim_result() == &mail_auth::DmarcResult::Pass
                || dmarc.spf_result() == &mail_auth::DmarcResult::Pass,
        }
    }

    /// SPF for the MAIL FROM identity (or `postmaster@helo` for a null sender) of a client at `ip`.
    pub async fn spf(&self, ip: std::net::IpAddr, helo: &str, mail_from: &str) -> bool {
        let sender = spf_identity(helo, mail_from);
        self.verify_spf(ip, helo, &sender).await.result() == mail_auth::SpfResult::Pass
    }

    async fn verify_spf(
        &self,
        ip: std::net::IpAddr,
        helo: &str,
        sender: &str,
    ) -> mail_auth::SpfOutput {
        self.auth
            .verify_spf(
                Parameters::new(mail_auth::spf::verify::SpfParameters::verify_mail_from(
                    ip,
                    helo,
                    "mx.receiver",
                    sender,
                ))
                .with_txt_cache(self.cache.as_ref()),
            )
            .await
    }

    /// The outcome of every DKIM signature of `message`, in order (keys not published do not
    /// exist: nothing is looked up).
    pub async fn verify_all(&self, message: &[u8]) -> Vec<DkimResult> {
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            return Vec::new();
        };
        self.auth
            .verify_dkim(Parameters::new(&parsed).with_txt_cache(self.cache.as_ref()))
            .await
            .iter()
            .map(|o| o.result().clone())
            .collect()
    }

    /// The outcome for the first DKIM signature of `message`: `None` when it has none, or names a
    /// key that is not published (a real receiver would find none either).
    pub async fn verify(&self, message: &[u8]) -> Option<DkimResult> {
        let sig = crate::headers::header(message, "DKIM-Signature")?;
        let tag = |t: &str| {
            sig.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(t)
                    .map(|v| v.trim().to_ascii_lowercase())
            })
        };
        let name = format!("{}._domainkey.{}.", tag("s=")?, tag("d=")?);
        if self.cache.1 && !self.names.lock().ok()?.contains(&name) {
            return None;
        }
        let parsed = AuthenticatedMessage::parse(message)?;
        let out = self
            .auth
            .verify_dkim(Parameters::new(&parsed).with_txt_cache(self.cache.as_ref()))
            .await;
        out.first().map(|o| o.result().clone())
    }
}

/// The identity SPF checks: the MAIL FROM address, or `postmaster@HELO` for a null sender.
fn spf_identity(helo: &str, mail_from: &str) -> String {
    if mail_from.is_empty() {
        format!("postmaster@{helo}")
    } else {
        mail_from.to_string()
    }
}
