//! Our SMTP client against our server driver, over in-memory pipes and over real TCP on loopback:
//! pipelining, per-recipient replies, STARTTLS, AUTH, size limits, and raw protocol abuse (bare LF,
//! over-long lines, unannounced pipelining).

use mta::net::{LiveNet, Net};
use mta::smtp::client::{
    opportunistic_tls, self_signed_acceptor, Client, ClientError, Timeouts, Transaction,
};
use mta::smtp::io::Data;
use mta::smtp::server::{serve, Handler, Outcome, ServerOptions};
use mta::smtp::{MailFrom, RcptTo, Reply};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Messages received: sender, recipients, body.
type Received = Arc<Mutex<Vec<(String, Vec<String>, Vec<u8>)>>>;

#[derive(Clone, Default)]
struct Sink {
    got: Received,
    from: String,
    rcpts: Vec<String>,
}

impl Handler for Sink {
    fn connect(&mut self) -> Outcome {
        Outcome::reply(Reply::new(220, "", "sink.test ESMTP"))
    }
    fn mail(&mut self, from: &MailFrom<String>) -> Outcome {
        self.from = from.address.clone();
        Outcome::ok("2.1.0", "Ok")
    }
    fn rcpt(&mut self, to: &RcptTo<String>) -> Outcome {
        if to.address.starts_with("unknown") {
            return Outcome::reply(Reply::new(550, "5.1.1", "no such user"));
        }
        self.rcpts.push(to.address.clone());
        Outcome::ok("2.1.5", "Ok")
    }
    async fn message(&mut self, data: Data) -> Outcome {
        if let Ok(mut g) = self.got.lock() {
            g.push((self.from.clone(), self.rcpts.clone(), data.body.into_vec()));
        }
        Outcome::ok("2.0.0", "Ok: queued")
    }
    fn reset(&mut self) {
        self.rcpts.clear();
    }
    fn authenticate(&mut self, user: &str, password: &str) -> bool {
        user == "alice" && password == "s3cret"
    }
}

fn opts() -> ServerOptions {
    ServerOptions {
        host_name: "sink.test".into(),
        max_message_size: Some(10_000),
        auth: true,
        ..ServerOptions::default()
    }
}

/// A client that has said EHLO to our server driver (options `o`) with `sink` as handler, over an
/// in-memory duplex; the server task gives its statistics when the session ends.
async fn connected(
    sink: &Sink,
    o: ServerOptions,
) -> (
    Client,
    tokio::task::JoinHandle<mta::smtp::server::SessionStats>,
) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut h = sink.clone();
    let server = tokio::spawn(async move { serve(Box::new(b), &mut h, &o).await });
    let mut c = Client::connect(Box::new(a), Timeouts::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|r| panic!("{r}"));
    c.ehlo("client.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (c, server)
}

#[tokio::test]
async fn pipelined_transaction_with_per_recipient_replies() {
    let sink = Sink::default();
    let (mut c, server) = connected(&sink, opts()).await;
    assert!(c.caps.pipelining && c.caps.size == Some(10_000) && c.caps.enhanced);
    let body = b"Subject: t\r\n\r\n.dot\r\nhello\r\n";
    let rcpts = vec![
        "a@x.test".to_string(),
        "unknown@x.test".to_string(),
        "b@x.test".to_string(),
    ];
    let t = c
        .send("s@y.test", &rcpts, body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.outcome(0).code, 250);
    assert_eq!(t.outcome(1).to_string(), "550 5.1.1 no such user");
    assert_eq!(t.outcome(2).code, 250);
    let too_big = vec![b'x'; 20_000];
    let t = c
        .send("s@y.test", &rcpts[..1], &too_big)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.outcome(0).code, 552, "SIZE refusal at MAIL: {t:?}");
    let t = c
        .send("s@y.test", &["unknown@x.test".to_string()], body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((t.outcome(0).code, t.data.is_none()), (550, true));
    c.quit().await;
    let stats = server.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.messages, 1);
    let got = sink.got.lock().map(|g| g.clone()).unwrap_or_default();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, vec!["a@x.test", "b@x.test"]);
    assert_eq!(
        got[0].2, body,
        "dot-stuffed on the wire, unstuffed on arrival"
    );
}

#[tokio::test]
async fn starttls_and_auth_over_real_tcp() {
    let net = LiveNet;
    let mut l = net
        .listen("127.0.0.4:0".parse().unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let at = l.local_addr();
    let acceptor =
        self_signed_acceptor(&["sink.test".to_string()]).unwrap_or_else(|e| panic!("{e}"));
    let o = ServerOptions {
        tls: Some(acceptor),
        ..opts()
    };
    let sink = Sink::default();
    let mut h = sink.clone();
    let server = tokio::spawn(async move {
        let c = l.accept().await.unwrap_or_else(|e| panic!("{e}"));
        serve(c.stream, &mut h, &o).await
    });
    let conn = net
        .connect(
            Some("127.0.0.5".parse().unwrap_or_else(|e| panic!("{e}"))),
            at,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = Client::connect(conn.stream, Timeouts::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|r| panic!("{r}"));
    c.ehlo("client.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.caps.starttls);
    assert!(
        !c.caps.keywords.iter().any(|k| k.starts_with("AUTH")),
        "no AUTH before TLS"
    );
    let mut c = c
        .starttls(&opportunistic_tls(), "sink.test", "client.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|b| panic!("{}", b.1));
    assert!(c.tls && !c.caps.starttls && c.caps.keywords.iter().any(|k| k == "AUTH PLAIN LOGIN"));
    let t = c
        .send(
            "s@y.test",
            &["a@x.test".to_string()],
            b"Subject: tls\r\n\r\nover TLS\r\n",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.outcome(0).code, 250);
    c.quit().await;
    let stats = server.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(stats.tls && stats.messages == 1);
}

/// Talks raw SMTP to the server driver; returns everything the server said.
async fn raw(script: &[u8], o: ServerOptions) -> String {
    let (mut a, b) = tokio::io::duplex(1 << 20);
    let mut h = Sink::default();
    let server = tokio::spawn(async move { serve(Box::new(b), &mut h, &o).await });
    a.write_all(script).await.unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), a.read_to_end(&mut out)).await;
    drop(a);
    let _ = server.await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn abuse_is_refused_clearly() {
    let smuggle = raw(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhello\n.\nMAIL FROM:<evil@x>\r\n.\r\nQUIT\r\n", opts()).await;
    assert!(
        smuggle.contains("521 5.5.2 sink.test Error: bare <LF> received"),
        "{smuggle}"
    );
    assert!(!smuggle.contains("queued"), "nothing accepted: {smuggle}");
    let long = raw(
        format!("EHLO c\r\nNOOP {}\r\nQUIT\r\n", "x".repeat(2000)).as_bytes(),
        opts(),
    )
    .await;
    assert!(
        long.contains("500 5.5.2 Error: line too long") && long.contains("221 2.0.0 Bye"),
        "{long}"
    );
    let order = raw(b"EHLO c\r\nRCPT TO:<c@d>\r\nDATA\r\nQUIT\r\n", opts()).await;
    assert!(
        order.contains("503 5.5.1 Error: need MAIL command")
            && order.contains("503 5.5.1 Error: need RCPT command"),
        "{order}"
    );
    let helo_pipelined = raw(
        b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nQUIT\r\n",
        opts(),
    )
    .await;
    assert!(
        helo_pipelined.contains("554 5.5.0 Error: SMTP protocol synchronization"),
        "{helo_pipelined}"
    );
    let auth_clear = raw(
        b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHMzY3JldA==\r\nQUIT\r\n",
        opts(),
    )
    .await;
    assert!(
        auth_clear.contains("503 5.5.1 Error: authentication not enabled"),
        "no AUTH in the clear: {auth_clear}"
    );
    let o = ServerOptions {
        auth_without_tls: true,
        ..opts()
    };
    let auth = raw(
        b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHMzY3JldA==\r\nQUIT\r\n",
        o.clone(),
    )
    .await;
    assert!(
        auth.contains("235 2.7.0 Authentication successful"),
        "{auth}"
    );
    let guess = raw(b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nNOOP\r\n", o).await;
    assert!(
        guess.matches("535 5.7.8").count() == 2
            && guess.contains("421 4.7.0 Error: too many authentication failures")
            && !guess.contains("250 2.0.0 Ok\r\n"),
        "{guess}"
    );
}

/// After a transaction whose recipients were all refused, the next one works (the client resets).
#[tokio::test]
async fn a_transaction_after_all_recipients_were_refused() {
    let (mut c, server) = connected(&Sink::default(), opts()).await;
    let t = c
        .send("s@y.test", &["unknown@x.test".to_string()], b"x\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.outcome(0).code, 550);
    let t = c
        .send("s@y.test", &["a@x.test".to_string()], b"x\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.outcome(0).code, 250, "{t:?}");
    c.quit().await;
    assert_eq!(server.await.map(|s| s.messages).unwrap_or(0), 1);
}

/// The delivery side keeps one TLS client configuration, so a second connection to a host resumes
/// the first one's session (no new certificate signature), as the providers' servers allow.
#[tokio::test]
async fn a_second_tls_connection_to_a_host_resumes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let acceptor = mta::smtp::client::self_signed_acceptor(&["mx.resume.test".to_string()])
        .unwrap_or_else(|e| panic!("{e}"));
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let acc = acceptor.clone();
        let server = tokio::spawn(async move {
            let mut tls = acc.accept(s).await?;
            tls.write_all(b"ok").await?;
            tls.flush().await?;
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest).await;
            Ok::<_, std::io::Error>(())
        });
        let name = rustls::pki_types::ServerName::try_from("mx.resume.test")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut tls = mta::smtp::client::opportunistic_tls()
            .connect(name, c)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        kinds.push(tls.get_ref().1.handshake_kind());
        let _ = tls.shutdown().await;
        drop(tls);
        let _ = server.await;
    }
    assert_eq!(
        kinds,
        vec![
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

/// One dot-free spooled message from `s@y.test` to `rcpt`, its body had from `fetch`.
async fn spooled(
    c: &mut Client,
    rcpt: &str,
    size: usize,
    fetch: &(dyn Fn() -> Result<Arc<Vec<u8>>, String> + Sync),
) -> Result<Transaction, ClientError> {
    c.send_spooled("s@y.test", &[rcpt.to_string()], size, fetch, true)
        .await
}

/// A spooled body is fetched only after the server's 354: a transaction whose recipients are all
/// refused never reads it, an accepted one reads it once; a body that cannot be had then ends
/// the call in the middle of DATA and, the connection dropped, the server keeps no message.
#[tokio::test]
async fn a_spooled_body_is_fetched_only_for_data() {
    let sink = Sink::default();
    let (mut c, server) = connected(&sink, opts()).await;
    let body = Arc::new(b"Subject: s\r\n\r\nspooled\r\n".to_vec());
    let fetched = std::sync::atomic::AtomicUsize::new(0);
    let fetch = || {
        fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(body.clone())
    };
    let count = || fetched.load(std::sync::atomic::Ordering::Relaxed);
    let t = spooled(&mut c, "unknown@x.test", body.len(), &fetch)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((t.outcome(0).code, count()), (550, 0), "refused: not read");
    let t = spooled(&mut c, "a@x.test", body.len(), &fetch)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((t.outcome(0).code, count()), (250, 1), "{t:?}");
    let gone = || Err("spool read failed".to_string());
    let e = spooled(&mut c, "b@x.test", body.len(), &gone)
        .await
        .map(|t| format!("{t:?}"))
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("message body unavailable: spool read failed")
    );
    drop(c);
    let stats = server.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.messages, 1, "the unfinished message is not taken");
    let got = sink.got.lock().map(|g| g.clone()).unwrap_or_default();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].1.clone(), got[0].2.clone()),
        (vec!["a@x.test".to_string()], body.to_vec())
    );
}

/// A server that does not offer PIPELINING gets one command at a time (MAIL with SIZE, each
/// RCPT, DATA), and the transaction works as the pipelined one does.
#[tokio::test]
async fn without_pipelining_commands_go_one_at_a_time() {
    let sink = Sink::default();
    let o = ServerOptions {
        pipelining: false,
        ..opts()
    };
    let (mut c, server) = connected(&sink, o).await;
    assert!(!c.caps.pipelining && c.caps.size == Some(10_000));
    let rcpts = vec!["a@x.test".to_string(), "unknown@x.test".to_string()];
    let t = c
        .send("s@y.test", &rcpts, b"Subject: one\r\n\r\nat a time\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((t.outcome(0).code, t.outcome(1).code), (250, 550), "{t:?}");
    let t = c
        .send("s@y.test", &rcpts[..1], &vec![b'x'; 20_000])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.outcome(0).code, 552, "SIZE refusal at MAIL: {t:?}");
    c.quit().await;
    let stats = server.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.messages, 1);
    let got = sink.got.lock().map(|g| g.clone()).unwrap_or_default();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, vec!["a@x.test"]);
    assert_eq!(got[0].2, b"Subject: one\r\n\r\nat a time\r\n");
}
