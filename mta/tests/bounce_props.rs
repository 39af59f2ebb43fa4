//! Property tests: the bounce parser and the classifier never panic, whatever the input.

use std::sync::OnceLock;

use proptest::prelude::*;

use mta::bounce::{parse, Classifier};

fn classifier() -> &'static Classifier {
    static C: OnceLock<Classifier> = OnceLock::new();
    C.get_or_init(Classifier::default)
}

fn fixture_bytes() -> &'static [Vec<u8>] {
    static F: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    F.get_or_init(load_fixtures)
}

fn load_fixtures() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/bounces");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    names.sort();
    names.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let c = classifier();
        if let Ok(r) = parse(&bytes, c) {
            // No recipient without an address-like value or with an empty status.
            for fr in &r.recipients {
                prop_assert!(!fr.status.is_empty());
            }
        }
    }

    #[test]
    fn mutated_fixtures_never_panic(idx in 0usize..64, cut in 0usize..8192, junk in proptest::collection::vec(any::<u8>(), 0..64), at in 0usize..8192) {
        let all = fixture_bytes();
        prop_assume!(!all.is_empty());
        let mut b = all[idx % all.len()].clone();
        let cut = cut.min(b.len());
        b.truncate(b.len() - cut / 2);
        let at = at.min(b.len());
        b.splice(at..at, junk);
        let _ = parse(&b, classifier());
    }

    #[test]
    fn classifier_never_panics(reply in "\\PC{0,300}", status in "[0-9.]{0,8}") {
        let c = classifier();
        let a = c.classify_reply(&reply);
        let b = c.classify_status(&status, &reply);
        prop_assert!(!a.matched_text.is_empty());
        prop_assert!(b.matched_text.contains(&status));
    }
}
