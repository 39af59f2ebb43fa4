//! A comparison for people: per provider, each side's delivered-within-N-minutes row.

use super::{Comparison, ProviderRow, Side, SideResult};
use std::fmt::Write as _;

impl Comparison {
    /// The result of `side`, if it ran.
    pub fn side(&self, side: Side) -> Option<&SideResult> {
        self.sides.iter().find(|s| s.side == side)
    }

    /// For people: per provider, each side's messages delivered by minute 1..N and its deferrals
    /// (4xx replies the world gave) and rejections (5xx); then per side the injection and the
    /// MTA's own records.
    pub fn table(&self) -> String {
        let mut o = format!(
            "Delivered within N minutes (messages the world accepted), {} messages per MTA, seed {}\n\n",
            self.messages, self.seed
        );
        let _ = write!(o, "{:<9} {:<13} {:>7}", "provider", "mta", "planned");
        for m in 1..=self.minutes {
            let _ = write!(o, " {:>5}", format!("{m}m"));
        }
        let _ = writeln!(o, " {:>8} {:>8}", "deferred", "rejected");
        let providers: Vec<&str> = self
            .sides
            .first()
            .map(|s| s.providers.iter().map(|p| p.provider.as_str()).collect())
            .unwrap_or_default();
        for p in providers.iter().copied().chain(std::iter::once("total")) {
            for (i, s) in self.sides.iter().enumerate() {
                let row = self.row(s, p);
                let label = if i == 0 { p } else { "" };
                let _ = write!(o, "{label:<9} {:<13} {:>7}", s.side.name(), row.planned);
                for v in &row.delivered_by_minute {
                    let _ = write!(o, " {v:>5}");
                }
                let _ = writeln!(o, " {:>8} {:>8}", row.deferred(), row.rejected);
            }
        }
        o.push_str(&self.replies());
        o.push('\n');
        for s in &self.sides {
            let took = s
                .injection_secs
                .map_or("not finished in the window".to_string(), |t| {
                    format!("{t:.1} s")
                });
            let _ = writeln!(
                o,
                "{:<13} injected {} (refused {}) in {took}; own records ({}): {} delivered, {} deferred, {} bounced",
                s.side.name(), s.injected, s.refused, s.own_source, s.own.delivered, s.own.deferred, s.own.bounced
            );
            for e in &s.injection_errors {
                let _ = writeln!(o, "    injection: {e}");
            }
        }
        o
    }

    /// The providers' most frequent 4xx/5xx replies to each side, under a heading.
    fn replies(&self) -> String {
        let mut o = String::from("\nMost frequent refusals (the world's replies):\n");
        for s in &self.sides {
            for p in &s.providers {
                for r in p.replies.iter().take(3) {
                    let text: String = r.reply.chars().take(110).collect();
                    let _ = writeln!(
                        o,
                        "  {:<13} {:<8} {:>6} x {text}",
                        s.side.name(),
                        p.provider,
                        r.count
                    );
                }
            }
        }
        o
    }

    /// A side's row for `provider`, or the sum over providers for `total`.
    fn row(&self, s: &SideResult, provider: &str) -> ProviderRow {
        if provider != "total" {
            return s
                .provider(provider)
                .cloned()
                .unwrap_or_else(|| ProviderRow {
                    provider: provider.into(),
                    planned: 0,
                    delivered_by_minute: Vec::new(),
                    deferred_by_minute: Vec::new(),
                    rejected: 0,
                    connections: 0,
                    replies: Vec::new(),
                });
        }
        let sum = |f: &dyn Fn(&ProviderRow) -> &Vec<u64>| -> Vec<u64> {
            (0..self.minutes as usize)
                .map(|m| {
                    s.providers
                        .iter()
                        .map(|p| f(p).get(m).copied().unwrap_or(0))
                        .sum()
                })
                .collect()
        };
        ProviderRow {
            provider: "total".into(),
            planned: s.providers.iter().map(|p| p.planned).sum(),
            delivered_by_minute: sum(&|p| &p.delivered_by_minute),
            deferred_by_minute: sum(&|p| &p.deferred_by_minute),
            rejected: s.providers.iter().map(|p| p.rejected).sum(),
            connections: s.providers.iter().map(|p| p.connections).sum(),
            replies: Vec::new(),
        }
    }
}
