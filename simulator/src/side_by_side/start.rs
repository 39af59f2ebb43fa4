//! Starting one side: its world (the sending side published in its DNS) and its MTA.

use super::{side_err, Error, Options, OwnCounts, Side, SENDER_DOMAIN};
use crate::inject::Injection;
use crate::live::{derive_config, free_port, free_udp_tcp_port, LivePlan, MtaProcess};
use crate::postfix::{Postfix, PostfixConfig, Route};
use crate::world::{World, WorldOptions};
use crate::world_auth::{SenderIp, SenderOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The MTA of a running side.
pub(super) enum Mta {
    Postfix(Postfix),
    Ours { process: MtaProcess, acct: PathBuf },
}

impl Mta {
    /// Stops it and reads its own records.
    pub(super) async fn finish(self) -> (OwnCounts, String) {
        let joined = tokio::task::spawn_blocking(move || match self {
            Mta::Postfix(p) => {
                let log = p.maillog();
                let stopped = p.stop().err().map(|e| format!(" (stop: {e})"));
                let c =
                    crate::postfix::count_log(&std::fs::read_to_string(&log).unwrap_or_default());
                let own = OwnCounts {
                    delivered: c.sent,
                    deferred: c.deferred,
                    bounced: c.bounced,
                };
                let note = format!("maillog status= lines{}", stopped.unwrap_or_default());
                (own, note)
            }
            Mta::Ours { process, acct } => {
                process.stop(Duration::from_secs(10));
                (
                    acct_counts(&acct),
                    "acct.csv d, t+tq, b records".to_string(),
                )
            }
        })
        .await;
        joined.unwrap_or_else(|e| (OwnCounts::default(), format!("not read: {e}")))
    }
}

/// Our accounting file's `d`, `t`/`tq` and `b` records.
fn acct_counts(path: &Path) -> OwnCounts {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut c = OwnCounts::default();
    for row in crate::live::csv_rows(&text).iter().skip(1) {
        match row.first().map(String::as_str) {
            Some("d") => c.delivered += 1,
            Some("t" | "tq") => c.deferred += 1,
            Some("b") => c.bounced += 1,
            _ => {}
        }
    }
    c
}

/// A side's world, MTA and where to inject.
pub(super) struct Running {
    pub(super) world: World,
    pub(super) mta: Mta,
    pub(super) injection: Injection,
}

fn world_options(root: &Path, dns: SocketAddr, smtp_port: u16, dir: &Path) -> WorldOptions {
    WorldOptions {
        profiles: root.join("isp-profiles"),
        config: None,
        dns,
        smtp_port,
        mta: None,
        senders: SenderOptions {
            key_dir: dir.join("world-keys"),
            ..SenderOptions::default()
        },
    }
}

/// The sending side published in a world without a config: the domain and `side`'s address.
fn publish_sender(o: &mut WorldOptions, side: Side) {
    let (ip, host) = side.sender();
    o.senders.domains = vec![SENDER_DOMAIN.to_string()];
    o.senders.ips = vec![SenderIp {
        ip: IpAddr::V4(ip),
        host: Some(host),
    }];
}

/// The world's routes for Postfix: every provider domain to its MX addresses by preference.
fn routes(world: &World) -> Vec<Route> {
    let mut out = Vec::new();
    for p in &world.providers {
        let mut mx = p.mx.clone();
        mx.sort_by_key(|m| m.preference);
        for d in &p.domains {
            out.push(Route {
                domain: d.clone(),
                hops: mx.iter().map(|m| m.addr).collect(),
            });
        }
    }
    out
}

/// Postfix in its world.
pub(super) async fn start_postfix(opts: &Options, dir: &Path) -> Result<Running, Error> {
    let e = side_err(Side::Postfix);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let smtp_port = free_port(IpAddr::V4(crate::world::mx_ip(0, 0))).map_err(&e)?;
    let mut wo = world_options(&opts.root, SocketAddr::new(lo, 0), smtp_port, dir);
    publish_sender(&mut wo, Side::Postfix);
    let world = World::start(&wo).await.map_err(&e)?;
    let (ip, host_name) = Side::Postfix.sender();
    let listen = SocketAddr::new(IpAddr::V4(ip), free_port(IpAddr::V4(ip)).map_err(&e)?);
    let cfg = PostfixConfig {
        listen,
        bind_ip: IpAddr::V4(ip),
        host_name,
        routes: routes(&world),
    };
    let pdir = dir.join("postfix");
    let postfix = tokio::task::spawn_blocking(move || Postfix::start(&pdir, &cfg))
        .await
        .map_err(|j| e(j.to_string()))??;
    Ok(Running {
        world,
        mta: Mta::Postfix(postfix),
        injection: Injection {
            client: lo,
            listener: listen,
            why: String::new(),
        },
    })
}

/// `mta run` with the side's config, derived for its world.
pub(super) async fn start_ours(side: Side, opts: &Options, dir: &Path) -> Result<Running, Error> {
    let e = side_err(side);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let path = side
        .config(&opts.root)
        .ok_or_else(|| e("not one of ours".into()))?;
    let host = mta::config::HostPaths::new(None, true);
    let original = mta::config::check_file(&path, &host)
        .into_result()
        .map_err(|x| e(x.to_string()))?;
    let plan = LivePlan {
        dir: dir.to_path_buf(),
        acct: dir.join("acct.csv"),
        dns: SocketAddr::new(lo, free_udp_tcp_port(lo).map_err(&e)?),
        smtp_port: free_port(IpAddr::V4(crate::world::mx_ip(0, 0))).map_err(&e)?,
        mgmt: SocketAddr::new(lo, free_port(lo).map_err(&e)?),
    };
    let derived = derive_config(&path, &original, &plan).map_err(&e)?;
    let conf = dir.join("mta.conf");
    std::fs::write(&conf, &derived.text).map_err(|source| Error::Io {
        path: conf.clone(),
        source,
    })?;
    let cfg = mta::config::load(&conf)
        .into_result()
        .map_err(|x| e(format!("the derived config: {x}")))?;
    let mut wo = world_options(&opts.root, plan.dns, plan.smtp_port, dir);
    if original.all_domain_keys().next().is_none() {
        publish_sender(&mut wo, side);
    } else {
        wo.config = Some(conf.clone());
    }
    let world = World::start(&wo).await.map_err(&e)?;
    let injection = crate::inject::injection(&cfg, false, true).map_err(&e)?;
    let mut process = MtaProcess::start(&opts.mta_bin, &conf, &dir.join("mta.log")).map_err(&e)?;
    wait_listening(injection.listener, &mut process)
        .await
        .map_err(&e)?;
    Ok(Running {
        world,
        mta: Mta::Ours {
            process,
            acct: plan.acct,
        },
        injection,
    })
}

async fn wait_listening(addr: SocketAddr, p: &mut MtaProcess) -> Result<(), String> {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Some(s) = p.exited() {
            return Err(format!("mta run exited ({s}) before listening on {addr}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("mta run did not listen on {addr} within 20 s"))
}
