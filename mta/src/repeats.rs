//! Repeated warnings summarised with a count: the first occurrence of a key is logged, then only
//! the 10th, 100th, 1,000th ... with the count so far, so a warning per message (a queue that
//! signs nothing, say) is a handful of lines, not a flood.

use std::collections::HashMap;
use std::sync::Mutex;

/// Distinct keys counted; past it, new keys are always logged (a bounded table).
const MAX_KEYS: usize = 10_000;

/// Occurrence counts per warning key.
#[derive(Debug, Default)]
pub struct Repeats(Mutex<HashMap<String, u64>>);

impl Repeats {
    /// Counts one occurrence of `key`; `Some(count)` when this one should be logged (the 1st,
    /// 10th, 100th ...).
    pub fn note(&self, key: &str) -> Option<u64> {
        let Ok(mut m) = self.0.lock() else {
            return Some(1);
        };
        let full = m.len() >= MAX_KEYS;
        let n = match m.get_mut(key) {
            Some(n) => {
                *n += 1;
                *n
            }
            None if full => return Some(1),
            None => {
                m.insert(key.to_string(), 1);
                1
            }
        };
        let mut p = 1;
        while p < n {
            p *= 10;
        }
        (p == n).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_at_powers_of_ten() {
        let r = Repeats::default();
        let logged: Vec<u64> = (0..1500).filter_map(|_| r.note("a")).collect();
        assert_eq!(logged, vec![1, 10, 100, 1000]);
        assert_eq!(r.note("b"), Some(1));
    }
}
