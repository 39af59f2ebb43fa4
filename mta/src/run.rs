//! `mta run`: assembles the live MTA from a config: disk spool (recovered at start), accounting,
//! resolver, engine, SMTP listeners with STARTTLS and AUTH; runs until SIGTERM or SIGINT, then
//! finishes open sessions and exits with the spool intact.

use crate::acct::Accounting;
use crate::clock::Clock;
use crate::config::values::Value;
use crate::config::Config;
use crate::dns::{HickoryResolver, Resolver};
use crate::engine::{Engine, Parts};
use crate::net::{LiveNet, Net};
use crate::receive::session::{host_name, InboundSession};
use crate::smtp::server::{serve, ServerOptions};
use crate::spool::{DiskSpool, Spool};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Loads a TLS acceptor from a PEM file holding the certificate chain and the private key, or makes
/// a self-signed one for `auto` (a test-world extension).
pub fn tls_acceptor(spec: &str, host: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
    if spec == "auto" {
        return crate::smtp::client::self_signed_acceptor(&[host.to_string()]);
    }
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
        rustls::pki_types::CertificateDer::pem_file_iter(spec)
            .map_err(|e| format!("{spec}: {e}"))?
            .filter_map(Result::ok)
            .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(spec)
        .map_err(|e| format!("{spec}: no private key: {e}"))?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("{spec}: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Runs the MTA for `config_path` until `stop` resolves: the engine over the recovered spool,
/// the SMTP listeners, the management server, SIGHUP reloads, the accounting flusher and the
/// scheduler; then an orderly stop.
pub async fn run(
    config_path: &Path,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let cfg = load_config(config_path)?;
    let clock = Clock::live();
    let net: Arc<dyn Net> = Arc::new(LiveNet);
    let (engine, acct) = start_engine(&cfg, net.clone(), clock)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = listen_smtp(&cfg, &engine, net, &stop_rx).await?;
    if let Some(t) = serve_mgmt(&cfg, &engine, &stop_rx).await? {
        tasks.push(t);
    }
    let hup = reload_on_sighup(&engine, config_path, &stop_rx);
    let flusher = {
        let acct = acct.clone();
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => acct.flush(clock.now_ms()),
                    _ = stop_rx.changed() => break,
                }
            }
        })
    };
    let sched = {
        let engine = engine.clone();
        let mut stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            engine
                .run(async move {
                    let _ = stop_rx.changed().await;
                })
                .await
        })
    };
    stop.await;
    tracing::info!("shutting down: no new connections; open sessions finish");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let _ = sched.await;
    let _ = flusher.await;
    hup.abort();
    // Give deliveries in flight a moment to record their outcome; the spool keeps the rest.
    tokio::time::sleep(Duration::from_millis(200)).await;
    acct.close(clock.now_ms());
    Ok(())
}

/// The config, its warnings logged; errors and a missing `<spool>` stop the start.
fn load_config(config_path: &Path) -> Result<Arc<Config>, String> {
    let loaded = crate::config::load(config_path);
    for d in loaded.diagnostics.iter().filter(|d| !d.is_error()) {
        tracing::warn!("{d}");
    }
    let cfg: Arc<Config> = Arc::new(loaded.into_result().map_err(|e| e.to_string())?);
    if cfg.spools.is_empty() {
        return Err("no <spool> directory configured".into());
    }
    Ok(cfg)
}

/// The engine over the disk spool (unfinished mail recovered and queued), accounting and DNS.
fn start_engine(
    cfg: &Arc<Config>,
    net: Arc<dyn Net>,
    clock: Clock,
) -> Result<(Arc<Engine>, Arc<Accounting>), String> {
    let spool_dirs: Vec<_> = cfg.spools.iter().map(|s| s.path.clone()).collect();
    let (disk, recovered) = DiskSpool::open(&spool_dirs).map_err(|e| e.to_string())?;
    let acct = Arc::new(Accounting::new(&cfg.acct_files));
    let dns: Arc<dyn Resolver> = if cfg.name_servers.is_empty() {
        Arc::new(HickoryResolver::system()?)
    } else {
        Arc::new(HickoryResolver::with_nameservers(&cfg.name_servers)?)
    };
    let engine = Engine::new(Parts {
        config: cfg.clone(),
        spool: Arc::new(Spool::Disk(disk)),
        acct: acct.clone(),
        net,
        dns,
        clock,
        tap: None,
        dkim_signing: true,
        monitor_on_tap: false,
    });
    let n = recovered.len();
    for r in recovered {
        let vm = r.envelope.vmta.clone();
        let pool = r.envelope.pool.clone();
        let choices = vec![(vm, pool); r.envelope.rcpts.len()];
        engine.enqueue(r.id, r.envelope, &choices, clock.now_ms());
    }
    if n > 0 {
        tracing::info!(messages = n, "recovered unfinished messages from the spool");
    }
    Ok((engine, acct))
}

/// Every `smtp-listener` (default `0.0.0.0:25`) accepting sessions until the stop signal, within
/// `total-max-smtp-in` (PowerMTA's default 100; a change takes effect at the next restart).
async fn listen_smtp(
    cfg: &Arc<Config>,
    engine: &Arc<Engine>,
    net: Arc<dyn Net>,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let host = host_name(cfg);
    let global_tls = match cfg
        .global
        .get("smtp-server-tls-certificate")
        .map(|s| &s.value)
    {
        Some(Value::Text(t)) => Some(tls_acceptor(t, &host)?),
        _ => None,
    };
    let mut listeners = cfg.listeners.clone();
    if listeners.is_empty() {
        listeners.push(crate::config::model::Listener {
            addr: SocketAddr::from(([0, 0, 0, 0], 25)),
            source: None,
            tls_certificate: None,
            span: crate::config::Span::new(&Arc::from("(default)"), 0, 0),
        });
    }
    let max_in = match cfg.global.get("total-max-smtp-in").map(|s| &s.value) {
        Some(Value::Int(n)) => (*n).max(1) as usize,
        _ => 100,
    };
    let sessions = Arc::new(tokio::sync::Semaphore::new(max_in));
    let mut tasks = Vec::new();
    for l in listeners {
        let listener = net
            .listen(l.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", l.addr))?;
        tracing::info!(addr = %listener.local_addr(), source = l.source.as_deref().unwrap_or(""), "listening");
        let tls = match &l.tls_certificate {
            Some(p) => Some(tls_acceptor(&p.display().to_string(), &host)?),
            None => global_tls.clone(),
        };
        let accept = Accepting {
            engine: engine.clone(),
            host: host.clone(),
            tls,
            source: l.source.clone(),
            sessions: sessions.clone(),
        };
        let stop_rx = stop_rx.clone();
        tasks.push(tokio::spawn(accept.run(listener, stop_rx)));
    }
    Ok(tasks)
}

/// One listener's accept loop and what each session it accepts needs.
struct Accepting {
    engine: Arc<Engine>,
    host: String,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The listener's `source=NAME`.
    source: Option<String>,
    sessions: Arc<tokio::sync::Semaphore>,
}

impl Accepting {
    async fn run(
        self,
        mut listener: Box<dyn crate::net::Listener>,
        mut stop_rx: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let conn = tokio::select! {
                c = listener.accept() => c,
                _ = stop_rx.changed() => break,
            };
            let Ok(conn) = conn else { continue };
            let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
                // Over the cap on concurrent inbound sessions: refuse politely.
                tokio::spawn(async move {
                    let mut s = crate::smtp::io::SmtpStream::new(conn.stream);
                    s.queue(b"421 4.3.2 too many connections, try again later\r\n");
                    let _ = s.shutdown().await;
                });
                continue;
            };
            let opts = self.options(conn.peer.ip());
            let engine = self.engine.clone();
            let mut h =
                InboundSession::new(engine.clone(), conn.peer, conn.local, self.source.clone());
            engine
                .monitor()
                .smtp_in
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                serve(conn.stream, &mut h, &opts).await;
                engine
                    .monitor()
                    .smtp_in
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                drop(permit);
            });
        }
    }

    /// The session options for a client at `peer` under the config in force now (a reload
    /// changes source rules for new sessions).
    fn options(&self, peer: std::net::IpAddr) -> ServerOptions {
        let cfg = self.engine.config();
        let src = cfg.source_settings(Some(peer), self.source.as_deref());
        ServerOptions {
            host_name: self.host.clone(),
            max_message_size: src.size("max-message-size").filter(|n| *n > 0),
            tls: self.tls.clone(),
            auth: !cfg.smtp_users.is_empty() && src.bool("allow-auth"),
            auth_without_tls: src.bool("allow-unencrypted-plain-auth"),
            command_timeout: src
                .interval("smtp-command-timeout")
                .unwrap_or(Duration::from_secs(600)),
            data_timeout: src
                .interval("smtp-data-timeout")
                .unwrap_or(Duration::from_secs(600)),
            ..ServerOptions::default()
        }
    }
}

/// The management HTTP server, when the config has `http-mgmt-port`.
async fn serve_mgmt(
    cfg: &Config,
    engine: &Arc<Engine>,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let Some(addr) = crate::mgmt::listen_addr(cfg)? else {
        return Ok(None);
    };
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for management: {e}"))?;
    tracing::info!(addr = %l.local_addr().map_err(|e| e.to_string())?, "management HTTP listening");
    let engine = engine.clone();
    let mut stop_rx = stop_rx.clone();
    Ok(Some(tokio::spawn(async move {
        let stop = async move {
            let _ = stop_rx.changed().await;
        };
        if let Err(e) = crate::mgmt::http::serve(l, engine, stop).await {
            tracing::error!(%e, "management HTTP server failed");
        }
    })))
}

/// SIGHUP reloads the configuration, as `mta reload` does.
fn reload_on_sighup(
    engine: &Arc<Engine>,
    config_path: &Path,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let engine = engine.clone();
    let path = config_path.to_path_buf();
    let mut stop_rx = stop_rx.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; use `mta reload`");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => match crate::mgmt::reload_from_disk(&engine, &path) {
                    Ok(notes) => {
                        for n in notes {
                            tracing::warn!("reload: {n}");
                        }
                    }
                    Err(e) => tracing::error!("{e}"),
                },
                _ = stop_rx.changed() => break,
            }
        }
    })
}
