//! mtasim's reference MTA: a PowerMTA-compatible mail transfer agent.
//!
//! The modules follow the way a message flows through the MTA (see `ARCHITECTURE.md` in the shared
//! docs): `config` (what to do), `receive` (inbound sessions and source rules), `smtp` (the protocol),
//! `spool` (durable store), `queue` and `shaping` (when to deliver), `engine` (delivery), `dkim`,
//! `bounce` (categories, bounce parsing, DSNs), `acct` (accounting); `net`, `dns` and `clock` are the
//! seams between live and simulated runs; `run` assembles `mta run`.

pub mod acct;
pub mod bounce;
pub mod clock;
pub mod config;
pub mod dkim;
pub mod dns;
pub mod engine;
pub mod fbl;
pub mod headers;
pub mod mgmt;
pub mod monitor;
pub mod net;
pub mod queue;
pub mod receive;
pub mod repeats;
pub mod run;
pub mod shaping;
pub mod smtp;
pub mod spool;
pub mod suppress;
