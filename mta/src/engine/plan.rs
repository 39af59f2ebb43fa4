//! Planning: the scheduler loop, which queues are due, which connection to open from which
//! source address, and what each attempt takes from the spool.

use super::waiting::Blocked;
use super::*;

impl Engine {
    /// The scheduler: opens connections for queues with due recipients, as the shaping gates allow,
    /// and expires what is past `bounce-after`. Runs until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let now = self.now_ms();
            let (starts, expired, next) = self.plan(now);
            for (key, w, q_reply) in expired {
                for r in &w.rcpts {
                    // The recipient's own last reply; the queue's last error if it never got one.
                    let own = self.with(|s| {
                        s.messages
                            .get(&w.id)
                            .and_then(|m| m.last_reply.get(r).cloned())
                    });
                    let reply = match own.or_else(|| q_reply.clone()) {
                        Some(last) => expired_reply(&last),
                        None => Reply::new(554, "4.4.7", "message expired: bounce-after reached"),
                    };
                    self.finish(
                        &key,
                        w.id,
                        *r,
                        Outcome {
                            ty: RecordType::Bounced,
                            reply: &reply,
                            category: "message-expired",
                            conn: None,
                            notify: true,
                        },
                    )
                    .await;
                }
            }
            for (key, src) in starts {
                let me = self.clone();
                // Boxed: the task then holds a pointer, not the whole connection state machine.
                tokio::spawn(Box::pin(async move { me.connection(key, src).await }));
            }
            let sleep_ms = next.map_or(60_000, |t| (t - now).clamp(1, 60_000));
            tokio::select! {
                biased;
                _ = &mut stop => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
            }
        }
    }

    /// Decides which connections to open now; returns them, the expired groups and the next time
    /// anything is due.
    #[allow(clippy::type_complexity)]
    pub(super) fn plan(
        &self,
        now: i64,
    ) -> (
        Vec<(QueueKey, Option<(IpAddr, Option<String>)>)>,
        Vec<(QueueKey, Waiting<MessageId>, Option<Reply>)>,
        Option<i64>,
    ) {
        let cfg = self.config();
        self.with(|s| {
            let mut starts = Vec::new();
            let mut expired = Vec::new();
            let mut next: Option<i64> = None;
            let State {
                queues,
                vmta_gates,
                total_gate,
                disabled_ips,
                ..
            } = s;
            for (key, q) in queues.iter_mut() {
                q.shaper.tick(now);
                let gone = q.queue.take_expired(now);
                if !gone.is_empty() {
                    let last = q.last_error.as_deref().and_then(Reply::parse_line);
                    for w in gone {
                        expired.push((key.clone(), w, last.clone()));
                    }
                }
                let mut upd = |t: Option<i64>| {
                    if let Some(t) = t {
                        next = Some(next.map_or(t, |n: i64| n.min(t)));
                    }
                };
                upd(q.queue.next_expiry_ms());
                upd(q.shaper.backoff_until_ms());
                q.blocked = Blocked::Sending;
                if q.not_before_ms > now {
                    upd(Some(q.not_before_ms));
                    q.blocked = Blocked::NotBefore(q.not_before_ms);
                    continue;
                }
                if q.paused {
                    q.blocked = Blocked::Paused;
                    continue;
                }
                let Some(due) = q.queue.next_due_ms() else {
                    q.blocked = if q.shaper.connections() > 0 {
                        Blocked::Sending
                    } else {
                        Blocked::Empty
                    };
                    continue;
                };
                if due > now {
                    upd(Some(due));
                    // (An open connection meanwhile is finishing or idle: the queue still
                    // waits for its next recipient's time.)
                    q.blocked = match q.queue.held_until_ms {
                        Some(h) if h >= due => Blocked::Held(h),
                        _ => Blocked::Retry(due),
                    };
                    continue;
                }
                // One new connection per queue per pass, up to the limits.
                let vmta_max = key
                    .vmta()
                    .and_then(|v| cfg.vmtas.get(v))
                    .and_then(|v| v.settings.get("max-smtp-out"))
                    .and_then(|st| match st.value {
                        crate::config::values::Value::Int(n) => Some(n),
                        _ => None,
                    });
                let gate = vmta_gates
                    .entry(key.vmta.clone())
                    .or_insert_with(|| VmtaGate::new(vmta_max));
                // Another connection only when the queue is backed up beyond what the open ones
                // will take (about 20 groups each), so that a trickle reuses one connection at a time.
                let queued = q.queue.len() as u64;
                if q.shaper.connections() > 0 && queued <= q.shaper.connections() * 20 {
                    continue;
                }
                // A refusal beside open connections lowered the ceiling for a while.
                if q.signals
                    .ceiling(now)
                    .is_some_and(|c| q.shaper.connections() >= c)
                {
                    q.blocked = Blocked::ConnectionLimit;
                    continue;
                }
                // No connection before the message rate lets one through soon enough for a
                // session to wait for it: such a connection would QUIT at once, and reconnecting
                // like that trips the receiver's connection-rate limits.
                let wait = q.shaper.message_wait(now);
                if wait > RATE_WAIT_IN_SESSION_MS {
                    let t = now.saturating_add((wait - RATE_WAIT_IN_SESSION_MS).min(3_600_000));
                    upd(Some(t));
                    q.blocked = Blocked::Rate(t);
                    continue;
                }
                if let Some(t) = all_sources_disabled(&cfg, key.vmta(), disabled_ips, now) {
                    // Every source address of the vMTA is out of service: wait for the first back.
                    upd(Some(t));
                    q.blocked = Blocked::SourcesDisabled(t);
                    continue;
                }
                match q.shaper.open_connection(now) {
                    Ok(()) => {
                        // The whole MTA's limit, then the vMTA's.
                        let total_ok = total_gate.try_open();
                        if total_ok && gate.try_open() {
                            q.opened += 1;
                            let src = source_for(&cfg, key.vmta(), q.opened - 1, |ip| {
                                manage::ip_disabled(disabled_ips, ip, now)
                            });
                            starts.push((key.clone(), src));
                            upd(Some(now + 1));
                        } else {
                            if total_ok {
                                total_gate.close();
                            }
                            q.shaper.close_connection();
                            upd(Some(now + 1000));
                            q.blocked = Blocked::SharedLimit;
                        }
                    }
                    Err(crate::shaping::Wait::Rate(ms)) => {
                        let t = now + ms.min(3_600_000);
                        upd(Some(t));
                        q.blocked = Blocked::Rate(t);
                    }
                    Err(crate::shaping::Wait::Connections) => {
                        q.blocked = Blocked::ConnectionLimit;
                    }
                }
            }
            (starts, expired, next)
        })
    }

    pub(super) fn release(&self, key: &QueueKey) {
        self.with(|s| {
            if let Some(q) = s.queues.get_mut(key) {
                q.shaper.close_connection();
            }
            if let Some(g) = s.vmta_gates.get_mut(&key.vmta) {
                g.close();
            }
            s.total_gate.close();
        });
        self.wake.notify_one();
    }

    /// Where to connect for a queue: `smtp-hosts` or MX (then A), in preference order.
    pub(super) async fn targets(
        &self,
        key: &QueueKey,
        qs: &QueueSettings,
    ) -> Result<Vec<SocketAddr>, (Reply, bool)> {
        let port = qs.default_smtp_port;
        let mut hosts: Vec<(String, u16)> = Vec::new();
        if let Some(h) = &qs.smtp_hosts {
            for part in h.split([',', ';']).map(str::trim).filter(|p| !p.is_empty()) {
                if let Some(d) = part.strip_prefix("lookup-mx:") {
                    if let Ok(mx) = self.parts.dns.mx(d).await {
                        hosts.extend(mx.into_iter().map(|m| (m.host, port)));
                    }
                } else if let Some(rest) = part.strip_prefix('[') {
                    let (ip, p) = rest.split_once(']').unwrap_or((rest, ""));
                    let p = p
                        .strip_prefix(':')
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(port);
                    hosts.push((ip.to_string(), p));
                } else {
                    let (h, p) = part
                        .rsplit_once(':')
                        .and_then(|(h, p)| p.parse().ok().map(|p| (h, p)))
                        .unwrap_or((part, port));
                    hosts.push((h.to_string(), p));
                }
            }
        } else {
            match self.parts.dns.mx(&key.domain).await {
                Ok(mx) if mx.iter().any(|m| m.host.is_empty() || m.host == ".") => {
                    return Err((
                        Reply::new(
                            556,
                            "5.1.10",
                            format!("{} does not accept mail (null MX)", key.domain),
                        ),
                        true,
                    ))
                }
                Ok(mx) if !mx.is_empty() => hosts.extend(mx.into_iter().map(|m| (m.host, port))),
                Ok(_) | Err(DnsError::NoRecords(_)) => hosts.push((key.domain.clone(), port)),
                Err(DnsError::NxDomain(d)) => {
                    return Err((
                        Reply::new(550, "5.1.2", format!("domain {d} does not exist")),
                        true,
                    ))
                }
                Err(e) => return Err((Reply::new(451, "4.4.3", format!("DNS error: {e}")), false)),
            }
        }
        let mut out = Vec::new();
        for (h, p) in hosts {
            if let Ok(ip) = h.parse::<IpAddr>() {
                out.push(SocketAddr::new(ip, p));
                continue;
            }
            if let Ok(ips) = self.parts.dns.ip(&h).await {
                out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, p)));
            }
        }
        if out.is_empty() {
            return Err((
                Reply::new(
                    451,
                    "4.4.4",
                    format!("no address found for the mail hosts of {}", key.domain),
                ),
                qs.bounce_upon_no_mx,
            ));
        }
        Ok(out)
    }

    /// What one delivery attempt of `w` needs of its message (not the whole envelope, not the
    /// body); notes the first attempt's time.
    pub(super) fn attempt_for(&self, w: &Waiting<MessageId>, now: i64) -> Option<Attempt> {
        self.with(|s| {
            let m = s.messages.get_mut(&w.id)?;
            m.first_attempt_ms.get_or_insert(now);
            let env = &m.env;
            Some(Attempt {
                mail_from: env.mail_from.clone(),
                rcpts: w
                    .rcpts
                    .iter()
                    .filter_map(|i| env.rcpts.get(*i as usize).map(|r| r.address.clone()))
                    .collect(),
                pool: env.pool.clone(),
                dot_free: env.dot_free,
                size: env.size as usize,
            })
        })
    }

    /// Keeps an open connection with nothing to send: waits until the queue's next group is due,
    /// mail is queued or `idle` has passed since `idle_since`. False when the time is up (QUIT).
    /// `arrivals` is the queue's arrival signal, looked up on the session's first wait and kept
    /// (a queue and its signal live as long as the engine).
    pub(super) async fn idle_wait(
        &self,
        key: &QueueKey,
        idle_since: &mut Option<i64>,
        arrivals: &mut Option<Arc<Notify>>,
        idle: Duration,
    ) -> bool {
        let now = self.now_ms();
        let deadline = idle_since
            .get_or_insert(now)
            .saturating_add(idle.as_millis() as i64);
        if now >= deadline {
            return false;
        }
        if arrivals.is_none() {
            *arrivals = self.with(|s| s.queues.get(key).map(|q| q.arrivals.clone()));
        }
        let Some(arrivals) = arrivals.as_ref() else {
            return false;
        };
        // Listening before looking, so that mail queued in between is not missed.
        let arrived = arrivals.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let (due, rate_wait) = self.with(|s| {
            s.queues.get_mut(key).map_or((None, 0), |q| {
                (q.queue.next_due_ms(), q.shaper.message_wait(now))
            })
        });
        // The next group, but not before the message rate lets it go.
        let until = due.map_or(deadline, |d| {
            d.max(now.saturating_add(rate_wait))
                .clamp(now + 1, deadline)
        });
        tokio::select! {
            _ = arrived => {}
            _ = tokio::time::sleep(Duration::from_millis((until - now) as u64)) => {}
        }
        true
    }
}
