//! The world's DNS server (hickory-server on loopback) queried by hickory-resolver through the
//! MTA's resolver seam: MX, A, PTR for 127.x sending addresses, long DKIM TXT records, and the
//! injected failures mapping to the MTA's DNS errors.

use mta::dns::{DnsError, HickoryResolver, Mx, Resolver};
use simulator::dns::{DnsServer, Failure, Zones};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

fn zones() -> Zones {
    let mut z = Zones::default();
    z.add_mx("gmail.test", 5, "gmail-smtp-in.l.google.test");
    z.add_mx("gmail.test", 10, "alt1.gmail-smtp-in.l.google.test");
    z.add_a("gmail-smtp-in.l.google.test", Ipv4Addr::new(127, 1, 0, 1));
    z.add_a(
        "alt1.gmail-smtp-in.l.google.test",
        Ipv4Addr::new(127, 1, 0, 2),
    );
    z.add_a("mta1.sender.test", Ipv4Addr::new(127, 0, 0, 2));
    z.add_ptr(Ipv4Addr::new(127, 0, 0, 2), "mta1.sender.test");
    z.add_txt("sender.test", "v=spf1 ip4:127.0.0.2 -all");
    z.add_txt("_dmarc.sender.test", "v=DMARC1; p=none");
    z.add_txt(
        "s1._domainkey.sender.test",
        &format!("v=DKIM1; k=rsa; p={}", "M".repeat(392)),
    );
    z
}

#[tokio::test]
async fn answers_mx_a_ptr_and_txt() {
    let server = DnsServer::start(
        "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        &zones(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let r = HickoryResolver::with_nameservers(&[server.addr()]).unwrap_or_else(|e| panic!("{e}"));
    let mx = r.mx("gmail.test").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        mx,
        vec![
            Mx {
                preference: 5,
                host: "gmail-smtp-in.l.google.test".into()
            },
            Mx {
                preference: 10,
                host: "alt1.gmail-smtp-in.l.google.test".into()
            },
        ]
    );
    assert_eq!(
        r.ip("alt1.gmail-smtp-in.l.google.test").await.ok(),
        Some(vec![IpAddr::from([127, 1, 0, 2])])
    );
    // Forward-confirmed reverse DNS for a loopback sending address reaches our server.
    assert_eq!(
        r.ptr(IpAddr::from([127, 0, 0, 2])).await.ok(),
        Some(vec!["mta1.sender.test".to_string()])
    );
    assert_eq!(
        r.ip("mta1.sender.test").await.ok(),
        Some(vec![IpAddr::from([127, 0, 0, 2])])
    );
    let dkim = r
        .txt("s1._domainkey.sender.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dkim,
        vec![format!("v=DKIM1; k=rsa; p={}", "M".repeat(392))],
        "strings joined"
    );
    assert_eq!(
        r.txt("_dmarc.sender.test").await.ok(),
        Some(vec!["v=DMARC1; p=none".to_string()])
    );
    assert!(matches!(
        r.mx("nowhere.gmail.test").await,
        Err(DnsError::NxDomain(_))
    ));
    assert!(matches!(
        r.mx("mta1.sender.test").await,
        Err(DnsError::NoRecords(_))
    ));
    assert!(server.queries() >= 8);
}

#[tokio::test]
async fn injected_failures_reach_the_resolver() {
    let server = DnsServer::start(
        "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        &zones(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let fresh =
        || HickoryResolver::with_nameservers(&[server.addr()]).unwrap_or_else(|e| panic!("{e}"));
    server.inject("gmail.test", Failure::ServFail, None);
    let e = fresh().mx("gmail.test").await.err();
    assert!(matches!(e, Some(DnsError::ServFail(_))), "{e:?}");
    assert!(e.is_some_and(|e| e.is_temporary()));
    server.clear();
    server.inject(
        "gmail.test",
        Failure::NxDomain,
        Some(Duration::from_secs(60)),
    );
    let e = fresh().mx("gmail.test").await.err();
    assert!(matches!(e, Some(DnsError::NxDomain(_))), "{e:?}");
    server.clear();
    server.inject("gmail.test", Failure::Timeout, None);
    let e = fresh().mx("gmail.test").await.err();
    assert!(matches!(e, Some(DnsError::Timeout(_))), "{e:?}");
    // A failure for a time window ends by itself.
    server.clear();
    server.inject(
        "gmail.test",
        Failure::ServFail,
        Some(Duration::from_millis(300)),
    );
    assert!(fresh().mx("gmail.test").await.is_err());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        fresh().mx("gmail.test").await.map(|m| m.len()).ok(),
        Some(2)
    );
}
