//! The MTA (`mta::run`, real TCP, disk spool) delivering through MX look-ups answered by the world's
//! hickory DNS server: to the fake providers (Gmail's 5.1.1 for an unknown mailbox becomes a
//! bad-mailbox bounce) and to Python's aiosmtpd as an independent receiving server.

use simulator::dns::{DnsServer, Zones};
use simulator::world::{World, WorldOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind(format!("{ip}:0"))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

struct Kill(Option<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_port(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mta_delivers_through_the_worlds_dns() {
    let port = free_port("127.100.1.1");
    // One DNS server for both: the world's zones plus sink.test, served by aiosmtpd if present.
    let profiles = simulator::profile::load_dir(&root().join("isp-profiles"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut zones: Zones =
        simulator::world::zones(&profiles, None).unwrap_or_else(|e| panic!("{e}"));
    zones.add_mx("sink.test", 10, "mx.sink.test");
    zones.add_a("mx.sink.test", [127, 0, 0, 152].into());
    let dns = DnsServer::start(
        "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        &zones,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let have_aiosmtpd = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_aiosmtpd {
        assert!(
            std::env::var("REQUIRE_ORACLES").as_deref() != Ok("1"),
            "REQUIRE_ORACLES=1 but aiosmtpd is missing (pip install aiosmtpd)"
        );
        eprintln!("skipping the aiosmtpd part: not installed");
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mbox = dir.path().join("mbox");
    let sink_port = free_port("127.0.0.152");
    let _aiosmtpd = if have_aiosmtpd {
        let c = Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.152:{sink_port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&mbox)
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        wait_port(
            format!("127.0.0.152:{sink_port}")
                .parse()
                .unwrap_or_else(|e| panic!("{e}")),
        )
        .await;
        Kill(Some(c))
    } else {
        Kill(None)
    };
    let listen: SocketAddr = format!("127.0.0.150:{}", free_port("127.0.0.150"))
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let acct = dir.path().join("acct.csv");
    let cfg = format!(
        "host-name mta1.sender.test
smtp-listener {listen}
name-server {}
<source 127.0.0.0/8>
    always-allow-relaying yes
    default-virtual-mta v
</source>
<virtual-mta v>
    smtp-source-host 127.0.0.151 mta1.sender.test
</virtual-mta>
domain-key s1, sender.test, {key}
<domain *>
    default-smtp-port {port}
    use-starttls no
    retry-after 1m
    dkim-sign yes
</domain>
<domain sink.test>
    default-smtp-port {sink_port}
</domain>
<spool {}>
</spool>
<acct-file {}>
    records r,d,b,t
</acct-file>
",
        dns.addr(),
        dir.path().join("spool").display(),
        acct.display(),
        key = root().join("fixtures/keys/rsa2048-pkcs8.pem").display(),
    );
    let path = dir.path().join("mta.conf");
    std::fs::write(&path, cfg).unwrap_or_else(|e| panic!("{e}"));
    // The world publishes this config's key and sending address (the providers check DKIM).
    let world = World::start(&WorldOptions {
        profiles: root().join("isp-profiles"),
        config: Some(path.clone()),
        dns: "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        smtp_port: port,
        mta: None,
        ..WorldOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let p2 = path.clone();
    let mta = tokio::spawn(async move {
        mta::run::run(&p2, async move {
            let _ = stop_rx.await;
        })
        .await
    });
    wait_port(listen).await;
    let mut rcpts = vec![
        "someone@gmail.com",
        "unknown-3@gmail.com",
        "reader@yahoo.com",
    ];
    if have_aiosmtpd {
        rcpts.push("postmaster@sink.test");
    }
    let conn = mta::net::Net::connect(&mta::net::LiveNet, Some([127, 0, 0, 153].into()), listen)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c =
        mta::smtp::client::Client::connect(conn.stream, mta::smtp::client::Timeouts::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|r| panic!("{r}"));
    c.ehlo("injector.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for (i, r) in rcpts.iter().enumerate() {
        let body = format!("From: news@sender.test\r\nTo: {r}\r\nSubject: t{i}\r\nMessage-ID: <mw{i}@sender.test>\r\n\r\nhello\r\n");
        let t = c
            .send("b@bounces.sender.test", &[r.to_string()], body.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.outcome(0).code, 250);
    }
    c.quit().await;
    let want_d = rcpts.len() - 1;
    let mut text = String::new();
    for _ in 0..400 {
        text = std::fs::read_to_string(&acct).unwrap_or_default();
        let d = text.lines().filter(|l| l.starts_with("d,")).count();
        let b = text.lines().filter(|l| l.starts_with("b,")).count();
        if d >= want_d && b >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    let _ = mta.await;
    let bounce = text
        .lines()
        .find(|l| l.starts_with("b,"))
        .unwrap_or_else(|| panic!("no bounce: {text}"));
    assert!(
        bounce.contains("unknown-3@gmail.com")
            && bounce.contains("bad-mailbox")
            && bounce.contains("5.1.1"),
        "{bounce}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("d,")).count(),
        want_d,
        "{text}"
    );
    let t = world.totals();
    assert!(
        t["gmail"].messages >= 1 && t["yahoo"].messages >= 1,
        "{t:?}"
    );
    if have_aiosmtpd {
        // aiosmtpd's Mailbox handler keeps a Maildir: one file per message under new/.
        let m: String = std::fs::read_dir(mbox.join("new"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default();
        assert!(m.contains("<mw3@sender.test>"), "aiosmtpd got it: {m}");
    }
}
