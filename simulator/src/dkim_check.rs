//! The providers' authentication checks: DKIM signatures, SPF and DMARC evaluated with mail-auth
//! against the world's records (DKIM keys from the MTA config's `domain-key` files, SPF and DMARC
//! as `simulator::world::zones` publishes them), without leaving the process.

use mail_auth::DkimResult;
use mta::dkim::verify::Verifier;

/// Verifies DKIM signatures against the keys a config publishes.
#[derive(Clone)]
pub struct DkimChecker(Verifier);

impl DkimChecker {
    /// A checker that knows the keys of `cfg`'s `domain-key` lines (`*` keys are published for the
    /// traffic's sender domains given).
    pub fn from_config(
        cfg: &mta::config::Config,
        sender_domains: &[String],
    ) -> Result<DkimChecker, String> {
        let v = Verifier::new()?;
        let keys = cfg
            .domain_keys
            .iter()
            .chain(cfg.vmtas.values().flat_map(|v| v.domain_keys.iter()))
            .chain(cfg.pools.values().flat_map(|p| p.domain_keys.iter()));
        for k in keys {
            let txt = mta::dkim::keys::public_txt(&k.path).map_err(|e| e.to_string())?;
            let domains: Vec<String> = if k.domain == "*" {
                sender_domains.to_vec()
            } else {
                vec![k.domain.clone()]
            };
            for d in domains {
                v.publish(&k.selector, &d, &txt)?;
            }
        }
        // SPF and DMARC records as the world's DNS publishes them.
        let zones = crate::world::zones(&[], Some(cfg))?;
        for (name, values) in &zones.txt {
            for t in values {
                v.publish_txt(name, t)?;
            }
        }
        Ok(DkimChecker(v))
    }

    /// A checker that fetches keys and policies from the DNS server at `dns` (live worlds).
    pub fn live(dns: std::net::SocketAddr) -> Result<DkimChecker, String> {
        Ok(DkimChecker(Verifier::with_dns(dns)?))
    }

    /// SPF, DKIM and DMARC of a message from `ip` (EHLO `helo`, MAIL FROM `mail_from`).
    pub async fn authenticate(
        &self,
        message: &[u8],
        ip: std::net::IpAddr,
        helo: &str,
        mail_from: &str,
    ) -> mta::dkim::verify::AuthVerdict {
        self.0.authenticate(message, ip, helo, mail_from).await
    }

    /// True if the message carries a DKIM signature that verifies with a published key.
    pub async fn verify(&self, message: &[u8]) -> bool {
        self.0.verify(message).await == Some(DkimResult::Pass)
    }
}
