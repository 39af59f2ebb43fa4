//! Fake mailbox providers: the decision engine (`engine`) that plays a profile; the SMTP server
//! around it comes with the SMTP codec.

pub mod engine;
pub mod server;

pub use engine::{
    Answer, DataFacts, Engine, Event, EventKind, Mailbox, Override, Refusal, Session,
};
