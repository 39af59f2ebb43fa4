//! mtasim's reference MTA: a PowerMTA-compatible mail transfer agent.
//!
//! The modules follow the way a message flows through the MTA (see `ARCHITECTURE.md` in the shared docs):
//! `config` (what to do), `smtp` (the protocol), `spool` (durable store), `dns` (the look-up seam).

pub mod acct;
pub mod clock;
pub mod config;
pub mod dkim;
pub mod dns;
pub mod engine;
pub mod net;
pub mod queue;
pub mod receive;
pub mod run;
pub mod shaping;
pub mod smtp;
pub mod spool;
