//! The delivery session over one connection: MX targets, connecting from the vMTA's source
//! address, EHLO, STARTTLS, DKIM signing and the transactions.

use super::*;
use crate::shaping::reconnect::Next;

impl Engine {
    /// One outbound connection for `key`: delivers due recipients until the queue is empty, the
    /// per-connection limit is reached, or the server refuses.
    pub(super) async fn connection(
        self: Arc<Self>,
        key: QueueKey,
        src: Option<(IpAddr, Option<String>)>,
    ) {
        if let Ok(mut st) = self.stats.lock() {
            st.connections += 1;
        }
        let qs = self.with(|s| s.queues.get(&key).map(|q| q.queue.settings.clone()));
        let Some(qs) = qs else {
            self.release(&key);
            return;
        };
        let targets = match self.targets(&key, &qs).await {
            Ok(t) => t,
            Err((reply, permanent)) => {
                self.fail_queue(&key, &reply, permanent, None, None).await;
                self.release(&key);
                return;
            }
        };
        let Some(targets) = self.ready_targets(&key, targets) else {
            self.release(&key);
            return;
        };
        // MX rollup: queues whose domains share mail hosts share one connection limit per vMTA.
        let rollup_key = (!qs.disable_mx_rollup).then(|| {
            let mut hosts: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
            hosts.sort();
            (key.vmta.clone(), hosts.join(","))
        });
        if let Some(rk) = &rollup_key {
            let now = self.now_ms();
            let admitted = self.with(|s| {
                let limit = s
                    .queues
                    .get(&key)
                    .map_or(qs.max_smtp_out, |q| q.shaper.max_connections());
                let n = s.rollup.entry(rk.clone()).or_insert(0);
                if *n >= limit {
                    if let Some(q) = s.queues.get_mut(&key) {
                        q.not_before_ms = now + 1000;
                        q.not_before_why = super::waiting::NotBefore::RollupFull;
                    }
                    false
                } else {
                    *n += 1;
                    true
                }
            });
            if !admitted {
                self.release(&key);
                return;
            }
        }
        self.deliver_to(&key, &qs, src, targets).await;
        if let Some(rk) = rollup_key {
            self.with(|s| {
                if let Some(n) = s.rollup.get_mut(&rk) {
                    *n = n.saturating_sub(1);
                }
            });
        }
        self.release(&key);
    }

    /// Tries the targets in order until one takes the session.
    pub(super) async fn deliver_to(
        &self,
        key: &QueueKey,
        qs: &QueueSettings,
        src: Option<(IpAddr, Option<String>)>,
        targets: Vec<SocketAddr>,
    ) {
        let key = key.clone();
        let (src_ip, helo) = match &src {
            Some((ip, h)) => (Some(*ip), h.clone()),
            None => (None, None),
        };
        let helo = helo.unwrap_or_else(|| self.host_name());
        let timeouts = Timeouts {
            greeting: qs.greeting_timeout.unwrap_or(Duration::from_secs(300)),
            command: Duration::from_secs(300),
            data: qs
                .data_send_timeout
                .unwrap_or(Duration::from_secs(180))
                .max(Duration::from_secs(60)),
        };
        let connect_timeout = qs.connect_timeout.unwrap_or(Duration::from_secs(120));
        let mut last_err: Option<Reply> = None;
        for dest in targets {
            let conn =
                match tokio::time::timeout(connect_timeout, self.parts.net.connect(src_ip, dest))
                    .await
                {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        last_err = Some(Reply::new(
                            421,
                            "4.4.1",
                            format!("connection to {dest} failed: {e}"),
                        ));
                        continue;
                    }
                    Err(_) => {
                        last_err = Some(Reply::new(
                            421,
                            "4.4.1",
                            format!("connection to {dest} timed out"),
                        ));
                        continue;
                    }
                };
            let dlv_ip = Some(conn.local.ip());
            match Client::connect(conn.stream, timeouts).await {
                Ok(Ok(mut client)) => {
                    if let Err(e) = client.ehlo(&helo).await {
                        last_err = Some(Reply::new(421, "4.4.2", format!("{e}")));
                        continue;
                    }
                    if qs.use_starttls && client.caps.starttls {
                        match client
                            .starttls(
                                &crate::smtp::client::opportunistic_tls(),
                                &key.domain,
                                &helo,
                            )
                            .await
                        {
                            Ok(Ok(c)) => client = c,
                            Ok(Err(b)) => {
                                let (c, _) = *b;
                                client = c;
                            }
                            Err(e) => {
                                last_err =
                                    Some(Reply::new(421, "4.7.0", format!("STARTTLS failed: {e}")));
                                continue;
                            }
                        }
                    } else if qs.require_starttls {
                        last_err = Some(Reply::new(
                            421,
                            "4.7.0",
                            format!("{dest} offers no STARTTLS and require-starttls is set"),
                        ));
                        continue;
                    }
                    self.session(&key, qs, client, dlv_ip, dest).await;
                    return;
                }
                Ok(Err(greeting)) => {
                    // A refusal at the banner: it may carry a pattern-list action.
                    let acted = self.apply_patterns(&key, &greeting, dlv_ip);
                    // A rule that defers (backoff, defer-queue, disable-source-ip) makes even a
                    // 5xx banner a reason to wait, not to bounce the queue.
                    if greeting.is_permanent() && !acted.skip_mx && !acted.defer_queue {
                        self.fail_queue(&key, &greeting, true, dlv_ip, Some(dest))
                            .await;
                        return;
                    }
                    // One refused connection is not a verdict on the queue: it goes on over its
                    // other connections, unless refusals keep coming with nothing open.
                    if !acted.skip_mx && !acted.defer_queue && !greeting.is_permanent() {
                        let next = self.connection_ended(&key, dest.ip(), false, &greeting);
                        if let Next::Reconnect(_) = next {
                            return;
                        }
                    }
                    last_err = Some(greeting);
                    if !acted.skip_mx {
                        break;
                    }
                }
                Err(e) => last_err = Some(Reply::new(421, "4.4.2", format!("{e}"))),
            }
        }
        let reply =
            last_err.unwrap_or_else(|| Reply::new(421, "4.4.1", "no mail host could be reached"));
        self.fail_queue(&key, &reply, false, src_ip, None).await;
    }

    pub(super) fn host_name(&self) -> String {
        match self.config().global.get("host-name").map(|s| &s.value) {
            Some(crate::config::values::Value::Text(h)) => h.clone(),
            _ => "localhost".into(),
        }
    }

    /// Sends due groups over one open session.
    pub(super) async fn session(
        &self,
        key: &QueueKey,
        qs: &QueueSettings,
        mut client: Client,
        dlv_ip: Option<IpAddr>,
        dest: SocketAddr,
    ) {
        let conn = ConnText::new(&key.domain, dlv_ip, Some(dest), client.caps.summary());
        // `max-msg-per-connection`, or fewer when the server showed a cap of its own.
        let learned = self.with(|s| {
            let now = self.now_ms();
            s.queues.get(key).and_then(|q| q.signals.learned_cap(now))
        });
        let max_msgs = match (qs.max_msg_per_connection, learned) {
            (0, Some(c)) => c,
            (m, Some(c)) => m.min(c),
            (m, None) => m,
        };
        let mut sent = 0u64;
        // Messages this connection took (a recipient delivered).
        let mut taken = 0u64;
        // Since when the connection has had nothing to send (`connection-idle-timeout`).
        let mut idle_since: Option<i64> = None;
        let mut arrivals = None;
        loop {
            if max_msgs > 0 && sent >= max_msgs {
                break;
            }
            let now = self.now_ms();
            let next = self.next_due(key, now);
            let next = match next {
                Ok(n) => n,
                Err(ms) if ms <= RATE_WAIT_IN_SESSION_MS => {
                    tokio::time::sleep(Duration::from_millis(ms.max(1) as u64)).await;
                    continue;
                }
                Err(_) => None,
            };
            let Some(w) = next else {
                match qs.connection_idle_timeout {
                    Some(idle)
                        if self
                            .idle_wait(key, &mut idle_since, &mut arrivals, idle)
                            .await =>
                    {
                        continue
                    }
                    _ => break,
                }
            };
            idle_since = None;
            let Some(a) = self.attempt_for(&w, now) else {
                continue;
            };
            let result = self.transmit(&mut client, key, qs, w.id, &a).await;
            let t = match result {
                Ok(t) => t,
                Err(e) => {
                    // The session ends here (a failed fetch leaves it in the middle of DATA).
                    let (reply, category) = match &e {
                        ClientError::Body(_) => (Reply::new(451, "4.3.0", format!("{e}")), "other"),
                        _ => (Reply::new(451, "4.4.2", format!("{e}")), "bad-connection"),
                    };
                    for r in &w.rcpts {
                        self.finish(
                            key,
                            w.id,
                            *r,
                            Outcome {
                                ty: RecordType::Transient,
                                reply: &reply,
                                category,
                                conn: Some(&conn),
                                notify: true,
                            },
                        )
                        .await;
                    }
                    self.requeue(key, w, self.now_ms(), &reply).await;
                    return;
                }
            };
            sent += 1;
            let on = Conn {
                text: &conn,
                src: dlv_ip,
                dest,
                taken_before: taken,
            };
            let settled = self.settle(key, qs, w, &t, &on).await;
            taken += u64::from(settled.delivered > 0);
            if let Some(r) = settled.bounce_queue {
                self.fail_queue(key, &r, true, dlv_ip, Some(dest)).await;
                break;
            }
            if settled.stop {
                // The server pushed back on the whole queue: hold the rest until the retry time.
                let now = self.now_ms();
                self.with(|s| {
                    if let Some(q) = s.queues.get_mut(key) {
                        let hold = now + q.shaper.retry_delay(1).as_millis() as i64;
                        q.queue.held_until_ms = Some(hold);
                        q.held_by = q.last_error.clone();
                    }
                });
                break;
            }
            if settled.closed {
                // The server closed this connection (a `421`): the queue goes on without it.
                break;
            }
        }
        client.quit().await;
    }

    /// A recipient due now on `key`, if the rate allows it (`Ok(None)`: nothing due); `Err(ms)`
    /// when the rate gate holds it back that long (it is put back, due then). A short rate wait
    /// keeps the connection (rather than closing and reconnecting, which would trip connect-rate
    /// limits).
    fn next_due(&self, key: &QueueKey, now: i64) -> Result<Option<Waiting<MessageId>>, i64> {
        // A recipient due now, if the rate allows it; a short rate wait keeps the connection
        // (rather than closing and reconnecting, which would trip connect-rate limits).
        self.with(|s| {
            let Some(q) = s.queues.get_mut(key) else {
                return Ok(None);
            };
            let Some(w) = q.queue.pop_due(now) else {
                return Ok(None);
            };
            match q.shaper.attempt_recipients(now, w.rcpts.len() as u32) {
                Ok(()) => Ok(Some(w)),
                Err(wait) => {
                    let ms = match wait {
                        crate::shaping::Wait::Rate(ms) => ms,
                        crate::shaping::Wait::Connections => 1000,
                    };
                    q.queue.push(w, now + ms.min(3_600_000));
                    Err(ms)
                }
            }
        })
    }

    /// Sends one attempt over `client`. A body to sign is read now; otherwise only once the
    /// server asks for it, so a transaction refused at MAIL or RCPT does not read a spilled body
    /// back.
    async fn transmit(
        &self,
        client: &mut Client,
        key: &QueueKey,
        qs: &QueueSettings,
        id: MessageId,
        a: &Attempt,
    ) -> Result<crate::smtp::client::Transaction, ClientError> {
        let signed = (qs.dkim_sign && self.parts.dkim_signing).then(|| {
            self.parts
                .spool
                .body(id)
                .map(|body| self.maybe_sign(key, qs, id, a.pool.as_deref(), a.dot_free, body))
        });
        match signed {
            Some(Err(e)) => Err(ClientError::Body(e.to_string())),
            Some(Ok((body, dot_free))) => {
                let fetch = || Ok(body.clone());
                client
                    .send_spooled(&a.mail_from, &a.rcpts, body.len(), &fetch, dot_free)
                    .await
            }
            None => {
                let fetch = || self.parts.spool.body(id).map_err(|e| e.to_string());
                client
                    .send_spooled(&a.mail_from, &a.rcpts, a.size, &fetch, a.dot_free)
                    .await
            }
        }
    }

    /// Settles one transaction: a record per recipient (delivered, bounced or deferred, with the
    /// queue's pattern-list actions applied), the deferred ones put back; says whether the server
    /// pushed back on the whole queue, closed the connection, or a `bounce-queue` rule fired.
    async fn settle(
        &self,
        key: &QueueKey,
        qs: &QueueSettings,
        w: Waiting<MessageId>,
        t: &crate::smtp::client::Transaction,
        on: &Conn<'_>,
    ) -> Settled {
        let mut out = Settled::default();
        let mut retry: Vec<u32> = Vec::new();
        // The `421` that closed the connection, when no rule made it a verdict on the queue.
        let mut closing: Option<&Reply> = None;
        let mut at_mail = false;
        for (i, r) in w.rcpts.iter().enumerate() {
            let reply = t.outcome(i);
            if reply.is_positive() {
                let now = self.now_ms();
                self.with(|s| {
                    if let Some(q) = s.queues.get_mut(key) {
                        q.shaper.delivered(now);
                        q.queue.mode = q.shaper.mode();
                        q.signals.delivered(on.dest.ip());
                    }
                });
                out.delivered += 1;
                let o = Outcome {
                    ty: RecordType::Delivered,
                    reply,
                    category: "",
                    conn: Some(on.text),
                    notify: true,
                };
                self.finish(key, w.id, *r, o).await;
                continue;
            }
            let acted = self.apply_patterns(key, reply, on.src);
            let category = self.category(reply, t.command(i));
            if acted.bounce_queue {
                out.bounce_queue = Some(reply.clone());
            }
            let bounce = reply.is_permanent()
                || acted.bounce_queue
                || (acted.bounce_rcpt && reply.is_transient());
            let ty = if bounce {
                RecordType::Bounced
            } else {
                RecordType::Transient
            };
            let o = Outcome {
                ty,
                reply,
                category,
                conn: Some(on.text),
                notify: true,
            };
            self.finish(key, w.id, *r, o).await;
            if !bounce {
                retry.push(*r);
                out.stop |= acted.defer_queue;
                if reply.code == 421 && !acted.defer_queue {
                    closing.get_or_insert(reply);
                    at_mail |= t.command(i) == "MAIL";
                }
            }
        }
        if retry.is_empty() {
            out.closed = closing.is_some();
            return out;
        }
        let partial = retry.len() < w.rcpts.len();
        let again = Waiting {
            id: w.id,
            rcpts: retry,
            received_ms: w.received_ms,
            attempts: w.attempts,
        };
        let last = t.outcome(0).clone();
        // Recipients deferred one by one while others of the same transaction were taken wait
        // `retry-recipients-after` (reference part A: per-recipient 4xx hold); when nothing was
        // taken, or the server pushed back on the queue, the retry schedule applies.
        let mut delay = if partial && !out.stop {
            qs.retry_recipients_after
        } else {
            None
        };
        if let (Some(c), false) = (closing, out.stop) {
            // The server closed the connection: its recipients go out again after the reconnect
            // delay, unless refusals in a row make it a verdict on the queue after all.
            let here = on.taken_before > 0 || out.delivered > 0;
            if at_mail && here {
                self.closed_at_mail(key, on.taken_before);
            }
            match self.connection_ended(key, on.dest.ip(), here, c) {
                Next::Reconnect(d) => {
                    delay = Some(d);
                    out.closed = true;
                }
                Next::DeferQueue => out.stop = true,
            }
        }
        self.requeue_after(key, again, self.now_ms(), &last, delay)
            .await;
        out
    }

    /// DKIM-signs the body of a queue that signs (the caller checks `dkim-sign yes` and that
    /// signing is on) when a key fits the author domain. Also says whether the body to send is
    /// dot-free ([`Envelope::dot_free`]).
    pub(super) fn maybe_sign(
        &self,
        key: &QueueKey,
        qs: &QueueSettings,
        id: MessageId,
        pool: Option<&str>,
        dot_free: bool,
        body: Arc<Vec<u8>>,
    ) -> (Arc<Vec<u8>>, bool) {
        let Some(author) = crate::dkim::author_domain(&body) else {
            return (body, dot_free);
        };
        let cfg = &self.config();
        let Some(dk) = crate::dkim::select_key(cfg, key.vmta(), pool, &author) else {
            if let Some(n) = self.repeats.note(&format!("unsigned {key} {author}")) {
                tracing::warn!(queue = %key, %author, messages = n, "dkim-sign yes but no domain-key fits; sending unsigned (logged at the 1st, 10th, 100th ... message)");
            }
            return (body, dot_free);
        };
        let domain = if dk.domain == "*" {
            author.clone()
        } else {
            dk.domain.clone()
        };
        let cache_key = (domain.clone(), dk.selector.clone());
        let cached = self.with(|s| {
            s.messages
                .get(&id)
                .and_then(|m| m.signatures.get(&cache_key).cloned())
        });
        let signed = match cached {
            Some(h) => Ok(h),
            None => self
                .keys
                .get(&dk.path)
                .and_then(|k| {
                    crate::dkim::sign(
                        &body,
                        &k,
                        &domain,
                        &dk.selector,
                        crate::dkim::DEFAULT_HEADERS,
                        identity(qs.dkim_identity.as_deref(), &body, &domain).as_deref(),
                    )
                })
                .map(|h| {
                    let h = Arc::new(h);
                    if let Ok(mut st) = self.stats.lock() {
                        st.dkim_signatures += 1;
                    }
                    self.with(|s| {
                        if let Some(m) = s.messages.get_mut(&id) {
                            m.signatures.insert(cache_key, h.clone());
                        }
                    });
                    h
                }),
        };
        match signed {
            Ok(h) => {
                let mut out = Vec::with_capacity(h.len() + body.len());
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(&body);
                let dot_free = dot_free && crate::smtp::io::dot_free(h.as_bytes());
                (Arc::new(out), dot_free)
            }
            Err(e) => {
                tracing::error!(queue = %key, %e, "DKIM signing failed; sending unsigned");
                (body, dot_free)
            }
        }
    }
}

/// How a transaction ended for its queue.
#[derive(Default)]
pub(super) struct Settled {
    /// The server pushed back on the whole queue (a `defer-queue`/backoff rule, or refusals in a
    /// row with nothing open).
    stop: bool,
    /// The server closed this connection (a `421` no rule acted on); the queue goes on.
    closed: bool,
    /// A `bounce-queue` rule fired on this reply.
    bounce_queue: Option<Reply>,
    /// Recipients delivered in this transaction.
    delivered: u64,
}

/// The open connection a transaction went over.
pub(super) struct Conn<'a> {
    /// Its side of the accounting records.
    text: &'a ConnText,
    /// Our source address.
    src: Option<IpAddr>,
    /// The server's address.
    dest: SocketAddr,
    /// Messages it took (a recipient delivered) before this transaction: what a server's
    /// per-connection count sees.
    taken_before: u64,
}
