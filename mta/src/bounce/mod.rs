//! Bounce handling: classify SMTP replies and bounce messages into PowerMTA categories; build DSNs.

pub mod classify;

pub use classify::{Category, Classification, Classifier, ClassifyError, RuleOrigin};
