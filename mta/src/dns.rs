//! The DNS seam: MX, A/AAAA, TXT and PTR look-ups, live through hickory-resolver (the system's
//! resolver, or a configured `name-server` such as a test world's) or answered in-process.

use crate::net::BoxFuture;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Why a look-up failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist (permanent).
    #[error("{0}: no such domain (NXDOMAIN)")]
    NxDomain(String),
    /// The name exists but has no records of that type.
    #[error("{0}: no records of that type")]
    NoRecords(String),
    /// The server failed (temporary).
    #[error("{0}: server failure")]
    ServFail(String),
    /// No answer in time (temporary).
    #[error("{0}: timeout")]
    Timeout(String),
}

impl DnsError {
    /// True for failures worth retrying (SERVFAIL, timeouts).
    pub fn is_temporary(&self) -> bool {
        matches!(self, DnsError::ServFail(_) | DnsError::Timeout(_))
    }
}

/// An MX record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mx {
    /// Preference (lower first).
    pub preference: u16,
    /// Exchange host; `.` is a null MX (RFC 7505: the domain takes no mail).
    pub host: String,
}

/// Look-ups the MTA needs. Object safe: `Arc<dyn Resolver>`.
pub trait Resolver: Send + Sync {
    /// MX records, sorted by preference (ties in the order received).
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<Mx>, DnsError>>;
    /// A and AAAA addresses.
    fn ip<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>>;
    /// TXT strings (each record's character-strings joined).
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>>;
    /// PTR names for an address.
    fn ptr<'a>(&'a self, ip: IpAddr) -> BoxFuture<'a, Result<Vec<String>, DnsError>>;
}

fn norm(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// hickory-resolver behind the seam.
pub struct HickoryResolver {
    inner: hickory_resolver::TokioResolver,
    /// The configured name servers (empty for the system resolver).
    servers: Vec<SocketAddr>,
}

impl HickoryResolver {
    /// The machine's resolver (resolv.conf).
    pub fn system() -> Result<HickoryResolver, String> {
        let b = hickory_resolver::TokioResolver::builder_tokio().map_err(|e| e.to_string())?;
        Ok(HickoryResolver {
            inner: b.build().map_err(|e| e.to_string())?,
            servers: Vec::new(),
        })
    }

    /// Queries only `servers` (UDP and TCP), without /etc/hosts, so that look-ups of loopback
    /// addresses and test names reach them (hickory answers 127/8 PTRs itself otherwise).
    pub fn with_nameservers(servers: &[SocketAddr]) -> Result<HickoryResolver, String> {
        use hickory_resolver::config::{
            ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
        };
        let ns: Vec<NameServerConfig> = servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        let cfg = ResolverConfig::from_name_servers(ns);
        let mut opts = ResolverOpts::default();
        opts.use_hosts_file = ResolveHosts::Never;
        opts.timeout = std::time::Duration::from_secs(2);
        opts.attempts = 2;
        let inner = hickory_resolver::TokioResolver::builder_with_config(
            cfg,
            hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()
        .map_err(|e| e.to_string())?;
        Ok(HickoryResolver {
            inner,
            servers: servers.to_vec(),
        })
    }
}

/// A PTR query for a loopback address sent straight to `server` over UDP: hickory-resolver
/// answers `127.in-addr.arpa` itself (`localhost`, RFC 6761) and has no option to ask a server,
/// but a test world gives its loopback sending addresses real PTR records. The message is built
/// and parsed by hickory-proto.
async fn loopback_ptr(server: SocketAddr, ip: IpAddr) -> Result<Vec<String>, DnsError> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};
    let owner = Name::from(ip);
    let name = owner.to_utf8();
    let id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7)
        & 0xffff) as u16;
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(owner, RecordType::PTR));
    let bytes = m.to_vec().map_err(|_| DnsError::ServFail(name.clone()))?;
    let bind: SocketAddr = if server.is_ipv4() {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0))
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|_| DnsError::ServFail(name.clone()))?;
    let mut buf = vec![0u8; 4096];
    for _ in 0..2 {
        sock.send_to(&bytes, server)
            .await
            .map_err(|_| DnsError::ServFail(name.clone()))?;
        let got =
            tokio::time::timeout(std::time::Duration::from_secs(2), sock.recv(&mut buf)).await;
        let Ok(Ok(n)) = got else { continue };
        let Ok(resp) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if resp.metadata.id != id {
            continue;
        }
        return match resp.metadata.response_code {
            ResponseCode::NoError => {
                let v: Vec<String> = resp
                    .answers
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::PTR(p) => Some(norm(&p.0.to_utf8())),
                        _ => None,
                    })
                    .collect();
                if v.is_empty() {
                    Err(DnsError::NoRecords(name))
                } else {
                    Ok(v)
                }
            }
            ResponseCode::NXDomain => Err(DnsError::NxDomain(name)),
            _ => Err(DnsError::ServFail(name)),
        };
    }
    Err(DnsError::Timeout(name))
}

fn map_err(name: &str, e: hickory_resolver::net::NetError) -> DnsError {
    let s = e.to_string();
    let lower = s.to_ascii_lowercase();
    if e.is_nx_domain() {
        DnsError::NxDomain(name.into())
    } else if e.is_no_records_found() {
        DnsError::NoRecords(name.into())
    } else if lower.contains("timed out") || lower.contains("timeout") {
        DnsError::Timeout(name.into())
    } else {
        DnsError::ServFail(name.into())
    }
}

impl Resolver for HickoryResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<Mx>, DnsError>> {
        Box::pin(async move {
            let fqdn = format!("{}.", norm(domain));
            let r = self
                .inner
                .mx_lookup(fqdn)
                .await
                .map_err(|e| map_err(domain, e))?;
            let mut v: Vec<Mx> = r
                .answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    hickory_resolver::proto::rr::RData::MX(mx) => Some(Mx {
                        preference: mx.preference,
                        host: norm(&mx.exchange.to_utf8()),
                    }),
                    _ => None,
                })
                .collect();
            v.sort_by_key(|m| m.preference);
            Ok(v)
        })
    }

    fn ip<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move {
            let fqdn = format!("{}.", norm(host));
            let r = self
                .inner
                .lookup_ip(fqdn)
                .await
                .map_err(|e| map_err(host, e))?;
            Ok(r.iter().collect())
        })
    }

    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(async move {
            let fqdn = format!("{}.", norm(name));
            let r = self
                .inner
                .txt_lookup(fqdn)
                .await
                .map_err(|e| map_err(name, e))?;
            Ok(r.answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    hickory_resolver::proto::rr::RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect())
        })
    }

    fn ptr<'a>(&'a self, ip: IpAddr) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(async move {
            if ip.is_loopback() {
                if let Some(server) = self.servers.first() {
                    return loopback_ptr(*server, ip).await;
                }
            }
            let r = self
                .inner
                .reverse_lookup(ip)
                .await
                .map_err(|e| map_err(&ip.to_string(), e))?;
            Ok(r.answers()
                .iter()
                .filter_map(|rec| match &rec.data {
                    hickory_resolver::proto::rr::RData::PTR(p) => Some(norm(&p.0.to_utf8())),
                    _ => None,
                })
                .collect())
        })
    }
}

/// Records answered in-process (tests and simulated worlds), with failures that can be switched on.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    inner: Arc<Mutex<StaticZones>>,
}

/// The records of a [`StaticResolver`].
#[derive(Debug, Clone, Default)]
pub struct StaticZones {
    /// domain -> MX records.
    pub mx: BTreeMap<String, Vec<Mx>>,
    /// host -> addresses.
    pub ip: BTreeMap<String, Vec<IpAddr>>,
    /// name -> TXT strings.
    pub txt: BTreeMap<String, Vec<String>>,
    /// address -> names.
    pub ptr: BTreeMap<IpAddr, Vec<String>>,
    /// name (and its subdomains) -> injected failure.
    pub failures: BTreeMap<String, DnsError>,
}

impl StaticResolver {
    /// Changes the records.
    pub fn edit(&self, f: impl FnOnce(&mut StaticZones)) {
        if let Ok(mut z) = self.inner.lock() {
            f(&mut z);
        }
    }

    fn answer<T: Clone>(
        &self,
        name: &str,
        pick: impl Fn(&StaticZones) -> Option<Vec<T>>,
    ) -> Result<Vec<T>, DnsError> {
        let Ok(z) = self.inner.lock() else {
            return Err(DnsError::ServFail(name.into()));
        };
        let n = norm(name);
        if let Some((_, e)) = z
            .failures
            .iter()
            .find(|(k, _)| n == **k || n.ends_with(&format!(".{k}")))
        {
            return Err(e.clone());
        }
        match pick(&z) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => {
                let exists =
                    z.mx.contains_key(&n) || z.ip.contains_key(&n) || z.txt.contains_key(&n);
                Err(if exists {
                    DnsError::NoRecords(n)
                } else {
                    DnsError::NxDomain(n)
                })
            }
        }
    }
}

impl Resolver for StaticResolver {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<Vec<Mx>, DnsError>> {
        Box::pin(async move {
            let mut v = self.answer(domain, |z| z.mx.get(&norm(domain)).cloned())?;
            v.sort_by_key(|m| m.preference);
            Ok(v)
        })
    }
    fn ip<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsError>> {
        Box::pin(async move { self.answer(host, |z| z.ip.get(&norm(host)).cloned()) })
    }
    fn txt<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(async move { self.answer(name, |z| z.txt.get(&norm(name)).cloned()) })
    }
    fn ptr<'a>(&'a self, ip: IpAddr) -> BoxFuture<'a, Result<Vec<String>, DnsError>> {
        Box::pin(async move { self.answer(&ip.to_string(), |z| z.ptr.get(&ip).cloned()) })
    }
}
