//! The management HTTP server (axum): PowerMTA's monitor paths (`/status`, `/queues`,
//! `/queueDetail?queue=d/v`, `/domains`, `/domainDetail?domain=`, `/vmtas`; JSON whatever the
//! `format`), the same under `/api/v1/...`, actions as POSTs, `/metrics` for Prometheus and the
//! `/ui` dashboard. Every request passes the `http-access` check; a refusal is a 403 and a log line.

use super::access::{check, Need};
use super::actions;
use crate::engine::{mode_name, Engine, QueueSelector, QueueView};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

/// Shared by the handlers.
#[derive(Clone)]
pub struct Ctx {
    /// The engine.
    pub engine: Arc<Engine>,
}

/// A request's query parameters.
pub(super) type Params = Query<HashMap<String, String>>;

fn need_for(method: &Method, path: &str) -> Need {
    if *method == Method::GET || *method == Method::HEAD {
        Need::Monitor
    } else if path.ends_with("/reload") || path.ends_with("/configFile") {
        Need::Admin
    } else {
        Need::Operator
    }
}

async fn acl(
    State(ctx): State<Ctx>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let need = need_for(req.method(), req.uri().path());
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Err(e) = check(&ctx.engine.config(), peer.ip(), need, key.as_deref()) {
        tracing::warn!(peer = %peer, method = %req.method(), path = %req.uri().path(), %e, "management request refused");
        return (
            StatusCode::FORBIDDEN,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response();
    }
    next.run(req).await
}

/// A 400 with `{"error": msg}`.
pub(super) fn bad(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": msg.into() })),
    )
        .into_response()
}

/// The router over `engine`.
pub fn router(engine: Arc<Engine>) -> Router {
    let ctx = Ctx { engine };
    let data = Router::new()
        .route("/status", get(status))
        .route("/queues", get(queues))
        .route("/topqueues", get(queues))
        .route("/queueDetail", get(queue_detail))
        .route("/queues/detail", get(queue_detail))
        .route("/domains", get(domains))
        .route("/domainDetail", get(domain_detail))
        .route("/vmtas", get(vmtas))
        .route("/bounces", get(bounces))
        .route("/feedback", get(feedback))
        .route("/rates", get(rates))
        .route("/chart", get(chart))
        .route("/suppression", get(suppression));
    let actions = Router::new()
        .route("/queues/pause", post(actions::pause))
        .route("/queues/resume", post(actions::resume))
        .route("/queues/mode", post(actions::set_mode))
        .route("/queues/schedule", post(actions::schedule))
        .route("/queues/delete", post(actions::delete))
        .route("/source-ips/disable", post(actions::disable_ip))
        .route("/source-ips/enable", post(actions::enable_ip))
        .route("/counters/reset", post(reset_counters))
        .route("/reload", post(reload))
        .route("/suppression/add", post(suppression_add))
        .route("/suppression/remove", post(suppression_remove));
    Router::new()
        .merge(data.clone())
        .nest("/api/v1", data.merge(actions))
        .route("/metrics", get(metrics))
        .route("/ui", get(ui))
        .route("/", get(|| async { axum::response::Redirect::to("/ui") }))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), acl))
        .with_state(ctx)
}

/// Serves `router(engine)` on `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(engine).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .await
}

/// The status document (PowerMTA's `/status` shape in JSON).
pub fn status_json(e: &Engine) -> Value {
    let now = e.now_ms();
    let traffic = e.monitor().traffic(now);
    let queues = e.queue_views();
    let stats = e.stats.lock().map(|s| *s).unwrap_or_default();
    let started = e
        .monitor()
        .started_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    json!({
        "status": {
            "version": env!("CARGO_PKG_VERSION"),
            "traffic": traffic,
            "conn": {
                "smtpIn": { "cur": e.monitor().smtp_in.load(std::sync::atomic::Ordering::Relaxed) },
                "smtpOut": { "cur": queues.iter().map(|q| q.conn).sum::<u64>() },
            },
            "queue": {
                "smtp": {
                    "rcp": queues.iter().map(|q| q.rcpt).sum::<usize>(),
                    "kb": queues.iter().map(|q| q.kb).sum::<u64>(),
                    "queues": queues.len(),
                    "backoff": queues.iter().filter(|q| q.mode == "backoff").count(),
                    "paused": queues.iter().filter(|q| q.paused).count(),
                },
            },
            "spool": { "messages": e.pending_messages() },
            "totals": {
                "received": stats.received,
                "delivered": stats.delivered,
                "bounced": stats.bounced,
                "deferred": stats.deferred,
                "connections": stats.connections,
            },
            "uptimeSeconds": (now - started).max(0) / 1000,
            "timeMs": now,
        }
    })
}

async fn status(State(c): State<Ctx>) -> Json<Value> {
    Json(status_json(&c.engine))
}

async fn queues(State(c): State<Ctx>, Query(p): Params) -> Json<Value> {
    let mut q = c.engine.queue_views();
    if let Some(sel) = p.get("queue").and_then(|s| QueueSelector::parse(s).ok()) {
        q.retain(|v| {
            sel.matches(&crate::queue::QueueKey {
                domain: v.domain.clone(),
                vmta: v.vmta.clone(),
            })
        });
    }
    let total = q.len();
    if let Some(n) = p.get("maxItems").and_then(|n| n.parse::<usize>().ok()) {
        q.truncate(n);
    }
    Json(json!({ "queues": q, "total": total, "timeMs": c.engine.now_ms() }))
}

async fn queue_detail(State(c): State<Ctx>, Query(p): Params) -> Response {
    let Some(name) = p.get("queue") else {
        return bad("queue=DOMAIN/VMTA is required");
    };
    let views = c.engine.queue_views();
    let Some(v) = views.iter().find(|v| &v.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no queue {name}") })),
        )
            .into_response();
    };
    let key = crate::queue::QueueKey {
        domain: v.domain.clone(),
        vmta: v.vmta.clone(),
    };
    let settings = c.engine.config().domain_settings(&key.domain, key.vmta());
    let settings: BTreeMap<String, Value> = settings
        .0
        .iter()
        .map(|(k, s)| {
            (
                k.clone(),
                json!({
                    "value": s.value.as_ref().map(|v| v.to_string()),
                    "origin": s.origin.to_string(),
                }),
            )
        })
        .collect();
    let (events, errors) = c.engine.monitor().queue_events(name);
    let history = c
        .engine
        .mode_history()
        .remove(name)
        .unwrap_or_default()
        .into_iter()
        .rev()
        .take(20)
        .map(
            |m| json!({"atMs": m.at_ms, "to": mode_name(m.to), "cause": m.cause, "reply": m.reply}),
        )
        .collect::<Vec<_>>();
    Json(json!({
        "queue": v,
        "timeMs": c.engine.now_ms(),
        "settings": settings,
        "lastErrors": errors,
        "lastEvents": events,
        "modeHistory": history,
    }))
    .into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DomainView {
    domain: String,
    rcpt: usize,
    kb: u64,
    conn: u64,
    queues: usize,
    backoff: bool,
    last_error: Option<String>,
}

fn domain_views(q: &[QueueView]) -> Vec<DomainView> {
    let mut m: BTreeMap<&str, DomainView> = BTreeMap::new();
    for v in q {
        let d = m.entry(&v.domain).or_insert_with(|| DomainView {
            domain: v.domain.clone(),
            rcpt: 0,
            kb: 0,
            conn: 0,
            queues: 0,
            backoff: false,
            last_error: None,
        });
        d.rcpt += v.rcpt;
        d.kb += v.kb;
        d.conn += v.conn;
        d.queues += 1;
        d.backoff |= v.mode == "backoff";
        if d.last_error.is_none() {
            d.last_error = v.last_error.clone();
        }
    }
    let mut out: Vec<DomainView> = m.into_values().collect();
    out.sort_by(|a, b| b.rcpt.cmp(&a.rcpt).then_with(|| a.domain.cmp(&b.domain)));
    out
}

async fn domains(State(c): State<Ctx>) -> Json<Value> {
    let d = domain_views(&c.engine.queue_views());
    Json(json!({ "domains": d }))
}

async fn domain_detail(State(c): State<Ctx>, Query(p): Params) -> Response {
    let Some(domain) = p.get("domain").map(|d| d.to_ascii_lowercase()) else {
        return bad("domain=NAME is required");
    };
    let q: Vec<QueueView> = c
        .engine
        .queue_views()
        .into_iter()
        .filter(|v| v.domain == domain)
        .collect();
    let rates = c
        .engine
        .monitor()
        .domain_outcomes(c.engine.now_ms(), 10)
        .remove(&domain)
        .unwrap_or_default();
    Json(json!({ "domain": domain, "queues": q, "last10Minutes": rates })).into_response()
}

async fn vmtas(State(c): State<Ctx>) -> Json<Value> {
    Json(json!({ "vmtas": c.engine.vmta_views() }))
}

async fn bounces(State(c): State<Ctx>) -> Json<Value> {
    Json(json!({ "bounces": c.engine.monitor().recent_bounces() }))
}

async fn feedback(State(c): State<Ctx>) -> Json<Value> {
    Json(json!({ "feedback": c.engine.monitor().recent_feedback() }))
}

async fn rates(State(c): State<Ctx>, Query(p): Params) -> Json<Value> {
    let minutes = p
        .get("minutes")
        .and_then(|m| m.parse::<i64>().ok())
        .unwrap_or(5)
        .clamp(1, 60);
    let r = c
        .engine
        .monitor()
        .domain_outcomes(c.engine.now_ms(), minutes);
    Json(json!({ "minutes": minutes, "domains": r }))
}

async fn chart(State(c): State<Ctx>) -> Json<Value> {
    let pts: Vec<Value> = c
        .engine
        .monitor()
        .per_minute(c.engine.now_ms(), 60)
        .into_iter()
        .map(|(t, i, o)| json!({"t": t, "in": i, "out": o}))
        .collect();
    Json(json!({ "perMinute": pts }))
}

async fn suppression(State(c): State<Ctx>) -> Json<Value> {
    let entries = c.engine.suppression().entries();
    Json(json!({ "total": entries.len(), "entries": entries }))
}

async fn suppression_add(State(c): State<Ctx>, Query(p): Params) -> Response {
    let Some(a) = p.get("address").filter(|a| a.contains('@')) else {
        return bad("address=USER@DOMAIN is required");
    };
    let note = p
        .get("note")
        .map(String::as_str)
        .unwrap_or("added by an operator");
    match c
        .engine
        .suppression()
        .add(a, "manual", note, c.engine.now_ms())
    {
        Ok(added) => Json(json!({
            "ok": true,
            "added": added,
            "message": if added { format!("{a} suppressed.") } else { format!("{a} was already suppressed.") },
        }))
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() })))
            .into_response(),
    }
}

async fn suppression_remove(State(c): State<Ctx>, Query(p): Params) -> Response {
    let Some(a) = p.get("address") else {
        return bad("address=USER@DOMAIN is required");
    };
    match c.engine.suppression().remove(a, c.engine.now_ms()) {
        Ok(removed) => Json(json!({
            "ok": true,
            "removed": removed,
            "message": if removed { format!("{a} removed from the suppression list.") } else { format!("{a} was not suppressed.") },
        }))
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": e.to_string() })))
            .into_response(),
    }
}

async fn reload(State(c): State<Ctx>) -> Response {
    let path = c.engine.config().path.clone();
    match super::reload_from_disk(&c.engine, &path) {
        Ok(notes) => Json(json!({
            "ok": true,
            "message": format!("{} reloaded.", path.display()),
            "notes": notes,
        }))
        .into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": e })),
        )
            .into_response(),
    }
}

async fn reset_counters(State(c): State<Ctx>) -> Response {
    c.engine.monitor().reset_counters();
    Json(json!({ "ok": true, "message": "Traffic counters reset." })).into_response()
}

async fn metrics(State(c): State<Ctx>) -> Response {
    match super::metrics::render(&c.engine) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn ui() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("ui.html"),
    )
        .into_response()
}
