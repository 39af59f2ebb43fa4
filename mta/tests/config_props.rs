//! Property tests: arbitrary bytes and arbitrary mutations of a valid config never panic the
//! parser, and always give either a usable model or errors that point into the text.

use mta::config::{self, syntax, Diagnostic};
use proptest::prelude::*;
use std::path::Path;

const HOT: &str = include_str!("../../fixtures/configs/hot.conf");

/// Every error has a location inside the text (line 1..=lines+1), except whole-config findings.
fn located(diags: &[Diagnostic], name: &str, text: &str) -> Result<(), String> {
    let lines = text.split('\n').count() as u32;
    for d in diags.iter().filter(|d| d.is_error()) {
        let Some(s) = &d.span else {
            return Err(format!("error without location: {d}"));
        };
        if &*s.file != name || s.line == 0 || s.line > lines {
            return Err(format!("error outside the text: {d}"));
        }
    }
    Ok(())
}

fn check(text: &str) -> Result<(), TestCaseError> {
    let loaded = config::load_str("m.conf", text);
    if let Err(e) = located(&loaded.diagnostics, "m.conf", text) {
        return Err(TestCaseError::fail(e));
    }
    if loaded.is_valid() {
        // A model that says it is valid can answer questions about any queue.
        let _ = loaded.config.domain_settings(
            "gmail.com",
            loaded.config.vmtas.keys().next().map(String::as_str),
        );
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    SwapLines(usize, usize),
    DuplicateLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (
            any::<usize>(),
            prop_oneof![
                Just("<".to_string()),
                Just(">".into()),
                Just("/".into()),
                Just("#".into()),
                Just("\"".into()),
                Just("$".into()),
                Just("</domain>\n".into()),
                Just("<domain *>\n".into()),
                Just("\n".into()),
                "\\PC{0,12}"
            ]
        )
            .prop_map(|(a, s)| Mutation::Insert(a, s)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::DuplicateLine),
    ]
}

fn apply(text: &str, muts: &[Mutation]) -> String {
    let mut s: Vec<char> = text.chars().collect();
    for m in muts {
        match m {
            Mutation::Delete(a, n) if !s.is_empty() => {
                let a = a % s.len();
                let end = (a + n).min(s.len());
                s.drain(a..end);
            }
            Mutation::Insert(a, ins) => {
                let a = if s.is_empty() { 0 } else { a % s.len() };
                for (i, c) in ins.chars().enumerate() {
                    s.insert(a + i, c);
                }
            }
            Mutation::SwapLines(a, b) => {
                let t: String = s.iter().collect();
                let mut lines: Vec<&str> = t.split('\n').collect();
                let (a, b) = (a % lines.len(), b % lines.len());
                lines.swap(a, b);
                s = lines.join("\n").chars().collect();
            }
            Mutation::DuplicateLine(a) => {
                let t: String = s.iter().collect();
                let mut lines: Vec<String> = t.split('\n').map(str::to_string).collect();
                let a = a % lines.len();
                let l = lines[a].clone();
                lines.insert(a, l);
                s = lines.join("\n").chars().collect();
            }
            Mutation::Delete(..) => {}
        }
    }
    s.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check(&text)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut diags = config::diag::Diagnostics::default();
        struct One(Vec<u8>);
        impl syntax::FileSource for One {
            fn read(&self, _: &Path) -> std::io::Result<Vec<u8>> { Ok(self.0.clone()) }
            fn glob(&self, _: &Path) -> Vec<std::path::PathBuf> { Vec::new() }
        }
        let items = syntax::parse_file(Path::new("b.conf"), &One(bytes), &config::HostPaths::local(), &mut diags);
        let _ = config::model::build(Path::new("b.conf"), &items, &mut diags);
    }

    #[test]
    fn mutated_hot_config_never_panics(muts in proptest::collection::vec(mutation(), 1..6)) {
        check(&apply(HOT, &muts))?;
    }
}

#[test]
fn the_unmutated_hot_config_is_valid_through_load_str() {
    let l = config::load_str("m.conf", HOT);
    assert!(l.is_valid(), "{:#?}", l.diagnostics);
}
