//! PowerMTA value forms: booleans, time intervals, rates, sizes, regexes; parsed, typed and printed
//! back in a canonical form that parses to the same value.

use serde::Serialize;
use std::fmt;
use std::time::Duration;

/// The shape of a directive's value; decides how the text is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `yes|no|true|false`.
    Bool,
    /// A non-negative integer.
    Int,
    /// An integer or `unlimited`.
    IntOrUnlimited,
    /// A time interval such as `1w2d12h` or `300s`.
    Interval,
    /// A time interval or `never`.
    IntervalOrNever,
    /// A comma-separated list of intervals (`retry-after`).
    Intervals,
    /// `unlimited`, `0` or `N/[M]unit` (`1000/h`, `10/5m`).
    Rate,
    /// A size such as `50M`.
    Size,
    /// A size or `unlimited`.
    SizeOrUnlimited,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A boolean or one of a fixed set of words (`dkim-sign if-x-dkim-options-present`).
    BoolOr(&'static [&'static str]),
    /// Free text, kept as written (quotes removed).
    Text,
}

/// A typed value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(u64),
    /// `unlimited`.
    Unlimited,
    /// `never`.
    Never,
    /// A time interval.
    Interval(#[serde(serialize_with = "ser_duration")] Duration),
    /// A list of time intervals.
    Intervals(#[serde(serialize_with = "ser_durations")] Vec<Duration>),
    /// A rate.
    Rate(Rate),
    /// A size in bytes.
    Size(u64),
    /// A word from a fixed set, or free text.
    Text(String),
    /// `""`: the inherited value is cleared.
    Cleared,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_interval(*d))
}

fn ser_durations<S: serde::Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_intervals(d))
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(true) => f.write_str("yes"),
            Value::Bool(false) => f.write_str("no"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Unlimited => f.write_str("unlimited"),
            Value::Never => f.write_str("never"),
            Value::Interval(d) => f.write_str(&format_interval(*d)),
            Value::Intervals(l) => f.write_str(&format_intervals(l)),
            Value::Rate(r) => write!(f, "{r}"),
            Value::Size(n) => f.write_str(&format_size(*n)),
            Value::Text(t) => f.write_str(t),
            Value::Cleared => f.write_str("\"\""),
        }
    }
}

impl Kind {
    /// Parses `text` as a value of this kind; the error is a one-line reason.
    pub fn parse(self, text: &str) -> Result<Value, String> {
        let t = text.trim();
        if t == "\"\"" {
            return Ok(Value::Cleared);
        }
        let t = super::syntax::unquote(t);
        if t.is_empty() {
            return Err("argument missing".into());
        }
        let lower = t.to_ascii_lowercase();
        match self {
            Kind::Bool => parse_bool(t).map(Value::Bool),
            Kind::Int => parse_int(t).map(Value::Int),
            Kind::IntOrUnlimited if lower == "unlimited" => Ok(Value::Unlimited),
            Kind::IntOrUnlimited => parse_int(t).map(Value::Int),
            Kind::Interval => parse_interval(t).map(Value::Interval),
            Kind::IntervalOrNever if lower == "never" => Ok(Value::Never),
            Kind::IntervalOrNever => parse_interval(t).map(Value::Interval),
            Kind::Intervals => parse_intervals(t).map(Value::Intervals),
            Kind::Rate => parse_rate(t).map(Value::Rate),
            Kind::Size => parse_size(t).map(Value::Size),
            Kind::SizeOrUnlimited if lower == "unlimited" => Ok(Value::Unlimited),
            Kind::SizeOrUnlimited => parse_size(t).map(Value::Size),
            Kind::Choice(words) => choice(words, &lower).map(Value::Text),
            Kind::BoolOr(words) => match parse_bool(t) {
                Ok(b) => Ok(Value::Bool(b)),
                Err(_) => choice(words, &lower)
                    .map(Value::Text)
                    .map_err(|_| format!("`{t}`: expected yes, no or {}", words.join(", "))),
            },
            Kind::Text => Ok(Value::Text(t.to_string())),
        }
    }
}

fn choice(words: &[&str], lower: &str) -> Result<String, String> {
    if words.contains(&lower) {
        Ok(lower.to_string())
    } else {
        Err(format!("expected one of: {}", words.join(", ")))
    }
}

/// `yes|no|true|false` (any case).
pub fn parse_bool(t: &str) -> Result<bool, String> {
    match t.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!(
            "`{t}` is not a boolean (expected yes, no, true or false)"
        )),
    }
}

/// A non-negative decimal integer.
pub fn parse_int(t: &str) -> Result<u64, String> {
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{t}` is not a non-negative integer"));
    }
    t.parse::<u64>().map_err(|_| format!("`{t}` is too large"))
}

const INTERVAL_UNITS: &[(char, u64)] = &[
    ('w', 604_800),
    ('d', 86_400),
    ('h', 3_600),
    ('m', 60),
    ('s', 1),
];

/// A time interval: units `w d h m s` in that order (`1w2d12h30m15s`, `300s`); a bare number is seconds.
pub fn parse_interval(t: &str) -> Result<Duration, String> {
    let err = || format!("`{t}` is not a time interval (examples: 300s, 10m, 1w2d12h)");
    if t.is_empty() {
        return Err(err());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return parse_int(t).map(Duration::from_secs);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut last_rank = None;
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let lc = c.to_ascii_lowercase();
        let rank = INTERVAL_UNITS
            .iter()
            .position(|(u, _)| *u == lc)
            .ok_or_else(err)?;
        if num.is_empty() || last_rank.is_some_and(|r| rank <= r) {
            return Err(err());
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        total = n
            .checked_mul(INTERVAL_UNITS[rank].1)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{t}` is too long an interval"))?;
        num.clear();
        last_rank = Some(rank);
    }
    if !num.is_empty() {
        return Err(err());
    }
    Ok(Duration::from_secs(total))
}

/// A comma-separated list of intervals, as `retry-after` takes.
pub fn parse_intervals(t: &str) -> Result<Vec<Duration>, String> {
    t.split(',')
        .map(|p| match p.trim() {
            "" => Err(format!(
                "`{t}` has an empty entry (write intervals separated by single commas)"
            )),
            x => parse_interval(x),
        })
        .collect()
}

/// Prints an interval in the largest units that add up exactly (`4d12h`, `90s` -> `1m30s`, `0s`).
pub fn format_interval(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (u, secs) in INTERVAL_UNITS {
        if s >= *secs {
            out.push_str(&format!("{}{u}", s / secs));
            s %= secs;
        }
    }
    out
}

/// Prints an interval list separated by commas.
pub fn format_intervals(l: &[Duration]) -> String {
    l.iter()
        .map(|d| format_interval(*d))
        .collect::<Vec<_>>()
        .join(",")
}

/// A rate: `count` per `per`; `None` is `unlimited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rate {
    /// Events allowed per period; `None` = unlimited.
    pub count: Option<u64>,
    /// The period.
    #[serde(serialize_with = "ser_duration")]
    pub per: Duration,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        count: None,
        per: Duration::from_secs(1),
    };

    /// Events per second, `None` when unlimited.
    pub fn per_second(&self) -> Option<f64> {
        self.count
            .map(|c| c as f64 / self.per.as_secs_f64().max(1e-9))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(c) = self.count else {
            return f.write_str("unlimited");
        };
        if c == 0 {
            return f.write_str("0");
        }
        let secs = self.per.as_secs();
        let (n, unit) = if secs.is_multiple_of(86_400) {
            (secs / 86_400, "d")
        } else if secs.is_multiple_of(3_600) {
            (secs / 3_600, "h")
        } else if secs.is_multiple_of(60) {
            (secs / 60, "m")
        } else {
            (secs, "s")
        };
        if n == 1 {
            write!(f, "{c}/{unit}")
        } else {
            write!(f, "{c}/{n}{unit}")
        }
    }
}

/// `unlimited`, `0` or `N/[M]{d|day|h|hr|hour|m|min|minute|s|sec|second}`.
pub fn parse_rate(t: &str) -> Result<Rate, String> {
    let err = || format!("`{t}` is not a rate (examples: unlimited, 1000/h, 10/5m)");
    let lower = t.to_ascii_lowercase();
    if lower == "unlimited" {
        return Ok(Rate::UNLIMITED);
    }
    if lower == "0" {
        return Ok(Rate {
            count: Some(0),
            per: Duration::from_secs(1),
        });
    }
    let (n, per) = lower.split_once('/').ok_or_else(err)?;
    let count = parse_int(n.trim()).map_err(|_| err())?;
    let per = per.trim();
    let digits = per.bytes().take_while(u8::is_ascii_digit).count();
    let mult = if digits == 0 {
        1
    } else {
        parse_int(&per[..digits]).map_err(|_| err())?
    };
    let unit = match &per[digits..] {
        "d" | "day" | "days" => 86_400,
        "h" | "hr" | "hour" | "hours" => 3_600,
        "m" | "min" | "minute" | "minutes" => 60,
        "s" | "sec" | "second" | "seconds" => 1,
        _ => return Err(err()),
    };
    if mult == 0 {
        return Err(format!("`{t}`: the period of a rate cannot be zero"));
    }
    let secs = mult.checked_mul(unit).ok_or_else(err)?;
    Ok(Rate {
        count: Some(count),
        per: Duration::from_secs(secs),
    })
}

const SIZE_UNITS: &[(char, u64)] = &[
    ('t', 1 << 40),
    ('g', 1 << 30),
    ('m', 1 << 20),
    ('k', 1 << 10),
    ('b', 1),
];

/// A size: `N{b|k|m|g|t}` in powers of 1024 (`50M`); a bare number is bytes.
pub fn parse_size(t: &str) -> Result<u64, String> {
    let err = || format!("`{t}` is not a size (examples: 512k, 50M, 2G)");
    let lower = t.to_ascii_lowercase();
    let digits = lower.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(err());
    }
    let n = parse_int(&lower[..digits]).map_err(|_| err())?;
    let unit = match &lower[digits..] {
        "" => 1,
        u => {
            let u = u.strip_suffix('b').filter(|x| !x.is_empty()).unwrap_or(u);
            let mut chars = u.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => SIZE_UNITS.iter().find(|(s, _)| *s == c).ok_or_else(err)?.1,
                _ => return Err(err()),
            }
        }
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("`{t}` is too large"))
}

/// Prints a size in the largest unit that divides it (`50M`, `1536K`, `7b`).
pub fn format_size(n: u64) -> String {
    if n == 0 {
        return "0".into();
    }
    for (u, mult) in SIZE_UNITS {
        if n.is_multiple_of(*mult) && *mult > 1 {
            return format!("{}{}", n / mult, u.to_ascii_uppercase());
        }
    }
    format!("{n}b")
}

/// A regex written `/…/` in the config, compiled with PowerMTA's case rule: case-insensitive unless
/// the pattern starts with `(?-i)`.
#[derive(Debug, Clone)]
pub struct Pattern {
    /// The pattern as written between the slashes.
    pub source: String,
    regex: fancy_regex::Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("/{}/", self.source))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.source)
    }
}

impl Pattern {
    /// Compiles the text between the slashes.
    pub fn new(source: &str) -> Result<Pattern, String> {
        let compiled = if source.starts_with("(?-i)") {
            source.to_string()
        } else {
            format!("(?i){source}")
        };
        let regex = fancy_regex::RegexBuilder::new(&compiled)
            .backtrack_limit(100_000)
            .build()
            .map_err(|e| format!("invalid regex /{source}/: {e}"))?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    /// The regex as compiled: the source with PowerMTA's case rule applied (`(?i)` in front unless
    /// it starts with `(?-i)`).
    pub fn compiled(&self) -> &str {
        self.regex.as_str()
    }

    /// True if the pattern matches somewhere in `text` (a pathological backtrack counts as no match).
    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text).unwrap_or(false)
    }
}

/// Splits `/regex/ rest` into the regex and what follows it. A `\/` inside stays part of the regex.
pub fn split_regex(t: &str) -> Result<(Pattern, &str), String> {
    let t = t.trim_start();
    let Some(body) = t.strip_prefix('/') else {
        return Err("expected a regex written /…/".into());
    };
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '/' if !escaped => {
                let pat = Pattern::new(&body[..i])?;
                return Ok((pat, body[i + 1..].trim()));
            }
            _ => escaped = false,
        }
    }
    Err("regex is not closed with `/` (write a literal `#` as \\x23: `#` starts a comment)".into())
}

/// Parses a listen address: `PORT` (on 127.0.0.1) or `IP:PORT` (`[IPv6]:PORT`), as
/// `http-mgmt-port` takes it.
pub fn parse_listen(text: &str) -> Result<std::net::SocketAddr, String> {
    let text = text.trim();
    if let Ok(p) = text.parse::<u16>() {
        return Ok(std::net::SocketAddr::new(
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            p,
        ));
    }
    text.parse::<std::net::SocketAddr>()
        .map_err(|_| format!("`{text}` is neither a port nor IP:PORT"))
}

/// What `suppress-after` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SuppressPolicy {
    /// Hard bounces suppress.
    pub hard_bounce: bool,
    /// Complaints suppress.
    pub complaint: bool,
}

impl SuppressPolicy {
    /// Parses `hard-bounce,complaint` (either, both, or `none`).
    pub fn parse(s: &str) -> Result<SuppressPolicy, String> {
        let mut p = SuppressPolicy::default();
        for w in s.split([',', ' ']).map(str::trim).filter(|w| !w.is_empty()) {
            match w {
                "hard-bounce" => p.hard_bounce = true,
                "complaint" => p.complaint = true,
                "none" => {}
                other => {
                    return Err(format!(
                        "`{other}`: expected hard-bounce, complaint or none"
                    ))
                }
            }
        }
        Ok(p)
    }

    /// True if anything is suppressed.
    pub fn any(&self) -> bool {
        self.hard_bounce || self.complaint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn booleans() {
        for (t, v) in [
            ("yes", true),
            ("TRUE", true),
            ("no", false),
            ("False", false),
        ] {
            assert_eq!(parse_bool(t), Ok(v));
        }
        assert!(parse_bool("on").is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("300s"), Ok(secs(300)));
        assert_eq!(
            parse_interval("1w2d12h"),
            Ok(secs(604_800 + 2 * 86_400 + 12 * 3600))
        );
        assert_eq!(parse_interval("4d12h"), Ok(secs(4 * 86_400 + 12 * 3600)));
        assert_eq!(parse_interval("10m"), Ok(secs(600)));
        assert_eq!(parse_interval("90"), Ok(secs(90)));
        assert_eq!(parse_interval("1H30M"), Ok(secs(5400)));
        for bad in ["", "m", "10x", "10m5h", "5s5s", "10m 5s", "-1s", "1.5h"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_intervals("1m, 5m,10m,1h"),
            Ok(vec![secs(60), secs(300), secs(600), secs(3600)])
        );
        assert!(parse_intervals("1m,,5m").is_err());
        assert_eq!(format_interval(secs(4 * 86_400 + 12 * 3600)), "4d12h");
        assert_eq!(format_interval(secs(90)), "1m30s");
    }

    #[test]
    fn rates() {
        assert_eq!(
            parse_rate("1000/h"),
            Ok(Rate {
                count: Some(1000),
                per: secs(3600)
            })
        );
        assert_eq!(
            parse_rate("10/5m"),
            Ok(Rate {
                count: Some(10),
                per: secs(300)
            })
        );
        assert_eq!(
            parse_rate("2500/min"),
            Ok(Rate {
                count: Some(2500),
                per: secs(60)
            })
        );
        assert_eq!(parse_rate("5/day").map(|r| r.per), Ok(secs(86_400)));
        assert_eq!(parse_rate("unlimited"), Ok(Rate::UNLIMITED));
        assert_eq!(parse_rate("0").map(|r| r.count), Ok(Some(0)));
        for bad in ["1000", "10/", "/h", "10/0m", "10/5x", "ten/h"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_rate("10/5m").map(|r| r.to_string()),
            Ok("10/5m".to_string())
        );
        assert_eq!(
            parse_rate("100/60s").map(|r| r.to_string()),
            Ok("100/m".to_string())
        );
        assert_eq!(
            parse_rate("1000/h").ok().and_then(|r| r.per_second()),
            Some(1000.0 / 3600.0)
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50M"), Ok(50 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2gb"), Ok(2 << 30));
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("7b"), Ok(7));
        for bad in ["M", "5X", "5 M", "1.5M", "5mm"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(250 << 20), "250M");
        assert_eq!(format_size(1536 << 10), "1536K");
    }

    #[test]
    fn regex_case_rules() {
        let (p, rest) = split_regex("/TSS04/ mode=backoff").unwrap_or_else(|e| panic!("{e}"));
        assert!(p.is_match("421 4.7.0 [tss04] deferred"));
        assert_eq!(rest, "mode=backoff");
        assert_eq!(p.compiled(), "(?i)TSS04");
        let (p, _) = split_regex(r"/(?-i)TSS04/ x").unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.is_match("[tss04]"));
        assert!(p.is_match("[TSS04]"));
        assert_eq!(p.compiled(), "(?-i)TSS04");
        let (p, rest) = split_regex(r"/a\/b/").unwrap_or_else(|e| panic!("{e}"));
        assert!(p.is_match("A/B"));
        assert_eq!(rest, "");
        assert!(split_regex("/unterminated").is_err());
        assert!(split_regex("/(/ x").is_err());
        assert!(split_regex("no-slash").is_err());
        let (p, _) = split_regex(r"/\x23 done/").unwrap_or_else(|e| panic!("{e}"));
        assert!(p.is_match("# done"));
    }

    #[test]
    fn kinds_and_clearing() {
        assert_eq!(Kind::Interval.parse("\"\""), Ok(Value::Cleared));
        assert_eq!(Kind::IntervalOrNever.parse("never"), Ok(Value::Never));
        assert_eq!(
            Kind::IntOrUnlimited.parse("Unlimited"),
            Ok(Value::Unlimited)
        );
        assert_eq!(
            Kind::BoolOr(&["if-x-dkim-options-present"]).parse("if-x-dkim-options-present"),
            Ok(Value::Text("if-x-dkim-options-present".into()))
        );
        assert!(Kind::Choice(&["smtp", "pipe"]).parse("ftp").is_err());
        assert_eq!(Kind::Int.parse(""), Err("argument missing".to_string()));
    }

    fn any_value() -> impl Strategy<Value = (Kind, Value)> {
        prop_oneof![
            any::<bool>().prop_map(|b| (Kind::Bool, Value::Bool(b))),
            (0u64..1 << 40).prop_map(|n| (Kind::Int, Value::Int(n))),
            (0u64..10_000_000)
                .prop_map(|n| (Kind::Interval, Value::Interval(Duration::from_secs(n)))),
            proptest::collection::vec(0u64..1_000_000, 1..6).prop_map(|v| (
                Kind::Intervals,
                Value::Intervals(v.into_iter().map(Duration::from_secs).collect())
            )),
            (1u64..1_000_000, 1u64..200_000).prop_map(|(c, p)| (
                Kind::Rate,
                Value::Rate(Rate {
                    count: Some(c),
                    per: Duration::from_secs(p)
                })
            )),
            (0u64..1 << 42).prop_map(|n| (Kind::Size, Value::Size(n))),
        ]
    }

    proptest! {
        #[test]
        fn values_round_trip((kind, v) in any_value()) {
            prop_assert_eq!(kind.parse(&v.to_string()), Ok(v));
        }

        #[test]
        fn value_parsers_never_panic(s in "\\PC{0,40}") {
            for k in [Kind::Bool, Kind::Int, Kind::Interval, Kind::Intervals, Kind::Rate, Kind::Size, Kind::IntervalOrNever] {
                let _ = k.parse(&s);
            }
            let _ = split_regex(&s);
        }
    }
}
