//! A traffic stream's messages: the recipients and body of its i-th message, drawn from the seed
//! and the message's number only, in buffers recycled from finished messages.

use crate::scenario::Traffic;
use mta::config::values::parse_size;
use mta::spool::BodyBuffers;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// The line generated bodies are filled with, up to their drawn size.
const FILLER: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n";

/// Body buffers of finished (or spilled) messages, by capacity class, for the traffic's next
/// messages and the spool's read-backs: fresh memory for each body costs page faults.
#[derive(Default)]
pub struct BodyPool(Mutex<Vec<Vec<Vec<u8>>>>);

/// Body buffers come in multiples of this many bytes ...
const BODY_CLASS: usize = 4096;
/// ... and a pool keeps at most this many of each size.
const BODIES_PER_CLASS: usize = 32;

impl BodyBuffers for BodyPool {
    /// An empty buffer of at least `capacity` bytes (a multiple of [`BODY_CLASS`]).
    fn take(&self, capacity: usize) -> Vec<u8> {
        let class = capacity.div_ceil(BODY_CLASS);
        self.0
            .lock()
            .ok()
            .and_then(|mut c| c.get_mut(class).and_then(Vec::pop))
            .unwrap_or_else(|| Vec::with_capacity(class * BODY_CLASS))
    }

    /// Keeps a spent buffer (one of [`BodyPool::take`]'s sizes) unless its class is full.
    fn put(&self, mut buf: Vec<u8>) {
        let class = buf.capacity() / BODY_CLASS;
        if class == 0 || !buf.capacity().is_multiple_of(BODY_CLASS) {
            return;
        }
        if let Ok(mut c) = self.0.lock() {
            if c.len() <= class {
                c.resize_with(class + 1, Vec::new);
            }
            if c[class].len() < BODIES_PER_CLASS {
                buf.clear();
                c[class].push(buf);
            }
        }
    }
}

/// One message of a stream, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Envelope recipients.
    pub rcpts: Vec<String>,
    /// Headers and body, with room for the MTA's Received header.
    pub body: Vec<u8>,
    /// No line of the body starts with a dot (it is sent without dot-stuffing).
    pub dot_free: bool,
}

/// Makes a stream's messages from the scenario's description and the seed.
pub struct Generator {
    t: Traffic,
    seed: u64,
    total: u64,
    lo: u64,
    hi: u64,
    bodies: Arc<dyn BodyBuffers>,
    /// Whole filler lines, grown on demand and copied into bodies at once.
    filler: String,
}

impl Generator {
    /// The generator of stream `t` with `n` drawn messages (its named special addresses come
    /// first, one message each), taking body buffers from `bodies`.
    pub fn new(t: &Traffic, seed: u64, n: u64, bodies: Arc<dyn BodyBuffers>) -> Self {
        let (lo, hi) = t.size.as_ref().map_or((2048, 2048), |z| {
            (
                parse_size(&z.min).unwrap_or(2048),
                parse_size(&z.max).unwrap_or(2048),
            )
        });
        Generator {
            t: t.clone(),
            seed,
            total: n + t.special.len() as u64,
            lo,
            hi: hi.max(lo),
            bodies,
            filler: String::new(),
        }
    }

    /// How many messages the stream sends.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Message `i`: a named special address is sent to alone; otherwise
    /// `recipients_per_message` recipients, each one's domain drawn on its own.
    pub fn message(&mut self, i: u64) -> Prepared {
        let t = &self.t;
        let rcpts: Vec<String> = match t.special.get(i as usize) {
            Some(a) => vec![a.clone()],
            None => (0..t.recipients_per_message.max(1))
                .map(|k| match k {
                    0 => format!("user{i}@{}", pick_domain(&t.domains, self.seed, &t.name, i)),
                    k => format!(
                        "user{i}.{k}@{}",
                        pick_domain(&t.domains, self.seed, &format!("{}#{k}", t.name), i)
                    ),
                })
                .collect(),
        };
        let rcpt = rcpts.first().map_or("", String::as_str);
        let size = self.lo
            + (crate::isp::engine::stable_hash(&[&self.seed.to_le_bytes(), &i.to_le_bytes()])
                % (self.hi - self.lo + 1));
        // Each message its own buffer (a finished message's when there is one), with room for
        // the MTA's Received header. A cleared buffer is valid UTF-8, and writing to a String
        // cannot fail.
        let mut body =
            String::from_utf8(self.bodies.take(size as usize + 1024)).unwrap_or_default();
        let _ = write!(body, "From: {}\r\nTo: {rcpt}\r\nSubject: {} #{i}\r\nMessage-ID: <{}.{i}@sim.mtasim>\r\nDate: Mon, 23 Nov 2026 00:00:00 +0000\r\n", t.sender, t.name, t.name);
        if let Some(v) = &t.vmta {
            let _ = write!(body, "X-Virtual-MTA: {v}\r\n");
        }
        if let Some(j) = &t.job_id {
            let _ = write!(body, "X-Job: {j}\r\n");
        }
        for (k, v) in &t.headers {
            let _ = write!(body, "{k}: {}\r\n", v.replace("{id}", &i.to_string()));
        }
        body.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n");
        // The filler has no dot-started line (a test says so); the headers are checked.
        let dot_free = mta::smtp::io::dot_free(body.as_bytes());
        if (body.len() as u64) < size {
            let lines = (size as usize - body.len()).div_ceil(FILLER.len());
            while self.filler.len() < lines * FILLER.len() {
                self.filler.push_str(FILLER);
            }
            body.push_str(&self.filler[..lines * FILLER.len()]);
        }
        Prepared {
            rcpts,
            body: body.into_bytes(),
            dot_free,
        }
    }
}

/// Draws a recipient domain for message `i` of a stream from the weights (deterministic).
fn pick_domain<'a>(domains: &'a BTreeMap<String, f64>, seed: u64, stream: &str, i: u64) -> &'a str {
    let total: f64 = domains.values().sum();
    let x = crate::isp::engine::draw(&[&seed.to_le_bytes(), stream.as_bytes(), &i.to_le_bytes()])
        * total;
    let mut acc = 0.0;
    for (d, w) in domains {
        acc += w;
        if x < acc {
            return d;
        }
    }
    domains
        .keys()
        .next_back()
        .map_or("example.invalid", String::as_str)
}

#[cfg(test)]
mod tests {
    use super::{BodyBuffers as _, BodyPool, Generator, BODIES_PER_CLASS, BODY_CLASS};
    use crate::scenario::Traffic;
    use std::sync::Arc;

    /// The traffic's body pool hands out buffers of at least the size asked, in whole classes,
    /// and takes back only its own sizes, a few per class.
    #[test]
    fn the_body_pool_reuses_buffers_by_size() {
        let pool = BodyPool::default();
        let a = pool.take(5000);
        assert!(a.is_empty() && a.capacity() >= 5000 && a.capacity() % BODY_CLASS == 0);
        let mut a = a;
        a.extend_from_slice(b"old");
        let ptr = a.as_ptr();
        pool.put(a);
        let b = pool.take(6000);
        assert!(b.is_empty(), "cleared");
        assert_eq!(b.as_ptr(), ptr, "the same class gives the buffer back");
        pool.put(b);
        let larger = pool.take(9000);
        assert_ne!(larger.as_ptr(), ptr, "a larger class does not");
        let same = pool.take(8000);
        assert_eq!(same.as_ptr(), ptr, "it waited in its own");
        pool.put(Vec::with_capacity(5000));
        assert_eq!(
            pool.take(4000).capacity(),
            BODY_CLASS,
            "an odd size is not kept"
        );
        for _ in 0..BODIES_PER_CLASS + 3 {
            pool.put(Vec::with_capacity(BODY_CLASS));
        }
        let kept = pool.0.lock().map(|c| c[1].len()).unwrap_or(0);
        assert_eq!(kept, BODIES_PER_CLASS);
    }

    /// The injector sends its messages as dot-free on the strength of this: headers are checked
    /// per message, the filler lines are not.
    #[test]
    fn the_filler_has_no_dot_started_line() {
        assert!(mta::smtp::io::dot_free(super::FILLER.repeat(3).as_bytes()));
        assert!(super::FILLER.ends_with("\r\n"));
    }

    fn stream() -> Traffic {
        toml::from_str(
            r#"
            name = "news"
            messages = 50
            sender = "news@brand.example"
            job_id = "j1"
            recipients_per_message = 2
            size = { min = "3k", max = "40k" }
            headers = { "List-Unsubscribe" = "<mailto:u+{id}@brand.example>" }
            domains = { "gmail.com" = 3.0, "yahoo.com" = 1.0 }
            special = ["unknown-1@gmail.com"]
            "#,
        )
        .expect("a valid stream")
    }

    /// Messages depend on the seed and their number only: made again in another order, into
    /// buffers that held other bytes before, they are the same.
    #[test]
    fn messages_depend_on_the_seed_and_their_number_only() {
        let t = stream();
        let mut direct = Generator::new(&t, 7, 50, Arc::new(BodyPool::default()));
        assert_eq!(direct.total(), 51, "the special address comes on top");
        let expected: Vec<_> = (0..direct.total()).map(|i| direct.message(i)).collect();
        // Stale buffers in the pool must not show through.
        let pool = Arc::new(BodyPool::default());
        for _ in 0..8 {
            let mut b = vec![b'.'; 30_000];
            b.reserve_exact(40 * 1024 - b.len());
            pool.put(b);
        }
        let mut again = Generator::new(&t, 7, 50, pool);
        for i in (0..again.total()).rev() {
            assert_eq!(again.message(i), expected[i as usize], "message {i}");
        }
        let first = &expected[0];
        assert_eq!(first.rcpts, ["unknown-1@gmail.com"]);
        let m = &expected[10];
        assert_eq!(m.rcpts.len(), 2);
        assert!(m.rcpts[0].starts_with("user10@") && m.rcpts[1].starts_with("user10.1@"));
        let text = String::from_utf8_lossy(&m.body);
        assert!(text.contains("X-Job: j1\r\n"));
        assert!(text.contains("List-Unsubscribe: <mailto:u+10@brand.example>\r\n"));
        assert!(m.dot_free);
        assert!(
            (3 * 1024..=40 * 1024 + 58).contains(&m.body.len()),
            "{}",
            m.body.len()
        );
        let other_seed = Generator::new(&t, 8, 50, Arc::new(BodyPool::default())).message(10);
        assert_ne!(other_seed, *m, "another seed draws other sizes or domains");
    }
}
