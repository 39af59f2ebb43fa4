//! Management: the HTTP interface (PowerMTA's monitor paths, a JSON API, actions, Prometheus
//! metrics, the `/ui` dashboard) with `http-access` control, and the traffic monitor behind it.

pub mod access;
mod actions;
pub mod cli;
pub mod http;
pub mod metrics;

/// The traffic monitor lives below the engine that feeds it (`crate::monitor`).
pub use crate::monitor::{self, Monitor};

pub use crate::config::effective::mgmt_listen_addr as listen_addr;

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

pub use crate::config::values::parse_listen;

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
