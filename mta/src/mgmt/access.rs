//! `http-access` as PowerMTA applies it: the rules are matched top-down and the first whose CIDR
//! contains the client decides its level (reference part A); no match means no access.
//! Two additions, documented in README: with no `http-access` line at all, loopback clients are
//! admins (so `mta show` works on a fresh install and nothing else gets in), and with `http-api-key`
//! set, a client that is not on loopback must also send it as `X-API-Key` to act (operator/admin).

use crate::config::model::{AccessLevel, Config};
use std::net::IpAddr;

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// Reading (status pages, API GETs, metrics, the dashboard).
    Monitor,
    /// Acting on queues and source IPs.
    Operator,
    /// Changing the configuration (reload).
    Admin,
}

/// The level `http-access` gives `ip` (`::ffff:a.b.c.d` is treated as `a.b.c.d`).
pub fn level_for(cfg: &Config, ip: IpAddr) -> (AccessLevel, bool) {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if cfg.http_access.is_empty() {
        let level = if ip.is_loopback() {
            AccessLevel::Admin
        } else {
            AccessLevel::None
        };
        return (level, false);
    }
    cfg.http_access
        .iter()
        .find(|a| a.net.contains(&ip))
        .map(|a| (a.level, a.deny_logs))
        .unwrap_or((AccessLevel::None, false))
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The client's level is too low.
    #[error("{ip} has access level {have:?}; this needs {need:?}")]
    Level {
        /// The client.
        ip: IpAddr,
        /// What it has.
        have: AccessLevel,
        /// What it needs.
        need: Need,
    },
    /// `http-api-key` is set and the request did not carry it.
    #[error("{ip} is not on loopback: acting needs the X-API-Key header (http-api-key)")]
    Key {
        /// The client.
        ip: IpAddr,
    },
}

/// Decides a request from `ip` needing `need`, with the `X-API-Key` header it carried.
pub fn check(cfg: &Config, ip: IpAddr, need: Need, api_key: Option<&str>) -> Result<(), Denied> {
    let (have, _) = level_for(cfg, ip);
    let ok = match need {
        Need::Monitor => have >= AccessLevel::Monitor,
        Need::Operator => have >= AccessLevel::Operator,
        Need::Admin => have >= AccessLevel::Admin,
    };
    if !ok {
        return Err(Denied::Level { ip, have, need });
    }
    if need >= Need::Operator && !ip.is_loopback() {
        if let Some(crate::config::values::Value::Text(key)) =
            cfg.global.get("http-api-key").map(|s| &s.value)
        {
            if !key.is_empty() && api_key != Some(key.as_str()) {
                return Err(Denied::Key { ip });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        crate::config::load_str("t.cfg", text)
            .into_result()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn first_matching_rule_wins() {
        let c = cfg("http-access 10.1.0.0/16 admin\nhttp-access 10.0.0.0/8 monitor\nhttp-access 127.0.0.1/32 operator\n");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(level_for(&c, ip("10.1.2.3")).0, AccessLevel::Admin);
        assert_eq!(level_for(&c, ip("10.2.2.3")).0, AccessLevel::Monitor);
        assert_eq!(level_for(&c, ip("127.0.0.1")).0, AccessLevel::Operator);
        assert_eq!(
            level_for(&c, ip("::ffff:127.0.0.1")).0,
            AccessLevel::Operator
        );
        assert_eq!(level_for(&c, ip("192.0.2.1")).0, AccessLevel::None);
        assert!(check(&c, ip("10.2.2.3"), Need::Monitor, None).is_ok());
        assert!(check(&c, ip("10.2.2.3"), Need::Operator, None).is_err());
        assert!(check(&c, ip("127.0.0.1"), Need::Admin, None).is_err());
    }

    #[test]
    fn no_rules_means_loopback_admin_only() {
        let c = cfg("host-name a.example\n");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(level_for(&c, ip("127.0.0.9")).0, AccessLevel::Admin);
        assert_eq!(level_for(&c, ip("::1")).0, AccessLevel::Admin);
        assert_eq!(level_for(&c, ip("192.0.2.1")).0, AccessLevel::None);
    }

    #[test]
    fn api_key_needed_to_act_from_afar() {
        let c = cfg("http-access 0/0 admin\nhttp-api-key s3cret\n");
        let far: IpAddr = "198.51.100.4".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(check(&c, far, Need::Monitor, None).is_ok());
        assert_eq!(
            check(&c, far, Need::Operator, None),
            Err(Denied::Key { ip: far })
        );
        assert!(check(&c, far, Need::Operator, Some("wrong")).is_err());
        assert!(check(&c, far, Need::Admin, Some("s3cret")).is_ok());
        let lo: IpAddr = "127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(check(&c, lo, Need::Admin, None).is_ok());
    }
}
