//! The built-in classification rules, kept as data in `rules.tsv` (category, condition, regex,
//! source per line) and parsed once. See that file's header for the columns.

use std::sync::LazyLock;

use super::classify::{Category, ClassifyError};

/// The rules table, compiled into the binary.
pub const RULES_TSV: &str = include_str!("rules.tsv");

/// The SMTP commands a rule can be limited to, as bits of [`Command::bit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// The connection itself (the greeting, or the connection failing).
    Conn,
    /// `HELO` or `EHLO`.
    Helo,
    /// `MAIL FROM`.
    Mail,
    /// `RCPT TO`.
    Rcpt,
    /// `DATA` or the end of data.
    Data,
}

impl Command {
    /// Reads a command name as bounces and our records write it (`EHLO` counts as `HELO`).
    pub fn parse(s: &str) -> Option<Command> {
        let t = s.trim().to_ascii_uppercase();
        let word = t.split([' ', ':']).next().unwrap_or("");
        match word {
            "CONN" | "CONNECT" | "CONNECTION" | "GREETING" | "BANNER" => Some(Command::Conn),
            "HELO" | "EHLO" | "LHLO" => Some(Command::Helo),
            "MAIL" => Some(Command::Mail),
            "RCPT" => Some(Command::Rcpt),
            "DATA" | "BDAT" | "END" => Some(Command::Data),
            _ => None,
        }
    }

    /// Its bit in a rule's command mask.
    pub fn bit(self) -> u8 {
        match self {
            Command::Conn => 1,
            Command::Helo => 2,
            Command::Mail => 4,
            Command::Rcpt => 8,
            Command::Data => 16,
        }
    }
}

/// When a rule applies besides its regex matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct When {
    /// Command bits ([`Command::bit`]) the reply must have answered; 0 for any (or unknown).
    pub commands: u8,
    /// Only for a recipient the reporter gave up on while the status was still transient (4.x.x).
    pub expired: bool,
    /// Only for a recipient the reporter gave up on (a bounce, not a reply or a delay notice).
    pub gave_up: bool,
    /// Only for a recipient of a delay notice (the reporter still retries).
    pub delayed: bool,
}

/// What a failure adds to its text, for [`When::holds`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Situation {
    /// The command answered, a [`Command::bit`]; 0 if unknown.
    pub command: u8,
    /// The reporter gave up while the status was transient (4.x.x).
    pub expired: bool,
    /// The reporter gave up (a failed recipient of a bounce).
    pub gave_up: bool,
    /// A recipient of a delay notice.
    pub delayed: bool,
}

impl When {
    /// Whether the rule applies to a failure in situation `s`.
    pub fn holds(&self, s: Situation) -> bool {
        (self.commands == 0 || self.commands & s.command != 0)
            && (!self.expired || s.expired)
            && (!self.gave_up || s.gave_up)
            && (!self.delayed || s.delayed)
    }

    fn parse(s: &str) -> Result<When, String> {
        let mut w = When::default();
        if s == "-" {
            return Ok(w);
        }
        for token in s.split(',').map(str::trim) {
            if token == "expired" {
                w.expired = true;
            } else if token == "gave-up" {
                w.gave_up = true;
            } else if token == "delayed" {
                w.delayed = true;
            } else if let Some(list) = token.strip_prefix("cmd=") {
                for name in list.split('|') {
                    let c = Command::parse(name).ok_or(format!("unknown command `{name}`"))?;
                    w.commands |= c.bit();
                }
            } else {
                return Err(format!("unknown condition `{token}`"));
            }
        }
        Ok(w)
    }
}

impl std::fmt::Display for When {
    /// Writes the condition as the table does (`cmd=RCPT|MAIL,expired`, `-` for none).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            ("CONN", 1),
            ("HELO", 2),
            ("MAIL", 4),
            ("RCPT", 8),
            ("DATA", 16),
        ];
        let cmds: Vec<&str> = names
            .iter()
            .filter(|(_, b)| self.commands & b != 0)
            .map(|(n, _)| *n)
            .collect();
        let mut parts = Vec::new();
        if !cmds.is_empty() {
            parts.push(format!("cmd={}", cmds.join("|")));
        }
        if self.expired {
            parts.push("expired".to_string());
        }
        if self.gave_up {
            parts.push("gave-up".to_string());
        }
        if self.delayed {
            parts.push("delayed".to_string());
        }
        match parts.is_empty() {
            true => f.write_str("-"),
            false => f.write_str(&parts.join(",")),
        }
    }
}

/// The command a reply answered, read from the bounce's own words
/// ([`command_in`](super::reply_text::command_in)).
pub fn infer_command(diagnostic: &str) -> Option<Command> {
    super::reply_text::command_in(diagnostic).and_then(Command::parse)
}

/// One built-in rule: regex (PowerMTA syntax, case-insensitive), category, condition and source.
#[derive(Debug, Clone, Copy)]
pub struct DefaultRule {
    /// The regex as it would be written between slashes in the config.
    pub regex: &'static str,
    /// The category assigned.
    pub category: Category,
    /// The condition on the command answered and on expiry.
    pub when: When,
    /// Where the matched wording comes from (ISP documentation, RFC, sisimai's phrase lists).
    pub source: &'static str,
    /// Its 1-based line in `rules.tsv`.
    pub line: usize,
}

/// The built-in rules in table order (the first matching rule wins).
pub static DEFAULT_RULES: LazyLock<Vec<DefaultRule>> =
    LazyLock::new(|| parse_rules(RULES_TSV).unwrap_or_default());

/// Parses a rules table: `category<TAB>when<TAB>regex<TAB>source`, `#` comments and blank lines
/// skipped. Every regex must compile (case-insensitive).
pub fn parse_rules(text: &'static str) -> Result<Vec<DefaultRule>, ClassifyError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&'static str> = line.split('\t').collect();
        let bad = |why: String| ClassifyError::BadRegex(format!("rules.tsv line {n}: {why}"));
        let [category, when, regex, source] = cols[..] else {
            return Err(bad(format!("{} columns, want 4", cols.len())));
        };
        let category: Category = category.parse()?;
        let when = When::parse(when).map_err(bad)?;
        regex::RegexBuilder::new(regex)
            .case_insensitive(true)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        if source.trim().len() < 10 {
            return Err(bad("no source".into()));
        }
        out.push(DefaultRule {
            regex,
            category,
            when,
            source,
            line: n,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row of the table parses, compiles and names its source.
    #[test]
    fn every_row_parses_and_compiles() {
        let rules = parse_rules(RULES_TSV).expect("rules.tsv parses");
        let rows = RULES_TSV
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(rules.len(), rows);
        assert_eq!(DEFAULT_RULES.len(), rows);
        assert!(rows > 50);
    }

    #[test]
    fn commands_read_from_the_text() {
        let cases = [
            (
                "host x[192.0.2.1] said: 550 no (in reply to RCPT TO command)",
                Some(Command::Rcpt),
            ),
            (
                "said: 554 no (in reply to end of DATA command)",
                Some(Command::Data),
            ),
            (
                "SMTP error from remote mail server after MAIL FROM:<a@b>: 553 no",
                Some(Command::Mail),
            ),
            (
                "SMTP error from remote mail server after initial connection: 554",
                Some(Command::Conn),
            ),
            (
                "Connected to 192.0.2.1 but sender was rejected.",
                Some(Command::Mail),
            ),
            (
                "Connected to 192.0.2.1 but my name was rejected.",
                Some(Command::Helo),
            ),
            (
                "host x refused to talk to me: 421 busy",
                Some(Command::Conn),
            ),
            ("550 5.1.1 user unknown; call after data review", None),
        ];
        for (text, want) in cases {
            assert_eq!(infer_command(text), want, "{text}");
        }
        assert_eq!(
            When::parse("cmd=RCPT|EHLO,expired").map(|w| w.to_string()),
            Ok("cmd=HELO|RCPT,expired".into())
        );
    }

    #[test]
    fn bad_rows_are_errors() {
        assert!(parse_rules("bad-mailbox\t-\t(unclosed\tsome source here").is_err());
        assert!(parse_rules("nonsense\t-\tx\tsome source here").is_err());
        assert!(parse_rules("bad-mailbox\tcmd=FOO\tx\tsome source here").is_err());
        assert!(parse_rules("bad-mailbox\t-\tx").is_err());
        let r = parse_rules("# c\n\nbad-mailbox\tcmd=RCPT|EHLO,expired\tx\tsome source here")
            .expect("parses");
        assert_eq!(r[0].line, 3);
        assert_eq!(
            r[0].when,
            When {
                commands: Command::Rcpt.bit() | Command::Helo.bit(),
                expired: true,
                gave_up: false,
                delayed: false,
            }
        );
        let rcpt = |expired| Situation {
            command: Command::Rcpt.bit(),
            expired,
            gave_up: true,
            delayed: false,
        };
        assert!(r[0].when.holds(rcpt(true)));
        assert!(!r[0].when.holds(rcpt(false)));
        assert!(!r[0].when.holds(Situation {
            command: 0,
            ..rcpt(true)
        }));
    }
}
