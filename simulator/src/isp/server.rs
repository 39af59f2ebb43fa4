//! The fake provider's SMTP server: a `mta::smtp::server::Handler` over the provider engine
//! (limits, mailboxes, authentication checks, reputation), the same in simulated runs (SimNet) and
//! live (`mtasim world up`, real TCP); plus what providers send back later (late DSNs, ARF
//! complaints) and the senders' sink.

use super::{DataFacts, Engine as Isp, Session};
use mta::clock::Clock;
use mta::config::values::parse_interval;
use mta::net::Net;
use mta::smtp::client::{Client, Timeouts};
use mta::smtp::io::{Data, MessageBody};
use mta::smtp::server::{Handler, Outcome};
use mta::smtp::{MailFrom, RcptTo, Reply};
use mta::spool::BodyBuffers;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What providers send back later: late DSNs to the envelope sender and ARF complaints to the
/// sender's feedback-loop address, over SMTP, to the MTA when the address's domain is one it takes
/// mail for (else to the senders' sink).
pub struct Backchannel {
    pub net: Arc<dyn Net>,
    pub seed: u64,
    /// The MTA's listener and its local domains.
    pub mta_addr: SocketAddr,
    pub mta_domains: std::collections::BTreeSet<String>,
    /// The senders' sink (other domains).
    pub sink_addr: SocketAddr,
    /// `fbl_address` of the scenario.
    pub fbl_address: Option<String>,
    /// Complaint-rate incidents: (provider, from ms, until ms, share).
    pub complaint_rates: Mutex<Vec<(String, i64, i64, f64)>>,
    /// Chaos incidents in force (drops, slow replies, blocklisted IPs).
    pub chaos: Mutex<Vec<ChaosRule>>,
}

/// A chaos incident at one provider for a window.
#[derive(Debug, Clone)]
pub struct ChaosRule {
    /// The provider.
    pub provider: String,
    /// From (Unix ms).
    pub from_ms: i64,
    /// Until (Unix ms).
    pub until_ms: i64,
    /// What.
    pub kind: ChaosKind,
}

/// What a chaos incident does to a connection.
#[derive(Debug, Clone)]
pub enum ChaosKind {
    /// A share of connections is cut at the end of DATA, without a reply.
    Drop {
        /// Share of connections.
        share: f64,
    },
    /// A share of connections gets every reply late (tarpitting).
    Slow {
        /// Share of connections.
        share: f64,
        /// Delay before each reply.
        delay: Duration,
    },
    /// Every connection from `ip` gets `reply` at the banner and is closed.
    Blocklist {
        /// The source address.
        ip: IpAddr,
        /// The reply (`{ip}` is replaced).
        reply: String,
    },
}

impl Backchannel {
    fn complaint_share(&self, provider: &str, base: f64, now: i64) -> f64 {
        self.complaint_rates
            .lock()
            .ok()
            .and_then(|v| {
                v.iter()
                    .rev()
                    .find(|(p, a, b, _)| p == provider && *a <= now && now < *b)
                    .map(|x| x.3)
            })
            .unwrap_or(base)
    }

    /// Sends `body` from `from` (`""` = null sender) to `rcpt` from the provider host `src`.
    async fn send(&self, src: IpAddr, helo: &str, from: &str, rcpt: &str, body: &[u8]) {
        let domain = rcpt
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        let to = if self.mta_domains.contains(&domain) {
            self.mta_addr
        } else {
            self.sink_addr
        };
        if to.port() == 0 {
            tracing::debug!(%rcpt, "no address to send this report to");
            return;
        }
        tracing::debug!(%rcpt, %to, "provider sends a report");
        let Ok(conn) = self.net.connect(Some(src), to).await else {
            tracing::warn!(%rcpt, "provider could not connect to send a report");
            return;
        };
        let Ok(Ok(mut c)) = Client::connect(conn.stream, Timeouts::default()).await else {
            return;
        };
        if c.ehlo(helo).await.is_ok() {
            let _ = c.send(from, &[rcpt.to_string()], body).await;
        }
        c.quit().await;
    }
}

pub struct IspHandler {
    pub isp: Isp,
    pub dkim: crate::dkim_check::DkimChecker,
    pub clock: Clock,
    pub session: Option<Session>,
    pub peer: IpAddr,
    pub from: String,
    pub rcpts: u32,
    /// Recipients accepted in this transaction.
    pub accepted: Vec<String>,
    /// This MX host's address and name (reports are sent from here).
    pub local: IpAddr,
    pub host: String,
    pub back: Arc<Backchannel>,
    /// Chaos drawn for this connection: the delay before every reply, and a drop at DATA.
    pub slow: Duration,
    /// Cut the connection at the end of DATA.
    pub drop_at_data: bool,
    /// The client's EHLO name.
    pub helo: String,
    /// This session's last SPF verdict and the (EHLO, MAIL FROM) it was for: a session's messages
    /// mostly share their sender, and a receiver does not look the same record up again.
    pub spf_seen: Option<(String, String, bool)>,
    /// Where a message's body buffer goes once read, when nothing else holds it (a body the
    /// simulated spool read back from its overflow; the spool keeps and recycles the others).
    pub bodies: Option<Arc<dyn BodyBuffers>>,
}

/// One MX host as its connections share it: each accepted connection gets
/// [`MxHost::handler`].
#[derive(Clone)]
pub struct MxHost {
    /// The provider's decision engine.
    pub isp: Isp,
    /// DKIM verification against the world's keys.
    pub dkim: crate::dkim_check::DkimChecker,
    /// The world's clock.
    pub clock: Clock,
    /// Where late DSNs and complaints go.
    pub back: Arc<Backchannel>,
    /// This host's address and name.
    pub local: IpAddr,
    pub host: String,
    /// Where read body buffers go back to, if anywhere.
    pub bodies: Option<Arc<dyn BodyBuffers>>,
}

impl MxHost {
    /// The handler of one connection from `peer`.
    pub fn handler(&self, peer: IpAddr) -> IspHandler {
        IspHandler {
            isp: self.isp.clone(),
            dkim: self.dkim.clone(),
            clock: self.clock,
            session: None,
            peer,
            from: String::new(),
            rcpts: 0,
            accepted: Vec::new(),
            local: self.local,
            host: self.host.clone(),
            back: self.back.clone(),
            slow: Duration::ZERO,
            drop_at_data: false,
            helo: String::new(),
            spf_seen: None,
            bodies: self.bodies.clone(),
        }
    }
}

impl IspHandler {
    /// Decides, per accepted recipient, whether a late DSN or a complaint comes back, and
    /// schedules it on the simulated clock. `mid` is the message's Message-ID field ("" for none),
    /// `now` the time it was accepted.
    fn schedule_feedback(&self, body: &[u8], mid: &str, now: i64) {
        let fb = &self.isp.profile.feedback;
        // The original's header section and author, worked out only for a late bounce or a
        // complaint (most messages draw neither).
        let headers = || {
            let end = body
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(body.len(), |p| p + 4);
            String::from_utf8_lossy(&body[..end]).into_owned()
        };
        let author = || {
            mta::engine::header(body, "From")
                .and_then(|f| mta::bounce::parse::find_address(&f))
                .unwrap_or_default()
        };
        let seed = self.back.seed.to_le_bytes();
        tracing::debug!(provider = %self.isp.profile.name, accepted = self.accepted.len(), "feedback draw");
        for rcpt in &self.accepted {
            let late = crate::isp::engine::draw(&[&seed, b"late", rcpt.as_bytes(), mid.as_bytes()]);
            if late < fb.late_bounce_share && !self.from.is_empty() {
                let delay =
                    parse_interval(&fb.late_bounce_delay).unwrap_or(Duration::from_secs(600));
                let diag = fb.late_bounce_diagnostic.replace("{rcpt}", rcpt);
                // Status and category as the MTA's bounce processor will read them: one
                // classifier for synchronous replies, bounces and the simulator's tallies.
                let class = default_classifier().classify_failure(&mta::bounce::Failure {
                    diagnostic: &diag,
                    gave_up: true,
                    ..Default::default()
                });
                let status = if class.status.is_empty() {
                    "5.0.0".to_string()
                } else {
                    class.status
                };
                let recipients = [mta::bounce::DsnRecipient {
                    recipient: rcpt.clone(),
                    original_recipient: None,
                    action: mta::bounce::DsnAction::Failed,
                    status,
                    remote_mta: Some(self.host.clone()),
                    diagnostic: diag,
                    category: class.category,
                    last_attempt: None,
                    will_retry_until: None,
                }];
                let at = |ms: i64| std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
                let dsn = mta::bounce::build_dsn(&mta::bounce::DsnRequest {
                    reporting_host: &self.host,
                    virtual_mta: None,
                    envelope_sender: &self.from,
                    envelope_id: None,
                    arrival: at(now),
                    now: at(now + delay.as_millis() as i64),
                    seed: &format!("{now:x}{}", rcpt.len()),
                    original: headers().as_bytes(),
                    recipients: &recipients,
                });
                if let Some(d) = dsn {
                    let back = self.back.clone();
                    let (src, host) = (self.local, self.host.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        back.send(src, &host, "", &d.envelope_to, &d.bytes).await;
                    });
                }
                continue;
            }
            if !fb.sends_arf {
                continue;
            }
            let share = self
                .back
                .complaint_share(&self.isp.profile.name, fb.complaint_share, now);
            let c =
                crate::isp::engine::draw(&[&seed, b"complaint", rcpt.as_bytes(), mid.as_bytes()]);
            if c >= share {
                continue;
            }
            self.isp.complaint(self.peer, now);
            let fbl_to = self.back.fbl_address.clone().unwrap_or_else(|| {
                let author = author();
                format!("fbl@fbl.{}", author.rsplit_once('@').map_or("", |(_, d)| d))
            });
            let report_from = fb.report_from.clone();
            let arf = mta::fbl::build_arf(&mta::fbl::ArfInput {
                feedback_type: "abuse",
                user_agent: fb
                    .arf_user_agent
                    .as_deref()
                    .unwrap_or("mtasim-provider/1.0"),
                reporting_mta: &self.host,
                original_mail_from: &self.from,
                original_rcpt_to: rcpt,
                source_ip: Some(self.peer),
                arrival_date: now / 1000,
                original: &headers(),
                from: &report_from,
                to: &fbl_to,
            });
            match arf {
                Ok(arf) => {
                    let delay =
                        parse_interval(&fb.complaint_delay).unwrap_or(Duration::from_secs(600));
                    let back = self.back.clone();
                    let (src, host) = (self.local, self.host.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        back.send(src, &host, "", &fbl_to, arf.as_bytes()).await;
                    });
                }
                Err(e) => tracing::warn!(%e, "could not build an ARF report"),
            }
        }
    }
}

impl Handler for IspHandler {
    fn connect(&mut self) -> Outcome {
        let now = self.clock.now_ms();
        let (s, greet) = self.isp.connect(self.peer, now);
        let conn = s.conn;
        self.session = Some(s);
        let rules: Vec<ChaosRule> = self
            .back
            .chaos
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|r| {
                        r.provider == self.isp.profile.name && r.from_ms <= now && now < r.until_ms
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let draw = |what: &[u8]| {
            crate::isp::engine::draw(&[
                &self.back.seed.to_le_bytes(),
                what,
                self.isp.profile.name.as_bytes(),
                &conn.to_le_bytes(),
            ])
        };
        for r in &rules {
            match &r.kind {
                ChaosKind::Blocklist { ip, reply } if *ip == self.peer => {
                    let text = reply.replace("{ip}", &self.peer.to_string());
                    return Outcome::close(
                        Reply::parse_line(&text).unwrap_or_else(|| Reply::new(554, "5.7.1", text)),
                    );
                }
                ChaosKind::Drop { share } if draw(b"drop") < *share => self.drop_at_data = true,
                ChaosKind::Slow { share, delay } if draw(b"slow") < *share => self.slow = *delay,
                _ => {}
            }
        }
        let slow = self.slow;
        let out = match greet {
            Ok(g) => Outcome::reply(
                Reply::parse_line(&g).unwrap_or_else(|| Reply::new(220, "", "ready")),
            ),
            Err(a) => Outcome::close(
                Reply::parse_line(&a.reply)
                    .unwrap_or_else(|| Reply::new(421, "4.7.0", a.reply.clone())),
            ),
        };
        out.after(slow)
    }
    fn hello(&mut self, host: &str) -> Option<Outcome> {
        self.helo = host.to_string();
        None
    }
    fn mail(&mut self, from: &MailFrom<String>) -> Outcome {
        let slow = self.slow;
        self.mail_inner(from).after(slow)
    }
    fn rcpt(&mut self, to: &RcptTo<String>) -> Outcome {
        let slow = self.slow;
        self.rcpt_inner(to).after(slow)
    }
    async fn message(&mut self, data: Data) -> Outcome {
        if self.drop_at_data {
            return Outcome::dropped();
        }
        let slow = self.slow;
        let (outcome, body) = self.message_inner(data).await;
        if let (Some(pool), Some(buf)) = (&self.bodies, body.into_unique()) {
            pool.put(buf);
        }
        outcome.after(slow)
    }
    fn reset(&mut self) {
        self.rcpts = 0;
        self.accepted.clear();
    }
    fn tls_started(&mut self) {
        if let Some(s) = self.session.as_mut() {
            s.tls = true;
        }
    }
}

impl IspHandler {
    fn mail_inner(&mut self, from: &MailFrom<String>) -> Outcome {
        self.from = from.address.clone();
        self.rcpts = 0;
        self.accepted.clear();
        let Some(s) = &self.session else {
            return Outcome::close(Reply::new(421, "4.3.0", "no session"));
        };
        match self.isp.mail(s, self.clock.now_ms()) {
            Ok(()) => Outcome::ok("2.1.0", "OK"),
            Err(a) => answer(a),
        }
    }
    fn rcpt_inner(&mut self, to: &RcptTo<String>) -> Outcome {
        let Some(s) = &self.session else {
            return Outcome::close(Reply::new(421, "4.3.0", "no session"));
        };
        match self
            .isp
            .rcpt(s, &self.from, &to.address, self.clock.now_ms())
        {
            Ok(()) => {
                self.rcpts += 1;
                self.accepted.push(to.address.clone());
                Outcome::ok("2.1.5", "OK")
            }
            Err(a) => answer(a),
        }
    }
    /// The provider's answer to a message, and the message's body (to recycle).
    async fn message_inner(&mut self, data: Data) -> (Outcome, MessageBody) {
        let auth = match &self.spf_seen {
            Some((helo, from, spf))
                if self.dkim.assumes_dkim() && *helo == self.helo && *from == self.from =>
            {
                mta::dkim::verify::AuthVerdict {
                    spf: *spf,
                    dkim: true,
                    dmarc: true,
                }
            }
            _ => {
                let auth = self
                    .dkim
                    .authenticate(&data.body, self.peer, &self.helo, &self.from)
                    .await;
                self.spf_seen = Some((self.helo.clone(), self.from.clone(), auth.spf));
                auth
            }
        };
        let dkim = auth.dkim;
        let [post, unsubscribe, list_id, precedence, message_id] = mta::engine::headers(
            &data.body,
            [
                "List-Unsubscribe-Post",
                "List-Unsubscribe",
                "List-Id",
                "Precedence",
                "Message-ID",
            ],
        );
        let one_click = post.is_some_and(|v| v.contains("One-Click"));
        let subscribed = one_click
            || unsubscribe.is_some()
            || list_id.is_some()
            || precedence.is_some_and(|v| {
                let v = v.trim();
                v.eq_ignore_ascii_case("bulk") || v.eq_ignore_ascii_case("list")
            });
        let facts = DataFacts {
            mail_from: &self.from,
            rcpts: self.rcpts,
            size: data.size,
            spf_pass: auth.spf,
            dkim_pass: dkim,
            dmarc_pass: auth.dmarc,
            one_click_unsubscribe: one_click,
            subscribed,
            dkim_assumed: self.dkim.assumes_dkim(),
        };
        let now = self.clock.now_ms();
        let Some(s) = self.session.as_mut() else {
            return (
                Outcome::close(Reply::new(421, "4.3.0", "no session")),
                data.body,
            );
        };
        let outcome = match self.isp.end_of_data(s, &facts, now) {
            Ok(r) => {
                self.schedule_feedback(&data.body, message_id.as_deref().unwrap_or_default(), now);
                Outcome::reply(
                    Reply::parse_line(&r).unwrap_or_else(|| Reply::new(250, "2.0.0", "OK")),
                )
            }
            Err(a) => answer(a),
        };
        (outcome, data.body)
    }
}

impl Drop for IspHandler {
    fn drop(&mut self) {
        if let Some(s) = &self.session {
            self.isp.disconnect(s, self.clock.now_ms());
        }
    }
}

/// The senders' mailboxes: accepts every DSN.
pub struct SenderSink;

impl Handler for SenderSink {
    fn connect(&mut self) -> Outcome {
        Outcome::reply(Reply::new(220, "", "mx.senders.sim ESMTP"))
    }
    fn mail(&mut self, _: &MailFrom<String>) -> Outcome {
        Outcome::ok("2.1.0", "OK")
    }
    fn rcpt(&mut self, _: &RcptTo<String>) -> Outcome {
        Outcome::ok("2.1.5", "OK")
    }
    async fn message(&mut self, _: Data) -> Outcome {
        Outcome::ok("2.0.0", "OK")
    }
    fn reset(&mut self) {}
}

/// The SMTP outcome of a provider's answer.
pub fn answer(a: crate::isp::Answer) -> Outcome {
    let r =
        Reply::parse_line(&a.reply).unwrap_or_else(|| Reply::new(451, "4.3.0", a.reply.clone()));
    if a.disconnect {
        Outcome::close(r)
    } else {
        Outcome::reply(r)
    }
}

/// The built-in classifier, compiled once for every provider's late bounces.
fn default_classifier() -> &'static mta::bounce::Classifier {
    static C: std::sync::OnceLock<mta::bounce::Classifier> = std::sync::OnceLock::new();
    C.get_or_init(mta::bounce::Classifier::default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::BodyPool;
    use std::path::Path;

    fn handler(bodies: Arc<dyn BodyBuffers>) -> IspHandler {
        let profile = crate::profile::Profile::load(Path::new("../isp-profiles/gmail.toml"))
            .expect("the gmail profile");
        let net: Arc<dyn Net> = Arc::new(mta::net::SimNet::new());
        let nowhere = SocketAddr::from(([127, 0, 0, 1], 25));
        IspHandler {
            isp: Isp::new(profile),
            dkim: crate::dkim_check::DkimChecker::from_config(&mta::config::Config::default(), &[])
                .expect("a checker")
                .assuming_dkim(),
            clock: Clock::starting_at(1_800_000_000_000),
            session: None,
            peer: IpAddr::from([127, 0, 0, 9]),
            from: String::new(),
            rcpts: 0,
            accepted: Vec::new(),
            local: IpAddr::from([127, 100, 1, 1]),
            host: "mx.test".into(),
            back: Arc::new(Backchannel {
                net,
                seed: 1,
                mta_addr: nowhere,
                mta_domains: Default::default(),
                sink_addr: nowhere,
                fbl_address: None,
                complaint_rates: Mutex::default(),
                chaos: Mutex::default(),
            }),
            slow: Duration::ZERO,
            drop_at_data: false,
            helo: String::new(),
            spf_seen: None,
            bodies: Some(bodies),
        }
    }

    fn transaction(h: &mut IspHandler) {
        h.reset();
        let from = MailFrom {
            address: "news@brand.example".to_string(),
            ..MailFrom::default()
        };
        let to = RcptTo {
            address: "someone@gmail.com".to_string(),
            ..RcptTo::default()
        };
        assert_eq!(h.mail(&from).reply.code, 250);
        assert_eq!(h.rcpt(&to).reply.code, 250);
    }

    /// A body the provider alone holds once read (one the spool read back from its overflow)
    /// goes back to the body pool; one the spool still holds does not.
    #[tokio::test(start_paused = true)]
    async fn a_body_nothing_else_holds_goes_back_to_the_pool() {
        let pool = Arc::new(BodyPool::default());
        let mut h = handler(pool.clone());
        assert_eq!(h.connect().reply.code, 220);
        h.hello("mta.brand.example");
        let mut buf = pool.take(8000);
        buf.extend_from_slice(b"From: news@brand.example\r\nSubject: x\r\n\r\nhello\r\n");
        let ptr = buf.as_ptr();
        let body = Arc::new(buf);
        let data = |b: &Arc<Vec<u8>>| Data {
            size: b.len() as u64,
            body: MessageBody::Shared(b.clone()),
            ..Data::default()
        };
        transaction(&mut h);
        assert_eq!(h.message(data(&body)).await.reply.code, 250);
        let other = pool.take(8000);
        assert_ne!(
            other.as_ptr(),
            ptr,
            "still held by the spool: not in the pool"
        );
        pool.put(other);
        transaction(&mut h);
        let only = data(&body);
        drop(body);
        assert_eq!(h.message(only).await.reply.code, 250);
        let back = pool.take(8000);
        assert_eq!(back.as_ptr(), ptr, "back in the pool");
    }
}
