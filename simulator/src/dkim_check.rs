//! The providers' DKIM check: signatures verified with mail-auth against the world's DKIM records,
//! made from the MTA config's `domain-key` files, without leaving the process.

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
        Ok(DkimChecker(v))
    }

    /// True if the message carries a DKIM signature that verifies with a published key.
    pub async fn verify(&self, message: &[u8]) -> bool {
        self.0.verify(message).await == Some(DkimResult::Pass)
    }
}
