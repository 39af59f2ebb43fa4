//! An in-memory network for simulated runs: listeners keyed by address, connections made of
//! in-memory pipes ([`super::pipe`]) that carry both ends' addresses, deterministic ephemeral ports, and
//! switches to make an address refuse connections or swallow them (unreachable: the connect never
//! completes, so the caller's connect timeout fires on the paused clock).

use super::{BoxFuture, Connection, Listener, Net};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Bytes buffered in each direction of a simulated connection.
const PIPE_BUFFER: usize = 64 * 1024;
/// First ephemeral port handed out per source address.
const FIRST_EPHEMERAL: u16 = 40_000;

#[derive(Default)]
struct State {
    listeners: BTreeMap<SocketAddr, mpsc::Sender<Connection>>,
    next_port: BTreeMap<IpAddr, u16>,
    refused: BTreeSet<IpAddr>,
    unreachable: BTreeSet<IpAddr>,
}

impl State {
    fn ephemeral(&mut self, ip: IpAddr) -> u16 {
        let p = self.next_port.entry(ip).or_insert(FIRST_EPHEMERAL);
        let port = *p;
        *p = if *p == u16::MAX {
            FIRST_EPHEMERAL
        } else {
            *p + 1
        };
        port
    }
}

/// The in-memory network. Clones share it.
#[derive(Clone, Default)]
pub struct SimNet {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimNet")
    }
}

struct SimListener {
    rx: mpsc::Receiver<Connection>,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Drop for SimListener {
    fn drop(&mut self) {
        if let Ok(mut s) = self.state.lock() {
            s.listeners.remove(&self.addr);
        }
    }
}

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            self.rx
                .recv()
                .await
                .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "network shut down"))
        })
    }
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

impl SimNet {
    /// An empty network.
    pub fn new() -> SimNet {
        SimNet::default()
    }

    /// Connections to `ip` are refused (`true`) or accepted again (`false`).
    pub fn set_refused(&self, ip: IpAddr, refused: bool) {
        if let Ok(mut s) = self.state.lock() {
            if refused {
                s.refused.insert(ip);
            } else {
                s.refused.remove(&ip);
            }
        }
    }

    /// Connections to `ip` never complete (`true`), or work again (`false`).
    pub fn set_unreachable(&self, ip: IpAddr, unreachable: bool) {
        if let Ok(mut s) = self.state.lock() {
            if unreachable {
                s.unreachable.insert(ip);
            } else {
                s.unreachable.remove(&ip);
            }
        }
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other("simulated network state poisoned"))
    }
}

impl Net for SimNet {
    fn connect(
        &self,
        src: Option<IpAddr>,
        dst: SocketAddr,
    ) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            enum Route {
                Hang,
                Go(mpsc::Sender<Connection>, SocketAddr),
            }
            let route = {
                let mut s = self.lock()?;
                if s.unreachable.contains(&dst.ip()) {
                    Route::Hang
                } else if s.refused.contains(&dst.ip()) {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("{dst} refused the connection"),
                    ));
                } else {
                    let any = SocketAddr::new(unspecified(dst.ip()), dst.port());
                    let Some(tx) = s
                        .listeners
                        .get(&dst)
                        .or_else(|| s.listeners.get(&any))
                        .cloned()
                    else {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionRefused,
                            format!("nothing listens on {dst}"),
                        ));
                    };
                    let src_ip = src.unwrap_or_else(|| {
                        if dst.is_ipv4() {
                            IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))
                        } else {
                            IpAddr::V6(Ipv6Addr::LOCALHOST)
                        }
                    });
                    let port = s.ephemeral(src_ip);
                    Route::Go(tx, SocketAddr::new(src_ip, port))
                }
            };
            let (tx, local) = match route {
                Route::Hang => return std::future::pending().await,
                Route::Go(tx, local) => (tx, local),
            };
            let (client, server) = super::pipe::pipe(PIPE_BUFFER);
            tx.send(Connection {
                stream: Box::new(server),
                local: dst,
                peer: local,
            })
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("{dst} stopped listening"),
                )
            })?;
            Ok(Connection {
                stream: Box::new(client),
                local,
                peer: dst,
            })
        })
    }

    fn listen(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let mut s = self.lock()?;
            let addr = if addr.port() == 0 {
                SocketAddr::new(addr.ip(), s.ephemeral(addr.ip()))
            } else {
                addr
            };
            if s.listeners.contains_key(&addr) {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{addr} is already in use"),
                ));
            }
            let (tx, rx) = mpsc::channel(1024);
            s.listeners.insert(addr, tx);
            Ok(Box::new(SimListener {
                rx,
                addr,
                state: self.state.clone(),
            }) as Box<dyn Listener>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn refused_unreachable_and_wildcard_listeners() {
        let net = SimNet::new();
        let _l = net
            .listen("0.0.0.0:25".parse().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mx: SocketAddr = "192.0.2.10:25".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            net.connect(None, mx).await.is_ok(),
            "a wildcard listener takes any address"
        );
        net.set_refused(mx.ip(), true);
        assert_eq!(
            net.connect(None, mx)
                .await
                .map(|_| ())
                .map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionRefused)
        );
        net.set_refused(mx.ip(), false);
        net.set_unreachable(mx.ip(), true);
        let t = tokio::time::timeout(Duration::from_secs(120), net.connect(None, mx)).await;
        assert!(
            t.is_err(),
            "an unreachable host lets the connect timeout fire"
        );
        net.set_unreachable(mx.ip(), false);
        assert!(net.connect(None, mx).await.is_ok());
        let dup = net
            .listen("0.0.0.0:25".parse().unwrap_or_else(|e| panic!("{e}")))
            .await;
        assert_eq!(
            dup.map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::AddrInUse)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ephemeral_ports_are_deterministic_per_source() {
        let net = SimNet::new();
        let _l = net
            .listen("192.0.2.1:25".parse().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let dst: SocketAddr = "192.0.2.1:25".parse().unwrap_or_else(|e| panic!("{e}"));
        let a: IpAddr = "10.0.0.1".parse().unwrap_or_else(|e| panic!("{e}"));
        let b: IpAddr = "10.0.0.2".parse().unwrap_or_else(|e| panic!("{e}"));
        let p1 = net
            .connect(Some(a), dst)
            .await
            .map(|c| c.local.port())
            .unwrap_or(0);
        let p2 = net
            .connect(Some(a), dst)
            .await
            .map(|c| c.local.port())
            .unwrap_or(0);
        let p3 = net
            .connect(Some(b), dst)
            .await
            .map(|c| c.local.port())
            .unwrap_or(0);
        assert_eq!(
            (p1, p2, p3),
            (FIRST_EPHEMERAL, FIRST_EPHEMERAL + 1, FIRST_EPHEMERAL)
        );
    }
}
