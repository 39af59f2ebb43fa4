//! Locations in config files and the diagnostics (errors, warnings) that point at them.

use serde::Serialize;
use std::fmt;
use std::sync::Arc;

/// A position in a config file: file path as given or resolved, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Span {
    /// The file, as the user named it or as resolved from an `include`.
    pub file: Arc<str>,
    /// 1-based line number.
    pub line: u32,
    /// 1-based column (in characters).
    pub col: u32,
}

impl Span {
    /// A span at `file:line:col`.
    pub fn new(file: &Arc<str>, line: u32, col: u32) -> Span {
        Span {
            file: file.clone(),
            line,
            col,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// How bad a diagnostic is: errors make the config invalid, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The config cannot be used.
    Error,
    /// The config works, but something is probably not what the user meant.
    Warning,
}

/// What kind of finding a diagnostic is: a stable kebab-case identifier for scripts and CI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// A line or block the parser cannot read: unclosed or unopened blocks, a missing `>`, invalid UTF-8.
    Syntax,
    /// An `include` that cannot be followed: cycle, too deep, remote, in the wrong block, or a pattern matching no file.
    Include,
    /// A file the config needs (the config itself, an include, a TLS certificate) does not exist or cannot be read.
    MissingFile,
    /// A directive PowerMTA does not have (often a typo; the hint names the closest).
    UnknownDirective,
    /// A `<block>` PowerMTA does not have.
    UnknownBlock,
    /// A directive or block that is valid elsewhere but not where it is written.
    Misplaced,
    /// A PowerMTA directive or block that mtasim accepts but ignores.
    NotActedOn,
    /// A legacy or deprecated spelling; it is ignored or has a newer form.
    Deprecated,
    /// A value that cannot be parsed or has the wrong form.
    BadValue,
    /// Something defined or listed twice (vMTA, pool, pattern list, macro, listener address).
    Duplicate,
    /// A reference to a virtual-mta or virtual-mta-pool that is not defined.
    UndefinedVmta,
    /// A reference to a pattern-list or smtp-pattern-list that is not defined.
    UndefinedPatternList,
    /// A reference to a domain-macro that is not defined.
    UndefinedMacro,
    /// domain-macros that include each other.
    MacroLoop,
    /// A listener or smtp-user names a `<source NAME>` that does not exist.
    UndefinedSource,
    /// A named `<source NAME>` that no listener or smtp-user refers to, so its settings never apply.
    UnreachedSource,
    /// A virtual-mta-pool without members.
    EmptyPool,
    /// A vMTA in several pools that hold `<domain>` blocks.
    AmbiguousDomainSettings,
    /// A virtual-mta without smtp-source-host.
    NoSourceHost,
    /// A setting that can have no effect as written.
    NoEffect,
    /// A setting that stops all delivery for a domain (`max-smtp-out 0`, a zero rate).
    StopsDelivery,
    /// http-access that lets anyone change queues.
    OpenAccess,
    /// A throttle far above what practitioners use for a mailbox provider.
    ThrottleTooHigh,
    /// No `<spool>` directory.
    NoSpool,
    /// A spool, accounting, move-to or log-file path that is missing, not a directory, or not writable.
    PathNotWritable,
    /// An accounting pipe program that does not exist or is not executable.
    MissingProgram,
    /// A DKIM key file that cannot be read, is not a usable key, or is too small.
    BadKey,
    /// A DKIM key under the recommended 2048 bits.
    WeakKey,
    /// With `--no-host-checks`: a check of this machine's files that failed here and will be made on the production host.
    HostCheckDeferred,
}

impl Code {
    /// Every code, in documentation order.
    pub const ALL: &'static [Code] = &[
        Code::Syntax,
        Code::Include,
        Code::MissingFile,
        Code::UnknownDirective,
        Code::UnknownBlock,
        Code::Misplaced,
        Code::NotActedOn,
        Code::Deprecated,
        Code::BadValue,
        Code::Duplicate,
        Code::UndefinedVmta,
        Code::UndefinedPatternList,
        Code::UndefinedMacro,
        Code::MacroLoop,
        Code::UndefinedSource,
        Code::UnreachedSource,
        Code::EmptyPool,
        Code::AmbiguousDomainSettings,
        Code::NoSourceHost,
        Code::NoEffect,
        Code::StopsDelivery,
        Code::OpenAccess,
        Code::ThrottleTooHigh,
        Code::NoSpool,
        Code::PathNotWritable,
        Code::MissingProgram,
        Code::BadKey,
        Code::WeakKey,
        Code::HostCheckDeferred,
    ];

    /// The kebab-case identifier (`unknown-directive`, `bad-value` ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "syntax",
            Code::Include => "include",
            Code::MissingFile => "missing-file",
            Code::UnknownDirective => "unknown-directive",
            Code::UnknownBlock => "unknown-block",
            Code::Misplaced => "misplaced",
            Code::NotActedOn => "not-acted-on",
            Code::Deprecated => "deprecated",
            Code::BadValue => "bad-value",
            Code::Duplicate => "duplicate",
            Code::UndefinedVmta => "undefined-vmta",
            Code::UndefinedPatternList => "undefined-pattern-list",
            Code::UndefinedMacro => "undefined-macro",
            Code::MacroLoop => "macro-loop",
            Code::UndefinedSource => "undefined-source",
            Code::UnreachedSource => "unreached-source",
            Code::EmptyPool => "empty-pool",
            Code::AmbiguousDomainSettings => "ambiguous-domain-settings",
            Code::NoSourceHost => "no-source-host",
            Code::NoEffect => "no-effect",
            Code::StopsDelivery => "stops-delivery",
            Code::OpenAccess => "open-access",
            Code::ThrottleTooHigh => "throttle-too-high",
            Code::NoSpool => "no-spool",
            Code::PathNotWritable => "path-not-writable",
            Code::MissingProgram => "missing-program",
            Code::BadKey => "bad-key",
            Code::WeakKey => "weak-key",
            Code::HostCheckDeferred => "host-check-deferred",
        }
    }

    /// A one-line description, as listed in the README.
    pub fn describe(self) -> &'static str {
        match self {
            Code::Syntax => "A line or block the parser cannot read: unclosed or unopened blocks, a missing `>`, invalid UTF-8.",
            Code::Include => "An `include` that cannot be followed: cycle, too deep, remote, in the wrong block, or a pattern matching no file.",
            Code::MissingFile => "A file the config needs (the config itself, an include, a TLS certificate) does not exist or cannot be read.",
            Code::UnknownDirective => "A directive PowerMTA does not have (often a typo; the hint names the closest).",
            Code::UnknownBlock => "A `<block>` PowerMTA does not have.",
            Code::Misplaced => "A directive or block that is valid elsewhere but not where it is written.",
            Code::NotActedOn => "A PowerMTA directive or block that mtasim accepts but ignores.",
            Code::Deprecated => "A legacy or deprecated spelling; it is ignored or has a newer form.",
            Code::BadValue => "A value that cannot be parsed or has the wrong form.",
            Code::Duplicate => "Something defined or listed twice (vMTA, pool, pattern list, macro, listener address).",
            Code::UndefinedVmta => "A reference to a virtual-mta or virtual-mta-pool that is not defined.",
            Code::UndefinedPatternList => "A reference to a pattern-list or smtp-pattern-list that is not defined.",
            Code::UndefinedMacro => "A reference to a domain-macro that is not defined.",
            Code::MacroLoop => "domain-macros that include each other.",
            Code::UndefinedSource => "A listener or smtp-user names a `<source NAME>` that does not exist.",
            Code::UnreachedSource => "A named `<source NAME>` that no listener or smtp-user refers to, so its settings never apply.",
            Code::EmptyPool => "A virtual-mta-pool without members.",
            Code::AmbiguousDomainSettings => "A vMTA in several pools that hold `<domain>` blocks.",
            Code::NoSourceHost => "A virtual-mta without smtp-source-host.",
            Code::NoEffect => "A setting that can have no effect as written.",
            Code::StopsDelivery => "A setting that stops all delivery for a domain (`max-smtp-out 0`, a zero rate).",
            Code::OpenAccess => "http-access that lets anyone change queues.",
            Code::ThrottleTooHigh => "A throttle far above what practitioners use for a mailbox provider.",
            Code::NoSpool => "No `<spool>` directory.",
            Code::PathNotWritable => "A spool, accounting, move-to or log-file path that is missing, not a directory, or not writable.",
            Code::MissingProgram => "An accounting pipe program that does not exist or is not executable.",
            Code::BadKey => "A DKIM key file that cannot be read, is not a usable key, or is too small.",
            Code::WeakKey => "A DKIM key under the recommended 2048 bits.",
            Code::HostCheckDeferred => "With `--no-host-checks`: a check of this machine's files that failed here and will be made on the production host.",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One finding about a config: where, how bad, a one-line reason and an optional hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What kind of finding it is.
    pub code: Code,
    /// Where it is; `None` for findings about the config as a whole.
    pub span: Option<Span>,
    /// One-line reason.
    pub message: String,
    /// A suggestion such as "did you mean `smtp-source-host`?".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(code: Code, span: Option<Span>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            span,
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at `span`.
    pub fn warning(code: Code, span: Option<Span>, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            code,
            span,
            message: message.into(),
            hint: None,
        }
    }

    /// The same diagnostic with a hint attached.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.span {
            Some(s) => write!(f, "{s}: {sev}: {}", self.message)?,
            None => write!(f, "{sev}: {}", self.message)?,
        }
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

/// A growing list of diagnostics, collected rather than stopping at the first error.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Adds one diagnostic.
    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    /// Adds an error at `span`.
    pub fn error(&mut self, code: Code, span: &Span, message: impl Into<String>) {
        self.push(Diagnostic::error(code, Some(span.clone()), message));
    }

    /// Adds a warning at `span`.
    pub fn warn(&mut self, code: Code, span: &Span, message: impl Into<String>) {
        self.push(Diagnostic::warning(code, Some(span.clone()), message));
    }

    /// True if any error was recorded.
    pub fn has_errors(&self) -> bool {
        self.items.iter().any(Diagnostic::is_error)
    }

    /// All diagnostics, sorted by location (file, line, column), then severity, deduplicated.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items.sort_by(|a, b| {
            a.span
                .cmp(&b.span)
                .then(a.severity.cmp(&b.severity))
                .then(a.message.cmp(&b.message))
        });
        self.items.dedup();
        self.items
    }

    /// The diagnostics recorded so far, in order of recording.
    pub fn as_slice(&self) -> &[Diagnostic] {
        &self.items
    }
}
