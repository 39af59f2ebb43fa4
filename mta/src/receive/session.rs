//! The MTA's inbound sessions: the `<source>` rules through [`SessionPolicy`], SMTP AUTH against
//! `<smtp-user>` entries, and accepted messages handed to the engine (spooled before the 250).

use super::policy::SessionPolicy;
use crate::config::values::Value;
use crate::engine::Engine;
use crate::smtp::io::{Data, MessageBody};
use crate::smtp::server::{Handler, Outcome};
use crate::smtp::{MailFrom, RcptTo, Reply};
use crate::spool::{Envelope, Recipient};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// One inbound connection.
pub struct InboundSession {
    engine: Arc<Engine>,
    peer: SocketAddr,
    local: SocketAddr,
    listener_source: Option<String>,
    policy: Option<std::sync::Arc<SessionPolicy>>,
    helo: String,
    authenticated: bool,
    from: Option<String>,
    env_id: Option<String>,
    rcpts: Vec<Recipient>,
    /// Recipients for the MTA's own domains (bounce and feedback-loop addresses).
    pub local_rcpts: usize,
}

impl InboundSession {
    /// A session for a connection from `peer` to `local` on a listener with source name `source`.
    pub fn new(
        engine: Arc<Engine>,
        peer: SocketAddr,
        local: SocketAddr,
        source: Option<String>,
    ) -> InboundSession {
        InboundSession {
            engine,
            peer,
            local,
            listener_source: source,
            policy: None,
            helo: String::new(),
            authenticated: false,
            from: None,
            env_id: None,
            rcpts: Vec::new(),
            local_rcpts: 0,
        }
    }

    fn ip(&self) -> IpAddr {
        self.peer.ip()
    }
}

/// `header` followed by `body`: in the body's own buffer when it has room behind it (a kept read
/// buffer often has; one memmove), else in the header's.
fn prepend(mut header: Vec<u8>, body: MessageBody) -> Vec<u8> {
    match body {
        MessageBody::Owned(mut b) if b.capacity() - b.len() >= header.len() => {
            let len = b.len();
            b.extend_from_slice(&header);
            b.copy_within(0..len, header.len());
            b[..header.len()].copy_from_slice(&header);
            b
        }
        other => {
            header.extend_from_slice(&other);
            header
        }
    }
}

fn received_header(helo: &str, peer: IpAddr, host: &str, id: &str, now_ms: i64) -> String {
    let date = crate::acct::record::iso_time(now_ms);
    format!("Received: from {helo} ([{peer}])\r\n\tby {host} (mtasim) with ESMTP id {id};\r\n\t{date}\r\n")
}

impl Handler for InboundSession {
    fn connect(&mut self) -> Outcome {
        match SessionPolicy::connect(
            &self.engine.config(),
            self.ip(),
            self.listener_source.as_deref(),
        ) {
            Ok(p) => {
                self.policy = Some(std::sync::Arc::new(p));
                Outcome::reply(Reply::new(
                    220,
                    "",
                    format!("{} ESMTP mtasim", host_name(&self.engine.config())),
                ))
            }
            Err(r) => Outcome::close(Reply::new(r.code, r.enhanced, r.text)),
        }
    }

    fn hello(&mut self, host: &str) -> Option<Outcome> {
        self.helo = host.to_string();
        None
    }

    fn mail(&mut self, from: &MailFrom<String>) -> Outcome {
        let Some(p) = &self.policy else {
            return Outcome::close(Reply::new(421, "4.3.0", "session not set up"));
        };
        let size = (from.size > 0).then_some(from.size as u64);
        if let Err(r) = p.mail(size) {
            return Outcome::reply(Reply::new(r.code, r.enhanced, r.text));
        }
        self.from = Some(from.address.clone());
        self.env_id = from.env_id.clone();
        Outcome::ok("2.1.0", "Ok")
    }

    fn rcpt(&mut self, to: &RcptTo<String>) -> Outcome {
        let Some(p) = &self.policy else {
            return Outcome::close(Reply::new(421, "4.3.0", "session not set up"));
        };
        if let Err(r) = p.rcpt(&to.address, self.rcpts.len(), self.authenticated) {
            return Outcome::reply(Reply::new(r.code, r.enhanced, r.text));
        }
        if let Some(e) = self.engine.suppressed(&to.address) {
            return Outcome::reply(Reply::new(
                550,
                "5.7.1",
                format!(
                    "<{}>: recipient suppressed ({}: {})",
                    to.address, e.reason, e.detail
                ),
            ));
        }
        self.rcpts.push(Recipient {
            address: to.address.clone(),
            orcpt: to.orcpt.clone(),
            done: false,
        });
        Outcome::ok("2.1.5", "Ok")
    }

    async fn message(&mut self, data: Data) -> Outcome {
        let Some(p) = self.policy.clone() else {
            return Outcome::close(Reply::new(421, "4.3.0", "session not set up"));
        };
        let now = self.engine.now_ms();
        let (local, remote): (Vec<Recipient>, Vec<Recipient>) = std::mem::take(&mut self.rcpts)
            .into_iter()
            .partition(|r| p.takes(&r.address));
        if !local.is_empty() {
            let addrs: Vec<String> = local.iter().map(|r| r.address.clone()).collect();
            crate::receive::processors::process(
                &self.engine,
                self.from.as_deref().unwrap_or(""),
                &addrs,
                &data.body,
            );
            self.local_rcpts += local.len();
            tracing::info!(
                count = local.len(),
                from = self.from.as_deref().unwrap_or(""),
                "mail for local domains accepted"
            );
        }
        if remote.is_empty() {
            return Outcome::ok("2.0.0", "Ok: accepted for local processing");
        }
        let mut dot_free = !data.dot_lines;
        let body = if p.source.bool("add-received-header") {
            let h = received_header(
                &self.helo,
                self.ip(),
                &host_name(&self.engine.config()),
                &format!("{now:x}"),
                now,
            )
            .into_bytes();
            dot_free &= crate::smtp::io::dot_free(&h);
            prepend(h, data.body)
        } else {
            data.body.into_vec()
        };
        let env = Envelope {
            mail_from: self.from.clone().unwrap_or_default(),
            rcpts: remote,
            vmta: None,
            pool: None,
            job_id: None,
            env_id: self.env_id.clone(),
            source_ip: Some(self.ip().to_string()),
            received_ms: now,
            size: body.len() as u64,
            message_id: None,
            dot_free,
        };
        match self
            .engine
            .accept(env, body, &p.source, Some(self.local.ip()))
            .await
        {
            Ok(id) => Outcome::ok("2.0.0", format!("Ok: queued as {id}")),
            Err(e) if e.starts_with("X-Virtual-MTA") => Outcome::reply(Reply::new(550, "5.7.1", e)),
            Err(e) if e.starts_with(crate::engine::ACCT_BACKLOG) => {
                tracing::error!(%e, "refusing mail until the accounting log can be written");
                Outcome::reply(Reply::new(
                    451,
                    "4.3.0",
                    "Accounting log cannot be written; try again later",
                ))
            }
            Err(e) => {
                tracing::error!(%e, "could not spool a message");
                Outcome::reply(Reply::new(451, "4.3.0", "Error: queue file write error"))
            }
        }
    }

    fn reset(&mut self) {
        self.from = None;
        self.env_id = None;
        self.rcpts.clear();
    }

    fn authenticate(&mut self, user: &str, password: &str) -> bool {
        let now = self.engine.now_ms();
        if self.engine.auth_locked(self.peer.ip(), now) {
            tracing::warn!(peer = %self.peer, %user, "AUTH refused: too many failures from this address");
            return false;
        }
        let cfg = &self.engine.config();
        let ok = cfg
            .smtp_users
            .get(user)
            .and_then(|u| u.settings.get("password"))
            .is_some_and(|s| matches!(&s.value, Value::Text(p) if p == password));
        if ok {
            self.authenticated = true;
            if let Some(p) = self.policy.as_mut() {
                std::sync::Arc::make_mut(p).authenticated(
                    cfg,
                    self.peer.ip(),
                    self.listener_source.as_deref(),
                );
            }
        } else {
            self.engine.auth_failed(self.peer.ip(), now);
        }
        ok
    }
}

/// The global `host-name`, or `localhost`.
pub fn host_name(cfg: &crate::config::Config) -> String {
    match cfg.global.get("host-name").map(|s| &s.value) {
        Some(Value::Text(h)) => h.clone(),
        _ => "localhost".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::{prepend, MessageBody};
    use std::sync::Arc;

    /// The header lands in front of the body whether the body's buffer has room (shifted in
    /// place, the same buffer), has none, or is shared.
    #[test]
    fn the_header_goes_in_front_of_the_body() {
        let header = b"Received: from a\r\n".to_vec();
        let text = b"Subject: s\r\n\r\nline one\r\nline two\r\n".to_vec();
        let want = [header.as_slice(), text.as_slice()].concat();
        let mut roomy = Vec::with_capacity(text.len() + 100);
        roomy.extend_from_slice(&text);
        let ptr = roomy.as_ptr();
        let got = prepend(header.clone(), MessageBody::Owned(roomy));
        assert_eq!(got, want);
        assert_eq!(got.as_ptr(), ptr, "shifted in its own buffer");
        let mut tight = text.clone();
        tight.shrink_to_fit();
        assert_eq!(prepend(header.clone(), MessageBody::Owned(tight)), want);
        let shared = Arc::new(text.clone());
        assert_eq!(prepend(header.clone(), MessageBody::Shared(shared)), want);
        assert_eq!(
            prepend(header, MessageBody::Owned(Vec::new())),
            b"Received: from a\r\n"
        );
    }
}
