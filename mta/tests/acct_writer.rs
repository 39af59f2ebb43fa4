//! Accounting destinations for real: CSV files with rotation into move-to, and pipes to a program
//! that is killed and restarted without losing records.

use mta::acct::{Accounting, Record, RecordType};
use mta::config;

fn cfg(text: &str) -> config::Config {
    let l = config::load_str("t.conf", text);
    assert!(l.is_valid(), "{:#?}", l.diagnostics);
    l.config
}

fn rec(ty: RecordType, t_ms: i64, i: usize) -> Record {
    let mut r = Record::new(ty, t_ms);
    r.orig = "bounces@news.example.com".into();
    r.rcpt = format!("user{i}@gmail.com");
    r.time_queued = Some(t_ms - 1500);
    r.dsn_status = "2.0.0".into();
    r.dsn_diag = "smtp;250 2.0.0 OK, id=1".into();
    r.vmta = "mkt-1".into();
    r.headers.push(("X-Job-Id".into(), format!("job{}", i % 3)));
    r
}

fn data_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.starts_with("type,")).collect()
}

#[test]
fn file_gets_header_and_selected_records() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("acct.csv");
    let c = cfg(&format!("<acct-file {}>\nrecords d,b\nrecord-fields d *,header_X-Job-Id\niso-times no\n</acct-file>\n", path.display()));
    let acct = Accounting::new(&c.acct_files);
    acct.log(&rec(RecordType::Received, 1_000_000, 0)); // not selected
    acct.log(&rec(RecordType::Delivered, 1_000_000, 1));
    let mut b = rec(RecordType::Bounced, 1_002_000, 2);
    b.bounce_cat = "bad-mailbox".into();
    b.dsn_diag =
        "smtp;550 5.1.1 The email account that you tried to reach does not exist, \"sorry\"".into();
    acct.log(&b);
    acct.flush(1_002_000);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    assert_eq!(header[..3], ["type", "timeLogged", "timeQueued"]);
    assert_eq!(header.last(), Some(&"header_X-Job-Id"));
    let d = lines.next().unwrap_or_default();
    assert!(
        d.starts_with("d,1000,998,,1,bounces@news.example.com,user1@gmail.com,"),
        "{d}"
    );
    assert!(d.ends_with(",job1"), "{d}");
    let b = lines.next().unwrap_or_default();
    assert!(b.starts_with("b,1002,"), "{b}");
    assert!(b.contains(",\"smtp;550 5.1.1 The email account that you tried to reach does not exist, \"\"sorry\"\"\","), "{b}");
    assert!(b.contains(",bad-mailbox,"), "{b}");
    assert!(
        b.ends_with(','),
        "b records do not select header_X-Job-Id: {b}"
    );
    assert_eq!(lines.next(), None);
}

#[test]
fn size_and_interval_rotation_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("acct.csv");
    let moved = dir.path().join("old");
    let c = cfg(&format!("<acct-file {}>\nrecords d\nmax-size 2k\nmove-interval 1h\nmove-to {}\ndelete-after never\n</acct-file>\n", path.display(), moved.display()));
    let acct = Accounting::new(&c.acct_files);
    let start = 1_795_474_800_000; // 2026-11-23 23:00:00 UTC
    for i in 0..100 {
        acct.log(&rec(RecordType::Delivered, start + i as i64 * 1000, i));
    }
    // An hour later: the file is moved even though it is small.
    acct.log(&rec(RecordType::Delivered, start + 3_700_000, 100));
    acct.flush(start + 3_700_000);
    let mut files: Vec<_> = std::fs::read_dir(&moved)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    assert!(files.len() >= 5, "2k files of ~170-byte records: {files:?}");
    let mut total = 0;
    for f in &files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            (name.starts_with("acct-20261123-23") || name.starts_with("acct-20261124-00"))
                && name.ends_with(".csv"),
            "{name}"
        );
        let text = std::fs::read_to_string(f).unwrap_or_default();
        assert!(text.starts_with("type,timeLogged,"), "{name} has a header");
        assert!(text.len() <= 2048, "{name} is {} bytes", text.len());
        total += data_lines(&text).len();
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        data_lines(&current).len(),
        1,
        "the record after the interval starts a new file"
    );
    assert_eq!(total + 1, 101, "no record lost across rotations");
}

#[test]
fn killed_pipe_is_restarted_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("piped.csv");
    let pidfile = dir.path().join("pid");
    let cmd = format!(
        "|sh -c 'echo $$ > {}; exec cat >> {}'",
        pidfile.display(),
        out.display()
    );
    let c = cfg(&format!(
        "<acct-file {cmd}>\nrecords d\nretry-interval 2s\n</acct-file>\n"
    ));
    let acct = Accounting::new(&c.acct_files);
    let t0 = 1_795_474_800_000;
    for i in 0..5 {
        acct.log(&rec(RecordType::Delivered, t0, i));
    }
    acct.flush(t0);
    // Wait until cat has written what it got, then kill it.
    for _ in 0..200 {
        if data_lines(&std::fs::read_to_string(&out).unwrap_or_default()).len() == 5 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let pid = std::fs::read_to_string(&pidfile).unwrap_or_default();
    let status = std::process::Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
    std::thread::sleep(std::time::Duration::from_millis(200));
    for i in 5..10 {
        acct.log(&rec(RecordType::Delivered, t0 + 1000, i)); // within retry-interval: kept
    }
    assert_eq!(acct.pending(), 5, "records wait while the pipe is down");
    acct.log(&rec(RecordType::Delivered, t0 + 3000, 10)); // past retry-interval: restarted
    acct.close(t0 + 3000);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let mut rcpts: Vec<String> = data_lines(&text)
        .iter()
        .filter_map(|l| l.split(',').nth(6).map(str::to_string))
        .collect();
    rcpts.sort();
    rcpts.dedup();
    assert_eq!(rcpts.len(), 11, "{text}");
    assert_eq!(
        text.matches("type,timeLogged").count(),
        2,
        "a header per program start"
    );
}

#[test]
fn unwritable_file_reports_failure_and_catches_up_later() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // `blocker` is a file where the accounting needs a directory: opening acct.csv fails.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"x").unwrap_or_else(|e| panic!("{e}"));
    let path = blocker.join("acct.csv");
    let c = cfg(&format!(
        "<acct-file {}>\nrecords d\nrecord-fields d *\n</acct-file>\n",
        path.display()
    ));
    let acct = Accounting::new(&c.acct_files);
    assert_eq!(acct.failure(), None);
    for i in 0..3 {
        acct.log(&rec(RecordType::Delivered, 1_000_000, i));
    }
    acct.flush(1_000_000);
    assert_eq!(acct.pending(), 3, "unwritten lines are kept");
    let err = acct.failure().unwrap_or_default();
    assert!(err.starts_with(&path.display().to_string()), "{err}");
    // The directory appears (the disk has room again): the kept lines go out in order.
    std::fs::remove_file(&blocker).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir(&blocker).unwrap_or_else(|e| panic!("{e}"));
    acct.log(&rec(RecordType::Delivered, 1_001_000, 3));
    acct.flush(1_001_000);
    assert_eq!(acct.failure(), None);
    assert_eq!(acct.pending(), 0);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let rcpts: Vec<&str> = data_lines(&text)
        .iter()
        .filter_map(|l| l.split(',').find(|f| f.ends_with("@gmail.com")))
        .collect();
    assert_eq!(
        rcpts,
        [
            "user0@gmail.com",
            "user1@gmail.com",
            "user2@gmail.com",
            "user3@gmail.com"
        ]
    );
}

#[test]
fn existing_file_with_other_columns_is_moved_away_by_its_first_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("acct.csv");
    // A large older file with another header: only its first line decides.
    let mut old = String::from("type,rcpt\n");
    for i in 0..20_000 {
        old.push_str(&format!("d,user{i}@example.com\n"));
    }
    std::fs::write(&path, &old).unwrap_or_else(|e| panic!("{e}"));
    let c = cfg(&format!(
        "<acct-file {}>\nrecords d\nrecord-fields d *\n</acct-file>\n",
        path.display()
    ));
    let acct = Accounting::new(&c.acct_files);
    acct.log(&rec(RecordType::Delivered, 1_000_000, 7));
    acct.flush(1_000_000);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        text.starts_with("type,timeLogged,"),
        "{}",
        &text[..40.min(text.len())]
    );
    assert_eq!(data_lines(&text).len(), 1);
    let moved: Vec<String> = std::fs::read_dir(dir.path())
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("acct-"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(moved.len(), 1, "{moved:?}");
    let kept = std::fs::read_to_string(dir.path().join(&moved[0])).unwrap_or_default();
    assert_eq!(kept, old);
}
