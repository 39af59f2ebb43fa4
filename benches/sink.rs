//! The benchmarks' SMTP sink: takes every transaction and counts the messages.

use mta::smtp::io::Data;
use mta::smtp::server::{Handler, Outcome};
use mta::smtp::{MailFrom, RcptTo, Reply};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A handler that accepts everything; the counter is shared by its clones.
#[derive(Clone, Default)]
pub struct Sink(pub Arc<AtomicU64>);

impl Handler for Sink {
    fn connect(&mut self) -> Outcome {
        Outcome::reply(Reply::new(220, "", "sink ESMTP"))
    }
    fn mail(&mut self, _: &MailFrom<String>) -> Outcome {
        Outcome::ok("2.1.0", "Ok")
    }
    fn rcpt(&mut self, _: &RcptTo<String>) -> Outcome {
        Outcome::ok("2.1.5", "Ok")
    }
    async fn message(&mut self, _: Data) -> Outcome {
        self.0.fetch_add(1, Ordering::Relaxed);
        Outcome::ok("2.0.0", "Ok")
    }
    fn reset(&mut self) {}
}
