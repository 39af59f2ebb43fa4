//! What a scenario's names stand for: the `[roles]` table, which says what each vMTA or pool name
//! and sender domain its traffic uses must be in a config it runs against (see `crate::bind`).

use serde::Deserialize;
use std::collections::BTreeMap;

/// What a stream is for: auto-binding prefers a vMTA, pool or signing domain whose name says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// Newsletters and campaigns.
    Marketing,
    /// Receipts, password resets, notifications.
    Transactional,
}

/// Which kind of sending identity a `vmta` role needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmtaKind {
    /// A `<virtual-mta-pool>` (several source IPs).
    Pool,
    /// A single `<virtual-mta>`.
    Vmta,
    /// Either.
    #[default]
    Any,
}

/// A `[roles.vmta."NAME"]` entry: what the scenario needs where its traffic says `vmta = "NAME"`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmtaRole {
    /// Pool, single vMTA or either.
    #[serde(default)]
    pub kind: VmtaKind,
    /// What the stream is for.
    pub purpose: Option<Purpose>,
    /// The need in words, for error messages and reports.
    pub description: Option<String>,
}

/// A `[roles.sender."DOMAIN"]` entry: what the scenario needs of a sender domain its traffic uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SenderRole {
    /// The config must sign for the domain (a `domain-key` for it, or for `*`).
    #[serde(default)]
    pub dkim: bool,
    /// What the stream is for.
    pub purpose: Option<Purpose>,
    /// The need in words.
    pub description: Option<String>,
}

/// The names a scenario's traffic uses (vMTAs or pools, sender domains) are roles: bound to the
/// config under test by name, automatically where the config makes it unambiguous, or by
/// `--map`. Declaring them here says what each must be.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    /// By the name in `traffic.vmta`.
    #[serde(default)]
    pub vmta: BTreeMap<String, VmtaRole>,
    /// By the domain of `traffic.sender`.
    #[serde(default)]
    pub sender: BTreeMap<String, SenderRole>,
}
