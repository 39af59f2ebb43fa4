//! Management: the HTTP interface (PowerMTA's monitor paths, a JSON API, actions, Prometheus
//! metrics, the `/ui` dashboard) with `http-access` control, and the traffic monitor behind it.

pub mod access;
mod actions;
pub mod cli;
pub mod http;
pub mod metrics;
pub mod monitor;

pub use monitor::Monitor;

use crate::config::values::Value;
use crate::config::Config;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Where the management server listens: `http-mgmt-port PORT` binds 127.0.0.1 (loopback only,
/// our default); the extension form `http-mgmt-port IP:PORT` binds that address. `None` when
/// the config has no `http-mgmt-port`.
pub fn listen_addr(cfg: &Config) -> Result<Option<SocketAddr>, String> {
    let Some(s) = cfg.global.get("http-mgmt-port") else {
        return Ok(None);
    };
    let text = match &s.value {
        Value::Int(p) => p.to_string(),
        Value::Text(t) => t.clone(),
        other => other.to_string(),
    };
    parse_listen(&text)
        .map(Some)
        .map_err(|e| format!("{}: http-mgmt-port: {e}", s.span))
}

/// Reads and checks the config at `path` and, if it is valid, puts it in force (`mta reload`,
/// SIGHUP, POST /api/v1/reload). An invalid file changes nothing: the error lists its diagnostics.
pub fn reload_from_disk(
    engine: &crate::engine::Engine,
    path: &std::path::Path,
) -> Result<Vec<String>, String> {
    let loaded = crate::config::load(path);
    if !loaded.is_valid() {
        let report =
            crate::config::render::check_report(&loaded, crate::config::render::Format::Text);
        tracing::error!(config = %path.display(), "reload refused: the config has errors");
        return Err(format!(
            "reload refused, the running config stays:\n{report}"
        ));
    }
    Ok(engine.reload(loaded.config))
}

/// Parses `PORT` or `IP:PORT` (`[IPv6]:PORT`).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(p) = text.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p));
    }
    text.parse::<SocketAddr>()
        .map_err(|_| format!("`{text}` is neither a port nor IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            parse_listen("8080"),
            Ok("127.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert_eq!(
            parse_listen("0.0.0.0:81"),
            Ok("0.0.0.0:81".parse().unwrap_or_else(|e| panic!("{e}")))
        );
        assert!(parse_listen("70000").is_err());
        assert!(parse_listen("x:1").is_err());
    }
}
