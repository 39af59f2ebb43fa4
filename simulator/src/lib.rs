//! mtasim: the simulated internet around the reference MTA.

pub mod dns;
pub mod expect;
pub mod isp;
pub mod profile;
pub mod report;
pub mod scenario;
