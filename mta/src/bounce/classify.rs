//! Classification of SMTP replies and bounce diagnostics into the 17 PowerMTA bounce categories.
//!
//! A [`Classifier`] holds the config's `<bounce-category-patterns>` rules followed by the built-in
//! default rules ([`DEFAULT_RULES`]); the first rule whose regex matches wins, `other` if none does.
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
    /// The reporter gave up on the recipient (a `failed` action), as opposed to a delay notice
    /// or a synchronous reply.
    pub gave_up: bool,
}

/// A parsed SMTP reply line: basic code, enhanced status, text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    /// The three-digit code, if the reply starts with one.
    pub code: Option<u16>,
    /// The enhanced status code (`class.subject.detail`), if present.
    pub enhanced: Option<String>,
    /// The whole reply text, whitespace-normalised (multi-line replies joined with spaces).
    pub text: String,
}

impl SmtpReply {
    /// Parses `550 5.1.1 text`, `550-5.1.1 text` (multi-line joined), `550 text` or free text.
    pub fn parse(reply: &str) -> SmtpReply {
        let mut text = String::new();
        for line in reply.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            // Continuation lines `550-5.1.1 more` repeat code and status: keep only their text.
            let stripped = if !text.is_empty() {
                strip_code_prefix(line)
            } else {
                line
            };
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(stripped);
        }
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let code = basic_code(&text);
        let after_code = match code {
            Some(_) => text.get(4..).unwrap_or("").trim_start(),
            None => text.as_str(),
        };
        let enhanced = find_enhanced_prefix(after_code).map(str::to_string);
        SmtpReply {
            code,
            enhanced,
            text,
        }
    }

    /// The enhanced status, else one derived from the basic code (`550` gives `5.0.0`), else empty.
    pub fn status(&self) -> String {
        if let Some(e) = &self.enhanced {
            return e.clone();
        }
        match self.code {
            Some(c) if (200..600).contains(&c) => format!("{}.0.0", c / 100),
            _ => String::new(),
        }
    }
}

fn strip_code_prefix(line: &str) -> &str {
    let b = line.as_bytes();
    if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && (b[3] == b'-' || b[3] == b' ') {
        let rest = line[4..].trim_start();
        match find_enhanced_prefix(rest) {
            Some(e) => rest[e.len()..].trim_start(),
            None => rest,
        }
    } else {
        line
    }
}

/// The three-digit code at the start of `text` (followed by space, `-` or end), if any.
fn basic_code(text: &str) -> Option<u16> {
    let b = text.as_bytes();
    if b.len() >= 3
        && b[..3].iter().all(u8::is_ascii_digit)
        && (b.len() == 3 || b[3] == b' ' || b[3] == b'-')
    {
        text[..3].parse().ok()
    } else {
        None
    }
}

/// An enhanced status code `d.d{1,3}.d{1,3}` at the start of `s` (class 2, 4 or 5).
fn find_enhanced_prefix(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    if b.is_empty() || !matches!(b[0], b'2' | b'4' | b'5') || b.get(1) != Some(&b'.') {
        return None;
    }
    let mut i = 2;
    let start2 = i;
    while i < b.len() && b[i].is_ascii_digit() && i - start2 < 3 {
        i += 1;
    }
    if i == start2 || b.get(i) != Some(&b'.') {
        return None;
    }
    i += 1;
    let start3 = i;
    while i < b.len() && b[i].is_ascii_digit() && i - start3 < 3 {
        i += 1;
    }
    if i == start3
        || b.get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'.')
    {
        return None;
    }
    Some(&s[..i])
}

/// Finds the first enhanced status code anywhere in `text` (word-bounded), e.g. in a diagnostic.
pub fn find_enhanced_status(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    for i in 0..b.len() {
        // Only ASCII digits start a code, which also keeps `i` on a char boundary.
        if !matches!(b[i], b'2' | b'4' | b'5') {
            continue;
        }
        if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.') {
            continue;
        }
        if let Some(s) = find_enhanced_prefix(&text[i..]) {
            return Some(s);
        }
    }
    None
}

/// One built-in rule: regex (PowerMTA syntax, case-insensitive), category, and where the text comes from.
#[derive(Debug, Clone, Copy)]
pub struct DefaultRule {
    /// The regex as it would be written between slashes in the config.
    pub regex: &'static str,
    /// The category assigned.
    pub category: Category,
    /// Where the matched wording comes from (ISP documentation, RFC, MTA source knowledge).
    pub source: &'static str,
}

use Category as C;

/// The built-in rules, most specific first. Each `source` names where the wording comes from:
/// "ref-B" is the shared reference part B (ISP reply tables: Gmail support.google.com/a/answer/3726730,
/// Yahoo postmaster error codes, Outlook.com troubleshooting, iCloud), "sisimai" is the public knowledge
/// of sisimai's rhost/lhost modules (facts about reply wording, not code), "RFC 3463" the enhanced
/// status code registry, "pmta-stock" the status-code rules of PowerMTA's stock pattern block.
pub const DEFAULT_RULES: &[DefaultRule] = &[
    // --- success -------------------------------------------------------------------------------
    DefaultRule { regex: r"^2\.\d{1,3}\.\d{1,3};", category: C::Success, source: "pmta-stock: 2.x.x is success" },
    // --- expiry (PowerMTA's own expiry text and 4.4.7 come before everything) --------------------
    DefaultRule { regex: r"^[45]\.4\.7;", category: C::MessageExpired, source: "RFC 3463 4.4.7 delivery time expired; pmta-stock" },
    DefaultRule { regex: r"(message|delivery) (has )?expired|too long in (the )?queue|in the queue too long|retry time(out)? (not reached|exceeded)|bounce-after|could not be delivered for \d+ (days|hours)", category: C::MessageExpired, source: "Postfix 'message expired'/Exim 'retry time not reached for any host after a long failure period'/Sendmail 'Cannot send message for 5 days'" },
    DefaultRule { regex: r"cannot send message for \d+ (days?|hours?)", category: C::MessageExpired, source: "Sendmail queue timeout text" },
    // --- virus -----------------------------------------------------------------------------------
    DefaultRule { regex: r"\bvirus|malware|\binfected\b|trojan|\bworm\b|\bphishing attachment|dangerous attachment|content presents a potential security issue", category: C::VirusRelated, source: "ClamAV/Exchange/Gmail 'virus detected' replies (sisimai: virus/malware wording); Gmail 552 5.7.0 'content presents a potential security issue' (support.google.com/mail/?p=BlockedMessage)" },
    // --- spam (specific ISP texts before the generic 5.7.x policy rules) --------------------------
    DefaultRule { regex: r"likely unsolicited mail|\bspam\b.*(detected|content|message)|message (was |is )?(classified|identified|considered|detected) as (spam|junk|bulk)|content (looks|appears) (like|to be) spam|\bUBE\b|high (probability|likelihood) of (being )?spam|spam score|bulk mail (rejected|detected)|suspicion of spam|permanent failure for one or more recipients \([^)]*:blocked\)", category: C::SpamRelated, source: "ref-B Gmail 550 5.7.1 'likely unsolicited mail'; sisimai spamdetected wording; Yandex 'Message rejected under suspicion of SPAM'; Barracuda ESG '(addr:blocked)', a block by spam scoring" },
    DefaultRule { regex: r"\[(CS01|HM08)\]|message rejected due to (local )?spam|rejected as spam|looks like spam|spam(my)? (content|message)", category: C::SpamRelated, source: "sisimai Apple/Yahoo spam wording; generic" },
    DefaultRule { regex: r"not listed in (the )?(Domino Directory|public Name & Address Book)", category: C::BadMailbox, source: "HCL/Lotus Domino router 'User x not listed in Domino Directory' (before the blocklist rule's 'listed in')" },
    // --- rate limits / reputation / blocklists: policy ------------------------------------------
    DefaultRule { regex: r"insufficient (system storage|disk space)|mail system full", category: C::BadConfiguration, source: "Sendmail '452 4.4.5 Insufficient disk space; try again later', RFC 3463 X.3.1 mail system full: the receiving system, not the mailbox" },
    DefaultRule { regex: r"helo command rejected|need fully-qualified hostname|invalid (helo|ehlo)|^[45]\.7\.8;|username and password not accepted|authentication credentials invalid", category: C::BadConfiguration, source: "Postfix reject_non_fqdn_helo_hostname '504 5.5.2 Helo command rejected: need fully-qualified hostname'; Gmail '535 5.7.8 Username and Password not accepted' (RFC 4954 5.7.8): the sender's own setup" },
    DefaultRule { regex: r"spam points|- SPAM\b|\bspam message rejected", category: C::SpamRelated, source: "Exim spec content-scanning example 'This message scored N spam points', amavisd-new 'Reject, id=... - SPAM', rspamd 'Spam message rejected'" },
    DefaultRule { regex: r"\[(TSS0\d|TS0\d|GL0\d|PH0\d|BL\d\d|HME\d)\]|\b(RP|SC|DY|OU)-00\d\b|\(S3150\)|\(AS\d+\)|\(S77\d*\)", category: C::PolicyRelated, source: "ref-B Yahoo [TSS04]/[TSS09]/[BL23]/[PH01], Outlook RP-001..003/SC-001/DY-001/OU-001/S3150/AS761, iCloud [HME1]" },
    DefaultRule { regex: r"rate limit|rate-limit|ratelimit|temporarily deferred|excessive volume|unexpected volume|too many (messages|connections|recipients|mails)|receiving (e-?mail|mail) too quickly|max(imum)? messages? per connection|connection limit|try again later|unusual rate|sending quota|receive limit|daily limit|sending limit|per hour|greylist|graylist|throttl|sending rate|internal resource temporarily unavailable", category: C::PolicyRelated, source: "ref-B postgrey 'Greylisted'; Amazon SES 'Throttling failure: Maximum sending rate exceeded'; Mimecast 451 'Internal resource temporarily unavailable' (greylisting/reputation); ref-B Gmail 4.7.28/4.2.1, Yahoo TSS04/'receiving mail too quickly'/'Max message per connection', Outlook RP-00x, iCloud 'excessive volume'; Exchange Online NDR table 5.2.121/5.2.122 'per hour message receive limit', 5.1.90 'daily limit'" },
    DefaultRule { regex: r"unauthenticated|not (pass|passed)|didn't pass|did not pass|\bDMARC\b|\bSPF\b|\bDKIM\b|authentication level|PTR (resource )?record|reverse (dns|DNS)|TLS required|wasn't sent over a TLS|anti-?spoofing|\bspoof", category: C::PolicyRelated, source: "Mimecast 'Rejected by header based Anti-Spoofing policy'; ref-B Gmail 5.7.25/5.7.26/5.7.27/4.7.29/4.7.30, Yahoo 5.7.9, Outlook 5.7.515, iCloud [HME1]" },
    DefaultRule { regex: r"spamhaus|block ?list|black ?list|\bRBL\b|\bDNSBLs?\b|listed (at|on|in)|low reputation|reputation|suspicious", category: C::PolicyRelated, source: "ref-B Yahoo [BL23] Spamhaus XBL, Outlook 'on our block list', iCloud 'listing in Spamhaus SBL', Gmail 'very low reputation'" },
    // --- quota -----------------------------------------------------------------------------------
    DefaultRule { regex: r"over ?quota|quota exceeded|exceeded (its|the|their|his|her) (storage )?quota|mailbox (is )?full|inbox is (out of storage|full)|out of storage|mailbox size limit|user has exceeded|storage space", category: C::QuotaIssues, source: "ref-B Gmail 4.2.2/5.2.2 'out of storage space', iCloud 'user is over quota', Exchange 'mailbox full'; Postfix/Dovecot 'quota exceeded'" },
    // --- inactive / disabled mailbox ---------------------------------------------------------------
    DefaultRule { regex: r"inactive|disabled|deactivated|\b(account|mailbox|user|address) (is |has been |was )?suspended|suspended (account|mailbox|user)|account (has been |is )?(closed|locked|expired|blocked)|mailbox (is )?(unavailable due to inactivity|locked)|no longer (active|in use|available)|\(554\.30\)", category: C::InactiveMailbox, source: "'suspended' only next to account/mailbox/user: Postfix's 'delivery temporarily suspended' is a deferral, not a closed mailbox; ref-B Gmail 5.2.1 'is inactive', Yahoo 'This mailbox is disabled (554.30)', iCloud 'inactive email address'" },
    // --- relaying ----------------------------------------------------------------------------------
    DefaultRule { regex: r"relay(ing)? (access )?(denied|not permitted|not allowed|prohibited)|unable to relay|not permitted to relay|we do not relay|open relay|\brelay(ing)?\b.*\b(denied|refused)|relaying disallowed|rcpthosts", category: C::RelayingIssues, source: "Zoho '553 Relaying disallowed', qmail-smtpd 'not in my list of allowed rcpthosts'; Postfix '554 5.7.1 Relay access denied', Exchange '550 5.7.54 Unable to relay', Sendmail 'Relaying denied'" },
    DefaultRule { regex: r"^[45]\.7\.54;", category: C::RelayingIssues, source: "Exchange 5.7.54 unable to relay" },
    // --- invalid sender -------------------------------------------------------------------------------
    DefaultRule { regex: r"sender (address )?(rejected|refused|invalid|unknown|verify failed)|(invalid|unknown|bad) sender|sender domain (does not exist|not found|must exist)|domain of sender address|mail from.*(rejected|refused|invalid)|return[- ]path.*(invalid|rejected)", category: C::InvalidSender, source: "Postfix 'Sender address rejected: Domain not found', Sendmail 'Domain of sender address ... does not exist'" },
    DefaultRule { regex: r"^[45]\.1\.[78];", category: C::InvalidSender, source: "RFC 3463 5.1.7 bad sender mailbox syntax, 5.1.8 bad sender system address; pmta-stock" },
    // --- bad domain -------------------------------------------------------------------------------------
    DefaultRule { regex: r"NXDOMAIN|host (or domain name )?not found|domain (name )?(not found|does not exist|doesn't exist|is not valid|has no MX)|no such domain|unrouteable (mail )?domain|unknown (domain|host)|host unknown|name service error|no (valid )?(MX|mail exchanger)|nullmx|null MX|does not accept mail|MX records point to non-existent hosts", category: C::BadDomain, source: "Sendmail '550 Host unknown (Name server: ...: host not found)', Postfix 'Host or domain name not found. Name service error', Exim 'Unrouteable address'/'all relevant MX records point to non-existent hosts', RFC 7505 null MX" },
    // --- bad mailbox (texts) ------------------------------------------------------------------------------
    DefaultRule { regex: r"RecipNotFound|RecipientNotFound|does not exist|doesn't exist|doesn't have a .* account|no such (user|mailbox|recipient|address)|user unknown|unknown (user|recipient|mailbox)|(recipient|mailbox|address) (not found|unknown|invalid|unavailable)|invalid (recipient|mailbox|address)|not a valid (mailbox|recipient|user)|mailbox unavailable|undeliverable address|addressee unknown|couldn't be found|recipient address rejected|\b(recipient|address) rejected", category: C::BadMailbox, source: "Cox '550 5.1.1 recipient rejected', Cisco AsyncOS '550 #5.1.0 Address rejected.'; ref-B Gmail 5.1.1 'does not exist', Yahoo 'This user doesn't have a yahoo.com account', Outlook '5.5.0 mailbox unavailable', Office 365 '550 5.1.10 RESOLVER.ADR.RecipientNotFound', Exchange 'couldn't be found'" },
    DefaultRule { regex: r"message size exceeds|SizeLimit|message (file )?(is )?too (large|big)", category: C::ContentRelated, source: "Exchange 'ROUTING.SizeLimit; message size exceeds fixed maximum size for route' (before the routing words), Postfix cleanup 'message file too big'" },
    // --- bad configuration texts ---
    DefaultRule { regex: r"local error in processing", category: C::BadConfiguration, source: "RFC 5321 4.2.3 '451 Requested action aborted: local error in processing'" },
    // --- connection-level failures --------------------------------------------------------------------------
    DefaultRule { regex: r"timed? ?out|timeout|no answer|did not respond|not responding|no response|conversation with .* timed out|unable to connect", category: C::NoAnswerFromHost, source: "Exchange 4.4.0/4.2.1 'Unable to connect'; Postfix 'conversation with X timed out', Exim 'Connection timed out'" },
    DefaultRule { regex: r"connection (refused|reset|closed|dropped|lost)|lost connection|broken pipe|network is unreachable|no route to host|TLS (handshake )?(failed|failure|error)|handshake failure|certificate (verify|verification) failed|connect(ion)? to .* failed|closed (the )?connection|TLS is required, but was not offered", category: C::BadConnection, source: "Exim 'Remote host closed connection in response to ...', Postfix 'TLS is required, but was not offered by host'; Postfix 'connect to X: Connection refused'/'lost connection with X', socket errors" },
    // --- routing -------------------------------------------------------------------------------------------------
    DefaultRule { regex: r"mail loop|loops back to myself|routing loop|too many hops|hop count exceeded", category: C::RoutingErrors, source: "Postfix 'mail for X loops back to myself', Sendmail 'Too many hops'" },
    DefaultRule { regex: r"\bunroutable\b|\bunrouteable\b|\broute\b|routing", category: C::RoutingErrors, source: "pmta-stock routing texts" },
    // --- protocol --------------------------------------------------------------------------------------------------
    DefaultRule { regex: r"bad sequence|syntax error|command (not )?(recognized|unrecognized|not implemented)|unrecognized command|line too long|bare LF|pipelining|protocol error|out of sequence|too many errors", category: C::ProtocolErrors, source: "Postfix smtpd 'Error: too many errors' (smtpd_hard_error_limit); RFC 5321 500/501/503 reply texts, 5.5.x" },
    // --- content / size ---------------------------------------------------------------------------------------------
    DefaultRule { regex: r"size (exceeds|limit)|exceed(s|ed)? .*size limits?|message (is )?too (large|big)|message size|too many (lines|headers)|content (rejected|refused|not accepted|restrictions?|filter)|message content|attachment|invalid 7bit|8bit|\bMIME\b|RFC ?5322|RFC ?2822|malformed|header", category: C::ContentRelated, source: "ref-B Gmail 552 5.3.4 'exceeded Google's message size limits', Exchange 'Message size exceeds fixed maximum message size', Gmail 5.7.0 RFC 5322 non-compliance" },
    // --- generic policy words (after all specific texts) --------------------------------------------------------------
    DefaultRule { regex: r"denied|prohibited|refused|not allowed|banned|policy|blocked|rejected|not accepted|access denied|administrative", category: C::PolicyRelated, source: "pmta-stock policy words (denied, prohibit, refused, allowed, banned, policy)" },
    // --- enhanced status code rules (RFC 3463), after all text rules ------------------------------------------------------
    DefaultRule { regex: r"^[45]\.1\.[29];|^[45]\.1\.10;", category: C::BadDomain, source: "RFC 3463 5.1.2 bad destination system address; RFC 7505 5.1.10 null MX (after the texts: Office 365 also uses 5.1.10 for RecipientNotFound)" },
    DefaultRule { regex: r"^[45]\.1\.[01346];", category: C::BadMailbox, source: "RFC 3463 5.1.0 other address, 5.1.1 bad mailbox, 5.1.3 bad syntax, 5.1.4 ambiguous, 5.1.6 moved; pmta-stock" },
    DefaultRule { regex: r"^[45]\.1\.5;", category: C::Success, source: "RFC 3463 5.1.5 destination mailbox address valid (informational)" },
    DefaultRule { regex: r"^[45]\.2\.0;", category: C::BadMailbox, source: "RFC 3463 x.2.0 other mailbox status; pmta-stock" },
    DefaultRule { regex: r"^[45]\.2\.1;", category: C::InactiveMailbox, source: "RFC 3463 5.2.1 mailbox disabled; pmta-stock" },
    DefaultRule { regex: r"^[45]\.2\.2;", category: C::QuotaIssues, source: "RFC 3463 5.2.2 mailbox full; pmta-stock" },
    DefaultRule { regex: r"^[45]\.2\.3;", category: C::ContentRelated, source: "RFC 3463 5.2.3 message length exceeds administrative limit" },
    DefaultRule { regex: r"^[45]\.2\.4;", category: C::BadMailbox, source: "RFC 3463 5.2.4 mailing list expansion problem" },
    DefaultRule { regex: r"^[45]\.3\.[0-2];", category: C::BadConfiguration, source: "RFC 3463 5.3.0-5.3.2 mail system other/full/not accepting" },
    DefaultRule { regex: r"^[45]\.3\.[34];", category: C::ContentRelated, source: "RFC 3463 5.3.3 feature not supported, 5.3.4 message too big; pmta-stock" },
    DefaultRule { regex: r"^[45]\.3\.5;", category: C::BadConfiguration, source: "RFC 3463 5.3.5 system incorrectly configured; pmta-stock" },
    DefaultRule { regex: r"^[45]\.4\.1;", category: C::NoAnswerFromHost, source: "RFC 3463 4.4.1 no answer from host; pmta-stock" },
    DefaultRule { regex: r"^[45]\.4\.2;", category: C::BadConnection, source: "RFC 3463 4.4.2 bad connection; pmta-stock" },
    DefaultRule { regex: r"^[45]\.4\.[0]?;|^[45]\.4\.[3-6];", category: C::RoutingErrors, source: "RFC 3463 4.4.3 directory server failure, 4.4.4 unable to route, 4.4.5 congestion, 4.4.6 routing loop; pmta-stock" },
    DefaultRule { regex: r"^[45]\.5\.3;", category: C::PolicyRelated, source: "RFC 3463 5.5.3 too many recipients; pmta-stock" },
    DefaultRule { regex: r"^[45]\.5\.\d{1,3};", category: C::ProtocolErrors, source: "RFC 3463 x.5.x protocol status; pmta-stock" },
    DefaultRule { regex: r"^[45]\.6\.\d{1,3};", category: C::ContentRelated, source: "RFC 3463 x.6.x message content; pmta-stock" },
    DefaultRule { regex: r"^[45]\.7\.7;", category: C::ContentRelated, source: "RFC 3463 5.7.7 message integrity failure; pmta-stock" },
    DefaultRule { regex: r"^[45]\.7\.\d{1,3};", category: C::PolicyRelated, source: "RFC 3463 x.7.x security or policy status; pmta-stock (5.7.0-5.7.2)" },
];

#[derive(Debug, Clone)]
struct Rule {
    pattern: Pattern,
    category: Category,
    origin: RuleOrigin,
    /// Its index in [`Classifier::config_set`] when the `regex` crate takes the pattern as it is
    /// (no look-around or back-reference); such a pattern `fancy_regex` hands to `regex` anyway.
    in_set: Option<usize>,
}

/// A precompiled list of rules: config rules first, then [`DEFAULT_RULES`]. The config rules
/// the `regex` crate takes run as one `RegexSet` in a single pass; those that need `fancy_regex`
/// (look-arounds, back-references) are tried one by one in their place. The defaults run as one
/// `RegexSet` too. The lowest-numbered matching rule wins, as if they were tried in order.
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: Vec<Rule>,
    /// The config rules `regex` takes, in order (see [`Rule::in_set`]).
    config_set: regex::RegexSet,
    defaults: regex::RegexSet,
    verdicts: Verdicts,
}

/// The most verdicts a classifier remembers; past it, it starts over.
const MAX_VERDICTS: usize = 4096;

/// Verdicts already reached, by the text the rules ran against: replies repeat (a deferral storm
/// sends one text thousands of times), and the rules are regexes. A clone starts empty.
#[derive(Default)]
struct Verdicts(std::sync::Mutex<std::collections::HashMap<String, (Category, RuleOrigin)>>);

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
    fn get(&self, text: &str) -> Option<(Category, RuleOrigin)> {
        self.0.lock().ok()?.get(text).copied()
    }

    fn put(&self, text: &str, verdict: (Category, RuleOrigin)) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= MAX_VERDICTS {
                m.clear();
            }
            m.insert(text.to_string(), verdict);
        }
    }
}

impl Default for Classifier {
    /// A classifier with the built-in rules only.
    fn default() -> Self {
        Classifier {
            rules: Vec::new(),
            config_set: regex::RegexSet::empty(),
            defaults: default_set().unwrap_or_else(|_| regex::RegexSet::empty()),
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
                in_set,
            });
        }
        // A set too large to build: every rule is tried alone, as each one compiled alone.
        let config_set = match regex::RegexSetBuilder::new(&set)
            .size_limit(64 << 20)
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
    pub fn classify_failure(&self, f: &Failure<'_>) -> Classification {
        let mut c = self.classify_status(f.status, f.diagnostic);
        // A final failure with a transient (4.x.x) status means the sender gave up retrying: the
        // message expired in its queue (Postfix after maximal_queue_lifetime keeps the last
        // deferral's status and text; RFC 3464 §2.3.3 lets `failed` carry any status).
        if f.gave_up && c.status.starts_with('4') && c.category != Category::Success {
            c.category = Category::MessageExpired;
        }
        c
    }

    /// Classifies a (status, diagnostic) pair from a bounce message. An empty `status` is taken from
    /// the diagnostic's enhanced code or basic code when it has one.
    pub fn classify_status(&self, status: &str, diagnostic: &str) -> Classification {
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
        let (category, origin) = match self.verdicts.get(&matched_text) {
            Some(v) => v,
            None => {
                let v = self.decide(&matched_text);
                self.verdicts.put(&matched_text, v);
                v
            }
        };
        Classification {
            category,
            origin,
            status,
            matched_text,
        }
    }

    /// The rule that decides `matched_text`: the config's rules in order, then the defaults, then
    /// the config's catch-all, else `other`.
    fn decide(&self, matched_text: &str) -> (Category, RuleOrigin) {
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
        if let Some(i) = self.defaults.matches(matched_text).iter().next() {
            if let Some(d) = DEFAULT_RULES.get(i) {
                return (d.category, RuleOrigin::Default(i));
            }
        }
        if let Some(rule) = catch_all {
            return (rule.category, rule.origin);
        }
        (Category::Other, RuleOrigin::Fallback)
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

/// Compiles [`DEFAULT_RULES`] into one set, case-insensitive like PowerMTA's patterns.
fn default_set() -> Result<regex::RegexSet, ClassifyError> {
    regex::RegexSetBuilder::new(DEFAULT_RULES.iter().map(|d| d.regex))
        .case_insensitive(true)
        .size_limit(64 << 20)
        .build()
        .map_err(|e| ClassifyError::BadRegex(e.to_string()))
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

/// Strips a DSN diagnostic type prefix such as `smtp;` or `X-Postfix;`.
pub fn strip_diag_type(diag: &str) -> &str {
    let t = diag.trim_start();
    if let Some(semi) = t.find(';') {
        let head = &t[..semi];
        if !head.is_empty()
            && head.len() <= 20
            && head
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return t[semi + 1..].trim_start();
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(&str, &str)]) -> Vec<CategoryRule> {
        list.iter()
            .map(|(p, c)| CategoryRule {
                pattern: Pattern::new(p).expect("a valid pattern"),
                category: c.to_string(),
                span: crate::config::diag::Span {
                    file: "t.conf".into(),
                    line: 1,
                    col: 1,
                },
            })
            .collect()
    }

    /// Config rules `regex` takes run as one set, a look-around rule on its own in its place:
    /// the first matching rule in config order still wins, case rules included.
    #[test]
    fn set_and_fancy_config_rules_keep_their_order() {
        let c = Classifier::with_rules(&rules(&[
            ("user (?!unknown)", "bad-mailbox"),
            ("user", "policy-related"),
            ("(?-i)QUOTA", "quota-issues"),
            ("quota", "spam-related"),
            ("", "no-answer-from-host"),
        ]))
        .expect("a classifier");
        let in_set: Vec<_> = c.rules.iter().map(|r| r.in_set).collect();
        assert_eq!(in_set, [None, Some(0), Some(1), Some(2), None]);
        let cat = |t: &str| c.classify_reply(t).category;
        assert_eq!(cat("550 5.1.1 user gone"), Category::BadMailbox);
        assert_eq!(cat("550 5.1.1 user unknown"), Category::PolicyRelated);
        assert_eq!(cat("452 4.2.2 USER UNKNOWN"), Category::PolicyRelated);
        assert_eq!(cat("452 4.2.2 QUOTA exceeded"), Category::QuotaIssues);
        assert_eq!(cat("452 4.2.2 Quota exceeded"), Category::SpamRelated);
        // Neither a config rule nor a default: the catch-all.
        assert_eq!(
            Classifier::default().classify_reply("451 zzz").category,
            Category::Other
        );
        assert_eq!(cat("451 zzz"), Category::NoAnswerFromHost);
    }

    /// A diagnostic is matched with its white space collapsed, whether or not it needed it.
    #[test]
    fn white_space_is_collapsed_before_matching() {
        let c = Classifier::with_rules(&rules(&[("^5\\.0\\.0; over quota$", "quota-issues")]))
            .expect("a classifier");
        for text in ["over quota", "  over \t quota \r\n", "over\u{a0}quota"] {
            let got = c.classify_status("5.0.0", text);
            assert_eq!(got.matched_text, "5.0.0; over quota", "{text:?}");
            assert_eq!(got.category, Category::QuotaIssues, "{text:?}");
        }
    }

    #[test]
    fn reply_parsing() {
        let r = SmtpReply::parse("550-5.1.1 first\r\n550 5.1.1 second");
        assert_eq!(r.code, Some(550));
        assert_eq!(r.enhanced.as_deref(), Some("5.1.1"));
        assert_eq!(r.text, "550-5.1.1 first second");
        let r = SmtpReply::parse("554 delivery error: dd");
        assert_eq!(r.status(), "5.0.0");
        assert_eq!(SmtpReply::parse("connection refused").status(), "");
    }

    #[test]
    fn remembered_verdicts_are_the_rules_verdicts() {
        let c = Classifier::default();
        let texts = [
            "550 5.1.1 <a@b>: user unknown",
            "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred",
            "452 4.2.2 mailbox full",
            "something else entirely",
        ];
        let first: Vec<Classification> = texts.iter().map(|t| c.classify_reply(t)).collect();
        let again: Vec<Classification> = texts.iter().map(|t| c.classify_reply(t)).collect();
        assert_eq!(first, again);
        let fresh: Vec<Classification> = texts
            .iter()
            .map(|t| Classifier::default().classify_reply(t))
            .collect();
        assert_eq!(first, fresh);
        assert_eq!(first[0].category, Category::BadMailbox);
        assert_eq!(first[2].category, Category::QuotaIssues);
    }

    #[test]
    fn enhanced_search() {
        assert_eq!(
            find_enhanced_status("smtp; 550 5.7.26 blocked"),
            Some("5.7.26")
        );
        assert_eq!(find_enhanced_status("version 1.5.2.3 here"), None);
        assert_eq!(find_enhanced_status("no code"), None);
    }

    #[test]
    fn all_defaults_compile_and_names_round_trip() {
        let c = Classifier::default();
        assert_eq!(c.len(), DEFAULT_RULES.len());
        for cat in ALL_CATEGORIES {
            assert_eq!(cat.as_str().parse::<Category>(), Ok(cat));
        }
        assert!(ALL_CATEGORIES
            .iter()
            .map(|c| c.as_str())
            .eq(crate::config::model::BOUNCE_CATEGORIES.iter().copied()));
    }

    #[test]
    fn set_order_equals_sequential_order() {
        let c = Classifier::default();
        let seq: Vec<Pattern> = DEFAULT_RULES
            .iter()
            .map(|d| Pattern::new(d.regex).expect("default rules are valid config regexes"))
            .collect();
        for text in [
            "550 5.1.1 user unknown",
            "550 5.7.1 likely unsolicited mail",
            "421 4.7.0 [TSS04] temporarily deferred",
            "451 4.4.7 expired",
            "connection refused",
            "250 2.0.0 ok",
            "599 9.9.9 weird",
            "552 5.2.2 over quota",
        ] {
            let got = c.classify_reply(text);
            let want = seq
                .iter()
                .position(|p| p.is_match(&got.matched_text))
                .map_or(RuleOrigin::Fallback, RuleOrigin::Default);
            assert_eq!(got.origin, want, "{text}");
        }
    }

    #[test]
    fn diag_type_strip() {
        assert_eq!(strip_diag_type("smtp; 550 x"), "550 x");
        assert_eq!(
            strip_diag_type("X-Postfix; host not found"),
            "host not found"
        );
        assert_eq!(strip_diag_type("550 5.1.1 a; b"), "550 5.1.1 a; b");
    }
}
