//! A server-side SMTP session driver: command sequencing, EHLO capabilities, pipelining (only when
//! advertised), STARTTLS, AUTH PLAIN/LOGIN with failure limits, timeouts, size limits and the DATA
//! phase. What to answer is the [`Handler`]'s business: the MTA's `receive` and the simulator's
//! fake providers both plug into this one driver.

use super::io::{Data, DataError, LineError, SmtpStream, MAX_LINE};
use super::{parse_command, MailFrom, RcptTo, Reply, Request};
use crate::net::BoxStream;
use base64::Engine;
use std::future::Future;
use std::time::Duration;

/// A reply and whether to close the connection after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The reply.
    pub reply: Reply,
    /// Close after sending it.
    pub close: bool,
    /// Wait this long before answering (tarpitting, slow servers).
    pub delay: Duration,
    /// Hang up without answering (a dropped connection).
    pub drop: bool,
}

impl Outcome {
    /// A reply that keeps the session open.
    pub fn reply(reply: Reply) -> Outcome {
        Outcome {
            reply,
            close: false,
            delay: Duration::ZERO,
            drop: false,
        }
    }

    /// A reply after which the connection is closed.
    pub fn close(reply: Reply) -> Outcome {
        Outcome {
            close: true,
            ..Outcome::reply(reply)
        }
    }

    /// The connection is cut without a reply.
    pub fn dropped() -> Outcome {
        Outcome {
            drop: true,
            close: true,
            ..Outcome::reply(Reply::new(421, "4.4.2", "connection dropped"))
        }
    }

    /// The same outcome, answered after `delay`.
    pub fn after(mut self, delay: Duration) -> Outcome {
        self.delay = delay;
        self
    }

    /// `250 2.0.0 ok`-style success.
    pub fn ok(enhanced: &str, text: impl Into<std::borrow::Cow<'static, str>>) -> Outcome {
        Outcome::reply(Reply::new(250, enhanced, text))
    }
}

/// The decisions of a server.
pub trait Handler: Send {
    /// The greeting (220) or a refusal (then the connection closes).
    fn connect(&mut self) -> Outcome;
    /// EHLO/HELO with the client's name.
    fn hello(&mut self, host: &str) -> Option<Outcome> {
        let _ = host;
        None
    }
    /// MAIL FROM.
    fn mail(&mut self, from: &MailFrom<String>) -> Outcome;
    /// RCPT TO.
    fn rcpt(&mut self, to: &RcptTo<String>) -> Outcome;
    /// DATA, before the 354: a refusal here skips the data.
    fn data(&mut self) -> Option<Outcome> {
        None
    }
    /// The message, after CRLF.CRLF.
    fn message(&mut self, data: Data) -> impl Future<Output = Outcome> + Send;
    /// The transaction was reset (RSET, a new EHLO, or after a message).
    fn reset(&mut self);
    /// AUTH with decoded credentials: `true` if they are right.
    fn authenticate(&mut self, user: &str, password: &str) -> bool {
        let _ = (user, password);
        false
    }
    /// The session switched to TLS.
    fn tls_started(&mut self) {}
}

/// How the driver behaves.
#[derive(Clone)]
pub struct ServerOptions {
    /// The name in the greeting and EHLO reply.
    pub host_name: String,
    /// Advertise and allow PIPELINING.
    pub pipelining: bool,
    /// SIZE limit advertised and enforced.
    pub max_message_size: Option<u64>,
    /// STARTTLS, when a certificate is available.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Advertise AUTH PLAIN LOGIN.
    pub auth: bool,
    /// Allow AUTH before STARTTLS.
    pub auth_without_tls: bool,
    /// Failed AUTH attempts before the connection is closed.
    pub max_auth_failures: u32,
    /// Wait for a command.
    pub command_timeout: Duration,
    /// Wait for DATA to finish.
    pub data_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            host_name: "localhost".into(),
            pipelining: true,
            max_message_size: None,
            tls: None,
            auth: false,
            auth_without_tls: false,
            max_auth_failures: 3,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
        }
    }
}

/// What a finished session did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionStats {
    /// Messages accepted (2xx after data).
    pub messages: u32,
    /// The session used TLS.
    pub tls: bool,
    /// The client authenticated.
    pub authenticated: bool,
}

enum State {
    Fresh,
    Greeted,
    Mail,
    Rcpt,
}

/// Runs one session to its end. Errors end the session quietly (the client went away).
pub async fn serve<H: Handler>(
    stream: BoxStream,
    handler: &mut H,
    opts: &ServerOptions,
) -> SessionStats {
    let mut s = SmtpStream::new(stream);
    let mut stats = SessionStats::default();
    let greet = handler.connect();
    if greet.drop {
        let _ = s.shutdown().await;
        return stats;
    }
    if !greet.delay.is_zero() {
        tokio::time::sleep(greet.delay).await;
    }
    s.queue_reply(&greet.reply);
    if s.flush().await.is_err() || greet.close {
        let _ = s.shutdown().await;
        return stats;
    }
    let mut state = State::Fresh;
    let mut extended = false;
    let mut auth_failures = 0u32;
    // One buffer for the session's command lines.
    let mut line = String::new();
    loop {
        // Batch replies while the client has pipelined more commands; flush before waiting.
        if !s.has_buffered_input() && s.flush().await.is_err() {
            return stats;
        }
        match s
            .read_line_within_into(&mut line, MAX_LINE, opts.command_timeout)
            .await
        {
            Err(LineError::TimedOut) => {
                s.queue_reply(&Reply::new(
                    421,
                    "4.4.2",
                    format!("{} Error: timeout exceeded", opts.host_name),
                ));
                let _ = s.shutdown().await;
                return stats;
            }
            Err(LineError::TooLong) => {
                s.queue_reply(&Reply::new(500, "5.5.2", "Error: line too long"));
                continue;
            }
            Err(_) => return stats,
            Ok(()) => {}
        }
        let pipelined_ahead = s.has_buffered_input();
        let request = match parse_command(&line) {
            Ok(r) => r,
            Err(reply) => {
                s.queue_reply(&reply);
                continue;
            }
        };
        let out: Outcome = match request {
            Request::Ehlo { host } | Request::Helo { host } | Request::Lhlo { host } => {
                let is_ehlo = line
                    .get(..4)
                    .is_some_and(|c| c.eq_ignore_ascii_case("EHLO"));
                handler.reset();
                if let Some(refusal) = handler.hello(&host) {
                    refusal
                } else {
                    state = State::Greeted;
                    extended = is_ehlo;
                    if is_ehlo {
                        let mut lines = vec![format!("{} Hello {host}", opts.host_name)];
                        if opts.pipelining {
                            lines.push("PIPELINING".into());
                        }
                        lines.push(match opts.max_message_size {
                            Some(n) => format!("SIZE {n}"),
                            None => "SIZE".into(),
                        });
                        lines.push("8BITMIME".into());
                        lines.push("ENHANCEDSTATUSCODES".into());
                        if opts.tls.is_some() && !stats.tls {
                            lines.push("STARTTLS".into());
                        }
                        if opts.auth && (stats.tls || opts.auth_without_tls) {
                            lines.push("AUTH PLAIN LOGIN".into());
                        }
                        lines.push("SMTPUTF8".into());
                        Outcome::reply(Reply {
                            code: 250,
                            enhanced: None,
                            lines: lines.into_iter().map(Into::into).collect(),
                        })
                    } else {
                        Outcome::reply(Reply {
                            code: 250,
                            enhanced: None,
                            lines: smallvec::smallvec![opts.host_name.clone().into()],
                        })
                    }
                }
            }
            _ if pipelined_ahead && !(extended && opts.pipelining) => {
                // The client sent ahead without PIPELINING: drop the rest, as Postfix does.
                Outcome::close(Reply::new(
                    554,
                    "5.5.0",
                    "Error: SMTP protocol synchronization",
                ))
            }
            Request::Mail { from } => match state {
                State::Fresh => {
                    Outcome::reply(Reply::new(503, "5.5.1", "Error: send HELO/EHLO first"))
                }
                State::Mail | State::Rcpt => {
                    Outcome::reply(Reply::new(503, "5.5.1", "Error: nested MAIL command"))
                }
                State::Greeted => {
                    if let (Some(max), true) = (opts.max_message_size, from.size > 0) {
                        if from.size as u64 > max {
                            s.queue_reply(&Reply::new(552, "5.3.4", "Error: message file too big"));
                            continue;
                        }
                    }
                    let o = handler.mail(&from);
                    if o.reply.is_positive() {
                        state = State::Mail;
                        s.expect_data_size(from.size as u64);
                    }
                    o
                }
            },
            Request::Rcpt { to } => match state {
                State::Mail | State::Rcpt => {
                    let o = handler.rcpt(&to);
                    if o.reply.is_positive() {
                        state = State::Rcpt;
                    }
                    o
                }
                _ => Outcome::reply(Reply::new(503, "5.5.1", "Error: need MAIL command")),
            },
            Request::Data => match state {
                State::Rcpt => {
                    if let Some(refusal) = handler.data() {
                        refusal
                    } else {
                        s.queue_reply(&Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"));
                        if s.flush().await.is_err() {
                            return stats;
                        }
                        match tokio::time::timeout(
                            opts.data_timeout,
                            s.read_data(opts.max_message_size),
                        )
                        .await
                        {
                            Err(_) => {
                                Outcome::close(Reply::new(421, "4.4.2", "Error: timeout exceeded"))
                            }
                            Ok(Err(DataError::BareNewline)) => Outcome::close(Reply::new(
                                521,
                                "5.5.2",
                                format!("{} Error: bare <LF> received", opts.host_name),
                            )),
                            Ok(Err(_)) => return stats,
                            Ok(Ok(d)) if d.too_big => {
                                handler.reset();
                                state = State::Greeted;
                                Outcome::reply(Reply::new(
                                    552,
                                    "5.3.4",
                                    "Error: message file too big",
                                ))
                            }
                            Ok(Ok(d)) if d.long_line => {
                                handler.reset();
                                state = State::Greeted;
                                Outcome::reply(Reply::new(
                                    500,
                                    "5.5.2",
                                    "Error: message line too long",
                                ))
                            }
                            Ok(Ok(d)) => {
                                let o = handler.message(d).await;
                                if o.reply.is_positive() {
                                    stats.messages += 1;
                                }
                                handler.reset();
                                state = State::Greeted;
                                o
                            }
                        }
                    }
                }
                State::Mail => {
                    Outcome::reply(Reply::new(554, "5.5.1", "Error: no valid recipients"))
                }
                _ => Outcome::reply(Reply::new(503, "5.5.1", "Error: need RCPT command")),
            },
            Request::Rset => {
                handler.reset();
                if !matches!(state, State::Fresh) {
                    state = State::Greeted;
                }
                Outcome::ok("2.0.0", "Ok")
            }
            Request::Noop { .. } => Outcome::ok("2.0.0", "Ok"),
            Request::Quit => {
                s.queue_reply(&Reply::new(221, "2.0.0", "Bye"));
                let _ = s.shutdown().await;
                return stats;
            }
            Request::Vrfy { .. } => Outcome::reply(Reply::new(
                252,
                "2.0.0",
                "Cannot VRFY user, but will accept message",
            )),
            Request::StartTls => match (&opts.tls, stats.tls) {
                (Some(acceptor), false) => {
                    s.queue_reply(&Reply::new(220, "2.0.0", "Ready to start TLS"));
                    if s.flush().await.is_err() {
                        return stats;
                    }
                    let (inner, leftover) = s.into_inner();
                    if leftover > 0 {
                        return stats; // plaintext injected after STARTTLS: drop the connection
                    }
                    match acceptor.accept(inner).await {
                        Ok(tls) => {
                            s = SmtpStream::new(Box::new(tls));
                            stats.tls = true;
                            state = State::Fresh;
                            extended = false;
                            handler.reset();
                            handler.tls_started();
                            continue;
                        }
                        Err(_) => return stats,
                    }
                }
                (Some(_), true) => {
                    Outcome::reply(Reply::new(503, "5.5.1", "Error: TLS already active"))
                }
                (None, _) => {
                    Outcome::reply(Reply::new(502, "5.5.1", "Error: command not implemented"))
                }
            },
            Request::Auth {
                mechanism,
                initial_response,
            } => {
                if !opts.auth || !(stats.tls || opts.auth_without_tls) {
                    Outcome::reply(Reply::new(
                        503,
                        "5.5.1",
                        "Error: authentication not enabled",
                    ))
                } else if stats.authenticated {
                    Outcome::reply(Reply::new(503, "5.5.1", "Error: already authenticated"))
                } else {
                    let creds =
                        match auth_exchange(&mut s, mechanism, &initial_response, opts).await {
                            Ok(c) => c,
                            Err(o) => {
                                s.queue_reply(&o.reply);
                                if o.close {
                                    let _ = s.shutdown().await;
                                    return stats;
                                }
                                continue;
                            }
                        };
                    if handler.authenticate(&creds.0, &creds.1) {
                        stats.authenticated = true;
                        Outcome::reply(Reply::new(235, "2.7.0", "Authentication successful"))
                    } else {
                        auth_failures += 1;
                        if auth_failures >= opts.max_auth_failures {
                            Outcome::close(Reply::new(
                                421,
                                "4.7.0",
                                "Error: too many authentication failures",
                            ))
                        } else {
                            // Slow down guessing: each failure waits longer.
                            tokio::time::sleep(Duration::from_millis(
                                250 * u64::from(auth_failures),
                            ))
                            .await;
                            Outcome::reply(Reply::new(535, "5.7.8", "Error: authentication failed"))
                        }
                    }
                }
            }
            _ => Outcome::reply(Reply::new(502, "5.5.1", "Error: command not implemented")),
        };
        if out.drop {
            let _ = s.shutdown().await;
            return stats;
        }
        if !out.delay.is_zero() {
            // Replies already due go out first; this one waits (a tarpit).
            if s.flush().await.is_err() {
                return stats;
            }
            tokio::time::sleep(out.delay).await;
        }
        s.queue_reply(&out.reply);
        if out.close {
            let _ = s.shutdown().await;
            return stats;
        }
    }
}

/// Reads one line of an AUTH exchange (`*` aborts it).
async fn auth_line(s: &mut SmtpStream, opts: &ServerOptions) -> Result<String, Outcome> {
    if s.flush().await.is_err() {
        return Err(Outcome::close(Reply::new(421, "4.4.2", "connection lost")));
    }
    match tokio::time::timeout(opts.command_timeout, s.read_line(MAX_LINE)).await {
        Ok(Ok(l)) if l == "*" => Err(Outcome::reply(Reply::new(
            501,
            "5.7.0",
            "Authentication aborted",
        ))),
        Ok(Ok(l)) => Ok(l),
        _ => Err(Outcome::close(Reply::new(
            421,
            "4.4.2",
            "Error: timeout exceeded",
        ))),
    }
}

/// Runs the AUTH PLAIN / LOGIN exchange; returns (user, password) or the reply to end it with.
async fn auth_exchange(
    s: &mut SmtpStream,
    mechanism: u64,
    initial: &str,
    opts: &ServerOptions,
) -> Result<(String, String), Outcome> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let bad = || Outcome::reply(Reply::new(501, "5.5.2", "Error: invalid base64 data"));
    let ask = |s: &mut SmtpStream, prompt: &str| {
        s.queue(format!("334 {prompt}\r\n").as_bytes());
    };
    if mechanism == smtp_proto::AUTH_PLAIN {
        let token = if initial.is_empty() {
            ask(s, "");
            auth_line(s, opts).await?
        } else {
            initial.to_string()
        };
        let raw = b64.decode(token.trim()).map_err(|_| bad())?;
        let parts: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
        if parts.len() != 3 {
            return Err(bad());
        }
        return Ok((
            String::from_utf8_lossy(parts[1]).into_owned(),
            String::from_utf8_lossy(parts[2]).into_owned(),
        ));
    }
    if mechanism == smtp_proto::AUTH_LOGIN {
        let user = if initial.is_empty() {
            ask(s, "VXNlcm5hbWU6");
            auth_line(s, opts).await?
        } else {
            initial.to_string()
        };
        ask(s, "UGFzc3dvcmQ6");
        let pass = auth_line(s, opts).await?;
        let user = b64.decode(user.trim()).map_err(|_| bad())?;
        let pass = b64.decode(pass.trim()).map_err(|_| bad())?;
        return Ok((
            String::from_utf8_lossy(&user).into_owned(),
            String::from_utf8_lossy(&pass).into_owned(),
        ));
    }
    Err(Outcome::reply(Reply::new(
        504,
        "5.5.4",
        "Error: unsupported authentication mechanism",
    )))
}
