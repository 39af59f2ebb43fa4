//! Classification of SMTP replies and bounce diagnostics into the 17 PowerMTA bounce categories.
//!
//! A [`Classifier`] holds the config's `<bounce-category-patterns>` rules followed by the built-in
//! default rules ([`DEFAULT_RULES`], the table `rules.tsv`); the first rule whose regex matches (and
//! whose condition on the command answered, an expiry or a delay notice holds) wins, `other` if none does.
//! Rules run against the text `"{enhanced status}; {diagnostic}"`, e.g. `5.1.1; 550 5.1.1 No such user`.
//! That input shape is INFERRED from PowerMTA's stock patterns such as `/^[45]\.1\.[1346];/ bad-mailbox`
//! (the `;` after the status); PowerMTA's documentation does not state it.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use thiserror::Error;

use crate::config::model::{CategoryRule, Config};
use crate::config::values::Pattern;

/// A PowerMTA bounce category, plus the `success` pseudo-category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Misconfiguration on the sending or receiving side (e.g. mail loops, 5.3.5).
    BadConfiguration,
    /// The connection failed or was dropped (refused, reset, TLS failure).
    BadConnection,
    /// The recipient domain does not exist or cannot receive mail.
    BadDomain,
    /// The recipient mailbox does not exist.
    BadMailbox,
    /// The message content or size was refused.
    ContentRelated,
    /// The mailbox exists but is disabled or inactive.
    InactiveMailbox,
    /// The envelope sender was refused.
    InvalidSender,
    /// The message expired in the queue.
    MessageExpired,
    /// The remote host did not answer (timeouts).
    NoAnswerFromHost,
    /// Nothing else matched.
    Other,
    /// The receiver's policy refused the mail (authentication, reputation, rate limits, blocklists).
    PolicyRelated,
    /// An SMTP protocol error.
    ProtocolErrors,
    /// The mailbox is over quota.
    QuotaIssues,
    /// Relaying was denied.
    RelayingIssues,
    /// The message could not be routed (no MX, loops).
    RoutingErrors,
    /// The message was refused as spam.
    SpamRelated,
    /// The message was refused for carrying a virus.
    VirusRelated,
    /// Not a failure: a 2.x.x status.
    Success,
}

/// All categories, in the order of `BOUNCE_CATEGORIES` of the config model.
pub const ALL_CATEGORIES: [Category; 18] = [
    Category::BadConfiguration,
    Category::BadConnection,
    Category::BadDomain,
    Category::BadMailbox,
    Category::ContentRelated,
    Category::InactiveMailbox,
    Category::InvalidSender,
    Category::MessageExpired,
    Category::NoAnswerFromHost,
    Category::Other,
    Category::PolicyRelated,
    Category::ProtocolErrors,
    Category::QuotaIssues,
    Category::RelayingIssues,
    Category::RoutingErrors,
    Category::SpamRelated,
    Category::VirusRelated,
    Category::Success,
];

impl Category {
    /// The PowerMTA name, as written in accounting records and `X-PowerMTA-BounceCategory`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::BadConfiguration => "bad-configuration",
            Category::BadConnection => "bad-connection",
            Category::BadDomain => "bad-domain",
            Category::BadMailbox => "bad-mailbox",
            Category::ContentRelated => "content-related",
            Category::InactiveMailbox => "inactive-mailbox",
            Category::InvalidSender => "invalid-sender",
            Category::MessageExpired => "message-expired",
            Category::NoAnswerFromHost => "no-answer-from-host",
            Category::Other => "other",
            Category::PolicyRelated => "policy-related",
            Category::ProtocolErrors => "protocol-errors",
            Category::QuotaIssues => "quota-issues",
            Category::RelayingIssues => "relaying-issues",
            Category::RoutingErrors => "routing-errors",
            Category::SpamRelated => "spam-related",
            Category::VirusRelated => "virus-related",
            Category::Success => "success",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = ClassifyError;
    fn from_str(s: &str) -> Result<Category, ClassifyError> {
        let t = s.trim();
        ALL_CATEGORIES
            .iter()
            .copied()
            .find(|c| c.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| ClassifyError::UnknownCategory(s.to_string()))
    }
}

/// Errors building a classifier.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClassifyError {
    /// A rule names a category that is not one of the PowerMTA categories.
    #[error("unknown bounce category `{0}`")]
    UnknownCategory(String),
    /// A rule's regex does not compile.
    #[error("{0}")]
    BadRegex(String),
}

/// Where the rule that decided a classification comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "index")]
pub enum RuleOrigin {
    /// The n-th (0-based) `<bounce-category-patterns>` rule of the config.
    Config(usize),
    /// The n-th (0-based) entry of [`DEFAULT_RULES`].
    Default(usize),
    /// No rule matched: `other`.
    Fallback,
}

/// The result of a classification, with the text the rules ran against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// The category.
    pub category: Category,
    /// Which rule decided.
    pub origin: RuleOrigin,
    /// The enhanced status used (given, found in the text, or derived from the basic code).
    pub status: String,
    /// The `"{status}; {diagnostic}"` text the rules were matched against.
    pub matched_text: String,
}

/// One failure as a bounce reports it, for [`Classifier::classify_failure`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Failure<'a> {
    /// The enhanced status the bounce gives (`Status:`), or empty to take it from the diagnostic.
    pub status: &'a str,
    /// What the remote server said (the `Diagnostic-Code` value or the quoted reply).
    pub diagnostic: &'a str,
    /// The SMTP command the reply answered (`CONN`, `EHLO`, `MAIL`, `RCPT`, `DATA`), when known.
    pub command: Option<&'a str>,
    /// The reporter gave up on the recipient (a `failed` action); `false` is a delay notice (a
    /// synchronous reply goes through [`Classifier::classify_sync_reply`] instead).
    pub gave_up: bool,
}

pub use super::reply_text::{find_enhanced_status, strip_diag_type, SmtpReply};
use super::rules::infer_command;

pub use super::rules::{Command, DefaultRule, Situation, When, DEFAULT_RULES};

#[derive(Debug, Clone)]
struct Rule {
    pattern: Pattern,
    category: Category,
    origin: RuleOrigin,
    /// Where the config says it (`file:line`).
    at: String,
    /// Its index in [`Classifier::config_set`] when the `regex` crate takes the pattern as it is
    /// (no look-around or back-reference); such a pattern `fancy_regex` hands to `regex` anyway.
    in_set: Option<usize>,
}

/// A precompiled list of rules: config rules first, then [`DEFAULT_RULES`]. The config rules
/// the `regex` crate takes run as one `RegexSet` in a single pass; those that need `fancy_regex`
/// (look-arounds, back-references) are tried one by one in their place. The defaults are tried one
/// by one in order (their conditions first). The lowest-numbered matching rule wins.
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: Vec<Rule>,
    /// The config rules `regex` takes, in order (see [`Rule::in_set`]).
    config_set: regex::RegexSet,
    /// [`DEFAULT_RULES`] compiled, in order; shared by every classifier of the process (and
    /// their match caches with them).
    defaults: std::sync::Arc<Vec<regex::Regex>>,
    verdicts: Verdicts,
}

/// What a failure adds to its text: the command answered (a [`Command::bit`], 0 if unknown) and
/// whether the reporter gave up on it.
#[derive(Debug, Clone, Copy, Default)]
struct Context {
    command: u8,
    gave_up: bool,
    /// A recipient of a delay notice: [`Classifier::classify_failure`] without `gave_up`.
    delayed: bool,
}

/// The most verdicts a classifier remembers; past it, it starts over.
const MAX_VERDICTS: usize = 4096;
/// The most of a diagnostic the rules read (bytes); the rest of a longer one is left out.
const MAX_TEXT: usize = 16 * 1024;
/// The longest text whose verdict is remembered (bytes).
const MAX_VERDICT_TEXT: usize = 2048;

/// Verdicts already reached, by the text the rules ran against: replies repeat (a deferral storm
/// sends one text thousands of times), and the rules are regexes. A clone starts empty.
#[derive(Default)]
struct Verdicts(std::sync::Mutex<std::collections::HashMap<VerdictKey, (Category, RuleOrigin)>>);

/// A verdict's key: the context bits (command, 0x80 expired, 0x40 gave up, 0x20 delayed) and the
/// matched text.
type VerdictKey = (u8, String);

impl Clone for Verdicts {
    fn clone(&self) -> Self {
        Verdicts::default()
    }
}

impl fmt::Debug for Verdicts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verdicts")
    }
}

impl Verdicts {
    fn get(&self, key: &VerdictKey) -> Option<(Category, RuleOrigin)> {
        self.0.lock().ok()?.get(key).copied()
    }

    fn put(&self, key: &VerdictKey, verdict: (Category, RuleOrigin)) {
        // Long texts are not kept: they rarely repeat, and 4,096 of them could fill the memory.
        if key.1.len() > MAX_VERDICT_TEXT {
            return;
        }
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= MAX_VERDICTS {
                m.clear();
            }
            m.insert(key.clone(), verdict);
        }
    }
}

impl Default for Classifier {
    /// A classifier with the built-in rules only.
    fn default() -> Self {
        Classifier {
            rules: Vec::new(),
            config_set: regex::RegexSet::empty(),
            defaults: default_set().unwrap_or_default(),
            verdicts: Verdicts::default(),
        }
    }
}

impl Classifier {
    /// Builds a classifier from `<bounce-category-patterns>` rules placed in front of the defaults.
    /// A catch-all config rule (an empty regex, as in the stock `// other` line) applies only when
    /// no default rule matched either: configs copied from PowerMTA's stock block end with it, and
    /// it would otherwise hide every built-in rule (mtasim's choice; documented in README).
    pub fn with_rules(config_rules: &[CategoryRule]) -> Result<Classifier, ClassifyError> {
        let mut rules = Vec::with_capacity(config_rules.len());
        let mut set = Vec::new();
        for (i, r) in config_rules.iter().enumerate() {
            let category: Category = r.category.parse()?;
            let compiled = r.pattern.compiled();
            let in_set = (!r.pattern.source.is_empty()
                && regex::RegexBuilder::new(compiled)
                    .size_limit(16 << 20)
                    .build()
                    .is_ok())
            .then(|| {
                set.push(compiled.to_string());
                set.len() - 1
            });
            rules.push(Rule {
                pattern: r.pattern.clone(),
                category,
                origin: RuleOrigin::Config(i),
                at: format!("{}:{}", r.span.file, r.span.line),
                in_set,
            });
        }
        // A set too large to build: every rule is tried alone, as each one compiled alone.
        let config_set = match regex::RegexSetBuilder::new(&set)
            .size_limit(64 << 20)
            .dfa_size_limit(SET_DFA_LIMIT)
            .build()
        {
            Ok(s) => s,
            Err(_) => {
                rules.iter_mut().for_each(|r| r.in_set = None);
                regex::RegexSet::empty()
            }
        };
        let defaults = default_set()?;
        Ok(Classifier {
            rules,
            config_set,
            defaults,
            verdicts: Verdicts::default(),
        })
    }

    /// Builds a classifier from a loaded config's `bounce_category_patterns`.
    pub fn from_config(cfg: &Config) -> Result<Classifier, ClassifyError> {
        Classifier::with_rules(&cfg.bounce_category_patterns)
    }

    /// Classifies a synchronous SMTP reply such as `550 5.1.1 <x@y>: user unknown`.
    pub fn classify_reply(&self, reply: &str) -> Classification {
        let r = SmtpReply::parse(reply);
        let status = r.status();
        self.classify_status(&status, &r.text)
    }

    /// Classifies one failed recipient of a bounce: what the remote server said, the SMTP command
    /// it answered when the bounce says, and whether the reporter gave up (see [`Failure`]).
    /// A final failure with a transient (4.x.x) status means the sender gave up retrying: rules
    /// marked `expired` then apply (the message expired unless the text names why).
    pub fn classify_failure(&self, f: &Failure<'_>) -> Classification {
        let command = f
            .command
            .and_then(Command::parse)
            .or_else(|| infer_command(f.diagnostic));
        let ctx = Context {
            command: command.map_or(0, Command::bit),
            gave_up: f.gave_up,
            delayed: !f.gave_up,
        };
        self.classify_in(f.status, f.diagnostic, ctx)
    }

    /// Classifies the MTA's own synchronous reply to `command` (`CONN`, `HELO`, `MAIL`, `RCPT`,
    /// `DATA`): the command-conditioned rules apply, the delay-notice and expiry ones do not (a
    /// reply is neither: [`Classifier::classify_failure`] with `gave_up: false` reads as a delay
    /// notice, whose uninformative 4.x.x is `message-expired`). `status` may be empty.
    pub fn classify_sync_reply(&self, status: &str, reply: &str, command: &str) -> Classification {
        let ctx = Context {
            command: Command::parse(command)
                .or_else(|| infer_command(reply))
                .map_or(0, Command::bit),
            gave_up: false,
            delayed: false,
        };
        self.classify_in(status, reply, ctx)
    }

    /// Classifies a (status, diagnostic) pair from a bounce message. An empty `status` is taken from
    /// the diagnostic's enhanced code or basic code when it has one.
    pub fn classify_status(&self, status: &str, diagnostic: &str) -> Classification {
        self.classify_in(status, diagnostic, Context::default())
    }

    fn classify_in(&self, status: &str, diagnostic: &str, ctx: Context) -> Classification {
        // Only the head of a huge text is read: replies are lines, and every rule runs over it.
        let mut cut = diagnostic.len().min(MAX_TEXT);
        while !diagnostic.is_char_boundary(cut) {
            cut -= 1;
        }
        let diagnostic = &diagnostic[..cut];
        // White space collapsed to single spaces (most replies already are).
        let diag: Cow<'_, str> = if single_spaced(diagnostic) {
            Cow::Borrowed(diagnostic)
        } else {
            Cow::Owned(diagnostic.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        let mut status = status.trim().to_string();
        if status.is_empty() {
            let body = strip_diag_type(&diag);
            let reply = SmtpReply::parse(body);
            status = match find_enhanced_status(body) {
                Some(s) if reply.enhanced.is_none() => s.to_string(),
                _ => reply.status(),
            };
        }
        let matched_text = format!("{status}; {diag}");
        let situation = Situation {
            command: ctx.command,
            expired: ctx.gave_up && status.starts_with('4'),
            gave_up: ctx.gave_up,
            delayed: ctx.delayed,
        };
        let flags = u8::from(situation.expired) << 7
            | u8::from(ctx.gave_up) << 6
            | u8::from(ctx.delayed) << 5;
        let key = (ctx.command | flags, matched_text);
        let (category, origin) = match self.verdicts.get(&key) {
            Some(v) => v,
            None => {
                let v = self.decide(&key.1, situation);
                self.verdicts.put(&key, v);
                v
            }
        };
        let matched_text = key.1;
        Classification {
            category,
            origin,
            status,
            matched_text,
        }
    }

    /// The rule that decides `matched_text`: the config's rules in order, then the defaults, then
    /// the config's catch-all, else `other`.
    fn decide(&self, matched_text: &str, situation: Situation) -> (Category, RuleOrigin) {
        let catch_all = self.rules.iter().find(|r| r.pattern.source.is_empty());
        let in_set = (!self.config_set.is_empty()).then(|| self.config_set.matches(matched_text));
        for rule in self.rules.iter().filter(|r| !r.pattern.source.is_empty()) {
            let hit = match (rule.in_set, &in_set) {
                (Some(k), Some(m)) => m.matched(k),
                _ => rule.pattern.is_match(matched_text),
            };
            if hit {
                return (rule.category, rule.origin);
            }
        }
        // One by one, in order, stopping at the first: on text not seen before this is several
        // times faster than one set of all rules, whose combined automaton must be built state
        // by state for every new text (measured: 38,000 against 10,500 new lines/s).
        for (i, (re, d)) in self.defaults.iter().zip(DEFAULT_RULES.iter()).enumerate() {
            if d.when.holds(situation) && re.is_match(matched_text) {
                return (d.category, RuleOrigin::Default(i));
            }
        }
        if let Some(rule) = catch_all {
            return (rule.category, rule.origin);
        }
        (Category::Other, RuleOrigin::Fallback)
    }

    /// Says which rule `origin` names: where it is written, its regex and (built-in) its source.
    pub fn describe(&self, origin: RuleOrigin) -> String {
        match origin {
            RuleOrigin::Config(i) => match self.rules.iter().find(|r| r.origin == origin) {
                Some(r) => format!("config {} rule {}: /{}/", r.at, i + 1, r.pattern.source),
                None => format!("config rule {}", i + 1),
            },
            RuleOrigin::Default(i) => match DEFAULT_RULES.get(i) {
                Some(d) => {
                    let when = match d.when == When::default() {
                        true => String::new(),
                        false => format!(" [when {}]", d.when),
                    };
                    format!(
                        "built-in rules.tsv line {}: /{}/{when} (source: {})",
                        d.line, d.regex, d.source
                    )
                }
                None => format!("built-in rule {}", i + 1),
            },
            RuleOrigin::Fallback => "no rule matched".to_string(),
        }
    }

    /// The number of rules (config plus defaults).
    pub fn len(&self) -> usize {
        self.rules.len() + self.defaults.len()
    }

    /// True if there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The lazy DFA cache the config's rule set may grow to. A set of many rules, searched for every match, needs
/// far more states than the regex crate's 2 MB default; past the limit it falls back to a matcher
/// some thirty times slower.
const SET_DFA_LIMIT: usize = 16 << 20;

/// [`DEFAULT_RULES`] compiled, case-insensitive like PowerMTA's patterns: once per process and
/// shared, so a new or cloned classifier starts with warm match caches.
fn default_set() -> Result<std::sync::Arc<Vec<regex::Regex>>, ClassifyError> {
    type Compiled = Result<std::sync::Arc<Vec<regex::Regex>>, ClassifyError>;
    static SET: std::sync::OnceLock<Compiled> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        DEFAULT_RULES
            .iter()
            .map(|d| {
                regex::RegexBuilder::new(d.regex)
                    .case_insensitive(true)
                    .size_limit(16 << 20)
                    .build()
                    .map_err(|e| ClassifyError::BadRegex(format!("rules.tsv line {}: {e}", d.line)))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(std::sync::Arc::new)
    })
    .clone()
}

/// Whether `text` is ASCII with its words separated by single spaces (no other white space, none
/// at either end): what collapsing white space would leave unchanged.
fn single_spaced(text: &str) -> bool {
    let b = text.as_bytes();
    text.is_ascii()
        && b.first() != Some(&b' ')
        && b.last() != Some(&b' ')
        && !b
            .iter()
            .any(|c| matches!(c, b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))
        && memchr::memmem::find(b, b"  ").is_none()
}

#[cfg(test)]
#[path = "classify_tests.rs"]
mod tests;
