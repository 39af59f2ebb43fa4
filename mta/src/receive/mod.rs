//! Inbound SMTP: listeners, sessions and the `<source>` rules that decide who may do what.

pub mod policy;
pub mod processors;
pub mod session;

pub use policy::{local_domains, Refusal, SessionPolicy};
