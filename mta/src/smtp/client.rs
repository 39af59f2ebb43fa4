//! Outbound SMTP sessions: greeting, EHLO (HELO fallback) and capabilities, opportunistic or
//! required STARTTLS, transactions with MAIL/RCPT/DATA pipelined when the server offers it and a
//! reply per recipient, RSET and QUIT, a timeout on every step.

use super::io::{LineError, SmtpStream};
use super::reply::{Reply, ReplyParser};
use crate::net::BoxStream;
use std::sync::Arc;
use std::time::Duration;

/// Where a session failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No reply in time.
    #[error("timeout waiting for the {0} reply")]
    Timeout(&'static str),
    /// The server closed the connection.
    #[error("connection closed during {0}")]
    Closed(&'static str),
    /// The server's reply could not be understood.
    #[error("protocol error during {0}: {1}")]
    Protocol(&'static str, String),
    /// TLS failed.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// An I/O error.
    #[error("I/O error during {0}: {1}")]
    Io(&'static str, std::io::Error),
    /// The message body could not be had when the server asked for it (the connection is left
    /// in the middle of DATA: drop it, so the server discards the message).
    #[error("message body unavailable: {0}")]
    Body(String),
}

/// What the server offered in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// PIPELINING.
    pub pipelining: bool,
    /// STARTTLS.
    pub starttls: bool,
    /// SIZE, with the limit if given.
    pub size: Option<u64>,
    /// 8BITMIME.
    pub eight_bit: bool,
    /// ENHANCEDSTATUSCODES.
    pub enhanced: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// The EHLO keywords as offered.
    pub keywords: Vec<String>,
}

impl Capabilities {
    fn from_reply(r: &Reply) -> Capabilities {
        let mut c = Capabilities::default();
        for line in r.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(kw) = words.next() else { continue };
            let is = |name: &str| kw.eq_ignore_ascii_case(name);
            if is("PIPELINING") {
                c.pipelining = true;
            } else if is("STARTTLS") {
                c.starttls = true;
            } else if is("SIZE") {
                c.size = words.next().and_then(|n| n.parse().ok()).or(Some(0));
            } else if is("8BITMIME") {
                c.eight_bit = true;
            } else if is("ENHANCEDSTATUSCODES") {
                c.enhanced = true;
            } else if is("SMTPUTF8") {
                c.smtputf8 = true;
            }
            c.keywords.push(line.to_string());
        }
        c
    }

    /// A short `PIPELINING,SIZE,STARTTLS` summary (the accounting `dlvEsmtpAvailable` column).
    pub fn summary(&self) -> String {
        self.keywords
            .iter()
            .filter_map(|k| k.split_whitespace().next())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Timeouts per step.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The 220 greeting.
    pub greeting: Duration,
    /// Each command's reply.
    pub command: Duration,
    /// The reply after the data.
    pub data: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            greeting: Duration::from_secs(300),
            command: Duration::from_secs(300),
            data: Duration::from_secs(600),
        }
    }
}

/// The outcome of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Reply to MAIL FROM.
    pub mail: Reply,
    /// Reply to each RCPT TO, in order.
    pub rcpts: Vec<Reply>,
    /// Reply after the data, if the data was sent.
    pub data: Option<Reply>,
}

impl Transaction {
    /// The final reply for recipient `i`: MAIL's refusal, else its RCPT refusal, else the data reply.
    pub fn outcome(&self, i: usize) -> &Reply {
        if !self.mail.is_positive() {
            return &self.mail;
        }
        match self.rcpts.get(i) {
            Some(r) if !r.is_positive() => r,
            _ => self.data.as_ref().unwrap_or(&self.mail),
        }
    }
}

impl Transaction {
    /// The command whose reply [`Transaction::outcome`] gives for recipient `i`: `MAIL`, `RCPT`
    /// or `DATA`.
    pub fn command(&self, i: usize) -> &'static str {
        if !self.mail.is_positive() {
            return "MAIL";
        }
        match self.rcpts.get(i) {
            Some(r) if !r.is_positive() => "RCPT",
            _ if self.data.is_some() => "DATA",
            _ => "MAIL",
        }
    }
}

/// An SMTP client session.
pub struct Client {
    s: SmtpStream,
    /// The greeting.
    pub greeting: Reply,
    /// What EHLO offered.
    pub caps: Capabilities,
    /// TLS is on.
    pub tls: bool,
    timeouts: Timeouts,
}

impl Client {
    /// Reads the greeting. A non-2xx greeting is returned as `Ok(Err(reply))` so callers can act on
    /// its text (e.g. a provider refusing at the banner); the connection should then be dropped.
    pub async fn connect(
        stream: BoxStream,
        timeouts: Timeouts,
    ) -> Result<Result<Client, Reply>, ClientError> {
        let mut s = SmtpStream::new(stream);
        let greeting = read_reply(&mut s, timeouts.greeting, "greeting").await?;
        if !greeting.is_positive() {
            return Ok(Err(greeting));
        }
        Ok(Ok(Client {
            s,
            greeting,
            caps: Capabilities::default(),
            tls: false,
            timeouts,
        }))
    }

    /// EHLO, falling back to HELO when EHLO is refused with 5xx.
    pub async fn ehlo(&mut self, name: &str) -> Result<Reply, ClientError> {
        let r = self.command(&format!("EHLO {name}"), "EHLO").await?;
        if r.is_positive() {
            self.caps = Capabilities::from_reply(&r);
            return Ok(r);
        }
        if r.is_permanent() {
            let h = self.command(&format!("HELO {name}"), "HELO").await?;
            self.caps = Capabilities::default();
            return Ok(h);
        }
        Ok(r)
    }

    /// STARTTLS and a new EHLO; `Ok(Err(reply))` if the server refused STARTTLS.
    pub async fn starttls(
        self,
        connector: &tokio_rustls::TlsConnector,
        server_name: &str,
        ehlo_name: &str,
    ) -> Result<Result<Client, Box<(Client, Reply)>>, ClientError> {
        let mut me = self;
        let r = me.command("STARTTLS", "STARTTLS").await?;
        if r.code != 220 {
            return Ok(Err(Box::new((me, r))));
        }
        let (inner, _) = me.s.into_inner();
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let tls = tokio::time::timeout(me.timeouts.command, connector.connect(name, inner))
            .await
            .map_err(|_| ClientError::Timeout("TLS handshake"))?
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut c = Client {
            s: SmtpStream::new(Box::new(tls)),
            greeting: me.greeting,
            caps: Capabilities::default(),
            tls: true,
            timeouts: me.timeouts,
        };
        c.ehlo(ehlo_name).await?;
        Ok(Ok(c))
    }

    async fn command(&mut self, line: &str, what: &'static str) -> Result<Reply, ClientError> {
        self.s.queue(line.as_bytes());
        self.s.queue(b"\r\n");
        self.queued_command(what).await
    }

    /// Sends the command already queued and reads its reply.
    async fn queued_command(&mut self, what: &'static str) -> Result<Reply, ClientError> {
        self.s.flush().await.map_err(|e| ClientError::Io(what, e))?;
        read_reply(&mut self.s, self.timeouts.command, what).await
    }

    /// One transaction. `body` is the message with CRLF line ends; it is dot-stuffed here. MAIL,
    /// RCPT and DATA go in one write when the server offers PIPELINING.
    pub async fn send(
        &mut self,
        mail_from: &str,
        rcpts: &[String],
        body: &[u8],
    ) -> Result<Transaction, ClientError> {
        self.transact(mail_from, rcpts, Body::Borrowed(body), false)
            .await
    }

    /// [`send`](Self::send) with a body the caller gives away and may know to be `dot_free` (no
    /// line of it starts with a dot, see [`crate::smtp::io::dot_free`]): such a body is not
    /// searched for dot lines and becomes the output itself (on the simulated network, the very
    /// buffer the server reads).
    pub async fn send_owned(
        &mut self,
        mail_from: &str,
        rcpts: &[String],
        body: Vec<u8>,
        dot_free: bool,
    ) -> Result<Transaction, ClientError> {
        self.transact(mail_from, rcpts, Body::Owned(body), dot_free)
            .await
    }

    /// [`send_owned`](Self::send_owned) with a body of `size` bytes the caller keeps a share of
    /// (a spooled message), fetched only once the server has said 354: a transaction refused
    /// at MAIL or RCPT never reads it. On the simulated network a dot-free one crosses without
    /// a copy. A failed fetch ends the call with [`ClientError::Body`] in the middle of DATA.
    pub async fn send_spooled(
        &mut self,
        mail_from: &str,
        rcpts: &[String],
        size: usize,
        fetch: &(dyn Fn() -> Result<Arc<Vec<u8>>, String> + Sync),
        dot_free: bool,
    ) -> Result<Transaction, ClientError> {
        self.transact(mail_from, rcpts, Body::Spooled { size, fetch }, dot_free)
            .await
    }

    async fn transact(
        &mut self,
        mail_from: &str,
        rcpts: &[String],
        body: Body<'_>,
        dot_free: bool,
    ) -> Result<Transaction, ClientError> {
        // The SIZE parameter when the server takes it; commands are written straight into the
        // output (no String per command).
        let size = self.caps.size.map(|_| body.len());
        let mail = |s: &mut SmtpStream| match size {
            Some(n) => s.queue_fmt(format_args!("MAIL FROM:<{mail_from}> SIZE={n}\r\n")),
            None => s.queue_fmt(format_args!("MAIL FROM:<{mail_from}>\r\n")),
        };
        if self.caps.pipelining {
            mail(&mut self.s);
            for r in rcpts {
                self.s.queue_fmt(format_args!("RCPT TO:<{r}>\r\n"));
            }
            self.s.queue(b"DATA\r\n");
            self.s
                .flush()
                .await
                .map_err(|e| ClientError::Io("MAIL", e))?;
            let mail = read_reply(&mut self.s, self.timeouts.command, "MAIL").await?;
            if mail.code == 421 {
                // The server is closing: its 421 is the answer for the whole transaction.
                return Ok(Transaction {
                    rcpts: vec![mail.clone(); rcpts.len()],
                    mail,
                    data: None,
                });
            }
            let mut replies = Vec::with_capacity(rcpts.len());
            for _ in rcpts {
                let r = read_reply(&mut self.s, self.timeouts.command, "RCPT").await?;
                if r.code == 421 {
                    replies.resize(rcpts.len(), r);
                    return Ok(Transaction {
                        mail,
                        rcpts: replies,
                        data: None,
                    });
                }
                replies.push(r);
            }
            let data_go = read_reply(&mut self.s, self.timeouts.command, "DATA").await?;
            if data_go.code != 354 {
                // No valid recipient (or MAIL refused): the server refused DATA, nothing to send.
                if data_go.is_positive() {
                    return Err(ClientError::Protocol(
                        "DATA",
                        format!("unexpected {data_go}"),
                    ));
                }
                // The transaction may still be open on the server: reset it for the next one.
                if mail.is_positive() {
                    self.rset().await?;
                }
                return Ok(Transaction {
                    mail,
                    rcpts: replies,
                    data: None,
                });
            }
            if !mail.is_positive() || replies.iter().all(|r| !r.is_positive()) {
                // A server that says 354 without any accepted recipient: end the data at once.
                self.s.queue(b".\r\n");
                self.s
                    .flush()
                    .await
                    .map_err(|e| ClientError::Io("DATA", e))?;
                let _ = read_reply(&mut self.s, self.timeouts.data, "end of data").await?;
                return Ok(Transaction {
                    mail,
                    rcpts: replies,
                    data: None,
                });
            }
            body.queue(&mut self.s, dot_free)?;
            self.s
                .flush()
                .await
                .map_err(|e| ClientError::Io("DATA", e))?;
            let data = read_reply(&mut self.s, self.timeouts.data, "end of data").await?;
            return Ok(Transaction {
                mail,
                rcpts: replies,
                data: Some(data),
            });
        }
        mail(&mut self.s);
        let mail = self.queued_command("MAIL").await?;
        if !mail.is_positive() {
            return Ok(Transaction {
                mail,
                rcpts: Vec::new(),
                data: None,
            });
        }
        let mut replies = Vec::with_capacity(rcpts.len());
        for r in rcpts {
            self.s.queue_fmt(format_args!("RCPT TO:<{r}>\r\n"));
            replies.push(self.queued_command("RCPT").await?);
        }
        if replies.iter().all(|r| !r.is_positive()) {
            let _ = self.command("RSET", "RSET").await;
            return Ok(Transaction {
                mail,
                rcpts: replies,
                data: None,
            });
        }
        let go = self.command("DATA", "DATA").await?;
        if go.code != 354 {
            self.rset().await?;
            return Ok(Transaction {
                mail,
                rcpts: replies,
                data: Some(go),
            });
        }
        body.queue(&mut self.s, dot_free)?;
        self.s
            .flush()
            .await
            .map_err(|e| ClientError::Io("DATA", e))?;
        let data = read_reply(&mut self.s, self.timeouts.data, "end of data").await?;
        Ok(Transaction {
            mail,
            rcpts: replies,
            data: Some(data),
        })
    }

    /// RSET.
    pub async fn rset(&mut self) -> Result<Reply, ClientError> {
        self.command("RSET", "RSET").await
    }

    /// QUIT and close (errors ignored: the work is done).
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.command("QUIT", "QUIT")).await;
        let _ = self.s.shutdown().await;
    }
}

async fn read_reply(
    s: &mut SmtpStream,
    timeout: Duration,
    what: &'static str,
) -> Result<Reply, ClientError> {
    let mut p = ReplyParser::default();
    loop {
        let line = match s.read_line_within(4096, timeout).await {
            Err(LineError::TimedOut) => return Err(ClientError::Timeout(what)),
            Err(LineError::Closed) => return Err(ClientError::Closed(what)),
            Err(LineError::TooLong) => {
                return Err(ClientError::Protocol(what, "reply line too long".into()))
            }
            Err(LineError::Io(e)) => return Err(ClientError::Io(what, e)),
            Ok(l) => l,
        };
        match p.line_owned(line) {
            Ok(Some(r)) => return Ok(r),
            Ok(None) => {}
            Err(e) => return Err(ClientError::Protocol(what, e.to_string())),
        }
    }
}

/// A TLS client configuration that accepts any certificate: opportunistic STARTTLS as MTAs do it
/// (RFC 7435), where an unauthenticated encrypted channel beats a clear one. One configuration
/// for the process, so its session cache lets later connections to a host resume (no new
/// certificate signature, as Postfix's tlsmgr cache does).
pub fn opportunistic_tls() -> tokio_rustls::TlsConnector {
    static CONNECTOR: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();
    CONNECTOR.get_or_init(build_opportunistic_tls).clone()
}

fn build_opportunistic_tls() -> tokio_rustls::TlsConnector {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};
    #[derive(Debug)]
    struct AcceptAny(std::sync::Arc<rustls::crypto::CryptoProvider>);
    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(AcceptAny(provider)))
                .with_no_client_auth()
        });
    match cfg {
        Ok(c) => tokio_rustls::TlsConnector::from(std::sync::Arc::new(c)),
        Err(_) => tokio_rustls::TlsConnector::from(std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            })
            .unwrap_or_else(|_| unreachable!("aws-lc supports the default protocol versions")),
        )),
    }
}

/// A TLS acceptor with a fresh self-signed certificate for `names` (test worlds), made with rcgen.
pub fn self_signed_acceptor(names: &[String]) -> Result<tokio_rustls::TlsAcceptor, String> {
    let cert = rcgen::generate_simple_self_signed(names.to_vec()).map_err(|e| e.to_string())?;
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
        .map_err(|e| e.to_string())?;
    let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(vec![der], key)
    .map_err(|e| e.to_string())?;
    let mut cfg = cfg;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg)))
}

/// A message body to send: borrowed (copied into the output), owned (handed over when it needs
/// no dot-stuffing) or shared (handed across a simulated connection when it needs none).
enum Body<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
    /// `size` bytes, had from `fetch` when they are to be sent.
    Spooled {
        size: usize,
        fetch: &'a (dyn Fn() -> Result<Arc<Vec<u8>>, String> + Sync),
    },
}

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::Borrowed(b) => b.len(),
            Body::Owned(b) => b.len(),
            Body::Spooled { size, .. } => *size,
        }
    }

    /// Queues the DATA bytes (fetching a spooled body now).
    fn queue(self, s: &mut SmtpStream, dot_free: bool) -> Result<(), ClientError> {
        match self {
            Body::Borrowed(b) => s.queue_body(b, dot_free),
            Body::Owned(b) => s.queue_body_owned(b, dot_free),
            Body::Spooled { fetch, .. } => {
                s.queue_body_shared(fetch().map_err(ClientError::Body)?, dot_free)
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each recipient's outcome names the command it answered, for the classifier.
    #[test]
    fn outcome_command() {
        let ok = Reply::new(250, "2.0.0", "ok");
        let no = Reply::new(550, "5.1.1", "no such user");
        let t = Transaction {
            mail: ok.clone(),
            rcpts: vec![ok.clone(), no.clone()],
            data: Some(Reply::new(554, "5.7.1", "spam")),
        };
        assert_eq!((t.command(0), t.outcome(0).code), ("DATA", 554));
        assert_eq!((t.command(1), t.outcome(1).code), ("RCPT", 550));
        let t = Transaction {
            mail: Reply::new(553, "5.1.8", "bad sender"),
            rcpts: vec![],
            data: None,
        };
        assert_eq!((t.command(0), t.outcome(0).code), ("MAIL", 553));
        let t = Transaction {
            mail: ok,
            rcpts: vec![no],
            data: None,
        };
        assert_eq!(t.command(0), "RCPT");
    }
}
