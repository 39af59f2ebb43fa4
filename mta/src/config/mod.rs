//! PowerMTA-style configuration: the syntax (`syntax`), value forms (`values`), the directive table
//! (`registry`), the typed model (`model`), merged per-queue settings (`effective`) and semantic checks
//! (`check`). [`load`] runs them all and returns the model with every diagnostic found.

mod build;
pub mod check;
pub mod diag;
pub mod effective;
pub mod host;
pub mod model;
pub mod registry;
pub mod render;
pub mod syntax;
pub mod values;

pub use diag::{Code, Diagnostic, Severity, Span};
pub use effective::{EffectiveSettings, Origin, QueueSettings};
pub use host::HostPaths;
pub use model::Config;

use std::path::Path;

/// A parsed configuration and what was found wrong or doubtful in it.
#[derive(Debug)]
pub struct Loaded {
    /// The model (usable only when there are no errors).
    pub config: Config,
    /// All diagnostics, sorted by location.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// True if no diagnostic is an error.
    pub fn is_valid(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    /// The config if valid, else the errors.
    pub fn into_result(self) -> Result<Config, ConfigError> {
        if self.is_valid() {
            Ok(self.config)
        } else {
            Err(ConfigError {
                diagnostics: self
                    .diagnostics
                    .into_iter()
                    .filter(Diagnostic::is_error)
                    .collect(),
            })
        }
    }
}

/// A config that cannot be used: its errors, each located.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {}", .diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ConfigError {
    /// The errors.
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads, parses, models and checks the config at `path` (following includes) on this machine.
pub fn load(path: &Path) -> Loaded {
    check_file(path, &HostPaths::local())
}

/// Like [`load`], with absolute paths and host checks as `host` says (`check-config --root`,
/// `--no-host-checks`).
pub fn check_file(path: &Path, host: &HostPaths) -> Loaded {
    let mut diags = diag::Diagnostics::default();
    let items = syntax::parse_file(path, &syntax::DiskFiles, host, &mut diags);
    finish(Path::new(path), &items, Some(host), diags)
}

/// Checks config text held in memory (standard input), named `name` in diagnostics; includes
/// resolve against the current directory. All checks run, the host ones through `host`.
pub fn check_text(name: &str, text: &str, host: &HostPaths) -> Loaded {
    let mut diags = diag::Diagnostics::default();
    let items = syntax::parse_str(name, text, &syntax::DiskFiles, host, &mut diags);
    finish(Path::new(name), &items, Some(host), diags)
}

/// Like [`load`] with a custom file source; `lint` runs the semantic checks (file access, keys ...).
pub fn load_with(path: &Path, files: &dyn syntax::FileSource, lint: bool) -> Loaded {
    let mut diags = diag::Diagnostics::default();
    let host = HostPaths::local();
    let items = syntax::parse_file(path, files, &host, &mut diags);
    finish(path, &items, lint.then_some(&host), diags)
}

/// Parses config text held in memory (named `name` in diagnostics), without the file-system checks.
pub fn load_str(name: &str, text: &str) -> Loaded {
    let mut diags = diag::Diagnostics::default();
    let items = syntax::parse_str(
        name,
        text,
        &syntax::DiskFiles,
        &HostPaths::local(),
        &mut diags,
    );
    let config = model::build(Path::new(name), &items, &mut diags);
    check::run_static(&config, &mut diags);
    Loaded {
        config,
        diagnostics: diags.into_sorted(),
    }
}

/// Builds the model and runs the checks: all of them with `host`, none without.
fn finish(
    path: &Path,
    items: &[syntax::Item],
    host: Option<&HostPaths>,
    mut diags: diag::Diagnostics,
) -> Loaded {
    let config = model::build(path, items, &mut diags);
    if let Some(host) = host {
        check::run(&config, host, &mut diags);
    }
    Loaded {
        config,
        diagnostics: diags.into_sorted(),
    }
}
