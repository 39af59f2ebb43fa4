//! Taking a message in: spooling it and putting each recipient on its queue (`enqueue`), and
//! the receive side's entry point (`accept`).

use super::*;

impl Engine {
    /// Adds a stored message's unfinished recipients to their queues (`vmtas[i]` per recipient).
    pub fn enqueue(
        &self,
        id: MessageId,
        env: Envelope,
        vmtas: &[(Option<String>, Option<String>)],
        due_ms: i64,
    ) {
        let mut groups: BTreeMap<QueueKey, Vec<u32>> = BTreeMap::new();
        let mut pools = BTreeMap::new();
        for (i, r) in env.rcpts.iter().enumerate() {
            if r.done {
                continue;
            }
            let domain = r.address.rsplit_once('@').map_or("", |(_, d)| d);
            let (vmta, pool) = match vmtas.get(i) {
                Some((v, p)) => (v.as_deref(), p.as_ref()),
                None => (env.vmta.as_deref(), env.pool.as_ref()),
            };
            if let Some(p) = pool {
                pools.insert(i as u32, p.clone());
            }
            // `queue-to` puts a domain's mail into another queue (sharing its limits and MX).
            let natural = QueueKey::new(domain, vmta);
            let key = match self.with_queue_settings(&natural, |qs| qs.queue_to.clone()) {
                Some(t) if !t.trim().is_empty() => QueueKey::new(t.trim(), vmta),
                _ => natural,
            };
            groups.entry(key).or_default().push(i as u32);
        }
        let remaining = groups.values().map(|v| v.len() as u32).sum();
        let received = env.received_ms;
        // Settings are looked up only for queues that do not exist yet (an existing queue keeps
        // its own, which a reload updates).
        let missing: Vec<bool> =
            self.with(|s| groups.keys().map(|k| !s.queues.contains_key(k)).collect());
        let settings: Vec<Option<QueueSettings>> = groups
            .keys()
            .zip(missing)
            .map(|(k, m)| m.then(|| self.queue_settings(k)))
            .collect();
        let plan = self.with(|s| {
            // The planner only needs waking when a queue may want another connection: a new or
            // unconnected queue, or one backed up beyond what its open connections take (as in
            // `plan`); otherwise the open connections pick the mail up (`arrivals`).
            let mut plan = false;
            s.messages.insert(
                id,
                MsgState {
                    env,
                    remaining,
                    first_attempt_ms: None,
                    pools,
                    signatures: BTreeMap::new(),
                    last_reply: BTreeMap::new(),
                },
            );
            for ((key, rcpts), qs) in groups.into_iter().zip(settings) {
                // Looked up before an entry is made, so an existing queue costs no key copy.
                let q = match s.queues.get_mut(&key) {
                    Some(q) => q,
                    None => {
                        // Created between the two looks (live mode): settings as usual.
                        let qs = qs.unwrap_or_else(|| self.queue_settings(&key));
                        s.queues
                            .entry(key.clone())
                            .or_insert_with(|| QueueState::new(&key, qs))
                    }
                };
                let max_rcpt = q
                    .queue
                    .settings
                    .max_rcpt_per_message
                    .unwrap_or(u64::MAX)
                    .max(1) as usize;
                q.arrivals.notify_waiters();
                for chunk in rcpts.chunks(max_rcpt) {
                    q.queue.push(
                        Waiting {
                            id,
                            rcpts: chunk.to_vec(),
                            received_ms: received,
                            attempts: 0,
                        },
                        due_ms,
                    );
                }
                let open = q.shaper.connections();
                plan |= open == 0 || q.queue.len() as u64 > open * 20;
            }
            plan
        });
        if plan {
            self.wake.notify_one();
        }
    }

    /// Picks vMTAs, stores the message durably, writes `r` records and queues it. Returns the id.
    pub async fn accept(
        &self,
        mut env: Envelope,
        body: Vec<u8>,
        source: &crate::config::effective::EffectiveSettings,
        local_ip: Option<IpAddr>,
    ) -> Result<MessageId, String> {
        // Mail whose records cannot be written is not taken: the backlog stays bounded.
        let backlog = self.parts.acct.pending();
        let limit = if backlog == 0 {
            usize::MAX // the usual case: no need to look the limit up
        } else {
            acct_backlog_limit(&self.config())
        };
        if backlog >= limit {
            return Err(format!(
                "{ACCT_BACKLOG}: {backlog} records wait for an accounting destination (acct-backlog-limit {limit}); {}",
                self.parts.acct.failure().unwrap_or_default()
            ));
        }
        let [x_vmta, x_job, x_campaign, message_id] = headers(
            &body,
            ["X-Virtual-MTA", "X-Job", "X-Campaign", "Message-ID"],
        );
        let job_id = x_job.clone();
        let headers: Vec<(String, String)> = [("X-Job", x_job), ("X-Campaign", x_campaign)]
            .into_iter()
            .filter_map(|(h, v)| v.map(|v| (h.to_string(), v)))
            .collect();
        let mut choices = Vec::with_capacity(env.rcpts.len());
        for r in &env.rcpts {
            let input = select::SelectInput {
                x_virtual_mta: x_vmta.as_deref(),
                mail_from: &env.mail_from,
                rcpt: &r.address,
                headers: &headers,
                local_ip,
            };
            let c = select::choose(&self.config(), source, &input, &self.cursors)?;
            choices.push((c.vmta, c.pool));
        }
        env.vmta = choices.first().and_then(|c| c.0.clone());
        env.pool = choices.first().and_then(|c| c.1.clone());
        env.message_id = message_id;
        if source.bool("process-x-job") {
            env.job_id = job_id;
        }
        env.size = body.len() as u64;
        let id = self
            .parts
            .spool
            .store(&env, body)
            .await
            .map_err(|e| e.to_string())?;
        let now = self.now_ms();
        for (i, r) in env.rcpts.iter().enumerate() {
            let mut rec = self.base_record(RecordType::Received, now, &env, i);
            rec.vmta = choices[i].0.clone().unwrap_or_default();
            rec.vmta_pool = choices[i].1.clone().unwrap_or_default();
            rec.orcpt = r.orcpt.clone().unwrap_or_default();
            self.log(rec);
        }
        if let Ok(mut st) = self.stats.lock() {
            st.received += 1;
        }
        self.enqueue(id, env, &choices, now);
        Ok(id)
    }
}
