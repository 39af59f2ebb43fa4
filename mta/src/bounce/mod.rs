//! Bounce handling: classify SMTP replies and bounce messages into PowerMTA categories; build DSNs.

pub mod classify;

pub use classify::{Category, Classification, Classifier, ClassifyError, RuleOrigin};
pub mod parse;

pub use parse::{parse, BounceFormat, BounceReport, FailedRecipient, ParseError};
pub mod report;

pub use report::{classify_files_report, classify_reply_report};
pub mod dsn;

pub use dsn::{build_dsn, Dsn, DsnAction, DsnRecipient, DsnRequest};
