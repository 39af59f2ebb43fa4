//! `mtasim validate`: the incident suite (or the scenarios given) against one config, with one
//! verdict per scenario, the findings that matter first, and JUnit XML for CI systems.

use crate::report::Report;
use crate::scenario::Loaded;
use crate::sim::{RunError, RunOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How one scenario went against the config.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// It ran; the report says how.
    Ran(Box<Report>),
    /// Its roles could not be bound to the config (or the config lets no injector relay).
    Unbound(String),
    /// It could not be loaded or run.
    Error(String),
}

/// One scenario's row.
#[derive(Debug, Clone)]
pub struct Row {
    /// The scenario's name (its file stem if it could not be read).
    pub scenario: String,
    /// Its file.
    pub file: PathBuf,
    /// What happened.
    pub outcome: Outcome,
    /// Wall time.
    pub wall: Duration,
}

impl Row {
    /// `PASSED`, `FAILED`, `NOT EXERCISED` (every failure is an expectation whose subject never
    /// happened), `UNBOUND` or `ERROR`.
    pub fn verdict(&self) -> &'static str {
        match &self.outcome {
            Outcome::Ran(r) if r.passed => "PASSED",
            Outcome::Ran(r)
                if r.verdicts
                    .iter()
                    .filter(|v| !v.passed)
                    .all(|v| !v.exercised) =>
            {
                "NOT EXERCISED"
            }
            Outcome::Ran(_) => "FAILED",
            Outcome::Unbound(_) => "UNBOUND",
            Outcome::Error(_) => "ERROR",
        }
    }

    /// True if the scenario held.
    pub fn passed(&self) -> bool {
        matches!(&self.outcome, Outcome::Ran(r) if r.passed)
    }

    /// The one line that says most: the first finding, else the first failed verdict.
    pub fn top_finding(&self) -> String {
        match &self.outcome {
            Outcome::Ran(r) => r
                .findings
                .first()
                .cloned()
                .or_else(|| {
                    r.verdicts.iter().find(|v| !v.passed).map(|v| {
                        format!(
                            "{}: expected {}, observed {}",
                            v.expectation, v.expected, v.observed
                        )
                    })
                })
                .unwrap_or_else(|| "-".into()),
            Outcome::Unbound(e) | Outcome::Error(e) => e
                .lines()
                .nth(1)
                .unwrap_or(e)
                .trim()
                .trim_start_matches("- ")
                .to_string(),
        }
    }
}

/// The suite in `dir`: every scenario file there that is part of it (`suite = true`, the
/// default), and the names of those left out, with their descriptions. A file that cannot be read
/// stays in, so that its row says why.
pub fn suite_files(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Vec<String>)> {
    let mut keep = Vec::new();
    let mut left = Vec::new();
    for f in crate::scenario::scenario_files(dir)? {
        let out = std::fs::read_to_string(&f)
            .ok()
            .and_then(|t| toml::from_str::<crate::scenario::Scenario>(&t).ok())
            .filter(|s| !s.suite);
        match out {
            Some(s) => left.push(format!("{} ({})", s.name, s.description)),
            None => keep.push(f),
        }
    }
    Ok((keep, left))
}

/// Runs every scenario in `files` against `opts.config` (which must be set).
pub fn validate(files: &[PathBuf], opts: &RunOptions) -> Vec<Row> {
    files.iter().map(|f| one(f, opts)).collect()
}

fn one(file: &Path, opts: &RunOptions) -> Row {
    let started = Instant::now();
    let stem = file
        .file_stem()
        .map_or("?".into(), |s| s.to_string_lossy().into_owned());
    let row = |scenario: String, outcome| Row {
        scenario,
        file: file.to_path_buf(),
        outcome,
        wall: started.elapsed(),
    };
    let l = match Loaded::load_with(file, opts.config.as_deref()) {
        Ok(l) => l,
        Err(e) => return row(stem, Outcome::Error(e.to_string())),
    };
    let name = l.scenario.name.clone();
    match crate::sim::run(&l, opts) {
        Ok(r) => row(name, Outcome::Ran(Box::new(r))),
        Err(RunError::Unbound(e)) => row(name, Outcome::Unbound(e)),
        Err(RunError::Failed(e)) => row(name, Outcome::Error(e)),
    }
}

/// The findings of every scenario, deduplicated, each with the scenarios it came from.
pub fn findings(rows: &[Row]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in rows {
        let lines: Vec<String> = match &r.outcome {
            Outcome::Ran(rep) => rep.findings.clone(),
            Outcome::Unbound(e) | Outcome::Error(e) => vec![e.clone()],
        };
        for f in lines {
            match out.iter_mut().find(|(x, _)| *x == f) {
                Some((_, s)) => s.push(r.scenario.clone()),
                None => out.push((f, vec![r.scenario.clone()])),
            }
        }
    }
    out
}

/// The text summary: findings first, then one row per scenario.
pub fn render_text(config: &Path, rows: &[Row]) -> String {
    let mut o = String::new();
    let found = findings(rows);
    if !found.is_empty() {
        o.push_str(&format!("findings for {}:\n", config.display()));
        for (f, from) in &found {
            let mut lines = f.lines();
            o.push_str(&format!(
                "  - {} [{}]\n",
                lines.next().unwrap_or(""),
                from.join(", ")
            ));
            for more in lines {
                o.push_str(&format!("      {more}\n"));
            }
        }
        o.push('\n');
    }
    o.push_str(&format!(
        "{:<22} {:<14} top finding\n",
        "scenario", "verdict"
    ));
    for r in rows {
        let top: String = r.top_finding().chars().take(140).collect();
        o.push_str(&format!("{:<22} {:<14} {top}\n", r.scenario, r.verdict()));
    }
    let ok = rows.iter().filter(|r| r.passed()).count();
    o.push_str(&format!(
        "\n{ok} of {} scenarios held against {}\n",
        rows.len(),
        config.display()
    ));
    o
}

/// JUnit XML: one test suite for the config, one test case per expectation (and one per
/// scenario that could not run), failures with the expected and observed values.
pub fn junit(config: &Path, rows: &[Row]) -> Result<String, String> {
    use quick_junit::{NonSuccessKind, Report as JReport, TestCase, TestCaseStatus, TestSuite};
    let mut report = JReport::new("mtasim validate");
    for r in rows {
        let mut suite = TestSuite::new(format!("{} ({})", r.scenario, config.display()));
        suite.set_time(r.wall);
        match &r.outcome {
            Outcome::Ran(rep) => {
                for v in &rep.verdicts {
                    let status = if v.passed {
                        TestCaseStatus::success()
                    } else {
                        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        s.set_message(format!(
                            "{}expected {}, observed {} ({})",
                            if v.exercised { "" } else { "NOT EXERCISED: " },
                            v.expected,
                            v.observed,
                            v.location
                        ));
                        s.set_type(if v.exercised {
                            "failed"
                        } else {
                            "not-exercised"
                        });
                        s.set_description(rep.findings.join("\n"));
                        s
                    };
                    let mut case = TestCase::new(v.expectation.clone(), status);
                    case.set_classname(r.scenario.clone());
                    suite.add_test_case(case);
                }
            }
            Outcome::Unbound(e) | Outcome::Error(e) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(e.lines().next().unwrap_or(e).to_string());
                s.set_type(r.verdict().to_ascii_lowercase());
                s.set_description(e.clone());
                let mut case = TestCase::new("run", s);
                case.set_classname(r.scenario.clone());
                suite.add_test_case(case);
            }
        }
        report.add_test_suite(suite);
    }
    report.to_string().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Verdict;

    fn row(verdicts: Vec<(bool, bool)>, findings: &[&str]) -> Row {
        let verdicts: Vec<Verdict> = verdicts
            .into_iter()
            .enumerate()
            .map(|(i, (passed, exercised))| Verdict {
                expectation: format!("e{i}"),
                passed,
                exercised,
                expected: "x".into(),
                observed: "y".into(),
                location: "z".into(),
            })
            .collect();
        Row {
            scenario: "s".into(),
            file: PathBuf::from("s.toml"),
            outcome: Outcome::Ran(Box::new(Report {
                scenario: "s".into(),
                description: String::new(),
                mode: "simulated".into(),
                seed: 1,
                start: String::new(),
                duration_s: 1.0,
                passed: verdicts.iter().all(|v| v.passed),
                verdicts,
                totals: Default::default(),
                providers: Default::default(),
                bucket_s: 1.0,
                series: Default::default(),
                backoff: Vec::new(),
                findings: findings.iter().map(|s| s.to_string()).collect(),
                injection: Vec::new(),
                notes: Vec::new(),
            })),
            wall: Duration::ZERO,
        }
    }

    #[test]
    fn verdict_words_and_top_findings() {
        assert_eq!(row(vec![(true, true)], &[]).verdict(), "PASSED");
        let hollow = row(vec![(true, true), (false, false)], &[]);
        assert_eq!(hollow.verdict(), "NOT EXERCISED");
        assert_eq!(hollow.top_finding(), "e1: expected x, observed y");
        let failed = row(vec![(false, true), (false, false)], &["the reason"]);
        assert_eq!(failed.verdict(), "FAILED");
        assert_eq!(failed.top_finding(), "the reason");
        let unbound = Row {
            outcome: Outcome::Unbound("needs:\n  - vmta `x`: which one?\noffers".into()),
            ..row(vec![], &[])
        };
        assert_eq!(unbound.verdict(), "UNBOUND");
        assert_eq!(unbound.top_finding(), "vmta `x`: which one?");
        let all = [failed, unbound];
        let text = render_text(Path::new("c.conf"), &all);
        assert!(text.starts_with("findings for c.conf:"), "{text}");
        assert!(
            text.contains("0 of 2 scenarios held against c.conf"),
            "{text}"
        );
    }
}
