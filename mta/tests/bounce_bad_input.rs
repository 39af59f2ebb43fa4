//! Bad input never panics and always gets a clear note (issue 22): binary junk, invalid UTF-8,
//! NUL bytes, deeply nested MIME, messages around `MAX_BOUNCE_SIZE`, a DSN with 100,000
//! recipient blocks, 10 MB lines, truncated multipart boundaries; through `mta::bounce::parse`,
//! the classifier and `mta bounce classify`.
//!
//! Each case asserts a result: `Ok` with recipients or with a `reason` saying why there is none,
//! or a typed `ParseError`, within a time bound (generous in a debug build).

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mta::bounce::parse::MAX_BOUNCE_SIZE;
use mta::bounce::{parse, BounceReport, Classifier, ParseError};

fn classifier() -> &'static Classifier {
    static C: OnceLock<Classifier> = OnceLock::new();
    C.get_or_init(Classifier::default)
}

/// The time bound of a large case, a hang detector, not a speed test (the bench measures speed):
/// `release` seconds times five, twelve times that in a debug build (CI shares two cores).
fn bound(release_secs: u64) -> Duration {
    let secs = if cfg!(debug_assertions) {
        release_secs * 60
    } else {
        release_secs * 5
    };
    Duration::from_secs(secs)
}

/// Runs `f` on its own thread and gives its result, failing the test if it takes longer than
/// `limit` (a hang fails instead of stalling the run; the thread is left behind).
fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no result after {limit:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{what}: panicked after {:?}", t0.elapsed())
        }
    }
}

/// Parses `raw` within `limit` and checks that the result says something: recipients, a reason
/// for having none, or an error with a message. Returns the result.
fn parse_noted(what: &str, raw: &[u8], limit: Duration) -> Result<BounceReport, ParseError> {
    let owned = raw.to_vec();
    let res = within(what, limit, move || parse(&owned, classifier()));
    match &res {
        Ok(rep) => assert!(
            !rep.recipients.is_empty()
                || rep.reason.as_deref().is_some_and(|r| !r.trim().is_empty()),
            "{what}: Ok with neither a recipient nor a reason (format {:?})",
            rep.format
        ),
        Err(e) => assert!(!e.to_string().trim().is_empty(), "{what}: empty error text"),
    }
    res
}

/// [`parse_noted`] for its checks only.
fn noted(what: &str, raw: &[u8], limit: Duration) {
    let _ = parse_noted(what, raw, limit);
}

/// Like [`parse_noted`], and no recipient may be found.
fn parse_no_recipient(what: &str, raw: &[u8], limit: Duration) {
    if let Ok(rep) = parse_noted(what, raw, limit) {
        assert!(
            rep.recipients.is_empty(),
            "{what}: recipients found in junk: {:?}",
            rep.recipients
                .iter()
                .map(|r| &r.recipient)
                .take(5)
                .collect::<Vec<_>>()
        );
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn junk(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

const DSN_HEAD: &str = "From: MAILER-DAEMON@mx.example.net\r\n\
To: sender@example.org\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
Message-ID: <bounce-1@mx.example.net>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"BOUNDARY\"\r\n\
\r\n\
--BOUNDARY\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
This is the mail system at host mx.example.net.\r\n\
\r\n\
--BOUNDARY\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.example.net\r\n\
\r\n";

const RCPT_BLOCK: &str = "Final-Recipient: rfc822; user@example.com\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <user@example.com>: Recipient address rejected: User unknown\r\n\
\r\n";

const ORIGINAL_HEAD: &str = "--BOUNDARY\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
From: sender@example.org\r\n\
To: user@example.com\r\n\
Subject: hello\r\n\
Message-ID: <orig-1@example.org>\r\n\
X-Job-Id: job-7\r\n\
\r\n";

/// A DSN with the given recipient blocks and original message body.
fn dsn(blocks: &[u8], original_body: &[u8]) -> Vec<u8> {
    let mut m = DSN_HEAD.as_bytes().to_vec();
    m.extend_from_slice(blocks);
    m.extend_from_slice(ORIGINAL_HEAD.as_bytes());
    m.extend_from_slice(original_body);
    m.extend_from_slice(b"\r\n--BOUNDARY--\r\n");
    m
}

fn standard_dsn() -> Vec<u8> {
    dsn(RCPT_BLOCK.as_bytes(), b"Hello.\r\n")
}

#[test]
fn the_standard_dsn_of_these_tests_is_read() {
    let rep = parse_noted("standard", &standard_dsn(), bound(1)).expect("parses");
    assert_eq!(rep.recipients.len(), 1);
    assert_eq!(rep.recipients[0].recipient, "user@example.com");
    assert_eq!(rep.recipients[0].status, "5.1.1");
}

#[test]
fn binary_junk_gets_a_note() {
    for (i, len) in [0usize, 1, 2, 3, 17, 512, 4096, 65_536, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let b = junk(len, 0x9e37_79b9_7f4a_7c15 ^ i as u64);
        parse_no_recipient(&format!("junk {len} bytes"), &b, bound(2));
    }
    for b in [
        &b""[..],
        b"\r\n",
        b"\n\n\n",
        b":",
        b": \r\n\r\n",
        b"From:",
        b"\xff\xfe\xfd",
        b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--\r\n",
    ] {
        parse_no_recipient(&format!("{:?}", String::from_utf8_lossy(b)), b, bound(1));
    }
}

#[test]
fn junk_after_valid_headers_gets_a_note() {
    let mut m = b"From: a@example.org\r\nSubject: junk\r\n\r\n".to_vec();
    m.extend(junk(200_000, 7));
    parse_no_recipient("headers + junk body", &m, bound(2));
    let mut m = DSN_HEAD.as_bytes().to_vec();
    m.extend(junk(200_000, 8));
    noted("DSN head + junk", &m, bound(2));
}

#[test]
fn an_empty_message_is_not_a_message() {
    assert!(parse(b"", classifier()).is_err());
}

#[test]
fn invalid_utf8_in_headers_and_body() {
    // In the outer headers: the DSN is still read.
    let bad = standard_dsn();
    let text = String::from_utf8_lossy(&bad).into_owned();
    let mut m = text
        .replacen(
            "Subject: Undelivered Mail Returned to Sender",
            "Subject: Undelivered \u{0}Mail",
            1,
        )
        .into_bytes();
    let at = m
        .windows(8)
        .position(|w| w == b"Subject:")
        .expect("subject present")
        + 9;
    m.splice(at..at, b"\xff\xfe\xc3\x28\xe2\x82".iter().copied());
    let from = m
        .windows(5)
        .position(|w| w == b"From:")
        .expect("from present")
        + 6;
    m.splice(from..from, b"\x80\x81\xfe".iter().copied());
    let rep = parse_noted("invalid UTF-8 in headers", &m, bound(1)).expect("parses");
    assert_eq!(rep.recipients.len(), 1, "{rep:?}");

    // In the DSN fields: the recipient is still found, its diagnostic kept (lossily).
    let block = b"Final-Recipient: rfc822; user@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 \xff\xfe user \xc3\x28unknown \xe2\x82\r\n\r\n";
    let rep = parse_noted(
        "invalid UTF-8 in the DSN",
        &dsn(block, b"\xff\xfe\xfd body\r\n"),
        bound(1),
    )
    .expect("parses");
    assert_eq!(rep.recipients.len(), 1, "{rep:?}");
    assert_eq!(rep.recipients[0].recipient, "user@example.com");
    assert!(rep.recipients[0].diagnostic.contains("unknown"));

    // A text bounce whose body is Latin-1 declared as UTF-8, and one with no charset at all.
    for ct in [
        "text/plain; charset=utf-8",
        "text/plain",
        "text/plain; charset=x-unknown",
    ] {
        let mut m = format!("From: MAILER-DAEMON@mx.example.net\r\nSubject: Mail delivery failed\r\nMIME-Version: 1.0\r\nContent-Type: {ct}\r\n\r\nThis message was created automatically by mail delivery software.\r\n\r\nThe following address(es) failed:\r\n\r\n  user@example.com\r\n    SMTP error from remote mail server after RCPT TO:<user@example.com>:\r\n    550 5.1.1 ").into_bytes();
        m.extend_from_slice(b"Benutzer unbekannt \xfc\xe4\xf6 \xff\r\n");
        let rep = parse_noted(&format!("Latin-1 body as {ct}"), &m, bound(1)).expect("parses");
        assert_eq!(rep.recipients.len(), 1, "{ct}: {rep:?}");
        assert_eq!(rep.recipients[0].recipient, "user@example.com");
    }
}

#[test]
fn nul_bytes_anywhere() {
    let base = standard_dsn();
    // A NUL at every 7th position, one at a time, then all of them at once.
    for at in (0..base.len()).step_by(7) {
        let mut m = base.clone();
        m.insert(at, 0);
        noted(&format!("NUL at {at}"), &m, bound(1));
    }
    let all: Vec<u8> = base.iter().flat_map(|&b| [b, 0]).collect();
    noted("NUL after every byte", &all, bound(1));
    let nuls = vec![0u8; 1 << 20];
    parse_no_recipient("1 MB of NULs", &nuls, bound(2));
    let mut m = b"From: a@example.org\0\r\nSubject: \0\0\0\r\n\r\n".to_vec();
    m.extend(std::iter::repeat_n(0u8, 100_000));
    parse_no_recipient("NUL body", &m, bound(2));
}

/// `depth` levels of multipart, each with one text part before the next level.
fn nested_multipart(depth: usize) -> Vec<u8> {
    let mut m = String::from("From: MAILER-DAEMON@mx.example.net\r\nSubject: nested\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
    for i in 0..depth {
        m.push_str(&format!(
            "--b{i}\r\nContent-Type: text/plain\r\n\r\nlevel {i}\r\n--b{i}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n",
            i + 1
        ));
    }
    m.push_str(&format!(
        "--b{depth}\r\nContent-Type: text/plain\r\n\r\ninnermost\r\n"
    ));
    for i in (0..=depth).rev() {
        m.push_str(&format!("--b{i}--\r\n"));
    }
    m.into_bytes()
}

#[test]
fn ten_thousand_levels_of_multipart() {
    let m = nested_multipart(10_000);
    parse_no_recipient("10,000 nested multiparts", &m, bound(5));
}

#[test]
fn ten_thousand_levels_of_multipart_around_a_dsn() {
    // The DSN innermost: whether or not it is found, the result says why.
    let depth = 10_000;
    let mut m = nested_multipart(depth);
    let inner = format!("--b{depth}\r\nContent-Type: text/plain\r\n\r\ninnermost\r\n");
    let pos = String::from_utf8_lossy(&m)
        .find(&inner)
        .expect("innermost part present");
    let dsn_part = format!(
        "--b{depth}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n{RCPT_BLOCK}"
    );
    m.splice(pos..pos + inner.len(), dsn_part.bytes());
    noted("DSN inside 10,000 multiparts", &m, bound(5));
}

#[test]
fn ten_thousand_nested_message_rfc822() {
    let depth = 10_000;
    let mut m = String::new();
    for i in 0..depth {
        m.push_str(&format!(
            "From: a{i}@example.org\r\nSubject: level {i}\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n"
        ));
    }
    m.push_str("From: last@example.org\r\nSubject: last\r\n\r\nbody\r\n");
    parse_no_recipient("10,000 nested message/rfc822", m.as_bytes(), bound(5));
}

#[test]
fn unclosed_nested_multiparts() {
    // Opened and never closed, boundaries never appearing again.
    let mut m = String::from("From: x@example.org\r\nSubject: open\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n");
    for i in 0..10_000 {
        m.push_str(&format!(
            "--b{i}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n",
            i + 1
        ));
    }
    parse_no_recipient("10,000 unclosed multiparts", m.as_bytes(), bound(5));
}

#[test]
fn truncated_multipart_boundaries() {
    let base = standard_dsn();
    // Every prefix at a 3-byte step: a result for each, never a panic.
    for cut in (0..=base.len()).step_by(3) {
        noted(&format!("cut at {cut}"), &base[..cut], bound(1));
    }
    let text = String::from_utf8_lossy(&base).into_owned();
    // The closing boundary missing, or cut inside its dashes.
    for end in [
        "\r\n--BOUNDARY--\r\n",
        "\r\n--BOUNDARY-",
        "\r\n--BOUND",
        "\r\n--",
    ] {
        let t = text.replace("\r\n--BOUNDARY--\r\n", end);
        noted(&format!("closing as {end:?}"), t.as_bytes(), bound(1));
    }
    // The delivery-status part's boundary line cut: the parts run together.
    let t = text.replacen(
        "--BOUNDARY\r\nContent-Type: message/delivery-status",
        "--BOUNDA\r\nContent-Type: message/delivery-status",
        1,
    );
    noted("inner boundary cut", t.as_bytes(), bound(1));
    // Declared boundaries that never appear, an empty one, none at all, a 10,000-byte one.
    let long = "x".repeat(10_000);
    for decl in [
        "boundary=\"NEVER\"",
        "boundary=\"\"",
        "boundary=",
        "",
        &format!("boundary=\"{long}\""),
    ] {
        let t = text.replace("boundary=\"BOUNDARY\"", decl);
        noted(&format!("declared {:.40}", decl), t.as_bytes(), bound(1));
    }
}

#[test]
fn just_under_max_bounce_size() {
    // A DSN whose returned original fills the message to exactly MAX_BOUNCE_SIZE.
    let head = dsn(RCPT_BLOCK.as_bytes(), b"");
    let room = MAX_BOUNCE_SIZE - head.len();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
    let mut body = Vec::with_capacity(room);
    while body.len() + line.len() <= room {
        body.extend_from_slice(line);
    }
    body.resize(room, b'.');
    let m = dsn(RCPT_BLOCK.as_bytes(), &body);
    assert_eq!(m.len(), MAX_BOUNCE_SIZE);
    let rep = parse_noted("DSN of MAX_BOUNCE_SIZE", &m, bound(3)).expect("parses");
    assert_eq!(rep.recipients.len(), 1);
    assert_eq!(rep.recipients[0].recipient, "user@example.com");
}

#[test]
fn just_under_max_bounce_size_plain_text() {
    // A plain-text bounce of MAX_BOUNCE_SIZE - 1 bytes, most of it quoted original lines.
    let mut m = b"From: MAILER-DAEMON@mx.example.net\r\nSubject: Mail delivery failed\r\n\r\nThis message was created automatically by mail delivery software.\r\n\r\nThe following address(es) failed:\r\n\r\n  user@example.com\r\n    SMTP error from remote mail server after RCPT TO:<user@example.com>:\r\n    550 5.1.1 User unknown\r\n\r\n------ This is a copy of the message, including all the headers. ------\r\n\r\nFrom: sender@example.org\r\nSubject: big\r\n\r\n".to_vec();
    let line = b"lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod\r\n";
    while m.len() + line.len() < MAX_BOUNCE_SIZE - 1 {
        m.extend_from_slice(line);
    }
    m.resize(MAX_BOUNCE_SIZE - 1, b'.');
    let rep = parse_noted("plain text of MAX_BOUNCE_SIZE - 1", &m, bound(3)).expect("parses");
    assert_eq!(rep.recipients.len(), 1, "{:?}", rep.reason);
    assert_eq!(rep.recipients[0].recipient, "user@example.com");
}

#[test]
fn just_over_max_bounce_size_is_too_large() {
    let mut m = standard_dsn();
    m.resize(MAX_BOUNCE_SIZE + 1, b'a');
    let res = within("MAX_BOUNCE_SIZE + 1", bound(1), move || {
        parse(&m, classifier())
    });
    assert_eq!(res, Err(ParseError::TooLarge(MAX_BOUNCE_SIZE + 1)));
    let e = res.expect_err("too large");
    assert!(e.to_string().contains("too large"), "{e}");
}

#[test]
fn a_dsn_with_100000_recipient_blocks() {
    let n = 100_000;
    let mut blocks = String::with_capacity(n * 200);
    for i in 0..n {
        blocks.push_str(&format!(
            "Final-Recipient: rfc822; user{i}@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <user{i}@example.com>: Recipient address rejected: User unknown\r\n\r\n"
        ));
    }
    let m = dsn(blocks.as_bytes(), b"Hello.\r\n");
    let rep = parse_noted("100,000 recipient blocks", &m, bound(5)).expect("parses");
    assert_eq!(rep.recipients.len(), n);
    assert_eq!(
        rep.recipients[n - 1].recipient,
        format!("user{}@example.com", n - 1)
    );
}

const TEN_MB: usize = 10 * 1024 * 1024;

#[test]
fn a_10mb_header_line_without_newline() {
    let mut m = b"From: a@example.org\r\nSubject: ".to_vec();
    m.extend(std::iter::repeat_n(b'a', TEN_MB));
    parse_no_recipient("10 MB subject, no newline", &m, bound(3));
    let mut m = b"X-Long: ".to_vec();
    m.extend(std::iter::repeat_n(b'x', TEN_MB));
    parse_no_recipient("10 MB header only", &m, bound(3));
}

#[test]
fn a_10mb_body_line_without_newline() {
    // A recognised text bounce whose last line runs 10 MB.
    let mut m = b"From: MAILER-DAEMON@mx.example.net\r\nSubject: Mail delivery failed\r\n\r\nThis message was created automatically by mail delivery software.\r\n\r\nThe following address(es) failed:\r\n\r\n  user@example.com\r\n    550 5.1.1 User unknown ".to_vec();
    m.extend(std::iter::repeat_n(b'z', TEN_MB));
    let rep = parse_noted("10 MB exim line", &m, bound(3)).expect("parses");
    assert_eq!(rep.recipients.len(), 1, "10 MB exim line: {:?}", rep.reason);
    let mut m = b"From: MAILER-DAEMON@mx.example.net\r\nSubject: failure notice\r\n\r\nHi. This is the qmail-send program at mx.example.net.\r\n\r\n<user@example.com>:\r\n".to_vec();
    m.extend(std::iter::repeat_n(b'q', TEN_MB));
    let rep = parse_noted("10 MB qmail line", &m, bound(3)).expect("parses");
    assert_eq!(
        rep.recipients.len(),
        1,
        "10 MB qmail line: {:?}",
        rep.reason
    );
    // Words, not one token: a 10 MB line of short words.
    let mut m = b"From: MAILER-DAEMON@mx.example.net\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nThis is the mail system at host mx.example.net.\r\n\r\n<user@example.com>: host mx said: 550 5.1.1 ".to_vec();
    while m.len() < TEN_MB {
        m.extend_from_slice(b"user unknown 550 ");
    }
    let rep = parse_noted("10 MB postfix line of words", &m, bound(5)).expect("parses");
    assert_eq!(
        rep.recipients.len(),
        1,
        "10 MB postfix line of words: {:?}",
        rep.reason
    );
}

#[test]
fn a_10mb_diagnostic_code() {
    let mut block = b"Final-Recipient: rfc822; user@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 ".to_vec();
    while block.len() < TEN_MB {
        block.extend_from_slice(b"mailbox unavailable ");
    }
    block.extend_from_slice(b"\r\n\r\n");
    let rep =
        parse_noted("10 MB Diagnostic-Code", &dsn(&block, b"x\r\n"), bound(5)).expect("parses");
    assert_eq!(rep.recipients.len(), 1);
}

#[test]
fn the_classifier_takes_anything() {
    let c = classifier();
    let mut words = String::from("550 5.1.1 ");
    while words.len() < TEN_MB {
        words.push_str("mailbox unavailable ");
    }
    let long_token = format!("550 {}", "a".repeat(TEN_MB));
    let nuls = "\0".repeat(1000);
    let lossy = String::from_utf8_lossy(&junk(100_000, 3)).into_owned();
    let cases: Vec<(&str, &str)> = vec![
        ("empty", ""),
        ("space", " "),
        ("NULs", &nuls),
        ("junk", &lossy),
        ("code only", "5"),
        ("dot", "5."),
        ("huge code", "55555555555555555555555555 5.5.5.5.5.5"),
        (
            "status overflow",
            "550 99999999999.99999999999.9999999999 x",
        ),
        (
            "multiline",
            "550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 last",
        ),
        ("bare newlines", "\n\n\r\r\t"),
        ("non-ASCII", "550 5.1.1 Benutzer unbekannt – 用户不存在 ⚠"),
        ("10 MB of words", &words),
        ("10 MB token", &long_token),
    ];
    for (what, reply) in cases {
        let reply = reply.to_string();
        let got = within(what, bound(5), move || {
            [
                c.classify_reply(&reply),
                c.classify_status("", &reply),
                c.classify_status("5.1.1", &reply),
            ]
        });
        for x in &got {
            assert!(!x.category.as_str().is_empty(), "{what}");
        }
        assert_eq!(got[2].status, "5.1.1", "{what}");
    }
}

// ---- the CLI ----

fn run_cli(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args(["bounce", "classify", "--format", "json"])
        .args(args)
        .output()
        .expect("mta runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked") && !stdout.contains("panicked"),
        "panic: {stderr}"
    );
    assert_ne!(out.status.code(), Some(101), "panic exit: {stderr}");
    assert!(
        out.status.code().is_some(),
        "killed by a signal: {:?}\n{stderr}",
        out.status
    );
    (out.status.code(), stdout, stderr)
}

/// The JSON rows of the CLI output.
fn rows(stdout: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<Vec<serde_json::Value>>(stdout)
        .unwrap_or_else(|e| panic!("not a JSON array ({e}): {stdout}"))
}

/// Each path has at least one row, and a row without a recipient has a non-empty note.
fn assert_noted_rows(rows: &[serde_json::Value], paths: &[&std::path::Path]) {
    for p in paths {
        let p = p.display().to_string();
        let mine: Vec<_> = rows
            .iter()
            .filter(|r| r["file"].as_str().is_some_and(|f| f.starts_with(&p)))
            .collect();
        assert!(!mine.is_empty(), "no row for {p}: {rows:?}");
        for r in mine {
            let rcpt = r["recipient"].as_str().unwrap_or("");
            let note = r["note"].as_str().unwrap_or("");
            assert!(
                !rcpt.is_empty() || !note.trim().is_empty(),
                "row without recipient or note: {r}"
            );
        }
    }
}

#[test]
fn cli_junk_empty_and_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let junk_file = dir.path().join("junk.eml");
    std::fs::write(&junk_file, junk(50_000, 11)).expect("write junk");
    let empty = dir.path().join("empty.eml");
    std::fs::write(&empty, b"").expect("write empty");
    let sub = dir.path().join("a-directory");
    std::fs::create_dir(&sub).expect("mkdir");
    std::fs::write(sub.join("inside.eml"), junk(1000, 12)).expect("write inside");
    let nul = dir.path().join("nul.eml");
    std::fs::write(&nul, vec![0u8; 10_000]).expect("write nul");

    // One by one: a clean exit status and a note for the file.
    for p in [&junk_file, &empty, &sub, &nul] {
        let (code, stdout, stderr) = run_cli(&[p.as_os_str()]);
        assert!(
            matches!(code, Some(0) | Some(1)),
            "{}: exit {code:?}\n{stderr}",
            p.display()
        );
        assert_noted_rows(&rows(&stdout), &[p]);
    }
    // The empty file cannot be a bounce: a failure status.
    let (code, _, _) = run_cli(&[empty.as_os_str()]);
    assert_eq!(code, Some(1));

    // One byte over MAX_BOUNCE_SIZE: refused with a note saying so.
    let big = dir.path().join("big.eml");
    let mut b = standard_dsn();
    b.resize(MAX_BOUNCE_SIZE + 1, b'a');
    std::fs::write(&big, b).expect("write big");
    let (code, stdout, _) = run_cli(&[big.as_os_str()]);
    assert_eq!(code, Some(1));
    let big_rows = rows(&stdout);
    assert_noted_rows(&big_rows, &[&big]);
    assert!(
        big_rows[0]["note"]
            .as_str()
            .is_some_and(|n| n.contains("too large")),
        "{big_rows:?}"
    );
    std::fs::remove_file(&big).expect("remove big");

    // All together, with a good one: every file gets its rows, the good one its recipient.
    let good = dir.path().join("good.eml");
    std::fs::write(&good, standard_dsn()).expect("write good");
    let missing = dir.path().join("missing.eml");
    let all = [&junk_file, &empty, &sub, &nul, &good, &missing];
    let args: Vec<_> = all.iter().map(|p| p.as_os_str()).collect();
    let (code, stdout, _) = run_cli(&args);
    assert_eq!(code, Some(1), "some files cannot be read or parsed");
    let rows = rows(&stdout);
    let paths: Vec<&std::path::Path> = all.iter().map(|p| p.as_path()).collect();
    assert_noted_rows(&rows, &paths);
    assert!(
        rows.iter()
            .any(|r| r["recipient"] == "user@example.com" && r["category"] == "bad-mailbox"),
        "{rows:?}"
    );
}

#[test]
fn cli_text_output_for_bad_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let junk_file = dir.path().join("junk.eml");
    std::fs::write(&junk_file, junk(5_000, 13)).expect("write junk");
    let out = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args(["bounce", "classify"])
        .arg(&junk_file)
        .arg(dir.path())
        .output()
        .expect("mta runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(matches!(out.status.code(), Some(0) | Some(1)), "{stderr}");
    for p in [junk_file.as_path(), dir.path()] {
        let p = p.display().to_string();
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&p) && l.len() > p.len() + 2),
            "no line for {p}: {stdout}"
        );
    }
}
