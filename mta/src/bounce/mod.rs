//! Bounce handling: classify SMTP replies and bounce messages into PowerMTA categories; build DSNs.
//!
//! - [`classify`]: the 17 PowerMTA categories, a [`Classifier`] of config rules in front of the
//!   documented built-in rules, matched against `"{status}; {diagnostic}"`.
//! - [`parse`](mod@parse): failed recipients of RFC 3464 DSNs (and their broken variants), the
//!   text bounces of the common MTAs, provider notifications (Amazon SES JSON, Gmail, Google
//!   Groups, Exchange), a general fallback; auto-replies and ARF reports told apart.
//! - [`rules`]: the built-in rules, kept as data in `rules.tsv` (category, condition, regex,
//!   source per row).
//! - [`reply_text`]: an SMTP reply as bounces quote it (code, enhanced status, text).
//! - [`dsn`]: the RFC 3464 DSN the MTA sends back to the envelope sender.
//! - [`report`]: the text/JSON output of `mta bounce classify`.

pub mod classify;
pub mod dsn;
pub mod parse;
pub mod reply_text;
pub mod report;
pub mod rules;

pub use classify::{Category, Classification, Classifier, ClassifyError, Failure, RuleOrigin};
pub use dsn::{build_dsn, Dsn, DsnAction, DsnRecipient, DsnRequest};
pub use parse::{parse, BounceFormat, BounceReport, FailedRecipient, ParseError};
pub use report::{classify_files_report, classify_reply_report, ReportOptions};
