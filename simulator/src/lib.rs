//! mtasim: the simulated internet around the reference MTA.

pub mod bind;
pub mod dkim_check;
pub mod dns;
pub mod expect;
pub mod findings;
pub mod inject;
pub mod isp;
pub mod live;
pub mod postfix;
pub mod profile;
pub mod report;
pub mod scenario;
pub mod side_by_side;
pub mod sim;
pub mod tally;
pub mod traffic;
pub mod under_test;
pub mod validate;
pub mod world;
pub mod world_auth;
