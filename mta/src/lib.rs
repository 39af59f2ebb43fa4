//! mtasim's reference MTA: a PowerMTA-compatible mail transfer agent.
//!
//! The modules follow the way a message flows through the MTA (see `ARCHITECTURE.md` in the shared docs):
//! `config` (what to do), `smtp` (the protocol), `spool` (durable store), `dns` (the look-up seam).

pub mod acct;
pub mod bounce;
pub mod config;
pub mod dns;
pub mod smtp;
pub mod spool;
