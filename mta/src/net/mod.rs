//! The network seam: connect from a chosen source IP to an address, and listen on an address.
//! `LiveNet` uses real TCP (binding the source address before connecting, so per-IP limits are real);
//! `SimNet` is an in-memory network of byte pipes ([`pipe`]) where every connection still knows
//! its source and destination address, for the simulated mode.

pub mod pipe;
pub mod sim;

pub use pipe::Pipe;
pub use sim::SimNet;

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream: a TCP socket or an in-memory pipe.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The simulated network's [`Pipe`], when this stream is one (it can pass whole buffers).
    /// Call it on the stream itself (`(*boxed).as_pipe()`), not on a box around it.
    fn as_pipe(&mut self) -> Option<&mut Pipe>;
}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncStream for T {
    fn as_pipe(&mut self) -> Option<&mut Pipe> {
        (self as &mut dyn std::any::Any).downcast_mut::<Pipe>()
    }
}

/// A boxed stream, so TLS can wrap either kind.
pub type BoxStream = Box<dyn AsyncStream>;

/// A connection with both ends' addresses.
pub struct Connection {
    /// The byte stream.
    pub stream: BoxStream,
    /// Our address.
    pub local: SocketAddr,
    /// The other side's address.
    pub peer: SocketAddr,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .finish()
    }
}

/// A boxed future (the seam's traits stay object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Accepts connections on one address.
pub trait Listener: Send {
    /// The next connection.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>>;
    /// The address it listens on (with the real port when 0 was asked for).
    fn local_addr(&self) -> SocketAddr;
}

/// Connects and listens; the one thing that differs between live and simulated runs on the wire.
pub trait Net: Send + Sync {
    /// Opens a connection to `dst`, from `src` when given (bind before connect).
    fn connect(
        &self,
        src: Option<IpAddr>,
        dst: SocketAddr,
    ) -> BoxFuture<'_, io::Result<Connection>>;
    /// Listens on `addr`.
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>>;
}

/// Real TCP.
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveNet;

struct TcpListenerBox(tokio::net::TcpListener, SocketAddr);

impl Listener for TcpListenerBox {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let (s, peer) = self.0.accept().await?;
            let _ = s.set_nodelay(true);
            let local = s.local_addr()?;
            Ok(Connection {
                stream: Box::new(s),
                local,
                peer,
            })
        })
    }
    fn local_addr(&self) -> SocketAddr {
        self.1
    }
}

impl Net for LiveNet {
    fn connect(
        &self,
        src: Option<IpAddr>,
        dst: SocketAddr,
    ) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let sock = if dst.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            if let Some(ip) = src {
                sock.bind(SocketAddr::new(ip, 0))?;
            }
            let s = sock.connect(dst).await?;
            let _ = s.set_nodelay(true);
            let (local, peer) = (s.local_addr()?, s.peer_addr()?);
            Ok(Connection {
                stream: Box::new(s),
                local,
                peer,
            })
        })
    }

    fn listen(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let sock = if addr.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            sock.set_reuseaddr(true)?;
            sock.bind(addr)?;
            let l = sock.listen(1024)?;
            let local = l.local_addr()?;
            Ok(Box::new(TcpListenerBox(l, local)) as Box<dyn Listener>)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both implementations: the server sees the client's chosen source address, bytes flow both
    /// ways, and a connection to an address nobody listens on is refused.
    async fn exercise(net: &dyn Net, listen_ip: &str, src_ip: &str) {
        let listen: SocketAddr = format!("{listen_ip}:0")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let mut l = net
            .listen(listen)
            .await
            .unwrap_or_else(|e| panic!("listen: {e}"));
        let at = l.local_addr();
        assert_ne!(at.port(), 0);
        let src: IpAddr = src_ip.parse().unwrap_or_else(|e| panic!("{e}"));
        let server = async {
            let mut c = l.accept().await.unwrap_or_else(|e| panic!("accept: {e}"));
            let mut buf = [0u8; 5];
            c.stream
                .read_exact(&mut buf)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            c.stream
                .write_all(b"pong")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            c.stream.flush().await.unwrap_or_else(|e| panic!("{e}"));
            (c.peer, c.local, buf)
        };
        let client = async {
            let mut c = net
                .connect(Some(src), at)
                .await
                .unwrap_or_else(|e| panic!("connect: {e}"));
            c.stream
                .write_all(b"ping!")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            c.stream.flush().await.unwrap_or_else(|e| panic!("{e}"));
            let mut buf = [0u8; 4];
            c.stream
                .read_exact(&mut buf)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            (c.local, c.peer, buf)
        };
        let ((speer, slocal, sbuf), (clocal, cpeer, cbuf)) = tokio::join!(server, client);
        assert_eq!(&sbuf, b"ping!");
        assert_eq!(&cbuf, b"pong");
        assert_eq!(speer.ip(), src, "the server sees the bound source address");
        assert_eq!((speer, slocal), (clocal, cpeer));
        // Nobody listens on the port just freed up next to it.
        drop(l);
        let refused = net.connect(Some(src), at).await;
        assert_eq!(
            refused.map(|_| ()).map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionRefused)
        );
    }

    #[tokio::test]
    async fn live_tcp_binds_the_source_address() {
        exercise(&LiveNet, "127.0.0.3", "127.0.0.2").await;
    }

    #[tokio::test(start_paused = true)]
    async fn simulated_network_behaves_alike() {
        exercise(&SimNet::new(), "203.0.113.9", "198.51.100.7").await;
    }
}
