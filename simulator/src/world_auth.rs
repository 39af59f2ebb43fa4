//! What the sending side publishes in the live world's DNS, for any MTA (`mtasim world up`): the
//! sending addresses (A + PTR, forward-confirmed), SPF over them, DKIM public keys and DMARC for
//! every sending domain. They come from a PowerMTA-style config (`--config`: its `smtp-source-host`
//! and `domain-key` lines) and from the command line (`--sender-domain`, `--sender-ip`,
//! `--dkim-key`), so that an MTA without such a config (Postfix, Exim ...) can be authenticated
//! too; a sending domain without a key gets a generated one, written to a file the MTA can sign with.
//!
//! The providers listen on loopback, so the senders must connect from loopback: documentation
//! addresses (RFC 5737) and, in a config, any address that is not the machine's own are mapped
//! onto 127.2.x.y as live runs do ([`crate::live::loopback_for`]), and the records use the mapped
//! addresses.

use crate::dns::Zones;
use mta::dkim::KeyAlgorithm;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A `--sender-ip IP[=HOSTNAME]` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderIp {
    /// The address.
    pub ip: IpAddr,
    /// Its host name (A + PTR), if given.
    pub host: Option<String>,
}

impl FromStr for SenderIp {
    type Err = String;
    fn from_str(s: &str) -> Result<SenderIp, String> {
        let (ip, host) = match s.split_once('=') {
            Some((ip, h)) => (ip, Some(h.trim())),
            None => (s, None),
        };
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|e| format!("`{s}`: not IP[=HOSTNAME] ({e})"))?;
        if let Some(h) = host {
            if h.is_empty() || h.contains(char::is_whitespace) || !h.contains('.') {
                return Err(format!("`{s}`: `{h}` is not a host name"));
            }
        }
        Ok(SenderIp {
            ip,
            host: host.map(|h| h.trim_end_matches('.').to_ascii_lowercase()),
        })
    }
}

/// A `--dkim-key SELECTOR:DOMAIN:PATH` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKeyArg {
    /// The selector.
    pub selector: String,
    /// The signing domain.
    pub domain: String,
    /// The private key file (PEM).
    pub path: PathBuf,
}

impl FromStr for DkimKeyArg {
    type Err = String;
    fn from_str(s: &str) -> Result<DkimKeyArg, String> {
        let mut parts = s.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(sel), Some(dom), Some(path))
                if !sel.is_empty() && dom.contains('.') && !path.is_empty() =>
            {
                Ok(DkimKeyArg {
                    selector: sel.to_string(),
                    domain: dom.trim_end_matches('.').to_ascii_lowercase(),
                    path: PathBuf::from(path),
                })
            }
            _ => Err(format!("`{s}`: not SELECTOR:DOMAIN:PATH")),
        }
    }
}

/// The DMARC policy published for the sending domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DmarcPolicy {
    /// `p=none` (monitoring).
    #[default]
    None,
    /// `p=quarantine`.
    Quarantine,
    /// `p=reject`.
    Reject,
}

impl DmarcPolicy {
    /// The policy's word in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

/// The sending side as the command line describes it (beside or instead of an MTA config).
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// Sending domains (SPF, DKIM, DMARC).
    pub domains: Vec<String>,
    /// Sending addresses.
    pub ips: Vec<SenderIp>,
    /// Given DKIM keys.
    pub dkim_keys: Vec<DkimKeyArg>,
    /// DMARC policy of every sending domain.
    pub dmarc_policy: DmarcPolicy,
    /// Where keys for domains without one are written (and found again on the next start).
    pub key_dir: PathBuf,
    /// The type of generated keys.
    pub key_type: KeyAlgorithm,
    /// The selector of generated keys.
    pub selector: String,
}

impl Default for SenderOptions {
    fn default() -> SenderOptions {
        SenderOptions {
            domains: Vec::new(),
            ips: Vec::new(),
            dkim_keys: Vec::new(),
            dmarc_policy: DmarcPolicy::None,
            key_dir: PathBuf::from("world-keys"),
            key_type: KeyAlgorithm::Rsa2048,
            selector: "mtasim".to_string(),
        }
    }
}

/// One sending address as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedIp {
    /// The address the world expects connections from (loopback unless the machine's own).
    pub address: IpAddr,
    /// The address in the config or on the command line, when it was mapped onto `address`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<IpAddr>,
    /// Its host name (A + PTR), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// One published DKIM key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedKey {
    /// The selector.
    pub selector: String,
    /// The signing domain.
    pub domain: String,
    /// The private key file: sign with it.
    pub path: PathBuf,
    /// `config`, `given` (`--dkim-key`), `generated` (made at this start) or `reused` (made at an
    /// earlier start and found in the key directory).
    pub source: &'static str,
    /// The TXT value.
    pub txt: String,
}

/// One published record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedRecord {
    /// Owner name.
    pub name: String,
    /// `A`, `PTR` or `TXT`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The value.
    pub value: String,
}

/// Everything the sending side publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Published {
    /// Sending addresses.
    pub ips: Vec<PublishedIp>,
    /// Sending domains.
    pub domains: Vec<String>,
    /// DKIM keys.
    pub dkim: Vec<PublishedKey>,
    /// Every record, in the order added.
    pub records: Vec<PublishedRecord>,
}

impl Published {
    /// Original address -> the loopback one used, for the mapped addresses.
    pub fn mapping(&self) -> Vec<(IpAddr, IpAddr)> {
        self.ips
            .iter()
            .filter_map(|p| p.original.map(|o| (o, p.address)))
            .collect()
    }

    /// Adds the records to `z`.
    pub fn add_to(&self, z: &mut Zones) {
        for r in &self.records {
            match r.kind {
                "A" => {
                    if let Ok(ip) = r.value.parse() {
                        z.add_a(&r.name, ip)
                    }
                }
                "PTR" => {
                    if let Ok(ip) = r.name.parse() {
                        z.add_ptr(ip, &r.value)
                    }
                }
                _ => z.add_txt(&r.name, &r.value),
            }
        }
    }
}

/// True for the RFC 5737 documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24).
pub fn is_documentation(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            matches!(
                (o[0], o[1], o[2]),
                (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
            )
        }
        IpAddr::V6(_) => false,
    }
}

/// True if `ip` is one of this machine's addresses (a socket can be bound to it).
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Where a config's sending address connects from in the live world: loopback and the machine's
/// own addresses stay, documentation and other foreign addresses are mapped as live runs map them.
fn map_config_ip(ip: IpAddr, n: usize) -> IpAddr {
    match ip {
        IpAddr::V4(v) if v.is_loopback() => ip,
        _ if is_documentation(ip) => crate::live::loopback_for(ip, n),
        _ if !ip.is_unspecified() && is_local(ip) => ip,
        _ => crate::live::loopback_for(ip, n),
    }
}

/// Where a `--sender-ip` connects from: loopback stays, documentation addresses are mapped, any
/// other is an error (the providers listen on loopback).
fn map_sender_ip(ip: IpAddr, n: usize) -> Result<IpAddr, String> {
    match ip {
        IpAddr::V4(v) if v.is_loopback() => Ok(ip),
        _ if is_documentation(ip) => Ok(crate::live::loopback_for(ip, n)),
        _ => Err(format!(
            "--sender-ip {ip}: the providers listen on loopback, so a sending address must be in \
             127.0.0.0/8 (or a documentation address -- 192.0.2.0/24, 198.51.100.0/24, \
             203.0.113.0/24 -- which is mapped onto 127.2.x.y)"
        )),
    }
}

/// The file a generated key of `selector` for `domain` lives in.
pub fn generated_key_path(dir: &Path, selector: &str, domain: &str) -> PathBuf {
    dir.join(format!("{selector}.{domain}.pem"))
}

/// The key for `domain` in `dir`: the one made at an earlier start, else a new one (mode 0600).
fn key_for(opts: &SenderOptions, domain: &str) -> Result<PublishedKey, String> {
    let path = generated_key_path(&opts.key_dir, &opts.selector, domain);
    let (txt, source) = if path.is_file() {
        let txt = mta::dkim::keys::public_txt(&path).map_err(|e| e.to_string())?;
        (txt, "reused")
    } else {
        let k = mta::dkim::generate(opts.key_type)?;
        std::fs::create_dir_all(&opts.key_dir)
            .map_err(|e| format!("{}: {e}", opts.key_dir.display()))?;
        write_private(&path, k.private_pem.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        (k.txt, "generated")
    };
    Ok(PublishedKey {
        selector: opts.selector.clone(),
        domain: domain.to_string(),
        path: std::path::absolute(&path).unwrap_or(path),
        source,
        txt,
    })
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    o.open(path)?.write_all(data)
}

/// What the sending side publishes: the config's sending addresses and keys (if any) and the
/// command line's, addresses mapped onto loopback, keys generated for domains without one.
pub fn plan(cfg: Option<&mta::config::Config>, opts: &SenderOptions) -> Result<Published, String> {
    let mut p = Published::default();
    let push_ip =
        |p: &mut Published, address: IpAddr, original: IpAddr, host| -> Result<(), String> {
            if let Some(e) = p.ips.iter_mut().find(|e| e.address == address) {
                let other = e.original.unwrap_or(e.address);
                if other != original {
                    return Err(format!(
                    "sending addresses {other} and {original} would both connect from {address} \
                     (only the last two octets of an address outside loopback are kept)"
                ));
                }
                if e.host.is_none() {
                    e.host = host;
                }
                return Ok(());
            }
            p.ips.push(PublishedIp {
                address,
                original: (original != address).then_some(original),
                host,
            });
            Ok(())
        };
    let mut domains: BTreeSet<String> = BTreeSet::new();
    let mut star_keys = Vec::new();
    if let Some(cfg) = cfg {
        let hosts = cfg
            .source_hosts
            .iter()
            .chain(cfg.vmtas.values().flat_map(|v| v.source_hosts.iter()));
        for h in hosts {
            let ip = h.net.addr();
            let to = map_config_ip(ip, p.ips.len());
            push_ip(&mut p, to, ip, h.host_name.clone())?;
        }
        let keys = cfg.all_domain_keys();
        for k in keys {
            if k.domain == "*" {
                star_keys.push(k.clone());
                continue;
            }
            let txt = mta::dkim::keys::public_txt(&k.path).map_err(|e| e.to_string())?;
            let domain = k.domain.to_ascii_lowercase();
            domains.insert(domain.clone());
            p.dkim.push(PublishedKey {
                selector: k.selector.clone(),
                domain,
                path: std::path::absolute(&k.path).unwrap_or(k.path.clone()),
                source: "config",
                txt,
            });
        }
    }
    let sender_domains: Vec<String> = opts
        .domains
        .iter()
        .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
        .collect();
    let label = |l: &str| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !opts.selector.split('.').all(label) {
        return Err(format!(
            "--dkim-selector {}: not a DNS label",
            opts.selector
        ));
    }
    for d in &sender_domains {
        if !d.contains('.') {
            return Err(format!("--sender-domain {d}: not a domain name"));
        }
    }
    // Host names default to mail-N.<first sending domain>.
    let first_domain = sender_domains
        .first()
        .or(domains.first())
        .cloned()
        .unwrap_or_else(|| "senders.test".to_string());
    let mut sender_ips = opts.ips.clone();
    if sender_ips.is_empty() && !sender_domains.is_empty() && p.ips.is_empty() {
        sender_ips.push(SenderIp {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host: None,
        });
    }
    for (i, s) in sender_ips.iter().enumerate() {
        let to = map_sender_ip(s.ip, p.ips.len())?;
        let host = s
            .host
            .clone()
            .unwrap_or_else(|| format!("mail-{}.{first_domain}", i + 1));
        push_ip(&mut p, to, s.ip, Some(host))?;
    }
    for k in &opts.dkim_keys {
        let txt = mta::dkim::keys::public_txt(&k.path).map_err(|e| format!("--dkim-key {e}"))?;
        domains.insert(k.domain.clone());
        p.dkim.push(PublishedKey {
            selector: k.selector.clone(),
            domain: k.domain.clone(),
            path: std::path::absolute(&k.path).unwrap_or(k.path.clone()),
            source: "given",
            txt,
        });
    }
    for d in &sender_domains {
        domains.insert(d.clone());
        if p.dkim.iter().any(|k| &k.domain == d) {
            continue;
        }
        // The config's `domain-key SELECTOR, *, FILE` signs for it; else a key of its own.
        if let Some(k) = star_keys.first() {
            let txt = mta::dkim::keys::public_txt(&k.path).map_err(|e| e.to_string())?;
            p.dkim.push(PublishedKey {
                selector: k.selector.clone(),
                domain: d.clone(),
                path: std::path::absolute(&k.path).unwrap_or(k.path.clone()),
                source: "config",
                txt,
            });
        } else {
            p.dkim.push(key_for(opts, d)?);
        }
    }
    p.domains = domains.into_iter().collect();
    // The records.
    for ip in &p.ips {
        if let (Some(h), IpAddr::V4(v4)) = (&ip.host, ip.address) {
            p.records.push(PublishedRecord {
                name: h.clone(),
                kind: "A",
                value: v4.to_string(),
            });
            p.records.push(PublishedRecord {
                name: v4.to_string(),
                kind: "PTR",
                value: h.clone(),
            });
        }
    }
    let spf = std::iter::once("v=spf1".to_string())
        .chain(p.ips.iter().map(|i| match i.address {
            IpAddr::V4(v) => format!("ip4:{v}"),
            IpAddr::V6(v) => format!("ip6:{v}"),
        }))
        .chain(std::iter::once("-all".to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let dmarc = format!("v=DMARC1; p={}", opts.dmarc_policy.as_str());
    for d in &p.domains {
        p.records.push(PublishedRecord {
            name: d.clone(),
            kind: "TXT",
            value: spf.clone(),
        });
        p.records.push(PublishedRecord {
            name: format!("_dmarc.{d}"),
            kind: "TXT",
            value: dmarc.clone(),
        });
    }
    let mut seen = BTreeSet::new();
    for k in &p.dkim {
        let name = format!("{}._domainkey.{}", k.selector, k.domain);
        if seen.insert((name.clone(), k.txt.clone())) {
            p.records.push(PublishedRecord {
                name,
                kind: "TXT",
                value: k.txt.clone(),
            });
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse() {
        let s: SenderIp = "127.0.0.7=Mail.Example.ORG"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.host.as_deref(), Some("mail.example.org"));
        assert!("127.0.0.7=".parse::<SenderIp>().is_err());
        assert!("nope".parse::<SenderIp>().is_err());
        let k: DkimKeyArg = "s1:example.org:/tmp/k.pem"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.path, PathBuf::from("/tmp/k.pem"));
        assert!("s1:/tmp/k.pem".parse::<DkimKeyArg>().is_err());
    }

    #[test]
    fn sender_ips_are_loopback_or_mapped() {
        let mut o = SenderOptions {
            domains: vec!["shop.example".into()],
            ips: vec![
                "127.0.0.9"
                    .parse()
                    .unwrap_or_else(|e: String| panic!("{e}")),
                "198.51.100.7=out.shop.example"
                    .parse()
                    .unwrap_or_else(|e: String| panic!("{e}")),
            ],
            dkim_keys: vec![DkimKeyArg {
                selector: "s1".into(),
                domain: "shop.example".into(),
                path: Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../fixtures/keys/rsa2048-pkcs1.pem"),
            }],
            ..SenderOptions::default()
        };
        let p = plan(None, &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.mapping(),
            vec![(
                IpAddr::from([198, 51, 100, 7]),
                IpAddr::from([127, 2, 100, 7])
            )]
        );
        let spf: Vec<&PublishedRecord> = p
            .records
            .iter()
            .filter(|r| r.name == "shop.example")
            .collect();
        assert_eq!(spf.len(), 1);
        assert_eq!(spf[0].value, "v=spf1 ip4:127.0.0.9 ip4:127.2.100.7 -all");
        assert!(p
            .records
            .iter()
            .any(|r| r.kind == "PTR" && r.name == "127.0.0.9" && r.value == "mail-1.shop.example"));
        o.ips
            .push("10.1.2.3".parse().unwrap_or_else(|e: String| panic!("{e}")));
        let e = plan(None, &o).err().unwrap_or_default();
        assert!(e.contains("127.0.0.0/8"), "{e}");
    }

    #[test]
    fn config_addresses_mapped_onto_one_loopback_address_are_an_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("mta.conf");
        std::fs::write(
            &path,
            "<virtual-mta a>\n    smtp-source-host 10.99.113.9 a.example.com\n</virtual-mta>\n\
             <virtual-mta b>\n    smtp-source-host 203.0.113.9 b.example.com\n</virtual-mta>\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let cfg = mta::config::load(&path)
            .into_result()
            .unwrap_or_else(|e| panic!("{e}"));
        let e = plan(Some(&cfg), &SenderOptions::default())
            .err()
            .unwrap_or_default();
        assert!(e.contains("would both connect from 127.2.113.9"), "{e}");
    }
}
