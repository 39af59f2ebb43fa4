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

/// What a command leaves the session loop to do.
enum Step {
    /// Send this outcome (its delay, reply, close or drop).
    Answer(Outcome),
    /// Read the next command (any reply is already queued).
    Next,
    /// The session is over.
    End,
}

/// One session's state beside its stream.
struct Session<'a, H> {
    handler: &'a mut H,
    opts: &'a ServerOptions,
    stats: SessionStats,
    state: State,
    /// EHLO (not HELO) was used: pipelining may be used if advertised.
    extended: bool,
    auth_failures: u32,
}

/// Runs one session to its end. Errors end the session quietly (the client went away).
pub async fn serve<H: Handler>(
    stream: BoxStream,
    handler: &mut H,
    opts: &ServerOptions,
) -> SessionStats {
    let mut s = SmtpStream::new(stream);
    let mut se = Session {
        handler,
        opts,
        stats: SessionStats::default(),
        state: State::Fresh,
        extended: false,
        auth_failures: 0,
    };
    if !se.greet(&mut s).await {
        let _ = s.shutdown().await;
        return se.stats;
    }
    // One buffer for the session's command lines.
    let mut line = String::new();
    loop {
        let step = match se.read_command(&mut s, &mut line).await {
            Err(step) => step,
            Ok(()) => {
                let pipelined_ahead = s.has_buffered_input();
                match parse_command(&line) {
                    Ok(request) => {
                        let (step, upgraded) = se.command(s, request, &line, pipelined_ahead).await;
                        s = match upgraded {
                            Some(stream) => stream,
                            None => return se.stats,
                        };
                        step
                    }
                    Err(reply) => {
                        s.queue_reply(&reply);
                        Step::Next
                    }
                }
            }
        };
        match step {
            Step::Next => continue,
            Step::End => return se.stats,
            Step::Answer(out) => {
                if !answer(&mut s, out).await {
                    return se.stats;
                }
            }
        }
    }
}

/// Sends one outcome: its delay (a tarpit; replies already due go out first), its reply, then a
/// close or drop. False when the session is over.
async fn answer(s: &mut SmtpStream, out: Outcome) -> bool {
    if out.drop {
        let _ = s.shutdown().await;
        return false;
    }
    if !out.delay.is_zero() {
        if s.flush().await.is_err() {
            return false;
        }
        tokio::time::sleep(out.delay).await;
    }
    s.queue_reply(&out.reply);
    if out.close {
        let _ = s.shutdown().await;
        return false;
    }
    true
}

impl<H: Handler> Session<'_, H> {
    /// The banner (or the handler's refusal). False when the session ends here.
    async fn greet(&mut self, s: &mut SmtpStream) -> bool {
        let greet = self.handler.connect();
        if greet.drop {
            return false;
        }
        if !greet.delay.is_zero() {
            tokio::time::sleep(greet.delay).await;
        }
        s.queue_reply(&greet.reply);
        s.flush().await.is_ok() && !greet.close
    }

    /// Reads the next command line into `line`, flushing batched replies first unless the client
    /// has pipelined more; `Err` with what to do when there is no command to act on.
    async fn read_command(&mut self, s: &mut SmtpStream, line: &mut String) -> Result<(), Step> {
        if !s.has_buffered_input() && s.flush().await.is_err() {
            return Err(Step::End);
        }
        match s
            .read_line_within_into(line, MAX_LINE, self.opts.command_timeout)
            .await
        {
            Err(LineError::TimedOut) => {
                s.queue_reply(&Reply::new(
                    421,
                    "4.4.2",
                    format!("{} Error: timeout exceeded", self.opts.host_name),
                ));
                let _ = s.shutdown().await;
                Err(Step::End)
            }
            Err(LineError::TooLong) => {
                s.queue_reply(&Reply::new(500, "5.5.2", "Error: line too long"));
                Err(Step::Next)
            }
            Err(_) => Err(Step::End),
            Ok(()) => Ok(()),
        }
    }

    /// Acts on one command. Takes the stream and gives it back (STARTTLS replaces it); `None`
    /// when the session is over.
    async fn command(
        &mut self,
        mut s: SmtpStream,
        request: Request<String>,
        line: &str,
        pipelined_ahead: bool,
    ) -> (Step, Option<SmtpStream>) {
        let step = match request {
            Request::Ehlo { host } | Request::Helo { host } | Request::Lhlo { host } => {
                let is_ehlo = line
                    .get(..4)
                    .is_some_and(|c| c.eq_ignore_ascii_case("EHLO"));
                Step::Answer(self.hello(&host, is_ehlo))
            }
            _ if pipelined_ahead && !(self.extended && self.opts.pipelining) => {
                // The client sent ahead without PIPELINING: drop the rest, as Postfix does.
                Step::Answer(Outcome::close(Reply::new(
                    554,
                    "5.5.0",
                    "Error: SMTP protocol synchronization",
                )))
            }
            Request::Mail { from } => self.mail(&mut s, &from),
            Request::Rcpt { to } => Step::Answer(self.rcpt(&to)),
            Request::Data => self.data(&mut s).await,
            Request::Rset => {
                self.handler.reset();
                if !matches!(self.state, State::Fresh) {
                    self.state = State::Greeted;
                }
                Step::Answer(Outcome::ok("2.0.0", "Ok"))
            }
            Request::Noop { .. } => Step::Answer(Outcome::ok("2.0.0", "Ok")),
            Request::Quit => {
                s.queue_reply(&Reply::new(221, "2.0.0", "Bye"));
                let _ = s.shutdown().await;
                Step::End
            }
            Request::Vrfy { .. } => Step::Answer(Outcome::reply(Reply::new(
                252,
                "2.0.0",
                "Cannot VRFY user, but will accept message",
            ))),
            Request::StartTls => return self.starttls(s).await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(&mut s, mechanism, &initial_response).await,
            _ => Step::Answer(Outcome::reply(Reply::new(
                502,
                "5.5.1",
                "Error: command not implemented",
            ))),
        };
        (step, Some(s))
    }

    /// EHLO/HELO/LHLO: the handler may refuse; otherwise the greeting with our extensions.
    fn hello(&mut self, host: &str, is_ehlo: bool) -> Outcome {
        self.handler.reset();
        if let Some(refusal) = self.handler.hello(host) {
            return refusal;
        }
        self.state = State::Greeted;
        self.extended = is_ehlo;
        let opts = self.opts;
        if !is_ehlo {
            return Outcome::reply(Reply {
                code: 250,
                enhanced: None,
                lines: smallvec::smallvec![opts.host_name.clone().into()],
            });
        }
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
        if opts.tls.is_some() && !self.stats.tls {
            lines.push("STARTTLS".into());
        }
        if opts.auth && (self.stats.tls || opts.auth_without_tls) {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        lines.push("SMTPUTF8".into());
        Outcome::reply(Reply {
            code: 250,
            enhanced: None,
            lines: lines.into_iter().map(Into::into).collect(),
        })
    }

    /// MAIL FROM, in sequence, within the size limit.
    fn mail(&mut self, s: &mut SmtpStream, from: &MailFrom<String>) -> Step {
        let o = match self.state {
            State::Fresh => Outcome::reply(Reply::new(503, "5.5.1", "Error: send HELO/EHLO first")),
            State::Mail | State::Rcpt => {
                Outcome::reply(Reply::new(503, "5.5.1", "Error: nested MAIL command"))
            }
            State::Greeted => {
                if let (Some(max), true) = (self.opts.max_message_size, from.size > 0) {
                    if from.size as u64 > max {
                        s.queue_reply(&Reply::new(552, "5.3.4", "Error: message file too big"));
                        return Step::Next;
                    }
                }
                let o = self.handler.mail(from);
                if o.reply.is_positive() {
                    self.state = State::Mail;
                    s.expect_data_size(from.size as u64);
                }
                o
            }
        };
        Step::Answer(o)
    }

    /// RCPT TO, after MAIL.
    fn rcpt(&mut self, to: &RcptTo<String>) -> Outcome {
        match self.state {
            State::Mail | State::Rcpt => {
                let o = self.handler.rcpt(to);
                if o.reply.is_positive() {
                    self.state = State::Rcpt;
                }
                o
            }
            _ => Outcome::reply(Reply::new(503, "5.5.1", "Error: need MAIL command")),
        }
    }

    /// DATA: the handler may refuse; otherwise 354, the message within the data timeout and size
    /// limit, and the handler's verdict on it.
    async fn data(&mut self, s: &mut SmtpStream) -> Step {
        match self.state {
            State::Rcpt => {}
            State::Mail => {
                return Step::Answer(Outcome::reply(Reply::new(
                    554,
                    "5.5.1",
                    "Error: no valid recipients",
                )))
            }
            _ => {
                return Step::Answer(Outcome::reply(Reply::new(
                    503,
                    "5.5.1",
                    "Error: need RCPT command",
                )))
            }
        }
        if let Some(refusal) = self.handler.data() {
            return Step::Answer(refusal);
        }
        s.queue_reply(&Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"));
        if s.flush().await.is_err() {
            return Step::End;
        }
        let read = s.read_data(self.opts.max_message_size);
        let o = match tokio::time::timeout(self.opts.data_timeout, read).await {
            Err(_) => {
                let r = Reply::new(421, "4.4.2", "Error: timeout exceeded");
                return Step::Answer(Outcome::close(r));
            }
            Ok(Err(DataError::BareNewline)) => {
                let text = format!("{} Error: bare <LF> received", self.opts.host_name);
                return Step::Answer(Outcome::close(Reply::new(521, "5.5.2", text)));
            }
            Ok(Err(_)) => return Step::End,
            Ok(Ok(d)) if d.too_big => {
                Outcome::reply(Reply::new(552, "5.3.4", "Error: message file too big"))
            }
            Ok(Ok(d)) if d.long_line => {
                Outcome::reply(Reply::new(500, "5.5.2", "Error: message line too long"))
            }
            Ok(Ok(d)) => {
                let o = self.handler.message(d).await;
                if o.reply.is_positive() {
                    self.stats.messages += 1;
                }
                o
            }
        };
        // A transaction read to its end (taken or not) is over.
        self.handler.reset();
        self.state = State::Greeted;
        Step::Answer(o)
    }

    /// STARTTLS: the handshake over the same connection; the session starts afresh over TLS.
    async fn starttls(&mut self, mut s: SmtpStream) -> (Step, Option<SmtpStream>) {
        let acceptor = match (&self.opts.tls, self.stats.tls) {
            (Some(acceptor), false) => acceptor.clone(),
            (Some(_), true) => {
                let r = Reply::new(503, "5.5.1", "Error: TLS already active");
                return (Step::Answer(Outcome::reply(r)), Some(s));
            }
            (None, _) => {
                let r = Reply::new(502, "5.5.1", "Error: command not implemented");
                return (Step::Answer(Outcome::reply(r)), Some(s));
            }
        };
        s.queue_reply(&Reply::new(220, "2.0.0", "Ready to start TLS"));
        if s.flush().await.is_err() {
            return (Step::End, None);
        }
        let (inner, leftover) = s.into_inner();
        if leftover > 0 {
            return (Step::End, None); // plaintext injected after STARTTLS: drop the connection
        }
        match acceptor.accept(inner).await {
            Ok(tls) => {
                self.stats.tls = true;
                self.state = State::Fresh;
                self.extended = false;
                self.handler.reset();
                self.handler.tls_started();
                (Step::Next, Some(SmtpStream::new(Box::new(tls))))
            }
            Err(_) => (Step::End, None),
        }
    }

    /// AUTH PLAIN/LOGIN, where allowed; failures wait longer each time and end the session at
    /// `max_auth_failures`.
    async fn auth(&mut self, s: &mut SmtpStream, mechanism: u64, initial: &str) -> Step {
        let opts = self.opts;
        if !opts.auth || !(self.stats.tls || opts.auth_without_tls) {
            let r = Reply::new(503, "5.5.1", "Error: authentication not enabled");
            return Step::Answer(Outcome::reply(r));
        }
        if self.stats.authenticated {
            let r = Reply::new(503, "5.5.1", "Error: already authenticated");
            return Step::Answer(Outcome::reply(r));
        }
        let (user, password) = match auth_exchange(s, mechanism, initial, opts).await {
            Ok(c) => c,
            Err(o) => {
                s.queue_reply(&o.reply);
                if o.close {
                    let _ = s.shutdown().await;
                    return Step::End;
                }
                return Step::Next;
            }
        };
        if self.handler.authenticate(&user, &password) {
            self.stats.authenticated = true;
            return Step::Answer(Outcome::reply(Reply::new(
                235,
                "2.7.0",
                "Authentication successful",
            )));
        }
        self.auth_failures += 1;
        if self.auth_failures >= opts.max_auth_failures {
            return Step::Answer(Outcome::close(Reply::new(
                421,
                "4.7.0",
                "Error: too many authentication failures",
            )));
        }
        // Slow down guessing: each failure waits longer.
        let wait = Duration::from_millis(250 * u64::from(self.auth_failures));
        tokio::time::sleep(wait).await;
        Step::Answer(Outcome::reply(Reply::new(
            535,
            "5.7.8",
            "Error: authentication failed",
        )))
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
