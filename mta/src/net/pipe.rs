//! The simulated network's connection: a pair of in-memory byte pipes, one per direction, like
//! `tokio::io::duplex` (bounded, EOF on shutdown or drop, `BrokenPipe` writing to a dropped
//! reader), that also hands whole buffers across: [`Pipe::send_owned`] queues a `Vec` without
//! copying it and [`Pipe::recv_owned`] takes one back the same way. `SmtpStream` uses these for
//! its writes and for reads into an empty buffer, so a message body crosses a simulated
//! connection without the two copies a byte pipe costs (write in, read out). A body that stays
//! with its sender (a spooled message, kept for a retry) crosses shared: [`Pipe::send_message`]
//! queues it as a [`Chunk::Message`], which reads as its bytes followed by the DATA ending.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a writer queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes as written.
    Bytes(Vec<u8>),
    /// A message body shared with the writer, which reads as the body followed by `.` CRLF. The
    /// body ends with CRLF and no line of it starts with a dot, so these are its exact DATA bytes.
    Message(Arc<Vec<u8>>),
}

/// The DATA ending a [`Chunk::Message`] reads as after its body.
const DATA_END: &[u8] = b".\r\n";

impl Chunk {
    /// Bytes it reads as.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::Message(m) => m.len() + DATA_END.len(),
        }
    }

    /// True if it reads as nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes it reads as, copied out of a shared body only if the writer still holds it.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Chunk::Bytes(b) => b,
            Chunk::Message(m) => {
                let mut b = Arc::try_unwrap(m).unwrap_or_else(|m| {
                    let mut b = Vec::with_capacity(m.len() + DATA_END.len());
                    b.extend_from_slice(&m);
                    b
                });
                b.extend_from_slice(DATA_END);
                b
            }
        }
    }
}

/// One direction: the chunks written and not yet read.
#[derive(Default)]
struct Channel {
    /// Written chunks; the first may be partly read (`offset`, only ever into a `Bytes` chunk).
    chunks: VecDeque<Chunk>,
    offset: usize,
    /// Unread bytes in `chunks`.
    len: usize,
    /// The writer shut down or went away: EOF once drained.
    closed: bool,
    /// The reader went away: writes fail.
    reader_gone: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// Buffers the reader is done with, for the writer's next writes (see [`Pipe::recycle`]).
    spares: Vec<Vec<u8>>,
}

/// Buffers a channel keeps for reuse, and the largest capacity it keeps (a message body's buffer
/// is not held on to).
const SPARES: usize = 4;
const SPARE_CAPACITY: usize = 64 * 1024;

impl Channel {
    fn wake_reader(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

type Shared = Arc<Mutex<Channel>>;

fn lock(c: &Shared) -> MutexGuard<'_, Channel> {
    // A panic while holding the lock leaves plain data behind; keep using it.
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// One end of a simulated connection.
pub struct Pipe {
    read: Shared,
    write: Shared,
    /// Bytes the other side may have waiting before writes wait.
    capacity: usize,
}

/// A connected pair of ends, each holding up to `capacity` unread bytes per direction.
pub fn pipe(capacity: usize) -> (Pipe, Pipe) {
    let (a, b) = (Shared::default(), Shared::default());
    (
        Pipe {
            read: a.clone(),
            write: b.clone(),
            capacity,
        },
        Pipe {
            read: b,
            write: a,
            capacity,
        },
    )
}

impl Pipe {
    /// Queues `chunk` for the other side without copying it; waits while the pipe is full.
    pub async fn send_owned(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.send_chunk(Chunk::Bytes(chunk)).await
    }

    /// Queues a message body the caller keeps too, read as its DATA bytes (see
    /// [`Chunk::Message`]: the caller vouches that it ends with CRLF and has no dot-started line).
    pub async fn send_message(&mut self, body: Arc<Vec<u8>>) -> io::Result<()> {
        debug_assert!(
            body.is_empty() || body.ends_with(b"\r\n"),
            "a shared message ends with CRLF"
        );
        self.send_chunk(Chunk::Message(body)).await
    }

    async fn send_chunk(&mut self, chunk: Chunk) -> io::Result<()> {
        let mut chunk = Some(chunk);
        poll_fn(|cx| {
            let mut c = lock(&self.write);
            if c.reader_gone {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if c.closed {
                return Poll::Ready(Err(io::Error::other("write after shutdown")));
            }
            if c.len >= self.capacity {
                c.write_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            if let Some(chunk) = chunk.take().filter(|b| !b.is_empty()) {
                c.len += chunk.len();
                c.chunks.push_back(chunk);
                c.wake_reader();
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Hands a buffer the reader is done with back to the writer of this end's input, which
    /// takes it for its next write ([`Pipe::spare`]): small writes (commands, replies) then go
    /// back and forth without allocating.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > SPARE_CAPACITY {
            return;
        }
        let mut c = lock(&self.read);
        if c.spares.len() < SPARES {
            buf.clear();
            c.spares.push(buf);
        }
    }

    /// An empty buffer for the next write: one the reader gave back, else a new one.
    pub fn spare(&mut self) -> Vec<u8> {
        lock(&self.write).spares.pop().unwrap_or_default()
    }

    /// The next whole chunk written by the other side (the rest of one partly read) as bytes, or
    /// `None` at EOF.
    pub async fn recv_owned(&mut self) -> Option<Vec<u8>> {
        self.recv_chunk().await.map(Chunk::into_bytes)
    }

    /// The next whole chunk written by the other side (the rest of one partly read), or `None`
    /// at EOF.
    pub async fn recv_chunk(&mut self) -> Option<Chunk> {
        poll_fn(|cx| {
            let mut c = lock(&self.read);
            let Some(mut chunk) = c.chunks.pop_front() else {
                if c.closed {
                    return Poll::Ready(None);
                }
                c.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            };
            let offset = std::mem::take(&mut c.offset);
            if offset > 0 {
                let mut rest = chunk.into_bytes();
                rest.drain(..offset);
                chunk = Chunk::Bytes(rest);
            }
            c.len -= chunk.len();
            c.wake_writer();
            Poll::Ready(Some(chunk))
        })
        .await
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut c = lock(&self.read);
        if c.chunks.is_empty() {
            if !c.closed {
                c.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            return Poll::Ready(Ok(()));
        }
        while buf.remaining() > 0 {
            let offset = c.offset;
            let Some(front) = c.chunks.front_mut() else {
                break;
            };
            if let Chunk::Message(_) = front {
                // Read as bytes from here on (a byte reader is not the fast path).
                let m = std::mem::replace(front, Chunk::Bytes(Vec::new()));
                *front = Chunk::Bytes(m.into_bytes());
            }
            let Chunk::Bytes(front) = front else {
                break;
            };
            let n = buf.remaining().min(front.len() - offset);
            buf.put_slice(&front[offset..offset + n]);
            let whole = offset + n == front.len();
            c.len -= n;
            if whole {
                c.chunks.pop_front();
                c.offset = 0;
            } else {
                c.offset = offset + n;
            }
        }
        c.wake_writer();
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut c = lock(&self.write);
        if c.reader_gone {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if c.closed {
            return Poll::Ready(Err(io::Error::other("write after shutdown")));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = self.capacity.saturating_sub(c.len);
        if room == 0 {
            c.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        c.chunks.push_back(Chunk::Bytes(buf[..n].to_vec()));
        c.len += n;
        c.wake_reader();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut c = lock(&self.write);
        c.closed = true;
        c.wake_reader();
        Poll::Ready(Ok(()))
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let mut w = lock(&self.write);
        w.closed = true;
        w.wake_reader();
        drop(w);
        let mut r = lock(&self.read);
        r.reader_gone = true;
        r.chunks.clear();
        r.len = 0;
        r.wake_writer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A shared message is handed over as it is to a chunk reader and read as its body and the
    /// DATA ending by a byte reader, even one that takes it in pieces.
    #[tokio::test]
    async fn a_shared_message_reads_as_its_data_bytes() {
        let (mut a, mut b) = pipe(1 << 10);
        let body = Arc::new(b"Subject: x\r\n\r\nhi\r\n".to_vec());
        for _ in 0..3 {
            a.send_message(body.clone())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        match b.recv_chunk().await {
            Some(Chunk::Message(m)) => assert!(Arc::ptr_eq(&m, &body)),
            other => panic!("{other:?}"),
        }
        let want = b"Subject: x\r\n\r\nhi\r\n.\r\n";
        let mut first = [0u8; 5];
        b.read_exact(&mut first)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&first, &want[..5]);
        assert_eq!(b.recv_owned().await.as_deref(), Some(&want[5..]));
        assert_eq!(b.recv_owned().await.as_deref(), Some(&want[..]));
        drop(a);
        assert_eq!(b.recv_chunk().await, None);
    }

    /// A buffer the reader recycles is the writer's next spare; a large one, or one past the
    /// channel's few, is not kept.
    #[tokio::test]
    async fn recycled_buffers_come_back_to_the_writer() {
        let (mut a, mut b) = pipe(1 << 20);
        assert_eq!(a.spare().capacity(), 0, "none yet");
        a.send_owned(b"250 OK\r\n".to_vec())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let got = b.recv_owned().await.unwrap_or_default();
        let ptr = got.as_ptr();
        b.recycle(got);
        b.recycle(Vec::with_capacity(SPARE_CAPACITY + 1));
        let spare = a.spare();
        assert!(spare.is_empty());
        assert_eq!(spare.as_ptr(), ptr, "the reader's buffer");
        assert_eq!(a.spare().capacity(), 0, "the large one was dropped");
        for _ in 0..SPARES + 2 {
            b.recycle(Vec::with_capacity(64));
        }
        let kept = std::iter::from_fn(|| Some(a.spare()))
            .take_while(|v| v.capacity() > 0)
            .count();
        assert_eq!(kept, SPARES);
        // The other direction has its own.
        b.recycle(Vec::with_capacity(64));
        assert_eq!(b.spare().capacity(), 0);
    }

    #[tokio::test]
    async fn bytes_and_owned_chunks_arrive_in_order_then_eof() {
        let (mut a, mut b) = pipe(8);
        a.write_all(b"hel").await.unwrap_or_else(|e| panic!("{e}"));
        a.send_owned(b"lo ".to_vec())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut two = [0u8; 2];
        b.read_exact(&mut two)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&two, b"he");
        // The rest of a partly read chunk, then a whole one.
        assert_eq!(b.recv_owned().await, Some(b"l".to_vec()));
        assert_eq!(b.recv_owned().await, Some(b"lo ".to_vec()));
        // Bounded: a writer past the capacity waits for the reader.
        let writer = tokio::spawn(async move {
            a.write_all(b"world, and more than eight bytes")
                .await
                .map(|_| a)
        });
        let mut got = Vec::new();
        while got.len() < 32 {
            let mut chunk = [0u8; 5];
            let n = b.read(&mut chunk).await.unwrap_or_else(|e| panic!("{e}"));
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, b"world, and more than eight bytes");
        let mut a = writer
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        a.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            b.read(&mut [0u8; 4]).await.ok(),
            Some(0),
            "EOF after shutdown"
        );
        assert_eq!(b.recv_owned().await, None);
        // Writing to a dropped reader fails; reading from a dropped writer is EOF.
        drop(b);
        let (mut c, d) = pipe(8);
        drop(d);
        assert_eq!(
            c.write_all(b"x").await.map_err(|e| e.kind()),
            Err(io::ErrorKind::BrokenPipe)
        );
        assert_eq!(c.read(&mut [0u8; 4]).await.ok(), Some(0));
    }
}
