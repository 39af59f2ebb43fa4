//! Expectation checks against synthetic observations: each kind passes when the observations hold
//! and fails, with the offending place named, when they do not.

use mta::acct::{Record, RecordType};
use mta::queue::Mode;
use mta::shaping::ModeChange;
use simulator::expect::{check, Observed};
use simulator::isp::{Event, EventKind};
use simulator::scenario::Loaded;
use simulator::tally::RecordView;
use std::path::Path;

fn storm() -> Loaded {
    Loaded::load(Path::new("../scenarios/yahoo-tss04-storm.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn change(at_ms: i64, to: Mode) -> ModeChange {
    ModeChange {
        at_ms,
        to,
        cause: "/\\[TSS04\\]/".into(),
        reply: None,
    }
}

fn observed(
    l: &Loaded,
    enter_after_s: i64,
    leave_after_end_s: Option<i64>,
    max_open: u32,
) -> Observed {
    let mut o = Observed::new(l);
    let ip = "203.0.113.11".parse().unwrap_or_else(|e| panic!("{e:?}"));
    o.events.insert(
        "yahoo".into(),
        (1..=max_open)
            .map(|open| Event {
                t_ms: l.start_ms + 1000,
                ip,
                conn: u64::from(open),
                kind: EventKind::Connect { open },
            })
            .collect(),
    );
    let start = l.start_ms + 20 * 60_000;
    let end = start + 45 * 60_000;
    let mut modes = vec![change(start + enter_after_s * 1000, Mode::Backoff)];
    if let Some(s) = leave_after_end_s {
        modes.push(change(end + s * 1000, Mode::Normal));
    }
    o.modes.insert("yahoo.com/mkt-1".into(), modes);
    o.modes.insert("gmail.com/mkt-1".into(), vec![]);
    let mut r = Record::new(RecordType::Received, l.start_ms);
    r.rcpt = "u@yahoo.com".into();
    r.headers.push(("Message-ID".into(), "<1@x>".into()));
    let mut d = r.clone();
    d.ty = Some(RecordType::Delivered);
    o.tally.add(&RecordView::of(&r));
    o.tally.add(&RecordView::of(&d));
    o
}

#[test]
fn the_storm_scenario_passes_and_fails_for_the_right_reasons() {
    let l = storm();
    let good = check(&l, &observed(&l, 120, Some(1800), 20));
    assert!(good.iter().all(|v| v.passed), "{good:#?}");
    let late_entry = check(&l, &observed(&l, 600, Some(1800), 20));
    assert!(
        !late_entry[0].passed && late_entry[0].observed.starts_with("entered at +1800s"),
        "{:?}",
        late_entry[0]
    );
    let stuck = check(&l, &observed(&l, 120, None, 20));
    assert!(
        !stuck[0].passed && stuck[0].observed.contains("still in backoff"),
        "{:?}",
        stuck[0]
    );
    let slow = check(&l, &observed(&l, 120, Some(6000), 20));
    assert!(
        !slow[0].passed && slow[0].observed.contains("back to normal only at"),
        "{:?}",
        slow[0]
    );
    let busy = check(&l, &observed(&l, 120, Some(1800), 21));
    assert!(
        !busy[1].passed && busy[1].observed == "21" && busy[1].location.contains("203.0.113.11"),
        "{:?}",
        busy[1]
    );
}
