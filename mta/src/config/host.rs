//! The checks that depend on the machine `check-config` runs on (paths that must exist or be
//! writable, pipe programs, key and certificate files), and [`HostPaths`]: where absolute paths are
//! looked for (`--root DIR`) and whether a failed check is an error or a deferred warning
//! (`--no-host-checks`).

use super::check::{inspect_key, KeyInfo};
use super::diag::{Code, Diagnostic, Diagnostics, Span};
use super::model::{AcctTarget, Config, DomainKey};
use super::values::Value;
use std::path::{Path, PathBuf};

/// How paths written in a config map to this machine, and how failed host checks are reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPaths {
    /// Absolute paths are looked for under this directory (a checkout of the production host).
    root: Option<PathBuf>,
    /// Failed host checks become `host-check-deferred` warnings instead of errors.
    deferred: bool,
}

impl HostPaths {
    /// This machine, as is: absolute paths are what they say, failed checks are errors.
    pub fn local() -> HostPaths {
        HostPaths::default()
    }

    /// Absolute paths looked for under `root` (if any); `deferred` turns failed host checks into
    /// warnings saying they will be made on the host.
    pub fn new(root: Option<PathBuf>, deferred: bool) -> HostPaths {
        HostPaths { root, deferred }
    }

    /// Where `path`, as written in the config, is looked for on this machine. Absolute paths go
    /// under the root, except those already inside it (relative paths resolved against a file
    /// that lives in the root).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        match &self.root {
            Some(root) if path.is_absolute() && !path.starts_with(root) => {
                let rel: PathBuf = path
                    .components()
                    .filter(|c| !matches!(c, std::path::Component::RootDir))
                    .collect();
                root.join(rel)
            }
            _ => path.to_path_buf(),
        }
    }

    /// `` `PATH` ``, plus where it was looked for when that differs.
    pub fn describe(&self, path: &Path) -> String {
        let at = self.resolve(path);
        if at == path {
            format!("`{}`", path.display())
        } else {
            format!("`{}` (looked for at `{}`)", path.display(), at.display())
        }
    }

    /// Reports a failed host check: an error (with `code`), or with `--no-host-checks` a warning
    /// that says it will be checked on the host.
    pub fn report(&self, diags: &mut Diagnostics, code: Code, span: Option<&Span>, msg: String) {
        let span = span.cloned();
        if self.deferred {
            diags.push(
                Diagnostic::warning(
                    Code::HostCheckDeferred,
                    span,
                    format!("{msg} here; will be checked on the host"),
                )
                .with_hint(format!("on this machine it would be `{code}`")),
            );
        } else {
            diags.push(Diagnostic::error(code, span, msg));
        }
    }
}

/// The global `log-file` path with its location (relative paths are relative to the config file).
pub fn log_file(cfg: &Config) -> Option<(PathBuf, &Span)> {
    let st = cfg.global.get("log-file")?;
    let Value::Text(p) = &st.value else {
        return None;
    };
    let p = Path::new(p.trim());
    if p.as_os_str().is_empty() {
        return None;
    }
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new(&*st.span.file)
            .parent()
            .unwrap_or(Path::new(""))
            .join(p)
    };
    Some((full, &st.span))
}

/// Every check that looks at this machine's files.
pub fn run(cfg: &Config, host: &HostPaths, diags: &mut Diagnostics) {
    check_paths(cfg, host, diags);
    check_keys(cfg, host, diags);
}

/// Spool, accounting, move-to and log-file paths are usable; pipe programs exist; certificates are there.
fn check_paths(cfg: &Config, host: &HostPaths, diags: &mut Diagnostics) {
    for s in &cfg.spools {
        if let Err(e) = writable_dir(&host.resolve(&s.path), true) {
            let msg = format!("spool directory {} {e}", host.describe(&s.path));
            host.report(diags, Code::PathNotWritable, Some(&s.span), msg);
        }
    }
    for a in &cfg.acct_files {
        match &a.target {
            AcctTarget::File(p) => {
                if let Err(e) = appendable(host, p) {
                    let msg = format!("accounting file {} {e}", host.describe(p));
                    host.report(diags, Code::PathNotWritable, Some(&a.span), msg);
                }
            }
            AcctTarget::Pipe(cmd) => {
                let prog = cmd.split_whitespace().next().unwrap_or("");
                if let Err(e) = program_runnable(&host.resolve(Path::new(prog))) {
                    let msg = format!(
                        "accounting pipe program {} {e}",
                        host.describe(Path::new(prog))
                    );
                    host.report(diags, Code::MissingProgram, Some(&a.span), msg);
                }
            }
        }
        if let Some(st) = a.settings.get("move-to") {
            if let Value::Text(dir) = &st.value {
                let dir = Path::new(dir);
                if let Err(e) = writable_dir(&host.resolve(dir), true) {
                    let msg = format!("move-to directory {} {e}", host.describe(dir));
                    host.report(diags, Code::PathNotWritable, Some(&st.span), msg);
                }
            }
        }
    }
    if let Some((p, span)) = log_file(cfg) {
        if let Err(e) = appendable(host, &p) {
            let msg = format!("log-file {} {e}", host.describe(&p));
            host.report(diags, Code::PathNotWritable, Some(span), msg);
        }
    }
    for l in &cfg.listeners {
        if let Some(c) = &l.tls_certificate {
            if let Err(e) = std::fs::File::open(host.resolve(c)) {
                let msg = format!(
                    "listener TLS certificate {} cannot be read ({e})",
                    host.describe(c)
                );
                host.report(diags, Code::MissingFile, Some(&l.span), msg);
            }
        }
    }
}

/// A file (as written) that will be appended to: not a directory, not read-only, in a writable
/// directory; the reason names the directory when that is the problem.
fn appendable(host: &HostPaths, written: &Path) -> Result<(), String> {
    let p = host.resolve(written);
    if p.is_dir() {
        return Err("is a directory".into());
    }
    if p.exists() {
        return match std::fs::metadata(&p) {
            Ok(m) if m.permissions().readonly() => Err("is read-only".into()),
            _ => Ok(()),
        };
    }
    let dir = written.parent().unwrap_or(Path::new(""));
    writable_dir(&host.resolve(dir), false)
        .map_err(|e| format!("cannot be created: directory {} {e}", host.describe(dir)))
}

/// A directory that exists and is writable (or, with `may_create`, whose parent is).
fn writable_dir(p: &Path, may_create: bool) -> Result<(), String> {
    let p = if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    };
    match std::fs::metadata(p) {
        Ok(m) if !m.is_dir() => Err("is not a directory".into()),
        Ok(m) if m.permissions().readonly() => Err("is not writable".into()),
        Ok(_) => Ok(()),
        Err(_) if may_create => match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() && parent.is_dir() => {
                if std::fs::metadata(parent).is_ok_and(|m| m.permissions().readonly()) {
                    Err("does not exist and cannot be created (its parent is read-only)".into())
                } else {
                    Ok(())
                }
            }
            _ => Err("does not exist and cannot be created (its parent is missing)".into()),
        },
        Err(_) => Err("does not exist".into()),
    }
}

/// A program given by path must be an executable file; a bare name must be one on `PATH`.
fn program_runnable(prog: &Path) -> Result<(), String> {
    if prog.as_os_str().is_empty() {
        return Err("is empty".into());
    }
    if prog.components().count() > 1 {
        return match std::fs::metadata(prog) {
            Ok(m) if !m.is_file() => Err("is not a file".into()),
            Ok(m) if !is_executable(&m) => Err("is not executable".into()),
            Ok(_) => Ok(()),
            Err(_) => Err("does not exist".into()),
        };
    }
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            std::fs::metadata(d.join(prog)).is_ok_and(|m| m.is_file() && is_executable(&m))
        })
    });
    if found {
        Ok(())
    } else {
        Err("was not found on PATH".into())
    }
}

#[cfg(unix)]
fn is_executable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &std::fs::Metadata) -> bool {
    true
}

/// DKIM key files: readable (a host check), and then a usable key of a sensible size.
fn check_keys(cfg: &Config, host: &HostPaths, diags: &mut Diagnostics) {
    let all: Vec<&DomainKey> = cfg.all_domain_keys().collect();
    for k in all {
        let shown = host.describe(&k.path);
        let at = host.resolve(&k.path);
        if let Err(e) = std::fs::File::open(&at) {
            let msg = format!("DKIM key file {shown} cannot be read: {e}");
            host.report(diags, Code::BadKey, Some(&k.span), msg);
            continue;
        }
        match inspect_key(&at) {
            Ok(KeyInfo::Rsa(bits)) if bits < 1024 => diags.error(Code::BadKey, &k.span, format!("DKIM key {shown} is RSA-{bits}: keys under 1024 bits are refused by receivers (RFC 8301)")),
            Ok(KeyInfo::Rsa(bits)) if bits < 2048 => diags.warn(Code::WeakKey, &k.span, format!("DKIM key {shown} is RSA-{bits}: 2048 bits is the recommended size")),
            Ok(_) => {}
            Err(e) => diags.error(Code::BadKey, &k.span, format!("DKIM key file {shown} {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_puts_absolute_paths_under_the_root_once() {
        let h = HostPaths::new(Some(PathBuf::from("/ck")), false);
        assert_eq!(
            h.resolve(Path::new("/etc/pmta/x")),
            Path::new("/ck/etc/pmta/x")
        );
        assert_eq!(
            h.resolve(Path::new("/ck/etc/pmta/x")),
            Path::new("/ck/etc/pmta/x")
        );
        assert_eq!(h.resolve(Path::new("rel/x")), Path::new("rel/x"));
        assert_eq!(
            h.describe(Path::new("/etc/x")),
            "`/etc/x` (looked for at `/ck/etc/x`)"
        );
        assert_eq!(HostPaths::local().describe(Path::new("/etc/x")), "`/etc/x`");
    }

    #[test]
    fn deferred_reports_are_warnings_that_keep_the_code_in_the_hint() {
        let span = Span::new(&std::sync::Arc::from("f.conf"), 3, 1);
        let mut d = Diagnostics::default();
        HostPaths::new(None, true).report(&mut d, Code::MissingProgram, Some(&span), "x".into());
        HostPaths::local().report(&mut d, Code::MissingProgram, Some(&span), "y".into());
        let v = d.into_sorted();
        assert_eq!(v[0].code, Code::MissingProgram);
        assert!(v[0].is_error());
        assert_eq!(v[1].code, Code::HostCheckDeferred);
        assert_eq!(v[1].message, "x here; will be checked on the host");
        assert_eq!(
            v[1].hint.as_deref(),
            Some("on this machine it would be `missing-program`")
        );
    }
}
