//! The providers' DKIM check: signatures verified with mail-auth against the world's DKIM records
//! (made from the MTA config's `domain-key` files), without leaving the process.

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// TXT records by name, as mail-auth's cache.
#[derive(Default)]
struct TxtCache(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for TxtCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().ok()?.get(name).cloned()
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

/// Verifies DKIM signatures against a fixed set of published keys.
#[derive(Clone)]
pub struct DkimChecker {
    auth: Arc<MessageAuthenticator>,
    cache: Arc<TxtCache>,
    names: Arc<Vec<String>>,
}

impl DkimChecker {
    /// A checker that knows the keys of `cfg`'s `domain-key` lines (`*` keys are published for
    /// the traffic's sender domains given).
    pub fn from_config(
        cfg: &mta::config::Config,
        sender_domains: &[String],
    ) -> Result<DkimChecker, String> {
        use mail_auth::hickory_resolver::config::{
            ConnectionConfig, NameServerConfig, ResolverConfig,
        };
        // Never queried: every look-up is answered from the cache or refused before asking.
        let mut conn = ConnectionConfig::udp();
        conn.port = 9;
        let rc = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            std::net::IpAddr::from([127, 0, 0, 1]),
            true,
            vec![conn],
        )]);
        let auth = MessageAuthenticator::new(rc, Default::default()).map_err(|e| e.to_string())?;
        let cache = TxtCache::default();
        let mut names = Vec::new();
        let keys = cfg
            .domain_keys
            .iter()
            .chain(cfg.vmtas.values().flat_map(|v| v.domain_keys.iter()))
            .chain(cfg.pools.values().flat_map(|p| p.domain_keys.iter()));
        for k in keys {
            let txt = mta::dkim::keys::public_txt(&k.path).map_err(|e| e.to_string())?;
            if DomainKey::parse(txt.as_bytes()).is_err() {
                continue;
            }
            let domains: Vec<String> = if k.domain == "*" {
                sender_domains.to_vec()
            } else {
                vec![k.domain.clone()]
            };
            for d in domains {
                let name = format!("{}._domainkey.{d}.", k.selector);
                cache.insert(
                    name.clone().into_boxed_str(),
                    Txt::from(DomainKey::parse(txt.as_bytes()).map_err(|e| e.to_string())?),
                    std::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365),
                );
                names.push(name);
            }
        }
        Ok(DkimChecker {
            auth: Arc::new(auth),
            cache: Arc::new(cache),
            names: Arc::new(names),
        })
    }

    /// True if the message carries a DKIM signature that verifies with a published key.
    pub async fn verify(&self, message: &[u8]) -> bool {
        let Some(sig) = mta::engine::header(message, "DKIM-Signature") else {
            return false;
        };
        let tag = |t: &str| {
            sig.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(t)
                    .map(|v| v.trim().to_ascii_lowercase())
            })
        };
        let (Some(d), Some(s)) = (tag("d="), tag("s=")) else {
            return false;
        };
        if !self.names.contains(&format!("{s}._domainkey.{d}.")) {
            return false; // not published in this world: a real receiver would find no key either
        }
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            return false;
        };
        let out = self
            .auth
            .verify_dkim(Parameters::new(&parsed).with_txt_cache(self.cache.as_ref()))
            .await;
        out.iter().any(|o| *o.result() == DkimResult::Pass)
    }
}
