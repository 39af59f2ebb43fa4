//! Buffered SMTP framing over any stream, for both sides: command and reply lines with a length
//! limit, DATA with dot-unstuffing and Postfix-style rejection of bare LF and bare CR (only
//! CRLF.CRLF ends the data: no SMTP smuggling), dot-stuffing for sending, batched writes.

use crate::net::pipe::Chunk;
use crate::net::BoxStream;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// RFC 5321 line limit, CRLF included.
pub const MAX_LINE: usize = 1000;

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// The line was longer than allowed; it was skipped up to its end.
    #[error("line too long")]
    TooLong,
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// No line came within the time allowed ([`SmtpStream::read_line_within`]).
    #[error("timed out")]
    TimedOut,
}

/// What a DATA phase produced.
#[derive(Debug, Default)]
pub struct Data {
    /// The message, dot-unstuffed, with CRLF line ends (empty if `too_big`).
    pub body: MessageBody,
    /// Size in octets as received (after unstuffing).
    pub size: u64,
    /// Over the size limit: the data was read to its end and discarded.
    pub too_big: bool,
    /// A line over 1000 octets was seen.
    pub long_line: bool,
    /// A line of the body starts with a dot (it came stuffed); when false, sending the body on
    /// needs no dot-stuffing ([`SmtpStream::queue_body`]).
    pub dot_lines: bool,
}

/// A message body as read: owned, or shared with its sender (a body the sender keeps, such as a
/// spooled message, crosses a simulated connection without a copy; see [`Chunk::Message`]).
#[derive(Debug, Clone)]
pub enum MessageBody {
    /// Read into a buffer of its own.
    Owned(Vec<u8>),
    /// The sender's buffer.
    Shared(Arc<Vec<u8>>),
}

/// Bodies are equal when their bytes are, owned or shared.
impl PartialEq for MessageBody {
    fn eq(&self, other: &MessageBody) -> bool {
        **self == **other
    }
}

impl Eq for MessageBody {}

impl Default for MessageBody {
    fn default() -> Self {
        MessageBody::Owned(Vec::new())
    }
}

impl std::ops::Deref for MessageBody {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            MessageBody::Owned(b) => b,
            MessageBody::Shared(b) => b,
        }
    }
}

impl MessageBody {
    /// The bytes as a buffer of the caller's own (a shared body is copied unless no one else
    /// holds it any more).
    pub fn into_vec(self) -> Vec<u8> {
        match self {
            MessageBody::Owned(b) => b,
            MessageBody::Shared(b) => Arc::try_unwrap(b).unwrap_or_else(|b| b.to_vec()),
        }
    }

    /// The buffer itself when no one else holds it (for reuse), without copying.
    pub fn into_unique(self) -> Option<Vec<u8>> {
        match self {
            MessageBody::Owned(b) => Some(b),
            MessageBody::Shared(b) => Arc::try_unwrap(b).ok(),
        }
    }
}

/// A DATA phase being read (its body always owned).
#[derive(Default)]
struct Reading {
    body: Vec<u8>,
    size: u64,
    too_big: bool,
    long_line: bool,
    dot_lines: bool,
}

/// Why DATA failed before its end.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A bare LF or bare CR: answer `521 5.5.2` and disconnect, as Postfix's
    /// `smtpd_forbid_bare_newline = yes` does.
    #[error("bare <LF> or <CR> in message data")]
    BareNewline,
    /// The peer closed the connection.
    #[error("connection closed during DATA")]
    Closed,
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A stream with SMTP framing.
pub struct SmtpStream {
    inner: BoxStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    out: Vec<u8>,
    /// A shared body queued to go as a [`Chunk::Message`] before `out` (simulated connections).
    message: Option<Arc<Vec<u8>>>,
    /// The size the client declared for its next message (MAIL FROM's SIZE=), a capacity hint.
    size_hint: u64,
    /// Always false outside tests, which compare the whole-region fast path with the exact one.
    exact_only: bool,
}

/// The read buffer's starting capacity (it doubles when a line or chunk needs more).
const READ_BUFFER: usize = 16 * 1024;

/// The most a declared SIZE reserves up front (the body grows past it as it arrives).
const MAX_SIZE_HINT: u64 = 16 * 1024 * 1024;

impl SmtpStream {
    /// Wraps a stream.
    pub fn new(inner: BoxStream) -> SmtpStream {
        SmtpStream {
            inner,
            buf: Vec::with_capacity(READ_BUFFER),
            start: 0,
            end: 0,
            out: Vec::with_capacity(4096),
            message: None,
            size_hint: 0,
            exact_only: false,
        }
    }

    /// Notes the size the client declared for its next message (MAIL FROM's `SIZE=`): the next
    /// [`SmtpStream::read_data`] reserves room for it at once instead of growing the body.
    pub fn expect_data_size(&mut self, size: u64) {
        self.size_hint = size;
    }

    /// True if input is already buffered (the peer sent ahead: pipelining).
    pub fn has_buffered_input(&self) -> bool {
        self.end > self.start
    }

    /// The stream back (for STARTTLS) and how many buffered bytes were dropped with it; a peer that
    /// sent data after STARTTLS before the handshake is trying command injection.
    pub fn into_inner(self) -> (BoxStream, usize) {
        (self.inner, self.end - self.start)
    }

    async fn fill(&mut self) -> Result<usize, io::Error> {
        // `buf` holds exactly the bytes read (its length is `end`); reads go into its spare
        // capacity, which is never zeroed.
        if self.start == self.end {
            if let Some(pipe) = (*self.inner).as_pipe() {
                // Nothing buffered: the chunk from the simulated network becomes the buffer as
                // it is (no copy; a whole message arriving this way can then become the body).
                let Some(chunk) = pipe.recv_owned().await else {
                    return Ok(0);
                };
                self.start = 0;
                self.end = chunk.len();
                let spent = std::mem::replace(&mut self.buf, chunk);
                pipe.recycle(spent);
                return Ok(self.end);
            }
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.buf.truncate(self.end);
        }
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve(self.buf.capacity().max(READ_BUFFER));
        }
        let n = self.inner.read_buf(&mut self.buf).await?;
        self.end += n;
        Ok(n)
    }

    /// As [`SmtpStream::read_line`] within `limit` (else [`LineError::TimedOut`]). A line already
    /// buffered (pipelined commands, multi-line replies) is taken without setting up a timer.
    pub async fn read_line_within(
        &mut self,
        max: usize,
        limit: std::time::Duration,
    ) -> Result<String, LineError> {
        let mut line = String::new();
        self.read_line_within_into(&mut line, max, limit).await?;
        Ok(line)
    }

    /// [`SmtpStream::read_line_within`] into `line` (cleared first), so a caller that reads line
    /// after line can keep one buffer.
    pub async fn read_line_within_into(
        &mut self,
        line: &mut String,
        max: usize,
        limit: std::time::Duration,
    ) -> Result<(), LineError> {
        if let Some(done) = self.buffered_line_into(max, line) {
            return done;
        }
        tokio::time::timeout(limit, self.read_line_into(line, max))
            .await
            .unwrap_or(Err(LineError::TimedOut))
    }

    /// The next line into `out` when a whole one is buffered (see [`SmtpStream::read_line`]).
    fn buffered_line_into(
        &mut self,
        max: usize,
        out: &mut String,
    ) -> Option<Result<(), LineError>> {
        let pos = memchr(b'\n', &self.buf[self.start..self.end])?;
        let line_end = self.start + pos;
        let len = line_end + 1 - self.start;
        let line = &self.buf[self.start..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        out.clear();
        // Valid UTF-8 (nearly always) is checked and copied without the lossy decoder's walk.
        match std::str::from_utf8(line) {
            Ok(t) => out.push_str(t),
            Err(_) => out.push_str(&String::from_utf8_lossy(line)),
        }
        self.start = line_end + 1;
        Some(if len > max {
            Err(LineError::TooLong)
        } else {
            Ok(())
        })
    }

    /// Reads one line (without its CRLF or LF). Lines longer than `max` octets (CRLF included) are
    /// skipped to their end and reported as [`LineError::TooLong`], without buffering them whole.
    pub async fn read_line(&mut self, max: usize) -> Result<String, LineError> {
        let mut line = String::new();
        self.read_line_into(&mut line, max).await?;
        Ok(line)
    }

    /// [`SmtpStream::read_line`] into `line` (cleared first).
    pub async fn read_line_into(&mut self, line: &mut String, max: usize) -> Result<(), LineError> {
        let mut skipping = false;
        loop {
            if let Some(done) = self.buffered_line_into(max, line) {
                return if skipping {
                    Err(LineError::TooLong)
                } else {
                    done
                };
            }
            if self.end - self.start > max {
                skipping = true;
                self.start = self.end; // drop what we have of the over-long line
            }
            if self.fill().await? == 0 {
                return Err(LineError::Closed);
            }
        }
    }

    /// At the start of DATA with nothing buffered on a simulated connection: a shared message
    /// becomes the body as it is, after the checks a kept read buffer passes (no dot-started line,
    /// only CRLF line ends, no long line, within `max_size`); any other chunk is buffered for
    /// the byte path, which then reads it as it would have from the wire.
    async fn shared_message(&mut self, max_size: Option<u64>) -> Result<Option<Data>, DataError> {
        if self.start != self.end || self.exact_only {
            return Ok(None);
        }
        let Some(pipe) = (*self.inner).as_pipe() else {
            return Ok(None);
        };
        let Some(chunk) = pipe.recv_chunk().await else {
            return Err(DataError::Closed);
        };
        let body = match chunk {
            Chunk::Message(body)
                if body.ends_with(b"\r\n")
                    && !body.starts_with(b".")
                    && plain_crlf(&body) == Some(false)
                    && max_size.is_none_or(|m| body.len() as u64 <= m) =>
            {
                body
            }
            other => {
                let spent = std::mem::replace(&mut self.buf, other.into_bytes());
                pipe.recycle(spent);
                (self.start, self.end) = (0, self.buf.len());
                return Ok(None);
            }
        };
        Ok(Some(Data {
            size: body.len() as u64,
            body: MessageBody::Shared(body),
            ..Data::default()
        }))
    }

    /// Reads message data after a 354, up to the CRLF.CRLF that ends it. `max_size` caps the body:
    /// beyond it the rest is read and discarded (answer `552 5.3.4`).
    ///
    /// Works on every complete line buffered at once: whole-region passes check that each CR starts
    /// a CRLF and each LF ends one, that no line is too long, and whether any line starts with a
    /// dot; only a region failing them is walked line end by line end (to find the bare CR or LF,
    /// or mark the long line). Bytes between dot-started lines are copied as whole runs.
    pub async fn read_data(&mut self, max_size: Option<u64>) -> Result<Data, DataError> {
        let mut data = Reading::default();
        let hint = std::mem::take(&mut self.size_hint).min(MAX_SIZE_HINT);
        let hint = max_size.map_or(hint, |m| hint.min(m));
        if let Some(body) = self.shared_message(max_size).await? {
            return Ok(body);
        }
        // False after part of an endless line was taken: the next bytes continue that line.
        let mut at_line_start = true;
        loop {
            let hay = &self.buf[self.start..self.end];
            let Some(last_lf) = memchr::memrchr(b'\n', hay) else {
                if hay.len() > MAX_LINE * 64 {
                    // An endless line: keep the framing, not the bytes. A final CR may be the first
                    // half of a CRLF, so it stays buffered.
                    data.long_line = true;
                    let keep = usize::from(hay.last() == Some(&b'\r'));
                    let mut chunk = &hay[..hay.len() - keep];
                    if chunk.contains(&b'\r') {
                        return Err(DataError::BareNewline);
                    }
                    if at_line_start && chunk.first() == Some(&b'.') {
                        chunk = &chunk[1..];
                        data.dot_lines = true;
                    }
                    take(&mut data, chunk, max_size);
                    self.start = self.end - keep;
                    at_line_start = false;
                }
                if self.fill().await? == 0 {
                    return Err(DataError::Closed);
                }
                continue;
            };
            let region = &hay[..=last_lf];
            if data.size == 0
                && self.start == 0
                && region.len() == self.end
                && region.ends_with(b"\r\n.\r\n")
                && !self.exact_only
            {
                // The buffer may be the whole message (as a simulated connection delivers it):
                // then it becomes the body as it is, unless dots were stuffed or it is too big.
                let body_len = region.len() - 3;
                let clean = !region.starts_with(b".")
                    && plain_crlf(&region[..body_len]) == Some(false)
                    && max_size.is_none_or(|m| body_len as u64 <= m);
                if clean {
                    let mut body = std::mem::take(&mut self.buf);
                    body.truncate(body_len);
                    (self.start, self.end) = (0, 0);
                    data.size = body_len as u64;
                    data.body = body;
                    return Ok(finish(data));
                }
            }
            if data.body.capacity() == 0 {
                // Reserved on the first bytes taken (not when the buffer was kept as the body).
                data.body.reserve_exact(hint as usize + 2);
            }
            let mut run = 0; // start of the bytes not yet taken
            if at_line_start && region.first() == Some(&b'.') {
                if let Some(end) = dot_line(&mut data, region, &mut run, 0, max_size) {
                    self.start += end;
                    return Ok(finish(data));
                }
            }
            if let Some(dots) = plain_crlf(region).filter(|_| !self.exact_only) {
                // The common case, checked with whole-region passes: only lines starting with a dot
                // (stuffed, or the terminator) need a look.
                let dot_lines = memchr::memmem::find_iter(region, b"\n.");
                for nl in dot_lines.take(if dots { usize::MAX } else { 0 }) {
                    if let Some(end) = dot_line(&mut data, region, &mut run, nl + 1, max_size) {
                        self.start += end;
                        return Ok(finish(data));
                    }
                }
            } else {
                let mut line = 0; // start of the current line
                let mut cr: Option<usize> = None; // a CR seen on this line
                for i in memchr::memchr2_iter(b'\r', b'\n', region) {
                    if region[i] == b'\r' {
                        if cr.is_some() {
                            self.start += i + 1;
                            return Err(DataError::BareNewline);
                        }
                        cr = Some(i);
                        continue;
                    }
                    // An LF: only CRLF ends a line.
                    if cr != Some(i.wrapping_sub(1)) || i == 0 {
                        self.start += i + 1;
                        return Err(DataError::BareNewline);
                    }
                    cr = None;
                    if i + 1 - line > MAX_LINE {
                        data.long_line = true;
                    }
                    line = i + 1;
                    if region.get(line) == Some(&b'.') {
                        if let Some(end) = dot_line(&mut data, region, &mut run, line, max_size) {
                            self.start += end;
                            return Ok(finish(data));
                        }
                    }
                }
            }
            take(&mut data, &region[run..], max_size);
            self.start += region.len();
            at_line_start = true; // the region ends with a line end
            if self.fill().await? == 0 {
                return Err(DataError::Closed);
            }
        }
    }

    /// Queues a reply in its wire form (sent by [`SmtpStream::flush`]).
    pub fn queue_reply(&mut self, reply: &super::Reply) {
        reply.write_wire(&mut self.out);
    }

    /// Queues bytes for sending (sent by [`SmtpStream::flush`]).
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Queues formatted text (a command line) without building a String for it.
    pub fn queue_fmt(&mut self, args: std::fmt::Arguments<'_>) {
        // Writing into a Vec cannot fail.
        let _ = std::io::Write::write_fmt(&mut self.out, args);
    }

    /// Queues a message body dot-stuffed, ending with CRLF.CRLF. A body without a final CRLF gets one.
    pub fn queue_data(&mut self, body: &[u8]) {
        self.queue_body(body, false);
    }

    /// [`queue_data`](Self::queue_data) for a body whose caller may know that no line of it starts
    /// with a dot (`dot_free`, see [`dot_free`]): then it is copied without looking for one.
    pub fn queue_body(&mut self, body: &[u8], dot_free: bool) {
        debug_assert!(
            !dot_free || self::dot_free(body),
            "a body said dot-free has a dot line"
        );
        self.out
            .reserve(body.len() + if dot_free { 5 } else { body.len() / 64 + 8 });
        // Dot-stuffing: a '.' at the start of a line gets another in front. Copy whole runs between
        // line starts that begin with '.', found with memmem (this is the hot path of every DATA).
        let mut start = 0;
        if !dot_free {
            if body.first() == Some(&b'.') {
                self.out.push(b'.');
            }
            let dot_lines = memchr::memmem::find_iter(body, b"\n.");
            for nl in dot_lines.take(if has_dot_line(body) { usize::MAX } else { 0 }) {
                self.out.extend_from_slice(&body[start..=nl]);
                self.out.push(b'.');
                start = nl + 1;
            }
        }
        self.out.extend_from_slice(&body[start..]);
        end_data(&mut self.out, open_line(body));
    }

    /// [`queue_body`](Self::queue_body) for a body given away: a dot-free one becomes the output
    /// buffer itself when nothing else is queued, so it is not copied.
    pub fn queue_body_owned(&mut self, body: Vec<u8>, dot_free: bool) {
        if !dot_free || !self.out.is_empty() {
            return self.queue_body(&body, dot_free);
        }
        debug_assert!(self::dot_free(&body), "a body said dot-free has a dot line");
        let open = open_line(&body);
        self.out = body;
        end_data(&mut self.out, open);
    }

    /// [`queue_body`](Self::queue_body) for a body the caller keeps a share of: on a simulated
    /// connection a dot-free body ending with CRLF goes across shared (read as exactly its DATA
    /// bytes, see [`Chunk::Message`]) when nothing else is queued; otherwise it is copied.
    pub fn queue_body_shared(&mut self, body: Arc<Vec<u8>>, dot_free: bool) {
        let whole = dot_free && !body.is_empty() && !open_line(&body);
        let pipe = (*self.inner).as_pipe().is_some();
        if !whole || !pipe || !self.out.is_empty() || self.message.is_some() {
            return self.queue_body(&body, dot_free);
        }
        debug_assert!(self::dot_free(&body), "a body said dot-free has a dot line");
        self.message = Some(body);
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if let Some(body) = self.message.take() {
            // Queued when `out` was empty: whatever is in `out` now came after it.
            if let Some(pipe) = (*self.inner).as_pipe() {
                pipe.send_message(body).await?;
            } else {
                self.inner
                    .write_all(&Chunk::Message(body).into_bytes())
                    .await?;
            }
        }
        if !self.out.is_empty() {
            if let Some(pipe) = (*self.inner).as_pipe() {
                // The simulated network takes the buffer itself (a message body is not copied).
                let out = std::mem::replace(&mut self.out, pipe.spare());
                return pipe.send_owned(out).await;
            }
        }
        if !self.out.is_empty() {
            self.inner.write_all(&self.out).await?;
            self.out.clear();
        }
        self.inner.flush().await
    }

    /// Shuts the write side down.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.inner.shutdown().await
    }
}

/// Ends the DATA after a body already in `out`: a CRLF first if the body's last line is `open`
/// (see [`open_line`]), then `.` CRLF.
fn end_data(out: &mut Vec<u8>, open: bool) {
    if open {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// Whether `body` ends inside a line (not empty, no final CRLF).
fn open_line(body: &[u8]) -> bool {
    !body.is_empty() && !body.ends_with(b"\r\n")
}

/// Whether `region` (which ends with LF) is all CRLF-terminated lines of at most [`MAX_LINE`]
/// bytes: every CR is followed by LF and every LF preceded by CR (one branch-free pass, which also
/// notes whether any line after the first starts with a dot), and every aligned block of
/// `MAX_LINE / 2` bytes holds an LF, so no two line ends are `MAX_LINE` apart. `None` when not
/// (the exact per-line path then finds the error or the long line), else whether a line after the
/// first starts with a dot.
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2",
    "x86_64+avx2",
    "x86_64+sse4.2"
))]
fn plain_crlf(region: &[u8]) -> Option<bool> {
    if region.first() == Some(&b'\n') {
        return None;
    }
    let (odd, dots) = region
        .iter()
        .zip(&region[1..])
        .fold((0u8, 0u8), |(odd, dots), (a, b)| {
            (
                odd | (u8::from(*a == b'\r') ^ u8::from(*b == b'\n')),
                dots | (u8::from(*a == b'\n') & u8::from(*b == b'.')),
            )
        });
    let short = region
        .chunks(MAX_LINE / 2)
        .all(|c| memchr::memchr(b'\n', c).is_some());
    (odd == 0 && short).then_some(dots != 0)
}

/// Whether no line of `bytes`, the first included, starts with a dot (so sending them as a message
/// body needs no dot-stuffing).
pub fn dot_free(bytes: &[u8]) -> bool {
    bytes.first() != Some(&b'.') && !has_dot_line(bytes)
}

/// Whether a line after the first starts with a dot (one branch-free pass; cheaper than a memmem
/// search for two bytes as common as LF and '.').
#[multiversion::multiversion(targets(
    "x86_64+avx512f+avx512bw+avx512vl+avx2",
    "x86_64+avx2",
    "x86_64+sse4.2"
))]
fn has_dot_line(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .zip(bytes.get(1..).unwrap_or_default())
        .fold(0u8, |acc, (a, b)| {
            acc | (u8::from(*a == b'\n') & u8::from(*b == b'.'))
        })
        != 0
}

/// A line of `region` starting at `line` begins with a dot: takes the bytes before it, then either
/// returns the offset past the terminator (`.` CRLF) or drops the stuffed dot.
fn dot_line(
    data: &mut Reading,
    region: &[u8],
    run: &mut usize,
    line: usize,
    max_size: Option<u64>,
) -> Option<usize> {
    take(data, &region[*run..line], max_size);
    if region[line..].starts_with(b".\r\n") {
        return Some(line + 3);
    }
    *run = line + 1;
    data.dot_lines = true;
    None
}

/// Adds unstuffed bytes to the body (counting them even past the size limit).
fn take(data: &mut Reading, bytes: &[u8], max_size: Option<u64>) {
    data.size += bytes.len() as u64;
    if max_size.is_some_and(|m| data.size > m) {
        data.too_big = true;
    }
    if !data.too_big {
        data.body.extend_from_slice(bytes);
    }
}

fn finish(mut data: Reading) -> Data {
    if data.too_big {
        data.body = Vec::new();
    } else if data.body.capacity() > 2 * data.body.len() + 4096 {
        // A declared SIZE far above what came.
        data.body.shrink_to_fit();
    }
    Data {
        body: MessageBody::Owned(data.body),
        size: data.size,
        too_big: data.too_big,
        long_line: data.long_line,
        dot_lines: data.dot_lines,
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn feed(input: &[u8]) -> SmtpStream {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        b.write_all(input).await.unwrap_or_else(|e| panic!("{e}"));
        drop(b);
        SmtpStream::new(Box::new(a))
    }

    /// A message arriving whole in one simulated-network chunk becomes the body without a copy;
    /// one with a stuffed dot, or over the size limit, or followed by more input, goes the usual way.
    #[tokio::test]
    async fn a_whole_message_chunk_is_kept_as_the_body() {
        let text = "Subject: hi\r\n\r\n".to_string() + &"word word word word\r\n".repeat(300);
        for (wire, limit, want, kept) in [
            (format!("{text}.\r\n"), None, text.clone(), true),
            (
                format!("{text}..x\r\n.\r\n"),
                None,
                format!("{text}.x\r\n"),
                false,
            ),
            (format!("{text}.\r\nQUIT\r\n"), None, text.clone(), false),
            (format!("{text}.\r\n"), Some(100), String::new(), false),
        ] {
            let (mut a, b) = crate::net::pipe::pipe(1 << 20);
            let chunk = wire.into_bytes();
            let sent = chunk.as_ptr();
            a.send_owned(chunk).await.unwrap_or_else(|e| panic!("{e}"));
            let mut rx = SmtpStream::new(Box::new(b));
            let d = rx.read_data(limit).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(String::from_utf8_lossy(&d.body), want);
            assert_eq!(d.too_big, limit.is_some());
            assert_eq!(d.size, want.len().max(text.len()) as u64);
            assert_eq!(d.body.as_ptr() == sent, kept, "kept as sent: {kept}");
        }
    }

    /// A spooled body sent shared crosses a simulated connection without a copy only when its
    /// bytes need nothing done (dot-free, ending with CRLF, nothing else queued, within the
    /// receiver's limit); otherwise it arrives as the same bytes by the byte path.
    #[tokio::test]
    async fn a_shared_body_crosses_uncopied_only_when_it_may() {
        let text = "Subject: hi\r\n\r\n".to_string() + &"word word word\r\n".repeat(200);
        let dotted = format!("{text}.dot line\r\n");
        let open = "Subject: hi\r\n\r\nno final line end".to_string();
        // (body, dot-free, receiver's limit, body read, shared)
        for (body, dot_free, limit, want, shared) in [
            (text.clone(), true, None, text.clone(), true),
            (text.clone(), false, None, text.clone(), false),
            (dotted.clone(), false, None, dotted.clone(), false),
            (open.clone(), true, None, format!("{open}\r\n"), false),
            (text.clone(), true, Some(100), String::new(), false),
        ] {
            let (a, b) = crate::net::pipe::pipe(1 << 20);
            let mut tx = SmtpStream::new(Box::new(a));
            let mut rx = SmtpStream::new(Box::new(b));
            let body = Arc::new(body.into_bytes());
            tx.queue_body_shared(body.clone(), dot_free);
            tx.queue(b"QUIT\r\n");
            tx.flush().await.unwrap_or_else(|e| panic!("{e}"));
            let d = rx.read_data(limit).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(String::from_utf8_lossy(&d.body), want);
            assert_eq!(d.too_big, limit.is_some());
            let same = matches!(&d.body, MessageBody::Shared(b) if Arc::ptr_eq(b, &body));
            assert_eq!(same, shared, "shared: {shared}, dot-free: {dot_free}");
            assert_eq!(rx.read_line(MAX_LINE).await.ok().as_deref(), Some("QUIT"));
        }
        // A shared message read as lines, or over a byte stream, is its DATA bytes.
        let (mut a, b) = crate::net::pipe::pipe(1 << 20);
        a.send_message(Arc::new(b"one\r\ntwo\r\n".to_vec()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut rx = SmtpStream::new(Box::new(b));
        for want in ["one", "two", "."] {
            assert_eq!(rx.read_line(MAX_LINE).await.ok().as_deref(), Some(want));
        }
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut tx = SmtpStream::new(Box::new(a));
        tx.queue_body_shared(Arc::new(text.clone().into_bytes()), true);
        tx.flush().await.unwrap_or_else(|e| panic!("{e}"));
        let d = SmtpStream::new(Box::new(b))
            .read_data(None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(d.body, MessageBody::Owned(_)));
        assert_eq!(String::from_utf8_lossy(&d.body), text);
        // The receiver still checks a shared message: a bare LF in one is refused.
        let (mut a, b) = crate::net::pipe::pipe(1 << 20);
        a.send_message(Arc::new(b"Subject: x\r\n\nbare\r\n".to_vec()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let got = SmtpStream::new(Box::new(b)).read_data(None).await;
        assert!(matches!(got, Err(DataError::BareNewline)), "{got:?}");
        // Owned or shared, a body is its bytes.
        let bytes = text.into_bytes();
        assert_eq!(
            MessageBody::Owned(bytes.clone()),
            MessageBody::Shared(Arc::new(bytes))
        );
        assert_ne!(MessageBody::Owned(b"a".to_vec()), MessageBody::default());
    }

    #[tokio::test]
    async fn one_line_buffer_serves_line_after_line() {
        let mut s = feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d>\r\nDATA\r\n").await;
        let mut line = String::from("left over");
        let limit = std::time::Duration::from_secs(1);
        for want in ["MAIL FROM:<a@b.example>", "RCPT TO:<c@d>", "DATA"] {
            let got = s.read_line_within_into(&mut line, MAX_LINE, limit).await;
            assert_eq!((got.ok(), line.as_str()), (Some(()), want));
        }
    }

    #[tokio::test]
    async fn lines_and_limits() {
        let long = "x".repeat(1200);
        let mut s = feed(format!("EHLO a\r\nNOOP\n{long}\r\nQUIT\r\n").as_bytes()).await;
        assert_eq!(s.read_line(MAX_LINE).await.ok(), Some("EHLO a".into()));
        assert!(s.has_buffered_input());
        assert_eq!(s.read_line(MAX_LINE).await.ok(), Some("NOOP".into()));
        assert!(matches!(
            s.read_line(MAX_LINE).await,
            Err(LineError::TooLong)
        ));
        assert_eq!(
            s.read_line(MAX_LINE).await.ok(),
            Some("QUIT".into()),
            "resynchronised after the long line"
        );
        assert!(matches!(
            s.read_line(MAX_LINE).await,
            Err(LineError::Closed)
        ));
        let huge = "y".repeat(100_000);
        let mut s = feed(format!("{huge}\r\nNOOP\r\n").as_bytes()).await;
        assert!(matches!(
            s.read_line(MAX_LINE).await,
            Err(LineError::TooLong)
        ));
        assert_eq!(s.read_line(MAX_LINE).await.ok(), Some("NOOP".into()));
    }

    #[tokio::test]
    async fn data_unstuffing_and_end() {
        let mut s = feed(b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n").await;
        let d = s.read_data(None).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&d.body[..], b"Subject: x\r\n\r\n.leading dot\r\n");
        assert_eq!(s.read_line(MAX_LINE).await.ok(), Some("QUIT".into()));
    }

    #[tokio::test]
    async fn smuggling_attempts_are_refused() {
        for bad in [
            &b"a\r\n\n.\r\nMAIL FROM:<x>\r\n.\r\n"[..],
            b"a\n.\n",
            b"a\r\n.\nRCPT\r\n.\r\n",
            b"a\rb\r\n.\r\n",
            b"line\r\n\r.\r\n.\r\n",
        ] {
            let mut s = feed(bad).await;
            assert!(
                matches!(s.read_data(None).await, Err(DataError::BareNewline)),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn size_limit_reads_to_the_end() {
        let body = "0123456789\r\n".repeat(100);
        let mut s = feed(format!("{body}.\r\nNOOP\r\n").as_bytes()).await;
        let d = s
            .read_data(Some(500))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(d.too_big && d.body.is_empty() && d.size == 1200);
        assert_eq!(
            s.read_line(MAX_LINE).await.ok(),
            Some("NOOP".into()),
            "framing kept"
        );
    }

    proptest::proptest! {
        /// Any body of CRLF lines (dots anywhere, lines over the limit) comes back as sent, whatever
        /// the chunks it arrives in; the long-line flag is set exactly when a line is too long.
        #[test]
        fn data_round_trips_across_chunk_boundaries(
            lines in proptest::collection::vec("[a. ]{0,1100}", 0..40),
            pipe in 1usize..300,
            sim in proptest::bool::ANY,
        ) {
            let body: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            let d = rt.block_on(async {
                let (a, b): (BoxStream, BoxStream) = if sim {
                    // The simulated network's pipe, the bytes sent as whole chunks of `pipe * 16`
                    // bytes, each taken as the reader's buffer as it is.
                    let (mut a, b) = crate::net::pipe::pipe(pipe);
                    let mut wire = SmtpStream::new(Box::new(tokio::io::duplex(1).0));
                    wire.queue_data(body.as_bytes());
                    wire.queue(b"QUIT\r\n");
                    let chunks: Vec<Vec<u8>> = wire.out.chunks(pipe * 16).map(<[u8]>::to_vec).collect();
                    tokio::spawn(async move {
                        for c in chunks {
                            let _ = a.send_owned(c).await;
                        }
                    });
                    (Box::new(tokio::io::duplex(1).0), Box::new(b))
                } else {
                    let (a, b) = tokio::io::duplex(pipe);
                    (Box::new(a), Box::new(b))
                };
                let mut tx = SmtpStream::new(a);
                if !sim {
                    tx.queue_data(body.as_bytes());
                    tx.queue(b"QUIT\r\n");
                }
                let writer = tokio::spawn(async move { tx.flush().await });
                let mut rx = SmtpStream::new(b);
                let d = rx.read_data(None).await.unwrap_or_else(|e| panic!("{e}"));
                let next = rx.read_line(MAX_LINE).await.ok();
                let _ = writer.await;
                (d, next)
            });
            proptest::prop_assert_eq!(String::from_utf8_lossy(&d.0.body), body.as_str());
            proptest::prop_assert_eq!(d.0.size as usize, body.len());
            let long = lines.iter().any(|l| l.len() + l.starts_with('.') as usize + 2 > MAX_LINE);
            proptest::prop_assert_eq!(d.0.long_line, long);
            // Dot lines are noticed as they are unstuffed, whichever path read them.
            let dots = lines.iter().any(|l| l.starts_with('.'));
            proptest::prop_assert_eq!(d.0.dot_lines, dots);
            proptest::prop_assert_eq!(dot_free(body.as_bytes()), !dots);
            proptest::prop_assert_eq!(d.1.as_deref(), Some("QUIT"));
        }
    }

    /// What one DATA read gives: the outcome and the next line after it.
    fn read_both_ways(input: &[u8], pipe: usize, exact_only: bool) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            let (mut a, b) = tokio::io::duplex(pipe);
            let input = input.to_vec();
            let writer = tokio::spawn(async move {
                let _ = a.write_all(&input).await;
            });
            let mut rx = SmtpStream::new(Box::new(b));
            rx.exact_only = exact_only;
            let d = match rx.read_data(Some(2500)).await {
                Ok(d) => format!(
                    "ok {:?} {} {} {} {}",
                    String::from_utf8_lossy(&d.body),
                    d.size,
                    d.long_line,
                    d.too_big,
                    d.dot_lines
                ),
                Err(e) => format!("err {e}"),
            };
            let next = rx.read_line(MAX_LINE).await.ok();
            drop(rx); // a writer still blocked on a full pipe gets an error and ends
            let _ = writer.await;
            format!("{d} / {next:?}")
        })
    }

    proptest::proptest! {
        /// The whole-region fast path of `read_data` gives what the exact per-line path gives, on
        /// any mix of text, dots, CRs and LFs (bare ones included) and any chunking.
        #[test]
        fn data_fast_path_matches_the_exact_path(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("\r\n".to_string()),
                    proptest::strategy::Just("\r\n.".to_string()),
                    proptest::strategy::Just("\r\n.\r\n".to_string()),
                    "[a.]{0,700}",
                    "[a.\r\n]{0,4}",
                ],
                0..30,
            ),
            pipe in 1usize..3000,
        ) {
            let mut input: String = parts.concat();
            input.push_str("\r\n.\r\nQUIT\r\n");
            proptest::prop_assert_eq!(
                read_both_ways(input.as_bytes(), pipe, false),
                read_both_ways(input.as_bytes(), pipe, true)
            );
        }
    }

    #[test]
    fn a_dot_free_body_is_queued_as_the_stuffing_path_queues_it() {
        let bodies: [&[u8]; 5] = [
            b"",
            b"Subject: x\r\n\r\nno dots. here.\r\n",
            b"Subject: x\r\n\r\nno final line end",
            b"a.\r\nb .\r\n",
            b"\r\n\r\n",
        ];
        for body in bodies {
            assert!(dot_free(body), "{body:?}");
            let mut a = SmtpStream::new(Box::new(tokio::io::duplex(1).0));
            let mut b = SmtpStream::new(Box::new(tokio::io::duplex(1).0));
            let mut c = SmtpStream::new(Box::new(tokio::io::duplex(1).0));
            a.queue_data(body);
            b.queue_body(body, true);
            c.queue_body_owned(body.to_vec(), true);
            assert_eq!(a.out, b.out, "{body:?}");
            assert_eq!(a.out, c.out, "{body:?}");
            // Behind a queued command it is appended, not swapped in.
            let mut d = SmtpStream::new(Box::new(tokio::io::duplex(1).0));
            d.queue(b"X\r\n");
            d.queue_body_owned(body.to_vec(), true);
            assert_eq!(d.out[..3], *b"X\r\n");
            assert_eq!(d.out[3..], a.out, "{body:?}");
        }
        for body in [&b".a\r\n"[..], b"a\r\n.b\r\n", b"a\r\n.\r\n"] {
            assert!(!dot_free(body), "{body:?}");
        }
    }

    #[tokio::test]
    async fn dot_stuffing_round_trips() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut tx = SmtpStream::new(Box::new(a));
        let msg = b"Subject: dots\r\n\r\n.one\r\n..two\r\nend";
        tx.queue_data(msg);
        tx.flush().await.unwrap_or_else(|e| panic!("{e}"));
        let mut rx = SmtpStream::new(Box::new(b));
        let d = rx.read_data(None).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            &d.body[..],
            b"Subject: dots\r\n\r\n.one\r\n..two\r\nend\r\n"
        );
        // A body starting with a dot, a lone dot line and dots at both ends.
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut tx = SmtpStream::new(Box::new(a));
        let msg = b".first\r\n.\r\nmid.dle\r\n.\r\n";
        tx.queue_data(msg);
        tx.flush().await.unwrap_or_else(|e| panic!("{e}"));
        let mut rx = SmtpStream::new(Box::new(b));
        let d = rx.read_data(None).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&d.body[..], &msg[..]);
    }
}
