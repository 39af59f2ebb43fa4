//! The bounce and feedback-loop processors: mail that arrives for an address of a
//! `<feedback-loop-processor>` is read as a feedback report and written as an `f` record; mail for a
//! `<bounce-processor>` address is read as a bounce (DSN or the common non-standard forms) and
//! written as one `rb` record per failed recipient. Neither is delivered onward.

use crate::engine::Engine;

/// What happened to one message for local addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Processed {
    /// Feedback reports recorded (parsed or unparseable).
    pub feedback: usize,
    /// Remote-bounce records written.
    pub bounces: usize,
}

/// Runs the processors whose address lists hold one of `rcpts` over `body` (each processor kind
/// once per message).
pub fn process(engine: &Engine, from: &str, rcpts: &[String], body: &[u8]) -> Processed {
    let cfg = engine.config();
    let now = engine.now_ms();
    let mut out = Processed::default();
    let fbl = rcpts.iter().any(|r| {
        cfg.feedback_loop_processors
            .iter()
            .any(|p| p.addresses.matches(r))
    });
    let bounce = rcpts
        .iter()
        .any(|r| cfg.bounce_processors.iter().any(|p| p.addresses.matches(r)));
    if fbl {
        let rec = match crate::fbl::parse(body) {
            Ok(r) => {
                tracing::info!(format = %r.format, feedback_type = %r.feedback_type, rcpt = %r.original_rcpt_to, "feedback report");
                r.to_record(now)
            }
            Err(e) => {
                tracing::warn!(%e, %from, "feedback report recorded as unparseable");
                crate::fbl::unparseable_record(&e, from, now)
            }
        };
        engine.record(rec);
        out.feedback += 1;
    }
    if bounce {
        match crate::bounce::parse(body, &engine.classifier()) {
            Ok(report) if !report.recipients.is_empty() => {
                for rec in report.to_records(now) {
                    engine.record(rec);
                    out.bounces += 1;
                }
            }
            Ok(report) => {
                tracing::warn!(%from, reason = report.reason.as_deref().unwrap_or(""), "message to a bounce processor names no failed recipient")
            }
            Err(e) => tracing::warn!(%from, %e, "message to a bounce processor could not be read"),
        }
    }
    out
}
