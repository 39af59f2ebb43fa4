//! The one typed accounting record that feeds every writer, its PowerMTA column names, and the
//! field selection (`records`, `record-fields`) of an `<acct-file>`.

use serde::Serialize;
use std::borrow::Cow;
use std::fmt;

/// Accounting columns known to PowerMTA 5 (defined with the config, which checks `record-fields`).
pub use crate::config::model::ACCT_FIELDS as ALL_FIELDS;

/// Accounting record types (reference part A, "Record types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum RecordType {
    /// Delivered.
    #[serde(rename = "d")]
    Delivered,
    /// Locally generated (synchronous) bounce, including expiry.
    #[serde(rename = "b")]
    Bounced,
    /// Per-recipient transient error.
    #[serde(rename = "t")]
    Transient,
    /// Queue-wide transient error.
    #[serde(rename = "tq")]
    TransientQueue,
    /// Received.
    #[serde(rename = "r")]
    Received,
    /// Feedback-loop report.
    #[serde(rename = "f")]
    Feedback,
    /// Remote (asynchronous) bounce.
    #[serde(rename = "rb")]
    RemoteBounce,
    /// Remote status.
    #[serde(rename = "rs")]
    RemoteStatus,
}

impl RecordType {
    /// All types in PowerMTA's order.
    pub const ALL: [RecordType; 8] = [
        RecordType::Delivered,
        RecordType::Bounced,
        RecordType::Transient,
        RecordType::TransientQueue,
        RecordType::Received,
        RecordType::Feedback,
        RecordType::RemoteBounce,
        RecordType::RemoteStatus,
    ];

    /// The code written in the `type` column.
    pub fn code(self) -> &'static str {
        match self {
            RecordType::Delivered => "d",
            RecordType::Bounced => "b",
            RecordType::Transient => "t",
            RecordType::TransientQueue => "tq",
            RecordType::Received => "r",
            RecordType::Feedback => "f",
            RecordType::RemoteBounce => "rb",
            RecordType::RemoteStatus => "rs",
        }
    }

    /// Parses a code (`d`, `b`, ...).
    pub fn from_code(s: &str) -> Option<RecordType> {
        RecordType::ALL.into_iter().find(|t| t.code() == s)
    }

    /// The default columns of this type, in order. d/b/t/tq share PowerMTA 5's delivery columns
    /// (reference part A, "d/b fields"); `r` keeps the reception-side subset; `f`, `rb` and `rs` add
    /// the feedback/remote-bounce columns. The per-type lists for t, tq, f, rb and rs are not
    /// documented publicly (reference: "unconfirmed"): these are mtasim's choice.
    pub fn default_fields(self) -> &'static [&'static str] {
        const DELIVERY: &[&str] = &[
            "type",
            "timeLogged",
            "timeQueued",
            "timeFirstAttempt",
            "totalSecondsQueued",
            "orig",
            "rcpt",
            "orcpt",
            "dsnAction",
            "dsnStatus",
            "dsnDiag",
            "dsnMta",
            "bounceCat",
            "srcType",
            "srcMta",
            "dlvType",
            "dlvSourceIp",
            "dlvDestinationIp",
            "dlvEsmtpAvailable",
            "dlvSize",
            "vmta",
            "jobId",
            "envId",
            "queue",
            "vmtaPool",
        ];
        const RECEIVED: &[&str] = &[
            "type",
            "timeLogged",
            "orig",
            "rcpt",
            "orcpt",
            "srcType",
            "srcMta",
            "rcvSourceIp",
            "dlvSize",
            "vmta",
            "jobId",
            "envId",
        ];
        const REMOTE: &[&str] = &[
            "type",
            "timeLogged",
            "orig",
            "rcpt",
            "dsnAction",
            "dsnStatus",
            "dsnDiag",
            "dsnMta",
            "bounceCat",
            "vmta",
            "jobId",
            "envId",
            "feedbackType",
            "format",
            "userAgent",
            "reportingMta",
            "reportedDomain",
            "repSourceIp",
            "rcvSourceIp",
            "dsnReportingMta",
        ];
        match self {
            RecordType::Delivered
            | RecordType::Bounced
            | RecordType::Transient
            | RecordType::TransientQueue => DELIVERY,
            RecordType::Received => RECEIVED,
            RecordType::Feedback | RecordType::RemoteBounce | RecordType::RemoteStatus => REMOTE,
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Spent records kept for reuse (their strings keep their buffers): a sink that is done with the
/// records it was handed gives them back, and the engine builds its next ones from them. Records
/// are reset as they come back, on the thread that gives them back (a simulation's record thread,
/// not its busy engine thread).
#[derive(Debug, Default)]
// Boxed on purpose: records move between the engine and its sinks as boxes (a record is large),
// and a pool of unboxed ones would copy each record in and out.
#[allow(clippy::vec_box)]
pub struct RecordPool(std::sync::Mutex<Vec<Box<Record>>>);

/// The most spent records a pool keeps.
const POOL_MAX: usize = 8192;

impl RecordPool {
    /// A record as [`Record::new`] makes it, from a spent one when there is one (boxed: a
    /// record is large, and it moves from builder to sinks and back).
    pub fn take(&self, ty: RecordType, time_logged: i64) -> Box<Record> {
        match self.0.lock().ok().and_then(|mut v| v.pop()) {
            Some(mut r) => {
                // Reset when given back: only what `renew` was given is left to set.
                r.ty = Some(ty);
                r.time_logged = time_logged;
                r
            }
            None => Box::new(Record::new(ty, time_logged)),
        }
    }

    /// Takes one spent record back (dropped if the pool is full).
    pub fn put(&self, mut spent: Box<Record>) {
        spent.renew(RecordType::Received, 0);
        if let Ok(mut v) = self.0.lock() {
            if v.len() < POOL_MAX {
                v.push(spent);
            }
        }
    }

    /// Takes spent records back (all of `spent`, which is left empty; past the pool's size they
    /// are dropped). They are reset here, outside the pool's lock.
    pub fn give_back(&self, spent: &mut Vec<Box<Record>>) {
        let room = self
            .0
            .lock()
            .map_or(0, |v| POOL_MAX.saturating_sub(v.len()));
        spent.truncate(room);
        for r in spent.iter_mut() {
            r.renew(RecordType::Received, 0);
        }
        if let Ok(mut v) = self.0.lock() {
            spent.truncate(POOL_MAX.saturating_sub(v.len()));
            v.append(spent);
        }
        spent.clear();
    }
}

/// One accounting event. Times are Unix milliseconds (the clock seam supplies them, so simulated
/// runs are deterministic). Empty strings are written as empty columns.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Record type; `None` only in `Default`.
    #[serde(rename = "type")]
    pub ty: Option<RecordType>,
    /// When the record was written.
    pub time_logged: i64,
    /// When the message was accepted.
    pub time_queued: Option<i64>,
    /// First delivery attempt.
    pub time_first_attempt: Option<i64>,
    /// Envelope sender.
    pub orig: String,
    /// Recipient.
    pub rcpt: String,
    /// ORCPT given at reception.
    pub orcpt: String,
    /// DSN action: delivered, failed, delayed, relayed.
    pub dsn_action: Cow<'static, str>,
    /// Enhanced status, e.g. `5.1.1`.
    pub dsn_status: String,
    /// Diagnostic, e.g. `smtp;550 5.1.1 user unknown`.
    pub dsn_diag: String,
    /// Remote MTA, e.g. `dns;gmail-smtp-in.l.google.com (142.250.1.26)`.
    pub dsn_mta: String,
    /// Bounce category.
    pub bounce_cat: String,
    /// How the message came in: `smtp`, `pickup`, `api`.
    pub src_type: Cow<'static, str>,
    /// The client that sent it in: `name (ip)`.
    pub src_mta: String,
    /// Delivery type: `smtp`, ...
    pub dlv_type: Cow<'static, str>,
    /// Source IP used for delivery.
    pub dlv_source_ip: String,
    /// Destination IP delivered to.
    pub dlv_destination_ip: String,
    /// ESMTP extensions the remote offered.
    pub dlv_esmtp_available: String,
    /// Message size in bytes.
    pub dlv_size: Option<u64>,
    /// vMTA name.
    pub vmta: String,
    /// Job id.
    pub job_id: String,
    /// Envelope id (ENVID).
    pub env_id: String,
    /// Queue name (`domain/vmta`).
    pub queue: String,
    /// vMTA pool name.
    pub vmta_pool: String,
    /// Feedback type of an ARF report (`abuse` ...).
    pub feedback_type: String,
    /// Report format (`arf`, `jmrp`, DSN format ...).
    pub format: String,
    /// ARF User-Agent.
    pub user_agent: String,
    /// ARF Reporting-MTA.
    pub reporting_mta: String,
    /// ARF Reported-Domain.
    pub reported_domain: String,
    /// ARF Source-IP (the IP the reported message came from).
    pub rep_source_ip: String,
    /// IP the report or message was received from.
    pub rcv_source_ip: String,
    /// Reporting-MTA of a remote DSN.
    pub dsn_reporting_mta: String,
    /// Message headers for `header_NAME` columns (name, value), as found in the message.
    pub headers: Vec<(String, String)>,
}

/// Formats Unix milliseconds as PowerMTA's ISO-style time `YYYY-MM-DD HH:MM:SS+0000` (UTC).
pub fn iso_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return format!(
            "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}+0000",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
    }
    // Digits written directly: this runs up to three times per accounting record.
    let mut b = *b"0000-00-00 00:00:00+0000";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for k in (at..at + width).rev() {
            b[k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y);
    put(5, 2, i64::from(m));
    put(8, 2, i64::from(d));
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    // ASCII digits and separators only.
    String::from_utf8(b.to_vec()).unwrap_or_default()
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl Record {
    /// A record of type `ty` logged at `time_logged` (Unix ms).
    pub fn new(ty: RecordType, time_logged: i64) -> Record {
        Record {
            ty: Some(ty),
            time_logged,
            ..Record::default()
        }
    }

    /// Makes this record what [`Record::new`] makes, keeping its strings' buffers: a record built
    /// from a spent one (see [`RecordPool`]) then allocates only for values longer than before.
    pub fn renew(&mut self, ty: RecordType, time_logged: i64) {
        // Every field by name: a new field does not compile until it is reset here too. Cleared in
        // place: rebuilding the record as a struct literal made a whole simulated run 3-4% slower.
        let Record {
            ty: ty_,
            time_logged: time_logged_,
            time_queued,
            time_first_attempt,
            dlv_size,
            orig,
            rcpt,
            orcpt,
            dsn_status,
            dsn_diag,
            dsn_mta,
            bounce_cat,
            src_mta,
            dlv_source_ip,
            dlv_destination_ip,
            dlv_esmtp_available,
            vmta,
            job_id,
            env_id,
            queue,
            vmta_pool,
            feedback_type,
            format,
            user_agent,
            reporting_mta,
            reported_domain,
            rep_source_ip,
            rcv_source_ip,
            dsn_reporting_mta,
            dsn_action,
            src_type,
            dlv_type,
            headers,
        } = self;
        *ty_ = Some(ty);
        *time_logged_ = time_logged;
        *time_queued = None;
        *time_first_attempt = None;
        *dlv_size = None;
        for s in [
            orig,
            rcpt,
            orcpt,
            dsn_status,
            dsn_diag,
            dsn_mta,
            bounce_cat,
            src_mta,
            dlv_source_ip,
            dlv_destination_ip,
            dlv_esmtp_available,
            vmta,
            job_id,
            env_id,
            queue,
            vmta_pool,
            feedback_type,
            format,
            user_agent,
            reporting_mta,
            reported_domain,
            rep_source_ip,
            rcv_source_ip,
            dsn_reporting_mta,
        ] {
            s.clear();
        }
        *dsn_action = Cow::Borrowed("");
        *src_type = Cow::Borrowed("");
        *dlv_type = Cow::Borrowed("");
        headers.clear();
    }

    /// The value of column `name` (`iso` picks ISO times over Unix seconds).
    pub fn field(&self, name: &str, iso: bool) -> Cow<'_, str> {
        self.col(&Col::parse(name), iso)
    }

    /// The value of a resolved column.
    pub fn col(&self, col: &Col, iso: bool) -> Cow<'_, str> {
        let time = |t: Option<i64>| -> Cow<'_, str> {
            match t {
                Some(ms) if iso => Cow::Owned(iso_time(ms)),
                Some(ms) => Cow::Owned(ms.div_euclid(1000).to_string()),
                None => Cow::Borrowed(""),
            }
        };
        match col {
            Col::Type => Cow::Borrowed(self.ty.map_or("", RecordType::code)),
            Col::TimeLogged => time(Some(self.time_logged)),
            Col::TimeQueued => time(self.time_queued),
            Col::TimeFirstAttempt => time(self.time_first_attempt),
            Col::TotalSecondsQueued => match self.time_queued {
                Some(q) => Cow::Owned(((self.time_logged - q).max(0) / 1000).to_string()),
                None => Cow::Borrowed(""),
            },
            Col::Orig => Cow::Borrowed(&self.orig),
            Col::Rcpt => Cow::Borrowed(&self.rcpt),
            Col::Orcpt => Cow::Borrowed(&self.orcpt),
            Col::DsnAction => Cow::Borrowed(&self.dsn_action),
            Col::DsnStatus => Cow::Borrowed(&self.dsn_status),
            Col::DsnDiag => Cow::Borrowed(&self.dsn_diag),
            Col::DsnMta => Cow::Borrowed(&self.dsn_mta),
            Col::BounceCat => Cow::Borrowed(&self.bounce_cat),
            Col::SrcType => Cow::Borrowed(&self.src_type),
            Col::SrcMta => Cow::Borrowed(&self.src_mta),
            Col::DlvType => Cow::Borrowed(&self.dlv_type),
            Col::DlvSourceIp => Cow::Borrowed(&self.dlv_source_ip),
            Col::DlvDestinationIp => Cow::Borrowed(&self.dlv_destination_ip),
            Col::DlvEsmtpAvailable => Cow::Borrowed(&self.dlv_esmtp_available),
            Col::DlvSize => self
                .dlv_size
                .map_or(Cow::Borrowed(""), |n| Cow::Owned(n.to_string())),
            Col::Vmta => Cow::Borrowed(&self.vmta),
            Col::JobId => Cow::Borrowed(&self.job_id),
            Col::EnvId => Cow::Borrowed(&self.env_id),
            Col::Queue => Cow::Borrowed(&self.queue),
            Col::VmtaPool => Cow::Borrowed(&self.vmta_pool),
            Col::FeedbackType => Cow::Borrowed(&self.feedback_type),
            Col::Format => Cow::Borrowed(&self.format),
            Col::UserAgent => Cow::Borrowed(&self.user_agent),
            Col::ReportingMta => Cow::Borrowed(&self.reporting_mta),
            Col::ReportedDomain => Cow::Borrowed(&self.reported_domain),
            Col::RepSourceIp => Cow::Borrowed(&self.rep_source_ip),
            Col::RcvSourceIp => Cow::Borrowed(&self.rcv_source_ip),
            Col::DsnReportingMta => Cow::Borrowed(&self.dsn_reporting_mta),
            Col::Header(h) => self
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(h))
                .map_or(Cow::Borrowed(""), |(_, v)| Cow::Borrowed(v.as_str())),
            Col::Unknown => Cow::Borrowed(""),
        }
    }
}

/// An accounting column, resolved from its name once per file rather than per record.
#[derive(Debug, Clone, PartialEq)]
pub enum Col {
    /// `type`.
    Type,
    /// `timeLogged`.
    TimeLogged,
    /// `timeQueued`.
    TimeQueued,
    /// `timeFirstAttempt`.
    TimeFirstAttempt,
    /// `totalSecondsQueued`.
    TotalSecondsQueued,
    /// `orig`.
    Orig,
    /// `rcpt`.
    Rcpt,
    /// `orcpt`.
    Orcpt,
    /// `dsnAction`.
    DsnAction,
    /// `dsnStatus`.
    DsnStatus,
    /// `dsnDiag`.
    DsnDiag,
    /// `dsnMta`.
    DsnMta,
    /// `bounceCat`.
    BounceCat,
    /// `srcType`.
    SrcType,
    /// `srcMta`.
    SrcMta,
    /// `dlvType`.
    DlvType,
    /// `dlvSourceIp`.
    DlvSourceIp,
    /// `dlvDestinationIp`.
    DlvDestinationIp,
    /// `dlvEsmtpAvailable`.
    DlvEsmtpAvailable,
    /// `dlvSize`.
    DlvSize,
    /// `vmta`.
    Vmta,
    /// `jobId`.
    JobId,
    /// `envId`.
    EnvId,
    /// `queue`.
    Queue,
    /// `vmtaPool`.
    VmtaPool,
    /// `feedbackType`.
    FeedbackType,
    /// `format`.
    Format,
    /// `userAgent`.
    UserAgent,
    /// `reportingMta`.
    ReportingMta,
    /// `reportedDomain`.
    ReportedDomain,
    /// `repSourceIp`.
    RepSourceIp,
    /// `rcvSourceIp`.
    RcvSourceIp,
    /// `dsnReportingMta`.
    DsnReportingMta,
    /// `header_X`: the first header field X of the message.
    Header(String),
    /// A name no record has (written empty).
    Unknown,
}

impl Col {
    /// The column called `name`.
    pub fn parse(name: &str) -> Col {
        match name {
            "type" => Col::Type,
            "timeLogged" => Col::TimeLogged,
            "timeQueued" => Col::TimeQueued,
            "timeFirstAttempt" => Col::TimeFirstAttempt,
            "totalSecondsQueued" => Col::TotalSecondsQueued,
            "orig" => Col::Orig,
            "rcpt" => Col::Rcpt,
            "orcpt" => Col::Orcpt,
            "dsnAction" => Col::DsnAction,
            "dsnStatus" => Col::DsnStatus,
            "dsnDiag" => Col::DsnDiag,
            "dsnMta" => Col::DsnMta,
            "bounceCat" => Col::BounceCat,
            "srcType" => Col::SrcType,
            "srcMta" => Col::SrcMta,
            "dlvType" => Col::DlvType,
            "dlvSourceIp" => Col::DlvSourceIp,
            "dlvDestinationIp" => Col::DlvDestinationIp,
            "dlvEsmtpAvailable" => Col::DlvEsmtpAvailable,
            "dlvSize" => Col::DlvSize,
            "vmta" => Col::Vmta,
            "jobId" => Col::JobId,
            "envId" => Col::EnvId,
            "queue" => Col::Queue,
            "vmtaPool" => Col::VmtaPool,
            "feedbackType" => Col::FeedbackType,
            "format" => Col::Format,
            "userAgent" => Col::UserAgent,
            "reportingMta" => Col::ReportingMta,
            "reportedDomain" => Col::ReportedDomain,
            "repSourceIp" => Col::RepSourceIp,
            "rcvSourceIp" => Col::RcvSourceIp,
            "dsnReportingMta" => Col::DsnReportingMta,
            other => match other.strip_prefix("header_") {
                Some(h) => Col::Header(h.to_string()),
                None => Col::Unknown,
            },
        }
    }
}

/// Which columns an `<acct-file>` writes for each record type.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSelection {
    /// Record types written, in the order the file declares them.
    pub types: Vec<RecordType>,
    /// Columns per type.
    pub fields: Vec<(RecordType, Vec<String>)>,
}

impl FieldSelection {
    /// Resolves `records` and `record-fields` (`TYPE *,!f,header_X`; `*` as TYPE applies to all) as
    /// the config model holds them.
    pub fn new(
        records: &[String],
        record_fields: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> FieldSelection {
        let types: Vec<RecordType> = records
            .iter()
            .filter_map(|r| RecordType::from_code(r))
            .collect();
        let fields = types
            .iter()
            .map(|t| {
                let spec = record_fields
                    .get(t.code())
                    .or_else(|| record_fields.get("*"));
                let cols = match spec {
                    None => t.default_fields().iter().map(|s| s.to_string()).collect(),
                    Some(spec) => {
                        let mut cols: Vec<String> = Vec::new();
                        for f in spec {
                            if f == "*" {
                                for d in t.default_fields() {
                                    if !cols.iter().any(|c| c == d) {
                                        cols.push(d.to_string());
                                    }
                                }
                            } else if let Some(x) = f.strip_prefix('!') {
                                cols.retain(|c| c != x);
                            } else if !cols.iter().any(|c| c == f) {
                                cols.push(f.clone());
                            }
                        }
                        if cols.first().map(String::as_str) != Some("type") {
                            cols.retain(|c| c != "type");
                            cols.insert(0, "type".into());
                        }
                        cols
                    }
                };
                (*t, cols)
            })
            .collect();
        FieldSelection { types, fields }
    }

    /// The header: `type` first, then the union of every type's columns in first-seen order.
    pub fn header(&self) -> Vec<String> {
        let mut out: Vec<String> = vec!["type".into()];
        for (_, cols) in &self.fields {
            for c in cols {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        out
    }

    /// True if the file takes records of this type.
    pub fn wants(&self, ty: RecordType) -> bool {
        self.types.contains(&ty)
    }

    /// The columns each record type fills under `header` (the others stay empty), resolved once
    /// for many lines.
    pub fn plan(&self, header: &[String]) -> LinePlan {
        LinePlan {
            width: header.len(),
            per_type: self
                .fields
                .iter()
                .map(|(t, cols)| {
                    let filled = header
                        .iter()
                        .enumerate()
                        .filter(|(_, h)| cols.iter().any(|c| c == *h))
                        .map(|(i, h)| (i, Col::parse(h)))
                        .collect();
                    (*t, filled)
                })
                .collect(),
        }
    }
}

/// What [`FieldSelection::plan`] resolves: per record type, the header positions it fills and
/// with which column.
#[derive(Debug, Clone)]
pub struct LinePlan {
    width: usize,
    per_type: Vec<(RecordType, Vec<(usize, Col)>)>,
}

impl LinePlan {
    /// The CSV line (with a `\n` ending) for `rec`.
    pub fn line(&self, rec: &Record, iso: bool) -> String {
        let Some(ty) = rec.ty else {
            return String::new();
        };
        let filled = self
            .per_type
            .iter()
            .find(|(t, _)| *t == ty)
            .map_or(&[][..], |(_, c)| c.as_slice());
        let mut out = String::with_capacity(256);
        let mut next = filled.iter().peekable();
        for i in 0..self.width {
            if i > 0 {
                out.push(',');
            }
            if let Some((_, col)) = next.next_if(|(at, _)| *at == i) {
                push_csv(&mut out, &rec.col(col, iso));
            }
        }
        out.push('\n');
        out
    }
}

/// Appends one RFC 4180 field: quoted when it holds a comma, quote, CR or LF.
pub fn push_csv(out: &mut String, v: &str) {
    let b = v.as_bytes();
    if memchr::memchr3(b',', b'"', b'\n', b).is_some() || memchr::memchr(b'\r', b).is_some() {
        out.push('"');
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A record built from a spent one is the record `Record::new` makes, whatever the spent one
    /// held, and keeps its buffers; the pool keeps at most its size.
    #[test]
    fn a_renewed_record_is_a_new_one() {
        let mut full = Record::new(RecordType::Bounced, 5);
        let text = |s: &str| s.repeat(3);
        full.time_queued = Some(1);
        full.time_first_attempt = Some(2);
        full.dlv_size = Some(3);
        full.dsn_action = "failed".into();
        full.src_type = "smtp".into();
        full.dlv_type = "smtp".into();
        full.headers.push(("Message-ID".into(), "<x@y>".into()));
        for s in [
            &mut full.orig,
            &mut full.rcpt,
            &mut full.orcpt,
            &mut full.dsn_status,
            &mut full.dsn_diag,
            &mut full.dsn_mta,
            &mut full.bounce_cat,
            &mut full.src_mta,
            &mut full.dlv_source_ip,
            &mut full.dlv_destination_ip,
            &mut full.dlv_esmtp_available,
            &mut full.vmta,
            &mut full.job_id,
            &mut full.env_id,
            &mut full.queue,
            &mut full.vmta_pool,
            &mut full.feedback_type,
            &mut full.format,
            &mut full.user_agent,
            &mut full.reporting_mta,
            &mut full.reported_domain,
            &mut full.rep_source_ip,
            &mut full.rcv_source_ip,
            &mut full.dsn_reporting_mta,
        ] {
            *s = text("value");
        }
        let orig_buffer = full.orig.as_ptr();
        let pool = RecordPool::default();
        pool.give_back(&mut vec![Box::new(full)]);
        let r = pool.take(RecordType::Delivered, 9);
        assert_eq!(*r, Record::new(RecordType::Delivered, 9));
        assert_eq!(r.orig.as_ptr(), orig_buffer, "the buffer is kept");
        assert_eq!(
            *pool.take(RecordType::Delivered, 9),
            Record::new(RecordType::Delivered, 9)
        );
        let mut many = vec![Box::default(); POOL_MAX + 10];
        pool.give_back(&mut many);
        assert!(many.is_empty());
        assert_eq!(pool.0.lock().map(|v| v.len()).ok(), Some(POOL_MAX));
        pool.put(Box::default());
        assert_eq!(pool.0.lock().map(|v| v.len()).ok(), Some(POOL_MAX));
        // One put back by itself is reset too.
        let pool = RecordPool::default();
        let mut dirty = Record::new(RecordType::Bounced, 3);
        dirty.rcpt = text("r");
        dirty.time_queued = Some(2);
        dirty.headers.push(("Message-ID".into(), "<m@x>".into()));
        pool.put(Box::new(dirty));
        assert_eq!(
            *pool.take(RecordType::Delivered, 9),
            Record::new(RecordType::Delivered, 9)
        );
    }

    #[test]
    fn iso_times() {
        assert_eq!(iso_time(0), "1970-01-01 00:00:00+0000");
        assert_eq!(iso_time(1_178_807_903_000), "2007-05-10 14:38:23+0000");
        assert_eq!(iso_time(951_782_400_000), "2000-02-29 00:00:00+0000");
        assert_eq!(iso_time(1_795_474_800_999), "2026-11-23 23:00:00+0000");
    }

    #[test]
    fn selection_header_and_lines() {
        let mut rf = BTreeMap::new();
        rf.insert(
            "d".to_string(),
            vec![
                "*".to_string(),
                "!dsnMta".to_string(),
                "header_X-Job".to_string(),
            ],
        );
        rf.insert(
            "b".to_string(),
            vec!["rcpt".to_string(), "bounceCat".to_string()],
        );
        let sel = FieldSelection::new(&["d".into(), "b".into()], &rf);
        let header = sel.header();
        assert_eq!(header[0], "type");
        assert!(!header.contains(&"dsnMta".to_string()));
        assert_eq!(header.last().map(String::as_str), Some("header_X-Job"));
        let mut d = Record::new(RecordType::Delivered, 1_178_807_903_000);
        d.orig = "orig@port25.com".into();
        d.rcpt = "user1@domain.com".into();
        d.dsn_diag = "smtp;250 2.0.0 OK, \"queued\"".into();
        d.headers.push(("x-job".into(), "j1".into()));
        let line = sel.plan(&header).line(&d, false);
        assert!(
            line.starts_with("d,1178807903,,,,orig@port25.com,user1@domain.com,"),
            "{line}"
        );
        assert!(
            line.contains(",\"smtp;250 2.0.0 OK, \"\"queued\"\"\","),
            "{line}"
        );
        assert!(line.ends_with(",j1\n"), "{line}");
        let mut b = Record::new(RecordType::Bounced, 0);
        b.rcpt = "user3@domain.com".into();
        b.orig = "not-selected@x".into();
        b.bounce_cat = "policy-related".into();
        let line = sel.plan(&header).line(&b, true);
        assert_eq!(line.split(',').count(), header.len());
        assert!(
            line.contains("user3@domain.com")
                && line.contains("policy-related")
                && !line.contains("not-selected"),
            "{line}"
        );
        assert!(!sel.wants(RecordType::Received));
    }
}
