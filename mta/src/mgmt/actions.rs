//! The operator actions of the management API (pause, resume, mode, schedule, delete, source IPs).
//! An action that matches nothing is a 404 saying so, with what exists (first 10), so that
//! `mta pause queue nosuch.com/v9` fails instead of reporting "0 queue(s) paused".

use super::http::{bad, Ctx, Params};
use crate::engine::{mode_name, Engine, QueueSelector};
use crate::queue::{Mode, QueueKey};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;

/// How many existing names a "matches nothing" answer lists.
const LISTED: usize = 10;

fn selector(p: &HashMap<String, String>) -> Result<(String, QueueSelector), Box<Response>> {
    let q = p
        .get("queue")
        .ok_or_else(|| Box::new(bad("queue=DOMAIN/VMTA is required (*/* for all)")))?;
    QueueSelector::parse(q)
        .map(|s| (q.clone(), s))
        .map_err(|e| Box::new(bad(e)))
}

/// A 404 for an action that matched nothing: the usual fields (`ok`, `matched`, `message`) plus
/// `error` (what the CLI prints) and `known` (up to 10 names that do exist).
fn nothing(what: &str, asked: &str, known: Vec<String>, extra: serde_json::Value) -> Response {
    let total = known.len();
    let shown: Vec<String> = known.into_iter().take(LISTED).collect();
    let listing = if shown.is_empty() {
        format!("there are no {what}s")
    } else if total > LISTED {
        format!("{what}s: {}; first {LISTED} of {total}", shown.join(", "))
    } else {
        format!("{what}s: {}", shown.join(", "))
    };
    let msg = format!("no {what} matches {asked} ({listing})");
    let mut body =
        json!({ "ok": false, "matched": 0, "message": msg, "error": msg, "known": shown });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// The existing queue names, largest first.
fn queue_names(e: &Engine) -> Vec<String> {
    e.queue_views().into_iter().map(|q| q.name).collect()
}

/// True if some existing queue is selected by `sel`.
fn any_queue(e: &Engine, sel: &QueueSelector) -> bool {
    e.queue_views().iter().any(|q| {
        sel.matches(&QueueKey {
            domain: q.domain.clone(),
            vmta: q.vmta.clone(),
        })
    })
}

fn done(e: &Engine, asked: &str, verb: &str, n: usize) -> Response {
    if n == 0 {
        return nothing("queue", asked, queue_names(e), json!({}));
    }
    Json(json!({ "ok": true, "matched": n, "message": format!("{n} queue(s) {verb}.") }))
        .into_response()
}

/// POST `/queues/pause?queue=SEL`.
pub(super) async fn pause(State(c): State<Ctx>, Query(p): Params) -> Response {
    match selector(&p) {
        Ok((q, s)) => done(&c.engine, &q, "paused", c.engine.set_paused(&s, true)),
        Err(r) => *r,
    }
}

/// POST `/queues/resume?queue=SEL`.
pub(super) async fn resume(State(c): State<Ctx>, Query(p): Params) -> Response {
    match selector(&p) {
        Ok((q, s)) => done(&c.engine, &q, "resumed", c.engine.set_paused(&s, false)),
        Err(r) => *r,
    }
}

/// POST `/queues/mode?queue=SEL&mode=normal|backoff`.
pub(super) async fn set_mode(State(c): State<Ctx>, Query(p): Params) -> Response {
    let mode = match p.get("mode").map(String::as_str) {
        Some("normal") => Mode::Normal,
        Some("backoff") => Mode::Backoff,
        _ => return bad("mode=normal or mode=backoff is required"),
    };
    match selector(&p) {
        Ok((q, s)) => done(
            &c.engine,
            &q,
            &format!("set to {}", mode_name(mode)),
            c.engine.set_mode(&s, mode),
        ),
        Err(r) => *r,
    }
}

/// POST `/queues/schedule?queue=SEL`.
pub(super) async fn schedule(State(c): State<Ctx>, Query(p): Params) -> Response {
    match selector(&p) {
        Ok((q, s)) => done(&c.engine, &q, "scheduled", c.engine.schedule(&s)),
        Err(r) => *r,
    }
}

/// POST `/queues/delete?queue=SEL` or `?job=ID`: a queue selector that matches no queue, or a job
/// with no waiting recipient, is a 404.
pub(super) async fn delete(State(c): State<Ctx>, Query(p): Params) -> Response {
    let job = p.get("job").or_else(|| p.get("jobId")).cloned();
    let sel = match p.get("queue") {
        Some(q) => match QueueSelector::parse(q) {
            Ok(s) => Some((q.clone(), s)),
            Err(e) => return bad(e),
        },
        None => None,
    };
    if sel.is_none() && job.is_none() {
        return bad("delete needs queue=DOMAIN/VMTA or job=ID");
    }
    if let Some((q, s)) = &sel {
        if !any_queue(&c.engine, s) {
            return nothing("queue", q, queue_names(&c.engine), json!({ "deleted": 0 }));
        }
    }
    let n = c
        .engine
        .delete(sel.as_ref().map(|(_, s)| s), job.as_deref())
        .await;
    if let (0, Some(j)) = (n, &job) {
        let msg = format!("no waiting recipient has job {j}");
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "ok": false, "deleted": 0, "message": msg, "error": msg })),
        )
            .into_response();
    }
    Json(json!({ "ok": true, "deleted": n, "message": format!("{n} recipient(s) deleted.") }))
        .into_response()
}

/// Every configured source address (vMTAs' and the global `smtp-source-host`s), as written.
fn source_ips(e: &Engine) -> Vec<(String, ipnet::IpNet)> {
    let cfg = e.config();
    let mut v: Vec<(String, ipnet::IpNet)> = cfg
        .vmtas
        .values()
        .flat_map(|v| v.source_hosts.iter())
        .chain(cfg.source_hosts.iter())
        .map(|h| (h.net.to_string(), h.net))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The configured source IPs if `ip` is none of them.
fn unknown_ip(e: &Engine, ip: IpAddr) -> Option<Vec<String>> {
    let all = source_ips(e);
    (!all.iter().any(|(_, n)| n.contains(&ip))).then(|| all.into_iter().map(|(s, _)| s).collect())
}

fn parse_ip(p: &HashMap<String, String>) -> Result<IpAddr, Box<Response>> {
    p.get("ip")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| Box::new(bad("ip=ADDRESS is required")))
}

/// POST `/source-ips/disable?ip=IP[&minutes=N]`: an address no vMTA sends from is a 404.
pub(super) async fn disable_ip(State(c): State<Ctx>, Query(p): Params) -> Response {
    let ip = match parse_ip(&p) {
        Ok(ip) => ip,
        Err(r) => return *r,
    };
    if let Some(known) = unknown_ip(&c.engine, ip) {
        return nothing("source IP", &ip.to_string(), known, json!({}));
    }
    let until = p
        .get("minutes")
        .and_then(|m| m.parse::<i64>().ok())
        .map(|m| c.engine.now_ms() + m * 60_000);
    c.engine.disable_source_ip(ip, until);
    Json(json!({ "ok": true, "message": format!("source {ip} disabled.") })).into_response()
}

/// POST `/source-ips/enable?ip=IP`: an address no vMTA sends from is a 404.
pub(super) async fn enable_ip(State(c): State<Ctx>, Query(p): Params) -> Response {
    let ip = match parse_ip(&p) {
        Ok(ip) => ip,
        Err(r) => return *r,
    };
    if let Some(known) = unknown_ip(&c.engine, ip) {
        return nothing(
            "source IP",
            &ip.to_string(),
            known,
            json!({ "wasDisabled": false }),
        );
    }
    let was = c.engine.enable_source_ip(ip);
    let message = if was {
        format!("source {ip} enabled.")
    } else {
        format!("source {ip} enabled (it was not disabled).")
    };
    Json(json!({ "ok": true, "wasDisabled": was, "message": message })).into_response()
}
