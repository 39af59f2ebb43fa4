//! The management interface of a running `mta run` on loopback: every endpoint against every
//! `http-access` level (clients bound to distinct 127.x addresses), the operator actions doing what
//! they say (pause holds mail, resume and schedule release it, delete by job writes `b` records,
//! mode changes show up), `/metrics`, and the `mta show` / `mta pause` commands against it.

mod common;

use common::{count, free_port, spawn_mta, start_sink, stop, wait_for, wait_listening};
use mta::net::{LiveNet, Net};
use mta::smtp::client::{Client, Timeouts};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// One HTTP/1.1 request from source address `src` (a test client: the server under test is axum).
async fn http(src: &str, method: &str, at: SocketAddr, path: &str) -> (u16, String) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap_or_else(|e| panic!("{e}"));
    sock.bind(addr(&format!("{src}:0")))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut s = sock.connect(at).await.unwrap_or_else(|e| panic!("{e}"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {at}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

async fn json(src: &str, method: &str, at: SocketAddr, path: &str) -> Value {
    let (code, body) = http(src, method, at, path).await;
    assert_eq!(code, 200, "{method} {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn write_config(
    dir: &Path,
    listen: SocketAddr,
    mgmt: SocketAddr,
    sink: SocketAddr,
) -> std::path::PathBuf {
    let cfg = format!(
        "host-name mta.test
smtp-listener {listen}
http-mgmt-port {mgmt}
http-access 127.0.0.71/32 monitor
http-access 127.0.0.72/32 operator
http-access 127.0.0.73/32 admin
http-access 127.0.0.74/32 none
http-access 127.0.0.1/32 admin
<source 127.0.0.0/8>
    always-allow-relaying yes
    default-virtual-mta v1
    process-x-job yes
</source>
<virtual-mta v1>
    smtp-source-host 127.0.0.76 v1.mta.test
</virtual-mta>
<domain *>
    smtp-hosts [{}]:{}
    use-starttls no
    retry-after 1h
    max-smtp-out 2
    bounce-after 1h
</domain>
<spool {}>
</spool>
<acct-file {}>
    records r,d,b,t,tq
</acct-file>
",
        sink.ip(),
        sink.port(),
        dir.join("spool").display(),
        dir.join("acct.csv").display()
    );
    let p = dir.join("mta.conf");
    std::fs::write(&p, cfg).unwrap_or_else(|e| panic!("{e}"));
    p
}

async fn send(at: SocketAddr, rcpts: &[(&str, &str)]) {
    let conn = LiveNet
        .connect(Some(addr("127.0.0.75:0").ip()), at)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = Client::connect(conn.stream, Timeouts::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|r| panic!("{r}"));
    c.ehlo("injector.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for (i, (rcpt, job)) in rcpts.iter().enumerate() {
        let body = format!("From: news@sender.test\r\nTo: {rcpt}\r\nMessage-ID: <m{i}.{job}@sender.test>\r\nX-Job: {job}\r\nSubject: {i}\r\n\r\nhello\r\n");
        let t = c
            .send("bounces@sender.test", &[rcpt.to_string()], body.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.outcome(0).code, 250, "{:?}", t.outcome(0));
    }
    c.quit().await;
}

struct Started {
    _dir: tempfile::TempDir,
    acct: std::path::PathBuf,
    mgmt: SocketAddr,
    smtp: SocketAddr,
    mta: common::Mta,
    sink: common::Sink,
}

async fn start(ip_smtp: &str, ip_sink: &str) -> Started {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (sink_at, sink) = start_sink(ip_sink).await;
    let smtp = addr(&format!("{ip_smtp}:{}", free_port(ip_smtp)));
    let mgmt = addr(&format!("127.0.0.70:{}", free_port("127.0.0.70")));
    let cfg = write_config(dir.path(), smtp, mgmt, sink_at);
    let mta = spawn_mta(&cfg);
    wait_listening(smtp).await;
    wait_listening(mgmt).await;
    Started {
        acct: dir.path().join("acct.csv"),
        _dir: dir,
        mgmt,
        smtp,
        mta,
        sink,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_enforces_http_access() {
    let s = start("127.0.0.77", "127.0.0.78").await;
    // (method, path, level needed: 1 monitor, 2 operator, 3 admin)
    let endpoints: &[(&str, &str, u8)] = &[
        ("GET", "/status?format=json", 1),
        ("GET", "/queues?format=json", 1),
        ("GET", "/queueDetail?queue=none.test/v1&format=json", 1),
        ("GET", "/domains?format=json", 1),
        ("GET", "/domainDetail?domain=none.test", 1),
        ("GET", "/vmtas?format=json", 1),
        ("GET", "/api/v1/status", 1),
        ("GET", "/api/v1/queues", 1),
        ("GET", "/api/v1/domains", 1),
        ("GET", "/api/v1/vmtas", 1),
        ("GET", "/api/v1/bounces", 1),
        ("GET", "/api/v1/feedback", 1),
        ("GET", "/api/v1/rates?minutes=5", 1),
        ("GET", "/api/v1/chart", 1),
        ("GET", "/metrics", 1),
        ("GET", "/ui", 1),
        ("POST", "/api/v1/queues/pause?queue=none.test/*", 2),
        ("POST", "/api/v1/queues/resume?queue=none.test/*", 2),
        (
            "POST",
            "/api/v1/queues/mode?queue=none.test/*&mode=normal",
            2,
        ),
        ("POST", "/api/v1/queues/schedule?queue=none.test/*", 2),
        ("POST", "/api/v1/queues/delete?queue=none.test/*", 2),
        ("POST", "/api/v1/source-ips/disable?ip=127.0.0.99", 2),
        ("POST", "/api/v1/source-ips/enable?ip=127.0.0.99", 2),
        ("POST", "/api/v1/counters/reset", 2),
        ("POST", "/api/v1/reload", 3),
    ];
    // (client address, level: 0 none, 1 monitor, 2 operator, 3 admin)
    let clients: [(&str, u8); 5] = [
        ("127.0.0.74", 0),
        ("127.0.0.79", 0), // matches no rule
        ("127.0.0.71", 1),
        ("127.0.0.72", 2),
        ("127.0.0.73", 3),
    ];
    for (src, level) in clients {
        for (method, path, need) in endpoints {
            let need = *need;
            let (code, body) = http(src, method, s.mgmt, path).await;
            if level >= need {
                // Actions on queues or source IPs that do not exist are a 404 that says so.
                let nothing = body.contains("no queue matches none.test/*")
                    || body.contains("no source IP matches 127.0.0.99");
                assert!(
                    code == 200 || (code == 404 && (path.contains("queueDetail") || nothing)),
                    "{src} (level {level}) {method} {path}: {code} {body}"
                );
            } else {
                assert_eq!(code, 403, "{src} (level {level}) {method} {path}: {body}");
                assert!(body.contains("error"), "{body}");
            }
        }
    }
    // Writing needs POST: a monitor cannot act through GET either.
    let (code, _) = http(
        "127.0.0.71",
        "GET",
        s.mgmt,
        "/api/v1/queues/pause?queue=*/*",
    )
    .await;
    assert_eq!(code, 405, "actions are POST only");
    assert_eq!(stop(s.mta), Some(0));
}

fn queue<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["queues"]
        .as_array()
        .and_then(|a| a.iter().find(|q| q["name"] == name))
        .unwrap_or_else(|| panic!("no queue {name} in {v}"))
}

fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_resume_delete_and_reset_backoff() {
    let s = start("127.0.0.80", "127.0.0.81").await;
    let op = "127.0.0.72";
    s.sink.defer.store(true, Ordering::SeqCst);
    let mut rcpts: Vec<(String, &str)> =
        (0..5).map(|i| (format!("u{i}@dest.test"), "j1")).collect();
    rcpts.extend((0..3).map(|i| (format!("o{i}@other.test"), "j2")));
    let refs: Vec<(&str, &str)> = rcpts.iter().map(|(r, j)| (r.as_str(), *j)).collect();
    send(s.smtp, &refs).await;
    // Every recipient has been tried and deferred at least once.
    // Every recipient deferred once (retries are an hour away), nothing in flight.
    for _ in 0..400 {
        let st = json(op, "GET", s.mgmt, "/api/v1/status").await;
        let st = &st["status"];
        if st["totals"]["deferred"].as_u64() >= Some(8)
            && st["conn"]["smtpOut"]["cur"] == 0
            && st["queue"]["smtp"]["rcp"] == 8
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let q = json(op, "GET", s.mgmt, "/api/v1/queues").await;
    assert_eq!(queue(&q, "dest.test/v1")["rcpt"], 5, "{q}");
    assert_eq!(queue(&q, "other.test/v1")["rcpt"], 3, "{q}");
    assert!(
        queue(&q, "dest.test/v1")["lastError"]
            .as_str()
            .is_some_and(|e| e.starts_with("451")),
        "{q}"
    );
    assert_eq!(q["queues"][0]["name"], "dest.test/v1", "largest first");
    // Why it waits and until when: every recipient got `451 4.3.0 try later`; retry-after 1h.
    let dest = queue(&q, "dest.test/v1");
    assert_eq!(dest["waitingKind"], "retry", "{dest}");
    assert_eq!(dest["waiting"], "retry after 451 4.3.0 try later", "{dest}");
    let next_in = dest["nextAttemptMs"].as_i64().unwrap_or(0) - q["timeMs"].as_i64().unwrap_or(0);
    assert!((50 * 60_000..=3_600_000).contains(&next_in), "{dest}");
    let status = json("127.0.0.71", "GET", s.mgmt, "/status?format=json").await;
    assert_eq!(status["status"]["queue"]["smtp"]["rcp"], 8, "{status}");
    assert_eq!(
        status["status"]["traffic"]["total"]["in"]["msg"], 8,
        "{status}"
    );
    assert_eq!(
        status["status"]["traffic"]["total"]["in"]["rcp"], 8,
        "{status}"
    );

    // The metrics show the same queue sizes.
    let (code, metrics) = http("127.0.0.71", "GET", s.mgmt, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("mta_queue_recipients{queue=\"dest.test/v1\",vmta=\"v1\"} 5"),
        "{metrics}"
    );
    for series in [
        "mta_queue_waiting{queue=\"dest.test/v1\",vmta=\"v1\",reason=\"retry\"} 1",
        "mta_queues_waiting{reason=\"retry\"} 2",
        "mta_queue_next_attempt_timestamp_seconds{queue=\"dest.test/v1\",vmta=\"v1\"} ",
    ] {
        assert!(metrics.contains(series), "no {series} in {metrics}");
    }
    assert!(
        metrics.contains("# EOF"),
        "OpenMetrics text ends with # EOF"
    );

    // Delete job j2: its three recipients get `b` records, no DSN, and leave the queue. (Paused
    // first so that no connection holds some of them while the delete runs.)
    json(
        op,
        "POST",
        s.mgmt,
        "/api/v1/queues/pause?queue=other.test/v1",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = json(op, "POST", s.mgmt, "/api/v1/queues/delete?job=j2").await;
    assert_eq!(d["deleted"], 3, "{d}");
    wait_for(&s.acct, "b", 3).await;
    let acct = std::fs::read_to_string(&s.acct).unwrap_or_default();
    let deleted: Vec<&str> = acct.lines().filter(|l| l.starts_with("b,")).collect();
    assert!(
        deleted
            .iter()
            .all(|l| l.contains("@other.test") && l.contains("deleted by an operator")),
        "{deleted:#?}"
    );
    let q = json(op, "GET", s.mgmt, "/api/v1/queues").await;
    assert_eq!(queue(&q, "other.test/v1")["rcpt"], 0, "{q}");

    // Backoff set and reset by the operator, with the cause shown.
    json(
        op,
        "POST",
        s.mgmt,
        "/api/v1/queues/mode?queue=dest.test/v1&mode=backoff",
    )
    .await;
    let q = json(op, "GET", s.mgmt, "/api/v1/queues").await;
    assert_eq!(queue(&q, "dest.test/v1")["mode"], "backoff");
    assert_eq!(queue(&q, "dest.test/v1")["modeCause"], "operator");
    let waiting = queue(&q, "dest.test/v1")["waiting"].as_str().unwrap_or("");
    assert!(
        waiting.starts_with("backoff since 20") && waiting.contains(" (operator); "),
        "{waiting}"
    );
    let (code, out, err) = cli(&[
        "set",
        "queue",
        "--mode=normal",
        "dest.test/v1",
        "--mgmt",
        &format!("http://{}", s.mgmt),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.trim(), "1 queue(s) set to normal.");
    let detail = json(op, "GET", s.mgmt, "/queueDetail?queue=dest.test/v1").await;
    assert_eq!(detail["queue"]["mode"], "normal", "{detail}");
    assert_eq!(detail["modeHistory"][0]["cause"], "operator");
    assert!(
        detail["settings"]["max-smtp-out"]["value"] == "2",
        "{detail}"
    );
    assert!(
        !detail["lastErrors"].as_array().is_none_or(Vec::is_empty),
        "{detail}"
    );

    // Pause (by the CLI), let the sink accept, schedule: nothing goes while paused.
    let (code, out, err) = cli(&[
        "pause",
        "queue",
        "dest.test/*",
        "--mgmt",
        &format!("http://{}", s.mgmt),
    ]);
    assert_eq!((code, out.trim()), (0, "1 queue(s) paused."), "{err}");
    // Commands that match nothing fail and say what exists.
    let url = format!("http://{}", s.mgmt);
    for args in [
        &["pause", "queue", "nosuch.com/v9"][..],
        &["resume", "queue", "nosuch.com/*"],
        &["set", "queue", "--mode=normal", "dest.test/v9"],
        &["schedule", "*/v9"],
        &["delete", "--queue=nosuch.com/v1"],
    ] {
        let mut a = args.to_vec();
        a.extend(["--mgmt", &url]);
        let (code, out, err) = cli(&a);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(
            err.contains("no queue matches ")
                && err.contains("(queues: ")
                && err.contains("dest.test/v1"),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = cli(&["delete", "--job=no-such-job", "--mgmt", &url]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no waiting recipient has job no-such-job"),
        "{err}"
    );
    let (code, _, err) = cli(&["disable", "source", "192.0.2.254", "--mgmt", &url]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no source IP matches 192.0.2.254 (source IPs: "),
        "{err}"
    );
    let (code, out, err) = cli(&[
        "pause",
        "queue",
        "nosuch.com/v9",
        "--mgmt",
        &url,
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{out}{err}");
    tokio::time::sleep(Duration::from_millis(300)).await; // a connection in flight finishes
    s.sink.defer.store(false, Ordering::SeqCst);
    json(op, "POST", s.mgmt, "/api/v1/queues/schedule?queue=*/*").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&s.acct, "d"), 0, "a paused queue delivers nothing");
    let (code, out, _) = cli(&["show", "queues", "--mgmt", &format!("http://{}", s.mgmt)]);
    assert_eq!(code, 0);
    let line = out
        .lines()
        .find(|l| l.starts_with("dest.test/v1"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains(" yes "), "paused column: {line}");
    assert!(
        line.ends_with("paused by an operator"),
        "waiting column: {line}"
    );
    assert!(out.contains("queues shown."), "{out}");

    // Resume: all five are delivered.
    json(
        op,
        "POST",
        s.mgmt,
        "/api/v1/queues/resume?queue=dest.test/v1",
    )
    .await;
    json(
        op,
        "POST",
        s.mgmt,
        "/api/v1/queues/schedule?queue=dest.test/v1",
    )
    .await;
    wait_for(&s.acct, "d", 5).await;
    let status = json(op, "GET", s.mgmt, "/api/v1/status").await;
    assert_eq!(
        status["status"]["traffic"]["total"]["out"]["rcp"], 5,
        "{status}"
    );
    assert_eq!(status["status"]["totals"]["bounced"], 3, "{status}");
    let b = json(op, "GET", s.mgmt, "/api/v1/bounces").await;
    assert_eq!(b["bounces"].as_array().map(Vec::len), Some(3), "{b}");
    assert_eq!(b["bounces"][0]["category"], "other");

    // `show status` as a table and as JSON.
    let (code, out, _) = cli(&["show", "status", "--mgmt", &format!("http://{}", s.mgmt)]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("Total") && l.split_whitespace().nth(4) == Some("5")),
        "{out}"
    );
    let (code, out, _) = cli(&[
        "show",
        "status",
        "--format",
        "json",
        "--mgmt",
        &format!("http://{}", s.mgmt),
    ]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["status"]["totals"]["delivered"], 5);

    // The other views, as tables.
    let url = format!("http://{}", s.mgmt);
    let (code, out, _) = cli(&["show", "top", "--iterations", "1", "--mgmt", &url]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("\x1b[2J\x1b[H")
            && out.contains("Top/Min.")
            && out.contains("queues shown."),
        "{out}"
    );
    let (code, out, _) = cli(&["show", "domains", "--mgmt", &url]);
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l.starts_with("dest.test")), "{out}");
    let (code, out, _) = cli(&["show", "vmtas", "--mgmt", &url]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("v1 ") && l.contains("127.0.0.76")),
        "{out}"
    );
    let (code, out, _) = cli(&["show", "settings", "dest.test/v1", "--mgmt", &url]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with("retry-after") && l.contains("1h")),
        "{out}"
    );
    let (code, _, err) = cli(&["show", "settings", "nowhere.test/v1", "--mgmt", &url]);
    assert_eq!(code, 1, "an unknown queue is a refusal");
    assert!(
        err.contains("HTTP 404") && err.contains("no queue nowhere.test/v1"),
        "{err}"
    );

    // Source IPs: disabled and enabled, shown per vMTA.
    json(
        op,
        "POST",
        s.mgmt,
        "/api/v1/source-ips/disable?ip=127.0.0.76&minutes=5",
    )
    .await;
    let v = json(op, "GET", s.mgmt, "/api/v1/vmtas").await;
    assert_eq!(v["vmtas"][0]["sourceIps"][0]["disabled"], true, "{v}");
    json(
        op,
        "POST",
        s.mgmt,
        "/api/v1/source-ips/enable?ip=127.0.0.76",
    )
    .await;
    let v = json(op, "GET", s.mgmt, "/api/v1/vmtas").await;
    assert_eq!(v["vmtas"][0]["sourceIps"][0]["disabled"], false, "{v}");

    // Reload: a changed limit is in force for the existing queue, its mail and mode kept; an
    // invalid file changes nothing; SIGHUP does the same as the API.
    let cfg_path = s.acct.with_file_name("mta.conf");
    let text = std::fs::read_to_string(&cfg_path).unwrap_or_default();
    std::fs::write(&cfg_path, text.replace("max-smtp-out 2", "max-smtp-out 7"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, _) = http(op, "POST", s.mgmt, "/api/v1/reload").await;
    assert_eq!(code, 403, "reload needs admin");
    let (code, out, err) = cli(&["reload", "--mgmt", &format!("http://{}", s.mgmt)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reloaded."), "{out}");
    let d = json(op, "GET", s.mgmt, "/queueDetail?queue=other.test/v1").await;
    assert_eq!(d["settings"]["max-smtp-out"]["value"], "7", "{d}");
    assert_eq!(d["queue"]["maxConn"], 7, "{d}");
    assert_eq!(
        d["queue"]["paused"], true,
        "a reload keeps the queue's state"
    );
    std::fs::write(&cfg_path, text.replace("max-smtp-out 2", "max-smtp-uot 3"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, body) = http("127.0.0.73", "POST", s.mgmt, "/api/v1/reload").await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("max-smtp-uot") && body.contains("did you mean"),
        "{body}"
    );
    let d = json(op, "GET", s.mgmt, "/queueDetail?queue=other.test/v1").await;
    assert_eq!(d["queue"]["maxConn"], 7, "an invalid file changes nothing");
    std::fs::write(&cfg_path, text.replace("max-smtp-out 2", "max-smtp-out 9"))
        .unwrap_or_else(|e| panic!("{e}"));
    let pid = s
        .mta
        .0
        .as_ref()
        .map(|c| c.id().to_string())
        .unwrap_or_default();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .is_ok_and(|x| x.success()));
    let mut max = Value::Null;
    for _ in 0..100 {
        let d = json(op, "GET", s.mgmt, "/queueDetail?queue=other.test/v1").await;
        max = d["queue"]["maxConn"].clone();
        if max == 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(max, 9, "SIGHUP reloads");

    // A bad request is a clear 400, and the CLI says when nothing listens.
    let (code, body) = http(
        op,
        "POST",
        s.mgmt,
        "/api/v1/queues/mode?queue=dest.test/v1&mode=fast",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("mode=normal or mode=backoff"), "{body}");
    assert_eq!(stop(s.mta), Some(0));
    let (code, _, err) = cli(&["show", "status", "--mgmt", &format!("http://{}", s.mgmt)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot reach the management interface"),
        "{err}"
    );
}
