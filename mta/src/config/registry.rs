//! Every directive PowerMTA 5.0 knows (from the User's Guide table shipped as `pmta-directives.tsv`),
//! with its block, default and value kind, and whether mtasim acts on it.

use super::values::Kind;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// The kinds of `<tag>` blocks.
pub const BLOCK_TAGS: &[&str] = &[
    "domain",
    "source",
    "virtual-mta",
    "virtual-mta-pool",
    "smtp-pattern-list",
    "pattern-list",
    "acct-file",
    "spool",
    "smtp-user",
    "bounce-processor",
    "feedback-loop-processor",
    "address-list",
    "bounce-category-patterns",
    "smtp-listener",
    "dns",
    "source-group",
    "rewrite-list",
    "domain-key-list",
    "email-patterns",
    "transmissions-api",
    "transmissions-api-listener",
    "proxy",
    "vault",
];

/// Block tags PowerMTA has that mtasim reads but does not act on yet.
pub const PASSIVE_TAGS: &[&str] = &[
    "source-group",
    "rewrite-list",
    "domain-key-list",
    "email-patterns",
    "transmissions-api",
    "transmissions-api-listener",
    "proxy",
    "vault",
    "dns",
];

/// What mtasim does with a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Parsed into the typed model and acted on (or planned in the model for the MTA to act on).
    Acted,
    /// PowerMTA has it; mtasim accepts it with a warning and ignores it.
    Ignored,
    /// Deprecated or legacy in PowerMTA; accepted with a warning naming the replacement.
    Legacy(&'static str),
}

/// What is known about one directive name.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The directive name.
    pub name: &'static str,
    /// Blocks it is documented for (`global` for the top level, else the tag without brackets).
    pub blocks: BTreeSet<&'static str>,
    /// The documented default, as text (may be prose for a few).
    pub default: Option<&'static str>,
    /// How its value is parsed.
    pub kind: Kind,
    /// Whether mtasim acts on it.
    pub support: Support,
}

const TSV: &str = include_str!("pmta-directives.tsv");

const BOOL: Kind = Kind::Bool;
const INT: Kind = Kind::Int;
const INTU: Kind = Kind::IntOrUnlimited;
const IVL: Kind = Kind::Interval;
const IVLN: Kind = Kind::IntervalOrNever;
const IVLS: Kind = Kind::Intervals;
const RATE: Kind = Kind::Rate;
const SIZE: Kind = Kind::Size;
const SIZEU: Kind = Kind::SizeOrUnlimited;
const TEXT: Kind = Kind::Text;

/// Directives mtasim acts on: (block, name, kind). Those the table lists under other blocks too are
/// added here with the extra block (reference: a directive may be valid in more blocks than listed).
const ACTED: &[(&str, &str, Kind)] = &[
    // global
    ("global", "postmaster", TEXT),
    ("global", "spool", TEXT),
    ("global", "smtp-source-host", TEXT),
    ("global", "host-name", TEXT),
    ("global", "smtp-listener", TEXT),
    ("global", "http-mgmt-port", TEXT),
    ("global", "http-access", TEXT),
    ("global", "http-api-key", TEXT),
    ("global", "total-max-smtp-out", INT),
    ("global", "total-max-smtp-in", INT),
    // Extensions (new names, README "Extensions beyond PowerMTA").
    ("global", "suppress-after", TEXT),
    ("global", "suppression-file", TEXT),
    ("global", "acct-backlog-limit", INT),
    ("global", "relay-domain", TEXT),
    ("global", "relay-address", TEXT),
    ("global", "domain-key", TEXT),
    ("global", "domain-macro", TEXT),
    ("global", "include", TEXT),
    ("global", "log-file", TEXT),
    ("global", "log-rotate", INT),
    ("global", "name-server", TEXT),
    ("global", "smtp-server-tls-certificate", TEXT),
    ("global", "always-allow-relaying", BOOL),
    ("global", "run-as-root", BOOL),
    ("global", "spool-delete-corrupted", BOOL),
    ("global", "track-time-first-attempt", BOOL),
    // <source>
    ("source", "always-allow-relaying", BOOL),
    ("source", "smtp-service", BOOL),
    ("source", "process-x-virtual-mta", BOOL),
    ("source", "retain-x-virtual-mta", BOOL),
    ("source", "default-virtual-mta", TEXT),
    ("source", "max-message-size", SIZEU),
    ("source", "max-rcpt-per-message", INTU),
    ("source", "require-auth", BOOL),
    ("source", "allow-auth", BOOL),
    ("source", "allow-starttls", BOOL),
    ("source", "require-starttls-before-auth", BOOL),
    ("source", "allow-unencrypted-plain-auth", BOOL),
    ("source", "smtp-max-auth-failure-rate", RATE),
    ("source", "add-received-header", BOOL),
    ("source", "add-message-id-header", BOOL),
    ("source", "add-date-header", BOOL),
    ("source", "smtp-data-timeout", IVL),
    ("source", "smtp-command-timeout", IVL),
    ("source", "process-x-job", BOOL),
    ("source", "retain-x-job", BOOL),
    ("source", "jobid-header", TEXT),
    ("source", "process-x-envid", BOOL),
    ("source", "pattern-list", TEXT),
    ("source", "log-connections", BOOL),
    ("source", "log-commands", BOOL),
    ("source", "log-data", BOOL),
    ("source", "allow-smtputf8", BOOL),
    ("source", "allow-chunking", BOOL),
    ("source", "max-message-hops", INT),
    ("source", "reject-invalid-virtual-mta", BOOL),
    ("source", "suppress-local-dsn", BOOL),
    ("source", "disconnect-on-transient-error", BOOL),
    ("source", "hide-message-source", BOOL),
    ("source", "accept-invalid-recipients", BOOL),
    (
        "source",
        "dsn-return-default",
        Kind::Choice(&["system", "full", "headers"]),
    ),
    ("source", "add-x-virtual-mta-header", BOOL),
    // <domain>
    ("domain", "max-smtp-out", INT),
    ("domain", "backoff-max-smtp-out", INT),
    ("domain", "max-msg-per-connection", INT),
    ("domain", "max-msg-rate", RATE),
    ("domain", "backoff-max-msg-rate", RATE),
    ("domain", "max-connect-rate", RATE),
    ("domain", "backoff-max-connect-rate", RATE),
    ("domain", "max-rcpt-per-message", INTU),
    ("domain", "max-rcpt-per-transaction", INTU),
    ("domain", "retry-after", IVLS),
    ("domain", "backoff-retry-after", IVLS),
    ("domain", "retry-recipients-after", IVL),
    ("domain", "connection-idle-timeout", IVL),
    ("domain", "retry-after-dns-error", IVL),
    ("domain", "bounce-after", IVL),
    ("domain", "backoff-to-normal-after", IVLN),
    ("domain", "backoff-to-normal-after-delivery", BOOL),
    ("domain", "backoff-notify", TEXT),
    ("domain", "backoff-upon-all-sources-disabled", BOOL),
    ("domain", "reenable-source-ip-after", IVLN),
    ("domain", "smtp-pattern-list", TEXT),
    ("domain", "use-starttls", BOOL),
    ("domain", "require-starttls", BOOL),
    (
        "domain",
        "dkim-sign",
        Kind::BoolOr(&["if-x-dkim-options-present"]),
    ),
    ("domain", "dkim-identity", TEXT),
    ("domain", "dkim-headers", TEXT),
    (
        "domain",
        "dkim-algorithm",
        Kind::Choice(&["rsa-sha256", "rsa-sha1", "ed25519-sha256"]),
    ),
    (
        "domain",
        "dkim-body-canon",
        Kind::Choice(&["relaxed", "simple"]),
    ),
    (
        "domain",
        "dkim-headers-canon",
        Kind::Choice(&["relaxed", "simple"]),
    ),
    ("domain", "smtp-hosts", TEXT),
    ("domain", "queue-to", TEXT),
    ("domain", "disable-mx-rollup", BOOL),
    ("domain", "bounce-upon-no-mx", BOOL),
    ("domain", "bounce-upon-5xx-greeting", BOOL),
    ("domain", "smtp-421-means-mx-unavailable", BOOL),
    ("domain", "smtp-553-means-invalid-mailbox", BOOL),
    ("domain", "connect-timeout", IVL),
    ("domain", "smtp-greeting-timeout", IVL),
    ("domain", "data-send-timeout", IVL),
    ("domain", "smtp-data-termination-timeout", IVL),
    ("domain", "connection-idle-timeout", IVL),
    (
        "domain",
        "type",
        Kind::Choice(&["smtp", "pipe", "file", "discard", "http-delivery"]),
    ),
    ("domain", "default-smtp-port", INT),
    ("domain", "ignore-pipelining", BOOL),
    ("domain", "ignore-8bitmime", BOOL),
    ("domain", "ignore-dsn", BOOL),
    ("domain", "deliver-local-dsn", BOOL),
    ("domain", "max-errors-per-connection", INTU),
    ("domain", "notify-of-delay-every", IVLN),
    ("domain", "source-ip-max-msg-rate", RATE),
    ("domain", "source-ip-max-connect-rate", RATE),
    ("domain", "source-ip-max-smtp-out", INTU),
    ("domain", "disable-acct-records", TEXT),
    ("domain", "include", TEXT),
    // <virtual-mta>
    ("virtual-mta", "smtp-source-host", TEXT),
    ("virtual-mta", "host-name", TEXT),
    ("virtual-mta", "domain-key", TEXT),
    ("virtual-mta", "max-smtp-out", INT),
    ("virtual-mta", "max-smtp-msg-rate", RATE),
    ("virtual-mta", "include", TEXT),
    // <virtual-mta-pool>
    ("virtual-mta-pool", "virtual-mta", TEXT),
    ("virtual-mta-pool", "domain-key", TEXT),
    ("virtual-mta-pool", "max-smtp-out", INT),
    ("virtual-mta-pool", "max-smtp-msg-rate", RATE),
    // <acct-file>
    ("acct-file", "records", TEXT),
    ("acct-file", "record-fields", TEXT),
    ("acct-file", "move-to", TEXT),
    ("acct-file", "move-interval", IVLN),
    ("acct-file", "max-size", SIZE),
    ("acct-file", "delete-after", IVLN),
    ("acct-file", "iso-times", BOOL),
    ("acct-file", "sync", BOOL),
    ("acct-file", "retry-interval", IVL),
    ("acct-file", "world-readable", BOOL),
    ("acct-file", "user-string", TEXT),
    ("acct-file", "write-timeout", IVL),
    ("acct-file", "map-header-to-field", TEXT),
    // <spool>
    ("spool", "priority", INT),
    ("spool", "deliver-only", BOOL),
    ("spool", "min-free-space", SIZE),
    ("spool", "delete-file-holders", BOOL),
    // <smtp-user>
    ("smtp-user", "password", TEXT),
    ("smtp-user", "source", TEXT),
    (
        "smtp-user",
        "authentication-method",
        Kind::Choice(&["password", "tls-certificate"]),
    ),
    // processors and their address lists
    ("bounce-processor", "deliver-unmatched-email", BOOL),
    ("bounce-processor", "deliver-matched-email", BOOL),
    ("bounce-processor", "forward-unmatched-to", TEXT),
    ("bounce-processor", "forward-errors-to", TEXT),
    ("feedback-loop-processor", "deliver-unmatched-email", BOOL),
    ("feedback-loop-processor", "deliver-matched-email", BOOL),
    ("feedback-loop-processor", "forward-unmatched-to", TEXT),
    ("feedback-loop-processor", "forward-errors-to", TEXT),
    ("address-list", "address", TEXT),
    ("address-list", "domain", TEXT),
    ("address-list", "address-file", TEXT),
    // <smtp-listener> block form
    ("smtp-listener", "source", TEXT),
    ("smtp-listener", "tls-certificate", TEXT),
    // <pattern-list>
    ("pattern-list", "mail-from", TEXT),
    ("pattern-list", "rcpt-to", TEXT),
    ("pattern-list", "header", TEXT),
    // <smtp-pattern-list>
    ("smtp-pattern-list", "reply", TEXT),
    ("smtp-pattern-list", "include", TEXT),
];

/// Names real configs use that PowerMTA 5.0 no longer documents, with what replaces them.
const LEGACY: &[(&str, &str, &str)] = &[
    (
        "domain",
        "dk-sign",
        "DomainKeys (pre-DKIM) signing is obsolete; use dkim-sign",
    ),
    (
        "global",
        "sync-msg-create",
        "PowerMTA 4.x spool tuning; mtasim always syncs before accepting",
    ),
    (
        "global",
        "sync-msg-update",
        "PowerMTA 4.x spool tuning; mtasim always syncs completions",
    ),
    (
        "domain",
        "max-msg-per-hour",
        "deprecated; use max-msg-rate N/h",
    ),
    (
        "domain",
        "backoff-max-msg-per-hour",
        "deprecated; use backoff-max-msg-rate N/h",
    ),
];

/// Names that do not exist, mapped to what the user most likely meant (reference part A).
const WRONG_NAMES: &[(&str, &str)] = &[
    ("smtp-source-ip", "smtp-source-host"),
    ("queue-path", "<spool DIRECTORY>"),
    ("http-mgmt-allow", "http-access"),
    ("max-message-per-connection", "max-msg-per-connection"),
    ("max-messages-per-connection", "max-msg-per-connection"),
    ("max-connections", "max-smtp-out"),
    (
        "retry-interval",
        "retry-after (retry-interval exists only in <acct-file>)",
    ),
];

/// Settings we add beyond PowerMTA (documented in README): new value forms of existing directives
/// and three new names, `suppress-after`, `suppression-file` and `acct-backlog-limit`.
pub const EXTENSIONS: &[(&str, &str)] = &[
    (
        "name-server",
        "accepts IP:PORT (and [IPv6]:PORT) so the MTA can query a test DNS server on a high port",
    ),
    (
        "http-mgmt-port",
        "accepts IP:PORT to choose the listening address; a bare PORT listens on 127.0.0.1 only",
    ),
    (
        "suppress-after",
        "new: hard-bounce and/or complaint put the address on a durable suppression list",
    ),
    (
        "suppression-file",
        "new: where the suppression list lives (default suppressions.log in the first spool)",
    ),
    (
        "acct-backlog-limit",
        "new: accounting lines that may wait for a destination before mail is refused (451 4.3.0)",
    ),
];

/// The registry of all known directives.
pub struct Registry {
    specs: BTreeMap<&'static str, Spec>,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// The directive registry (built once).
pub fn registry() -> &'static Registry {
    REGISTRY.get_or_init(Registry::build)
}

fn names_in_cell(cell: &'static str) -> Vec<&'static str> {
    let cell = cell.trim();
    let cell = cell.strip_suffix(" directive").unwrap_or(cell);
    let parts: Vec<&'static str> = cell
        .split([',', '&'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.iter().all(|p| !p.contains(' ')) {
        parts
    } else {
        Vec::new() // a section heading, not a directive
    }
}

impl Registry {
    fn build() -> Registry {
        let mut specs: BTreeMap<&'static str, Spec> = BTreeMap::new();
        for line in TSV.lines() {
            if line.starts_with('#') {
                continue;
            }
            let cols: Vec<&'static str> = line.split('\t').collect();
            if cols.len() < 3 {
                continue;
            }
            let block = cols[1].trim().trim_start_matches('<').trim_end_matches('>');
            let default = cols.get(3).map(|s| s.trim()).filter(|s| !s.is_empty());
            for name in names_in_cell(cols[2]) {
                let e = specs.entry(name).or_insert_with(|| Spec {
                    name,
                    blocks: BTreeSet::new(),
                    default,
                    kind: TEXT,
                    support: Support::Ignored,
                });
                e.blocks.insert(block);
                if e.default.is_none() {
                    e.default = default;
                }
            }
        }
        for (block, name, kind) in ACTED {
            let e = specs.entry(name).or_insert_with(|| Spec {
                name,
                blocks: BTreeSet::new(),
                default: None,
                kind: *kind,
                support: Support::Acted,
            });
            e.blocks.insert(block);
            e.kind = *kind;
            e.support = Support::Acted;
        }
        for (block, name, why) in LEGACY {
            let e = specs.entry(name).or_insert_with(|| Spec {
                name,
                blocks: BTreeSet::new(),
                default: None,
                kind: TEXT,
                support: Support::Legacy(why),
            });
            e.blocks.insert(block);
            e.support = Support::Legacy(why);
        }
        // Documented defaults the guide's table words as prose or where the reference settles a conflict.
        for (name, def) in [
            ("max-rcpt-per-message", "1000"), // reference part A: alias entry and `show settings` say 1000
            ("backoff-max-msg-rate", "= max-msg-rate"),
            ("backoff-max-connect-rate", "= max-connect-rate"),
            ("max-size", "250M"),
            ("host-name", "the machine's host name"),
            ("total-max-smtp-out", "1200"),
            ("acct-backlog-limit", "100000"),
        ] {
            if let Some(s) = specs.get_mut(name) {
                s.default = Some(def);
            }
        }
        Registry { specs }
    }

    /// The spec for `name`, if PowerMTA or mtasim knows it.
    pub fn get(&self, name: &str) -> Option<&Spec> {
        self.specs.get(name)
    }

    /// All specs, by name.
    pub fn all(&self) -> impl Iterator<Item = &Spec> {
        self.specs.values()
    }

    /// All directives documented for `block`.
    pub fn for_block<'a>(&'a self, block: &'a str) -> impl Iterator<Item = &'a Spec> + 'a {
        self.specs
            .values()
            .filter(move |s| s.blocks.contains(block))
    }

    /// A "did you mean" for an unknown name: a known mistake, else the closest known name.
    pub fn suggest(&self, name: &str) -> Option<String> {
        if let Some((_, to)) = WRONG_NAMES.iter().find(|(from, _)| *from == name) {
            return Some(to.to_string());
        }
        closest(name, self.specs.keys().copied())
    }
}

/// The closest candidate by Jaro-Winkler similarity, if it is close enough to be a useful hint.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(a.1)))
        .map(|(_, c)| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_read_whole() {
        let r = registry();
        // 406 rows: 345 distinct plain names, 6 more from combined cells, 14 section headings skipped;
        // plus `reply`, three legacy names and our three extensions.
        assert_eq!(r.all().count(), 351 + 4 + 3);
        for line in TSV.lines().skip(2) {
            for name in names_in_cell(line.split('\t').nth(2).unwrap_or("")) {
                assert!(r.get(name).is_some(), "{name}");
            }
        }
        let s = r
            .get("max-smtp-out")
            .map(|s| (s.default, s.support, s.blocks.contains("virtual-mta")));
        assert_eq!(s, Some((Some("20"), Support::Acted, true)));
        assert_eq!(r.get("bounce-after").and_then(|s| s.default), Some("4d12h"));
        assert_eq!(
            r.get("acct-backlog-limit").map(|s| (s.default, s.support)),
            Some((Some("100000"), Support::Acted))
        );
        assert!(r.get("thread-min-priority").is_some() && r.get("thread-max-priority").is_some());
        assert!(r.get("no-http-mgmt-source").is_some());
        assert!(r.get("smtp-client-certificate").is_some());
        assert!(r.get("SSL/TLS Directives").is_none());
        assert_eq!(r.get("use-dane").map(|s| s.support), Some(Support::Ignored));
    }

    #[test]
    fn suggestions() {
        let r = registry();
        assert_eq!(
            r.suggest("smtp-source-ip").as_deref(),
            Some("smtp-source-host")
        );
        assert_eq!(
            r.suggest("max-message-per-connection").as_deref(),
            Some("max-msg-per-connection")
        );
        assert_eq!(
            r.suggest("queue-path").as_deref(),
            Some("<spool DIRECTORY>")
        );
        assert_eq!(r.suggest("max-smtp-outt").as_deref(), Some("max-smtp-out"));
        assert_eq!(r.suggest("bounce-afterr").as_deref(), Some("bounce-after"));
        assert_eq!(r.suggest("zzzzzz"), None);
    }
}
