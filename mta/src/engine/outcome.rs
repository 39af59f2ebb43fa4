//! What an attempt's replies do: accounting records, retries and expiry, DSNs, the
//! `smtp-pattern-list` actions (backoff, defer, bounce, disabling a source IP).

use super::*;

impl Engine {
    pub(super) fn base_record(
        &self,
        ty: RecordType,
        now: i64,
        env: &Envelope,
        i: usize,
    ) -> Box<Record> {
        // From a spent record: `clone_from` reuses its strings' buffers.
        let mut r = self.records.take(ty, now);
        r.orig.clone_from(&env.mail_from);
        if let Some(x) = env.rcpts.get(i) {
            r.rcpt.clone_from(&x.address);
        }
        r.time_queued = Some(env.received_ms);
        r.src_type = Cow::Borrowed("smtp");
        if let Some(ip) = &env.source_ip {
            r.src_mta.clone_from(ip);
            r.rcv_source_ip.clone_from(ip);
        }
        r.dlv_size = Some(env.size);
        if let Some(j) = &env.job_id {
            r.job_id.clone_from(j);
        }
        if let Some(e) = &env.env_id {
            r.env_id.clone_from(e);
        }
        if let Some(m) = &env.message_id {
            r.headers.push(("Message-ID".into(), m.clone()));
        }
        r
    }

    /// Writes the record for one recipient's outcome and, for final ones, marks it done.
    pub(super) async fn finish(&self, key: &QueueKey, id: MessageId, rcpt: u32, o: Outcome<'_>) {
        let now = self.now_ms();
        let wants_dsn = o.ty == RecordType::Bounced && o.notify;
        // The record is built under the lock from the message's envelope; the envelope itself is
        // cloned only when a DSN needs it.
        let deferred = matches!(o.ty, RecordType::Transient | RecordType::TransientQueue);
        let Some((mut rec, first, pool, env)) = self.with(|s| {
            s.messages.get_mut(&id).map(|m| {
                if deferred {
                    m.last_reply.insert(rcpt, o.reply.clone());
                }
                let rec = self.base_record(o.ty, now, &m.env, rcpt as usize);
                let env = (wants_dsn && !m.env.mail_from.is_empty()).then(|| m.env.clone());
                (rec, m.first_attempt_ms, m.pools.get(&rcpt).cloned(), env)
            })
        }) else {
            return;
        };
        rec.time_first_attempt = first;
        // Written into the record's (possibly reused) buffers; writing to a String cannot fail.
        let _ = o.reply.write_status(&mut rec.dsn_status);
        let _ = write!(rec.dsn_diag, "smtp;{}", o.reply);
        rec.dsn_action = match o.ty {
            RecordType::Delivered => "relayed",
            RecordType::Bounced => "failed",
            _ => "delayed",
        }
        .into();
        if o.ty != RecordType::Delivered {
            rec.bounce_cat.clear();
            rec.bounce_cat.push_str(o.category);
        }
        rec.dlv_type = Cow::Borrowed("smtp");
        if let Some(c) = o.conn {
            rec.dlv_source_ip.clone_from(&c.source_ip);
            rec.dlv_destination_ip.clone_from(&c.dest_ip);
            rec.dsn_mta.clone_from(&c.dsn_mta);
            rec.dlv_esmtp_available.clone_from(&c.esmtp);
        }
        rec.vmta.clone_from(&key.vmta);
        let _ = write!(rec.queue, "{key}");
        rec.vmta_pool = pool.unwrap_or_default();
        self.log(rec);
        if let Ok(mut st) = self.stats.lock() {
            match o.ty {
                RecordType::Delivered => st.delivered += 1,
                RecordType::Bounced => st.bounced += 1,
                _ => st.deferred += 1,
            }
        }
        if let Some(env) = env {
            self.send_dsn(key, id, &env, rcpt, &o, now).await;
        }
        if matches!(o.ty, RecordType::Delivered | RecordType::Bounced) {
            // The record reaches the OS before the durable spool forgets the recipient (kill -9
            // safe); a memory spool forgets everything with the process anyway.
            if self.parts.spool.is_durable() {
                self.parts.acct.hand_over();
            }
            if let Err(e) = self.parts.spool.rcpt_done(id, rcpt).await {
                tracing::error!(%id, %e, "could not record a finished recipient");
            }
            let done = self.with(|s| match s.messages.get_mut(&id) {
                Some(m) => {
                    m.remaining = m.remaining.saturating_sub(1);
                    if m.remaining == 0 {
                        s.messages.remove(&id);
                        true
                    } else {
                        false
                    }
                }
                None => false,
            });
            if done {
                if let Err(e) = self.parts.spool.message_done(id).await {
                    tracing::error!(%id, %e, "could not record a finished message");
                }
            }
        }
    }

    /// Builds the RFC 3464 DSN for a failed recipient and queues it to the envelope sender with the
    /// null sender (so a DSN's own failure never produces another one).
    pub(super) async fn send_dsn(
        &self,
        key: &QueueKey,
        id: MessageId,
        env: &Envelope,
        rcpt: u32,
        o: &Outcome<'_>,
        now: i64,
    ) {
        // A sender in one of our own domains (a bounce domain our bounce processor reads): the `b`
        // record already says everything a DSN to ourselves would.
        let sender_domain = env
            .mail_from
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        if crate::config::effective::local_domains(&self.config()).contains(&sender_domain) {
            tracing::debug!(sender = %env.mail_from, "no DSN to a local bounce address");
            return;
        }
        let at = |ms: i64| std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
        let original = self.parts.spool.body(id).unwrap_or_default();
        let Some(r) = env.rcpts.get(rcpt as usize) else {
            return;
        };
        let recipients = [crate::bounce::dsn::DsnRecipient {
            recipient: r.address.clone(),
            original_recipient: r.orcpt.clone(),
            action: crate::bounce::dsn::DsnAction::Failed,
            status: o.reply.status(),
            remote_mta: o
                .conn
                .filter(|c| !c.dest_ip.is_empty())
                .map(|c| c.dest_ip.clone()),
            diagnostic: o.reply.to_string(),
            category: o.category.parse().unwrap_or_else(|_| {
                self.classifier()
                    .classify_status(&o.reply.status(), &o.reply.to_string())
                    .category
            }),
            last_attempt: Some(at(now)),
            will_retry_until: None,
        }];
        let host = self.host_name();
        let seed = format!("{id}.{rcpt}");
        let req = crate::bounce::dsn::DsnRequest {
            reporting_host: &host,
            virtual_mta: key.vmta(),
            envelope_sender: &env.mail_from,
            envelope_id: env.env_id.as_deref(),
            arrival: at(env.received_ms),
            now: at(now),
            seed: &seed,
            original: &original,
            recipients: &recipients,
        };
        let Some(dsn) = crate::bounce::dsn::build_dsn(&req) else {
            return;
        };
        let denv = Envelope {
            mail_from: String::new(),
            rcpts: vec![crate::spool::Recipient {
                address: dsn.envelope_to.clone(),
                orcpt: None,
                done: false,
            }],
            vmta: None,
            pool: None,
            job_id: None,
            env_id: None,
            source_ip: None,
            received_ms: now,
            size: dsn.bytes.len() as u64,
            message_id: Some(dsn.message_id.clone()),
            dot_free: crate::smtp::io::dot_free(&dsn.bytes),
        };
        match self.parts.spool.store(&denv, dsn.bytes).await {
            Ok(did) => {
                let rec = self.base_record(RecordType::Received, now, &denv, 0);
                self.log(rec);
                self.enqueue(did, denv, &[(None, None)], now);
            }
            Err(e) => tracing::error!(%e, "could not spool a DSN"),
        }
    }

    /// Applies the queue's `smtp-pattern-list` to a reply: mode changes here; returns the other actions.
    pub(super) fn apply_patterns(
        &self,
        key: &QueueKey,
        reply: &Reply,
        src: Option<IpAddr>,
    ) -> Acted {
        let now = self.now_ms();
        let text = reply.to_string();
        let cfg = self.config();
        self.with(|s| {
            let Some(q) = s.queues.get_mut(key) else {
                return Acted::default();
            };
            q.last_error = (!reply.is_positive()).then(|| text.clone());
            let Some(list) = q
                .queue
                .settings
                .smtp_pattern_list
                .as_deref()
                .and_then(|n| cfg.smtp_pattern_lists.get(n))
            else {
                return Acted::default();
            };
            let Some(rule) = match_reply(list, &text) else {
                return Acted::default();
            };
            q.shaper.apply_rule(now, rule, &text);
            q.queue.mode = q.shaper.mode();
            let mut a = Acted::default();
            for act in &rule.actions {
                match act {
                    PatternAction::SkipMx => a.skip_mx = true,
                    PatternAction::BounceQueue => a.bounce_queue = true,
                    PatternAction::BounceRcpt => a.bounce_rcpt = true,
                    PatternAction::DeferQueue => a.defer_queue = true,
                    PatternAction::ModeBackoff => a.defer_queue = true,
                    PatternAction::DisableSourceIp => {
                        // `reenable-after` on the same rule, else an hour (reference part A's example).
                        let after = rule
                            .actions
                            .iter()
                            .find_map(|x| match x {
                                PatternAction::ReenableAfter(d) => Some(*d),
                                _ => None,
                            })
                            .unwrap_or(Duration::from_secs(3600));
                        if let Some(ip) = src {
                            let until = now + after.as_millis() as i64;
                            if let Some(n) = self.repeats.note(&format!("disabled {key} {ip}")) {
                                tracing::warn!(queue = %key, %ip, reenable_in_s = after.as_secs(), reply = %text, times = n, "source IP disabled by smtp-pattern-list");
                            }
                            s.disabled_ips.insert(ip, Some(until));
                        }
                        a.defer_queue = true;
                    }
                    _ => {}
                }
            }
            a
        })
    }

    /// Fails every due group of a queue (connection-level failure): permanent ones bounce, others are
    /// retried (a `tq` record each).
    pub(super) async fn fail_queue(
        &self,
        key: &QueueKey,
        reply: &Reply,
        permanent: bool,
        dlv_ip: Option<IpAddr>,
        dest: Option<SocketAddr>,
    ) {
        let now = self.now_ms();
        let acted = self.apply_patterns(key, reply, dlv_ip);
        let groups: Vec<Waiting<MessageId>> = self.with(|s| {
            let Some(q) = s.queues.get_mut(key) else {
                return Vec::new();
            };
            if acted.bounce_queue || permanent {
                return q.queue.drain_all();
            }
            let mut out = Vec::new();
            while let Some(w) = q.queue.pop_due(now) {
                out.push(w);
            }
            out
        });
        let conn = ConnText::new(&key.domain, dlv_ip, dest, String::new());
        let category = if permanent || acted.bounce_queue {
            self.category(reply, "CONN")
        } else if reply.enhanced.as_deref() == Some("4.4.1") {
            "no-answer-from-host"
        } else {
            self.category(reply, "CONN")
        };
        for w in groups {
            if permanent || acted.bounce_queue {
                for r in &w.rcpts {
                    self.finish(
                        key,
                        w.id,
                        *r,
                        Outcome {
                            ty: RecordType::Bounced,
                            reply,
                            category,
                            conn: Some(&conn),
                            notify: true,
                        },
                    )
                    .await;
                }
            } else {
                // One `tq` record per message; every recipient keeps the reply as its last.
                self.with(|s| {
                    if let Some(m) = s.messages.get_mut(&w.id) {
                        for r in w.rcpts.iter().skip(1) {
                            m.last_reply.insert(*r, reply.clone());
                        }
                    }
                });
                if let Some(r) = w.rcpts.first() {
                    self.finish(
                        key,
                        w.id,
                        *r,
                        Outcome {
                            ty: RecordType::TransientQueue,
                            reply,
                            category,
                            conn: Some(&conn),
                            notify: true,
                        },
                    )
                    .await;
                }
                self.requeue(key, w, now, reply).await;
            }
        }
    }

    pub(super) async fn requeue(
        &self,
        key: &QueueKey,
        w: Waiting<MessageId>,
        now: i64,
        reply: &Reply,
    ) {
        self.requeue_after(key, w, now, reply, None).await
    }

    /// Puts a group back after a transient failure, after `delay` if given (else the queue's
    /// retry schedule); bounces it as expired if it is past `bounce-after`.
    pub(super) async fn requeue_after(
        &self,
        key: &QueueKey,
        w: Waiting<MessageId>,
        now: i64,
        reply: &Reply,
        delay: Option<Duration>,
    ) {
        let expired = self.with(|s| {
            s.queues.get_mut(key).and_then(|q| match delay {
                Some(d) => q.queue.retry_in(w, now, d),
                None => q.queue.retry(w, now),
            })
        });
        if let Some(w) = expired {
            let r = expired_reply(reply);
            for x in &w.rcpts {
                self.finish(
                    key,
                    w.id,
                    *x,
                    Outcome {
                        ty: RecordType::Bounced,
                        reply: &r,
                        category: "message-expired",
                        conn: None,
                        notify: true,
                    },
                )
                .await;
            }
        }
    }
}
