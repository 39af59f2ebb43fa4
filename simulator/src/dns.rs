//! The world's DNS: hickory-server authoritative for the world's zones on a loopback address (UDP
//! and TCP on one port), with failures injected per name (SERVFAIL, no answer, NXDOMAIN), for a
//! time window or until cleared. Zones are built in code ([`Zones`]) from the provider profiles
//! and the MTA config by `simulator::world`.

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, MX, PTR, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponseBuilder, ZoneHandler, ZoneType,
};
use hickory_server::Server;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsServerError {
    /// A name in the zones is not a valid DNS name.
    #[error("bad DNS name `{0}`: {1}")]
    Name(String, String),
    /// The address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// The records of the world, by owner name (lower-case, no trailing dot).
#[derive(Debug, Clone, Default)]
pub struct Zones {
    /// MX records: domain -> (preference, exchange).
    pub mx: BTreeMap<String, Vec<(u16, String)>>,
    /// A records: host -> addresses.
    pub a: BTreeMap<String, Vec<Ipv4Addr>>,
    /// PTR records: address -> host names.
    pub ptr: BTreeMap<Ipv4Addr, Vec<String>>,
    /// TXT records: name -> values (each value one record; long ones are split into 255-byte
    /// character-strings).
    pub txt: BTreeMap<String, Vec<String>>,
    /// TTL of every record in seconds (`None`: 300). Live scenario runs use 1 s so that a
    /// resolver's cache does not hide a `dns-failure` incident.
    pub ttl: Option<u32>,
}

fn norm(n: &str) -> String {
    n.trim_end_matches('.').to_ascii_lowercase()
}

impl Zones {
    /// Adds an MX record.
    pub fn add_mx(&mut self, domain: &str, preference: u16, host: &str) {
        self.mx
            .entry(norm(domain))
            .or_default()
            .push((preference, norm(host)));
    }
    /// Adds an A record.
    pub fn add_a(&mut self, host: &str, ip: Ipv4Addr) {
        let v = self.a.entry(norm(host)).or_default();
        if !v.contains(&ip) {
            v.push(ip);
        }
    }
    /// Adds a PTR record for `ip`.
    pub fn add_ptr(&mut self, ip: Ipv4Addr, host: &str) {
        let v = self.ptr.entry(ip).or_default();
        if !v.contains(&norm(host)) {
            v.push(norm(host));
        }
    }
    /// Adds a TXT record.
    pub fn add_txt(&mut self, name: &str, value: &str) {
        self.txt
            .entry(norm(name))
            .or_default()
            .push(value.to_string());
    }

    /// The zone apexes: every registrable-looking suffix the records live under (the last two
    /// labels of each name; `in-addr.arpa` zones per /8).
    fn origins(&self) -> BTreeSet<String> {
        let mut o = BTreeSet::new();
        let apex = |n: &str| -> String {
            let labels: Vec<&str> = n.split('.').filter(|l| !l.is_empty()).collect();
            let k = labels.len().min(2);
            labels[labels.len() - k..].join(".")
        };
        for n in self.mx.keys().chain(self.a.keys()).chain(self.txt.keys()) {
            o.insert(apex(n));
        }
        for ip in self.ptr.keys() {
            o.insert(format!("{}.in-addr.arpa", ip.octets()[0]));
        }
        o
    }
}

/// Splits a TXT value into character-strings of at most 255 bytes.
pub fn txt_strings(value: &str) -> Vec<String> {
    let b = value.as_bytes();
    if b.is_empty() {
        return vec![String::new()];
    }
    b.chunks(255)
        .map(|c| String::from_utf8_lossy(c).to_string())
        .collect()
}

/// A failure to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Answer SERVFAIL.
    ServFail,
    /// Do not answer at all (the resolver times out).
    Timeout,
    /// Answer NXDOMAIN.
    NxDomain,
}

#[derive(Debug, Clone)]
struct Fault {
    name: String,
    failure: Failure,
    until: Option<Instant>,
}

/// The catalog in front of which failures are injected.
struct Injecting {
    catalog: Catalog,
    faults: Arc<Mutex<Vec<Fault>>>,
    queries: Arc<Mutex<u64>>,
}

impl Injecting {
    fn fault_for(&self, name: &str) -> Option<Failure> {
        let now = Instant::now();
        let mut f = self.faults.lock().ok()?;
        f.retain(|x| x.until.is_none_or(|u| u > now));
        f.iter()
            .find(|x| name == x.name || name.ends_with(&format!(".{}", x.name)))
            .map(|x| x.failure)
    }
}

#[async_trait::async_trait]
impl RequestHandler for Injecting {
    async fn handle_request<R: ResponseHandler, T: hickory_server::net::runtime::Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        if let Ok(mut q) = self.queries.lock() {
            *q += 1;
        }
        let name = request
            .queries
            .queries()
            .first()
            .map(|q| norm(&q.name().to_string()))
            .unwrap_or_default();
        let code = match self.fault_for(&name) {
            None => {
                return self
                    .catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
            Some(Failure::Timeout) => {
                let mut metadata = Metadata::new(
                    request.metadata.id,
                    MessageType::Response,
                    request.metadata.op_code,
                );
                metadata.response_code = ResponseCode::ServFail;
                return ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                });
            }
            Some(Failure::ServFail) => ResponseCode::ServFail,
            Some(Failure::NxDomain) => ResponseCode::NXDomain,
        };
        let response =
            MessageResponseBuilder::new(&request.queries, None).error_msg(&request.metadata, code);
        match response_handle.send_response(response).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%e, "DNS: could not send a response");
                let mut metadata = Metadata::new(
                    request.metadata.id,
                    MessageType::Response,
                    request.metadata.op_code,
                );
                metadata.response_code = code;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

fn name(n: &str) -> Result<Name, DnsServerError> {
    Name::from_str(&format!("{}.", norm(n)))
        .map_err(|e| DnsServerError::Name(n.to_string(), e.to_string()))
}

fn catalog(zones: &Zones) -> Result<Catalog, DnsServerError> {
    let ttl = zones.ttl.unwrap_or(300);
    use hickory_server::net::runtime::TokioRuntimeProvider;
    let mut handlers: BTreeMap<String, InMemoryZoneHandler<TokioRuntimeProvider>> = BTreeMap::new();
    for o in zones.origins() {
        let origin = name(&o)?;
        let mut h = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(
            name(&format!("ns.{o}"))?,
            name(&format!("hostmaster.{o}"))?,
            1,
            3600,
            600,
            86400,
            60,
        );
        h.upsert_mut(Record::from_rdata(origin, 3600, RData::SOA(soa)), 1);
        handlers.insert(o, h);
    }
    // The zone a name belongs to: the longest origin that is a suffix of it.
    let origins: Vec<String> = handlers.keys().cloned().collect();
    let zone_of = |n: &str| -> Option<String> {
        origins
            .iter()
            .filter(|o| n == o.as_str() || n.ends_with(&format!(".{o}")))
            .max_by_key(|o| o.len())
            .cloned()
    };
    let mut put = |owner: &str, rdata: RData| -> Result<(), DnsServerError> {
        let Some(z) = zone_of(&norm(owner)) else {
            return Ok(());
        };
        let rec = Record::from_rdata(name(owner)?, ttl, rdata);
        if let Some(h) = handlers.get_mut(&z) {
            h.upsert_mut(rec, 1);
        }
        Ok(())
    };
    for (d, list) in &zones.mx {
        for (pref, host) in list {
            put(d, RData::MX(MX::new(*pref, name(host)?)))?;
        }
    }
    for (h, ips) in &zones.a {
        for ip in ips {
            put(h, RData::A(A(*ip)))?;
        }
    }
    for (ip, hosts) in &zones.ptr {
        let o = ip.octets();
        let owner = format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0]);
        for h in hosts {
            put(&owner, RData::PTR(PTR(name(h)?)))?;
        }
    }
    for (n, values) in &zones.txt {
        for v in values {
            put(n, RData::TXT(TXT::new(txt_strings(v))))?;
        }
    }
    let mut c = Catalog::new();
    for (o, h) in handlers {
        let arc: Arc<dyn ZoneHandler> = Arc::new(h);
        c.upsert(LowerName::from(name(&o)?), vec![arc]);
    }
    Ok(c)
}

/// A running DNS server. Stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    faults: Arc<Mutex<Vec<Fault>>>,
    queries: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    /// Serves `zones` on `addr` (UDP and TCP; port 0 picks one).
    pub async fn start(addr: SocketAddr, zones: &Zones) -> Result<DnsServer, DnsServerError> {
        let faults: Arc<Mutex<Vec<Fault>>> = Arc::default();
        let queries: Arc<Mutex<u64>> = Arc::default();
        let handler = Injecting {
            catalog: catalog(zones)?,
            faults: faults.clone(),
            queries: queries.clone(),
        };
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| DnsServerError::Bind(addr, e))?;
        let bound = tcp
            .local_addr()
            .map_err(|e| DnsServerError::Bind(addr, e))?;
        let udp = tokio::net::UdpSocket::bind(bound)
            .await
            .map_err(|e| DnsServerError::Bind(bound, e))?;
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 65535);
        let task = tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        tracing::info!(addr = %bound, "DNS server listening");
        Ok(DnsServer {
            addr: bound,
            faults,
            queries,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries answered (or refused) so far.
    pub fn queries(&self) -> u64 {
        self.queries.lock().map(|q| *q).unwrap_or(0)
    }

    /// Makes look-ups of `name` (and names under it) fail as `failure`, for `lasts` or until
    /// [`DnsServer::clear`].
    pub fn inject(&self, name: &str, failure: Failure, lasts: Option<Duration>) {
        if let Ok(mut f) = self.faults.lock() {
            f.push(Fault {
                name: norm(name),
                failure,
                until: lasts.map(|d| Instant::now() + d),
            });
        }
    }

    /// Removes every injected failure.
    pub fn clear(&self) {
        if let Ok(mut f) = self.faults.lock() {
            f.clear();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The PTR owner name of an address (for display).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::new();
            for b in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            s + "ip6.arpa"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_txt_values_are_split_at_255_bytes() {
        let v = "p=".to_string() + &"A".repeat(400);
        let parts = txt_strings(&v);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), 255);
        assert_eq!(parts.concat(), v);
    }

    #[test]
    fn zones_have_their_apexes() {
        let mut z = Zones::default();
        z.add_mx("gmail.com", 5, "gmail-smtp-in.l.google.com");
        z.add_a("gmail-smtp-in.l.google.com", Ipv4Addr::new(127, 1, 0, 1));
        z.add_ptr(Ipv4Addr::new(127, 0, 0, 2), "mta1.sender.test");
        let o: Vec<String> = z.origins().into_iter().collect();
        assert_eq!(o, vec!["127.in-addr.arpa", "gmail.com", "google.com"]);
    }
}
