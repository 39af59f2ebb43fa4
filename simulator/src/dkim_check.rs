//! The providers' authentication checks: DKIM signatures, SPF and DMARC evaluated with mail-auth
//! against the world's records (DKIM keys from the MTA config's `domain-key` files, SPF and DMARC
//! as `simulator::world::zones` publishes them), without leaving the process.

use mail_auth::DkimResult;
use mta::dkim::verify::Verifier;

/// Verifies DKIM signatures against the keys a config publishes.
#[derive(Clone)]
pub struct DkimChecker {
    verifier: Verifier,
    /// Take every message as DKIM-signed and aligned (`mtasim run --no-dkim`): nothing is parsed
    /// or verified, SPF is still evaluated.
    assume_dkim: bool,
}

impl DkimChecker {
    /// A checker that knows the keys of `cfg`'s `domain-key` lines (`*` keys are published for the
    /// traffic's sender domains given).
    pub fn from_config(
        cfg: &mta::config::Config,
        sender_domains: &[String],
    ) -> Result<DkimChecker, String> {
        let v = Verifier::new()?;
        let keys = cfg.all_domain_keys();
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
        Ok(DkimChecker {
            verifier: v,
            assume_dkim: false,
        })
    }

    /// A checker that fetches keys and policies from the DNS server at `dns` (live worlds).
    pub fn live(dns: std::net::SocketAddr) -> Result<DkimChecker, String> {
        Ok(DkimChecker {
            verifier: Verifier::with_dns(dns)?,
            assume_dkim: false,
        })
    }

    /// SPF, DKIM and DMARC of a message from `ip` (EHLO `helo`, MAIL FROM `mail_from`).
    pub async fn authenticate(
        &self,
        message: &[u8],
        ip: std::net::IpAddr,
        helo: &str,
        mail_from: &str,
    ) -> mta::dkim::verify::AuthVerdict {
        if self.assume_dkim {
            return mta::dkim::verify::AuthVerdict {
                spf: self.verifier.spf(ip, helo, mail_from).await,
                dkim: true,
                dmarc: true,
            };
        }
        self.verifier
            .authenticate(message, ip, helo, mail_from)
            .await
    }

    /// True if this checker takes DKIM as passing without verifying.
    pub fn assumes_dkim(&self) -> bool {
        self.assume_dkim
    }

    /// This checker, taking every message as DKIM-signed with an aligned signature (benchmarks of
    /// unsigned traffic that should meet the providers as signed traffic does).
    pub fn assuming_dkim(self) -> DkimChecker {
        DkimChecker {
            assume_dkim: true,
            ..self
        }
    }

    /// True if the message carries a DKIM signature that verifies with a published key.
    pub async fn verify(&self, message: &[u8]) -> bool {
        self.verifier.verify(message).await == Some(DkimResult::Pass)
    }
}
