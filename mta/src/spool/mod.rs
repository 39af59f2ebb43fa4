//! Durable message store. Each `<spool>` directory holds an append-only log of segment files with
//! three record kinds (a message with its envelope, a recipient done, a message done), each framed
//! with its length and a CRC32 so a torn tail after a crash is found and ignored. Writes are group
//! committed: every session's record goes to one writer task per directory, which writes what has
//! gathered, calls `fsync` once, and only then acknowledges them all; a message is therefore on disk
//! before its 250. At start the logs are read back and every unfinished recipient is returned for
//! queueing. A `Memory` store with the same interface serves simulated runs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Why the spool failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The writer task is gone (shutting down).
    #[error("spool writer stopped")]
    Stopped,
    /// No such message.
    #[error("message {0} is not in the spool")]
    Unknown(MessageId),
}

/// A message's id: unique across restarts (start time in the high bits, a counter below).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId(pub u64);

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One recipient of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address.
    pub address: String,
    /// ORCPT, if given.
    pub orcpt: Option<String>,
    /// Finished (delivered, bounced or expired).
    pub done: bool,
}

/// Everything about a message except its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Envelope sender; empty for the null sender.
    pub mail_from: String,
    /// Recipients.
    pub rcpts: Vec<Recipient>,
    /// vMTA name per recipient index is decided at queueing; this is the message's choice.
    pub vmta: Option<String>,
    /// The pool it was chosen from.
    pub pool: Option<String>,
    /// Job id.
    pub job_id: Option<String>,
    /// ENVID.
    pub env_id: Option<String>,
    /// The client's address.
    pub source_ip: Option<String>,
    /// Accepted at (Unix ms).
    pub received_ms: i64,
    /// Size in bytes.
    pub size: u64,
    /// Message-ID header, for accounting.
    pub message_id: Option<String>,
    /// No line of the body starts with a dot (known at receipt), so delivery sends it without
    /// looking for lines to dot-stuff; false when not known (a spool written before this field).
    #[serde(default)]
    pub dot_free: bool,
}

#[allow(clippy::large_enum_variant)] // one short-lived value per record
/// A log record. On disk: `len u32 | crc32 u32 | meta_len u32 | meta (JSON) | body (raw bytes)`.
enum Rec {
    Message {
        id: MessageId,
        env: Envelope,
        body: Vec<u8>,
    },
    RcptDone {
        id: MessageId,
        rcpt: u32,
    },
    MessageDone {
        id: MessageId,
    },
}

#[derive(Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // one short-lived value per record
enum Meta {
    Message { id: MessageId, env: Envelope },
    RcptDone { id: MessageId, rcpt: u32 },
    MessageDone { id: MessageId },
}

fn decode(payload: &[u8]) -> Option<Rec> {
    let meta_len = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    let meta: Meta = serde_json::from_slice(payload.get(4..4 + meta_len)?).ok()?;
    let rest = payload.get(4 + meta_len..)?;
    Some(match meta {
        Meta::Message { id, env } => Rec::Message {
            id,
            env,
            body: rest.to_vec(),
        },
        Meta::RcptDone { id, rcpt } => Rec::RcptDone { id, rcpt },
        Meta::MessageDone { id } => Rec::MessageDone { id },
    })
}

/// A message found unfinished at start.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// Its id.
    pub id: MessageId,
    /// Its envelope (recipients marked done where they were).
    pub envelope: Envelope,
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn frame(rec: &Rec) -> Vec<u8> {
    let (meta, body): (Meta, &[u8]) = match rec {
        Rec::Message { id, env, body } => (
            Meta::Message {
                id: *id,
                env: env.clone(),
            },
            body,
        ),
        Rec::RcptDone { id, rcpt } => (
            Meta::RcptDone {
                id: *id,
                rcpt: *rcpt,
            },
            &[],
        ),
        Rec::MessageDone { id } => (Meta::MessageDone { id: *id }, &[]),
    };
    let meta = serde_json::to_vec(&meta).unwrap_or_default();
    let mut payload = Vec::with_capacity(4 + meta.len() + body.len());
    payload.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    payload.extend_from_slice(&meta);
    payload.extend_from_slice(body);
    let mut out = Vec::with_capacity(payload.len() + 8);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Where a body lives on disk.
#[derive(Debug, Clone, Copy)]
struct Location {
    dir: usize,
    segment: u64,
    offset: u64,
}

struct Job {
    bytes: Vec<u8>,
    /// Set for message records: the offset of the record in the segment is reported back.
    ack: oneshot::Sender<Result<(u64, u64), SpoolError>>,
}

/// Largest segment before a new one is started.
const SEGMENT_BYTES: u64 = 64 << 20;

struct Dir {
    path: PathBuf,
    tx: mpsc::UnboundedSender<Job>,
}

struct Index {
    envelopes: BTreeMap<MessageId, Envelope>,
    bodies: BTreeMap<MessageId, Location>,
    /// Live messages per (dir, segment), to delete segments that are all done.
    live: BTreeMap<(usize, u64), u64>,
}

/// The disk spool.
pub struct DiskSpool {
    dirs: Vec<Dir>,
    next_dir: AtomicUsize,
    next_id: AtomicU64,
    index: Mutex<Index>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("segment-{n:010}.log"))
}

/// The segment numbers present in a spool directory.
fn segment_numbers(dir: &Path) -> Vec<u64> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("segment-"))
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse().ok())
        })
        .collect()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The writer of one directory: gathers pending records, writes them, fsyncs once, acknowledges.
fn writer(dir: PathBuf, mut segment: u64, mut rx: mpsc::UnboundedReceiver<Job>) {
    let open = |n: u64| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment_path(&dir, n))
    };
    let mut file = match open(segment) {
        Ok(f) => f,
        Err(e) => {
            while let Some(j) = rx.blocking_recv() {
                let _ = j.ack.send(Err(SpoolError::Io {
                    path: dir.clone(),
                    source: std::io::Error::new(e.kind(), e.to_string()),
                }));
            }
            return;
        }
    };
    let mut offset = file.metadata().map(|m| m.len()).unwrap_or(0);
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while let Ok(j) = rx.try_recv() {
            batch.push(j);
            if batch.len() >= 4096 {
                break;
            }
        }
        if offset >= SEGMENT_BYTES {
            segment += 1;
            match open(segment) {
                Ok(f) => {
                    file = f;
                    offset = 0;
                    if let Ok(d) = std::fs::File::open(&dir) {
                        let _ = d.sync_all();
                    }
                }
                Err(e) => {
                    for j in batch {
                        let _ = j.ack.send(Err(SpoolError::Io {
                            path: dir.clone(),
                            source: std::io::Error::new(e.kind(), e.to_string()),
                        }));
                    }
                    continue;
                }
            }
        }
        let mut buf = Vec::with_capacity(batch.iter().map(|j| j.bytes.len()).sum());
        let mut offsets = Vec::with_capacity(batch.len());
        for j in &batch {
            offsets.push(offset + buf.len() as u64);
            buf.extend_from_slice(&j.bytes);
        }
        let res = file.write_all(&buf).and_then(|_| file.sync_data());
        match res {
            Ok(()) => {
                offset += buf.len() as u64;
                for (j, off) in batch.into_iter().zip(offsets) {
                    let _ = j.ack.send(Ok((segment, off)));
                }
            }
            Err(e) => {
                for j in batch {
                    let _ = j.ack.send(Err(SpoolError::Io {
                        path: dir.clone(),
                        source: std::io::Error::new(e.kind(), e.to_string()),
                    }));
                }
            }
        }
    }
}

impl DiskSpool {
    /// Opens (creating) the directories, reads their logs back and starts the writers. Returns the
    /// spool and the unfinished messages, oldest first.
    pub fn open(paths: &[PathBuf]) -> Result<(Arc<DiskSpool>, Vec<Recovered>), SpoolError> {
        let mut index = Index {
            envelopes: BTreeMap::new(),
            bodies: BTreeMap::new(),
            live: BTreeMap::new(),
        };
        let mut dirs = Vec::new();
        let mut max_id = 0u64;
        for (di, p) in paths.iter().enumerate() {
            std::fs::create_dir_all(p).map_err(io_err(p))?;
            let mut segs = segment_numbers(p);
            segs.sort_unstable();
            for &seg in &segs {
                let path = segment_path(p, seg);
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                let mut all = Vec::new();
                f.read_to_end(&mut all).map_err(io_err(&path))?;
                let mut pos = 0usize;
                while pos + 8 <= all.len() {
                    let len =
                        u32::from_le_bytes([all[pos], all[pos + 1], all[pos + 2], all[pos + 3]])
                            as usize;
                    let crc = u32::from_le_bytes([
                        all[pos + 4],
                        all[pos + 5],
                        all[pos + 6],
                        all[pos + 7],
                    ]);
                    let Some(payload) = all.get(pos + 8..pos + 8 + len) else {
                        break;
                    };
                    if crc32(payload) != crc {
                        break;
                    }
                    match decode(payload) {
                        Some(Rec::Message { id, env, .. }) => {
                            max_id = max_id.max(id.0);
                            index.bodies.insert(
                                id,
                                Location {
                                    dir: di,
                                    segment: seg,
                                    offset: pos as u64,
                                },
                            );
                            index.envelopes.insert(id, env);
                            *index.live.entry((di, seg)).or_insert(0) += 1;
                        }
                        Some(Rec::RcptDone { id, rcpt }) => {
                            if let Some(r) = index
                                .envelopes
                                .get_mut(&id)
                                .and_then(|e| e.rcpts.get_mut(rcpt as usize))
                            {
                                r.done = true;
                            }
                        }
                        Some(Rec::MessageDone { id }) => {
                            index.envelopes.remove(&id);
                            if let Some(loc) = index.bodies.remove(&id) {
                                if let Some(n) = index.live.get_mut(&(loc.dir, loc.segment)) {
                                    *n = n.saturating_sub(1);
                                }
                            }
                        }
                        None => break,
                    }
                    pos += 8 + len;
                }
                if pos < all.len() {
                    // A torn or corrupt tail: everything before it was acknowledged, nothing after.
                    tracing::warn!(segment = %path.display(), at = pos, dropped = all.len() - pos, "spool segment has a torn tail; truncating");
                    f.set_len(pos as u64).map_err(io_err(&path))?;
                    f.sync_all().map_err(io_err(&path))?;
                }
                let _ = f.seek(SeekFrom::End(0));
            }
            let next_seg = segs.last().map_or(0, |s| s + 1);
            let (tx, rx) = mpsc::unbounded_channel();
            let wdir = p.clone();
            std::thread::Builder::new()
                .name(format!("spool-writer-{di}"))
                .spawn(move || writer(wdir, next_seg, rx))
                .map_err(io_err(p))?;
            dirs.push(Dir {
                path: p.clone(),
                tx,
            });
        }
        // Segments without a live message are garbage now.
        let dead: Vec<(usize, u64)> = index
            .live
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            index.live.remove(&k);
            let _ = std::fs::remove_file(segment_path(&paths[k.0], k.1));
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let start_id = (now_ms << 20).max(max_id + 1);
        let recovered = index
            .envelopes
            .iter()
            .map(|(id, env)| Recovered {
                id: *id,
                envelope: env.clone(),
            })
            .collect();
        let spool = DiskSpool {
            dirs,
            next_dir: AtomicUsize::new(0),
            next_id: AtomicU64::new(start_id),
            index: Mutex::new(index),
        };
        Ok((Arc::new(spool), recovered))
    }

    async fn submit(&self, dir: usize, rec: &Rec) -> Result<(u64, u64), SpoolError> {
        let (ack, rx) = oneshot::channel();
        self.dirs[dir]
            .tx
            .send(Job {
                bytes: frame(rec),
                ack,
            })
            .map_err(|_| SpoolError::Stopped)?;
        rx.await.map_err(|_| SpoolError::Stopped)?
    }

    fn dir_of(&self, id: MessageId) -> Option<Location> {
        self.index.lock().ok()?.bodies.get(&id).copied()
    }

    /// Stores a message durably; returns after its fsync.
    pub async fn store(&self, env: &Envelope, body: Vec<u8>) -> Result<MessageId, SpoolError> {
        let id = MessageId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let dir = self.next_dir.fetch_add(1, Ordering::Relaxed) % self.dirs.len().max(1);
        let (segment, offset) = self
            .submit(
                dir,
                &Rec::Message {
                    id,
                    env: env.clone(),
                    body,
                },
            )
            .await?;
        if let Ok(mut ix) = self.index.lock() {
            ix.bodies.insert(
                id,
                Location {
                    dir,
                    segment,
                    offset,
                },
            );
            ix.envelopes.insert(id, env.clone());
            *ix.live.entry((dir, segment)).or_insert(0) += 1;
        }
        Ok(id)
    }

    /// Reads a message body back.
    pub fn body(&self, id: MessageId) -> Result<Vec<u8>, SpoolError> {
        let loc = self.dir_of(id).ok_or(SpoolError::Unknown(id))?;
        let path = segment_path(&self.dirs[loc.dir].path, loc.segment);
        let mut f = std::fs::File::open(&path).map_err(io_err(&path))?;
        f.seek(SeekFrom::Start(loc.offset)).map_err(io_err(&path))?;
        let mut head = [0u8; 8];
        f.read_exact(&mut head).map_err(io_err(&path))?;
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let mut payload = vec![0u8; len];
        f.read_exact(&mut payload).map_err(io_err(&path))?;
        match decode(&payload) {
            Some(Rec::Message { body, .. }) => Ok(body),
            _ => Err(SpoolError::Unknown(id)),
        }
    }

    /// Records that recipient `rcpt` of `id` is finished (after the remote 250 or a bounce).
    pub async fn rcpt_done(&self, id: MessageId, rcpt: u32) -> Result<(), SpoolError> {
        let loc = self.dir_of(id).ok_or(SpoolError::Unknown(id))?;
        self.submit(loc.dir, &Rec::RcptDone { id, rcpt }).await?;
        if let Ok(mut ix) = self.index.lock() {
            if let Some(r) = ix
                .envelopes
                .get_mut(&id)
                .and_then(|e| e.rcpts.get_mut(rcpt as usize))
            {
                r.done = true;
            }
        }
        Ok(())
    }

    /// Records that the whole message is finished; its segment is deleted once all of its messages are.
    pub async fn message_done(&self, id: MessageId) -> Result<(), SpoolError> {
        let loc = self.dir_of(id).ok_or(SpoolError::Unknown(id))?;
        self.submit(loc.dir, &Rec::MessageDone { id }).await?;
        let mut remove = None;
        if let Ok(mut ix) = self.index.lock() {
            ix.envelopes.remove(&id);
            ix.bodies.remove(&id);
            if let Some(n) = ix.live.get_mut(&(loc.dir, loc.segment)) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    remove = Some(loc);
                }
            }
        }
        if let Some(l) = remove {
            // The active segment is reused by the writer; only older ones are deleted.
            let newest = segment_numbers(&self.dirs[l.dir].path).into_iter().max();
            if newest.is_some_and(|n| n > l.segment) {
                if let Ok(mut ix) = self.index.lock() {
                    ix.live.remove(&(l.dir, l.segment));
                }
                let _ = std::fs::remove_file(segment_path(&self.dirs[l.dir].path, l.segment));
            }
        }
        Ok(())
    }

    /// Messages currently held.
    pub fn len(&self) -> usize {
        self.index.lock().map(|ix| ix.envelopes.len()).unwrap_or(0)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A body held by the memory spool: in memory, or written out past the memory budget.
enum HeldBody {
    Memory(Arc<Vec<u8>>),
    /// In overflow segment `seg` at `offset`, `len` bytes.
    Spilled {
        seg: u64,
        offset: u64,
        len: u64,
    },
}

/// Overflow segment files roll over at this size.
const OVERFLOW_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Where bodies past the memory budget go: append-only segment files in a temporary directory,
/// each removed once none of its bodies is still waiting (and all with the spool).
struct Overflow {
    dir: tempfile::TempDir,
    budget: u64,
    /// A segment takes no more bodies past this size.
    segment_bytes: u64,
    segments: Mutex<Segments>,
}

/// The overflow's open segment files and how many waiting bodies each holds.
#[derive(Default)]
struct Segments {
    /// The segment being appended to and its length.
    current: u64,
    current_len: u64,
    /// Open segments (for appending and reading back) with their count of waiting bodies.
    open: BTreeMap<u64, (std::fs::File, u64)>,
}

impl Overflow {
    fn path(&self, seg: u64) -> PathBuf {
        self.dir.path().join(format!("{seg:08}.ovf"))
    }

    /// Appends a body; returns where it went.
    fn write(&self, body: &[u8]) -> Result<HeldBody, SpoolError> {
        use std::io::Write as _;
        let mut g = self.segments.lock().map_err(|_| SpoolError::Stopped)?;
        let g = &mut *g;
        if g.open.is_empty() || g.current_len >= self.segment_bytes {
            let seg = g.current + 1; // segments are numbered from 1
            let path = self.path(seg);
            let file = std::fs::OpenOptions::new()
                .create_new(true)
                .read(true)
                .append(true)
                .open(&path)
                .map_err(|source| SpoolError::Io { path, source })?;
            // The previous segment stays open while bodies in it wait; without any, it goes.
            if let Some((_, (_, 0))) = g.open.get_key_value(&g.current) {
                g.open.remove(&g.current);
                let _ = std::fs::remove_file(self.path(g.current));
            }
            g.open.insert(seg, (file, 0));
            g.current = seg;
            g.current_len = 0;
        }
        let seg = g.current;
        let offset = g.current_len;
        let Some((file, waiting)) = g.open.get_mut(&seg) else {
            return Err(SpoolError::Stopped);
        };
        file.write_all(body).map_err(|source| SpoolError::Io {
            path: self.path(seg),
            source,
        })?;
        *waiting += 1;
        g.current_len += body.len() as u64;
        Ok(HeldBody::Spilled {
            seg,
            offset,
            len: body.len() as u64,
        })
    }

    /// Reads a spilled body back, into `buf` (cleared first).
    fn read(
        &self,
        seg: u64,
        offset: u64,
        len: u64,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>, SpoolError> {
        use std::os::unix::fs::FileExt as _;
        let g = self.segments.lock().map_err(|_| SpoolError::Stopped)?;
        let path = self.path(seg);
        let Some((file, _)) = g.open.get(&seg) else {
            return Err(SpoolError::Io {
                path,
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        };
        buf.clear();
        buf.resize(len as usize, 0);
        file.read_exact_at(&mut buf, offset)
            .map_err(|source| SpoolError::Io { path, source })?;
        Ok(buf)
    }

    /// A spilled body is no longer needed; a segment without waiting bodies (other than the one
    /// being appended to) is removed.
    fn release(&self, seg: u64) {
        let Ok(mut g) = self.segments.lock() else {
            return;
        };
        let current = g.current;
        if let Some((_, waiting)) = g.open.get_mut(&seg) {
            *waiting = waiting.saturating_sub(1);
            if *waiting == 0 && seg != current {
                g.open.remove(&seg);
                let _ = std::fs::remove_file(self.path(seg));
            }
        }
    }
}

/// The in-memory store for simulated runs: same interface, no durability. With a budget
/// ([`MemorySpool::with_budget`]) the oldest bodies past it are appended to segment files in a
/// temporary directory (no fsync) and read back when delivered, so a long backlog does not have
/// to fit in memory.
#[derive(Default)]
pub struct MemorySpool {
    next: AtomicU64,
    /// The bodies of the messages held (the engine keeps the envelopes).
    messages: Mutex<BTreeMap<MessageId, HeldBody>>,
    held_bytes: AtomicU64,
    /// Messages below this id hold no body in memory any more (spilled or finished).
    spill_cursor: AtomicU64,
    overflow: Option<Overflow>,
    /// Where body buffers nothing else holds go, and where read-back bodies come from.
    buffers: Option<Arc<dyn BodyBuffers>>,
}

/// Body buffers for reuse: a simulation writes tens of gigabytes of bodies, and fresh memory for
/// each costs page faults.
pub trait BodyBuffers: Send + Sync {
    /// An empty buffer with room for at least `capacity` bytes.
    fn take(&self, capacity: usize) -> Vec<u8>;
    /// A buffer nothing else needs any more.
    fn put(&self, buf: Vec<u8>);
}

impl MemorySpool {
    /// A memory spool that keeps at most `budget` bytes of bodies in memory and writes the rest
    /// to a new temporary directory below `parent`.
    pub fn with_budget(budget: u64, parent: &Path) -> Result<MemorySpool, SpoolError> {
        Self::with_limits(budget, OVERFLOW_SEGMENT_BYTES, parent)
    }

    fn with_limits(
        budget: u64,
        segment_bytes: u64,
        parent: &Path,
    ) -> Result<MemorySpool, SpoolError> {
        let dir = tempfile::Builder::new()
            .prefix("mtasim-spool-")
            .tempdir_in(parent)
            .map_err(|source| SpoolError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        Ok(MemorySpool {
            overflow: Some(Overflow {
                dir,
                budget,
                segment_bytes,
                segments: Mutex::default(),
            }),
            ..MemorySpool::default()
        })
    }

    /// Hands each body buffer nothing else holds any more (a finished message's, or one just
    /// written to the overflow) to `buffers`, and reads spilled bodies back into buffers from it
    /// (a simulation's traffic writes its next messages into them instead of fresh memory).
    pub fn recycling(mut self, buffers: Arc<dyn BodyBuffers>) -> MemorySpool {
        self.buffers = Some(buffers);
        self
    }

    /// Stores a message. Past the budget, the oldest bodies still in memory are written out
    /// (mail that has waited longest is the backlog; new mail usually leaves within seconds).
    pub fn store(&self, body: Vec<u8>) -> Result<MessageId, SpoolError> {
        let id = MessageId(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let len = body.len() as u64;
        let mut m = self.messages.lock().map_err(|_| SpoolError::Stopped)?;
        self.held_bytes.fetch_add(len, Ordering::Relaxed);
        m.insert(id, HeldBody::Memory(Arc::new(body)));
        if let Some(o) = &self.overflow {
            let mut cursor = self.spill_cursor.load(Ordering::Relaxed);
            while self.held_bytes.load(Ordering::Relaxed) > o.budget {
                let Some((&old, held)) = m.range_mut(MessageId(cursor)..).next() else {
                    break;
                };
                cursor = old.0 + 1;
                if let HeldBody::Memory(b) = held {
                    let n = b.len() as u64;
                    let spilled = o.write(b)?;
                    if let HeldBody::Memory(b) = std::mem::replace(held, spilled) {
                        self.recycle(b);
                    }
                    self.held_bytes.fetch_sub(n, Ordering::Relaxed);
                }
            }
            self.spill_cursor.store(cursor, Ordering::Relaxed);
        }
        Ok(id)
    }

    /// A message body.
    pub fn body(&self, id: MessageId) -> Result<Arc<Vec<u8>>, SpoolError> {
        let spilled = match self
            .messages
            .lock()
            .ok()
            .as_deref()
            .and_then(|m| m.get(&id))
        {
            Some(HeldBody::Memory(b)) => return Ok(b.clone()),
            Some(HeldBody::Spilled { seg, offset, len }) => Some((*seg, *offset, *len)),
            None => None,
        };
        match (&self.overflow, spilled) {
            (Some(o), Some((seg, offset, len))) => {
                let buf = match &self.buffers {
                    Some(b) => b.take(len as usize),
                    None => Vec::new(),
                };
                o.read(seg, offset, len, buf).map(Arc::new)
            }
            _ => Err(SpoolError::Unknown(id)),
        }
    }

    /// Forgets a finished message.
    pub fn message_done(&self, id: MessageId) {
        let removed = self.messages.lock().ok().and_then(|mut m| m.remove(&id));
        match (removed, &self.overflow) {
            (Some(HeldBody::Memory(b)), _) => {
                self.held_bytes.fetch_sub(b.len() as u64, Ordering::Relaxed);
                self.recycle(b);
            }
            (Some(HeldBody::Spilled { seg, .. }), Some(o)) => o.release(seg),
            _ => {}
        }
    }

    /// Hands a body buffer nothing else holds to the recycler, if there is one.
    fn recycle(&self, body: Arc<Vec<u8>>) {
        if let (Some(buffers), Ok(buf)) = (&self.buffers, Arc::try_unwrap(body)) {
            buffers.put(buf);
        }
    }

    /// Bodies currently held in memory, in bytes.
    pub fn bytes_in_memory(&self) -> u64 {
        self.held_bytes.load(Ordering::Relaxed)
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.messages.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The store the MTA uses: disk in live runs, memory in simulated ones.
pub enum Spool {
    /// Durable.
    Disk(Arc<DiskSpool>),
    /// In memory.
    Memory(MemorySpool),
}

impl Spool {
    /// Whether stored messages survive the process (disk).
    pub fn is_durable(&self) -> bool {
        matches!(self, Spool::Disk(_))
    }

    /// Stores a message (durably for disk) and returns its id.
    pub async fn store(&self, env: &Envelope, body: Vec<u8>) -> Result<MessageId, SpoolError> {
        match self {
            Spool::Disk(d) => d.store(env, body).await,
            Spool::Memory(m) => m.store(body),
        }
    }

    /// A message body.
    pub fn body(&self, id: MessageId) -> Result<Arc<Vec<u8>>, SpoolError> {
        match self {
            Spool::Disk(d) => d.body(id).map(Arc::new),
            Spool::Memory(m) => m.body(id),
        }
    }

    /// Marks a recipient finished (durably for disk).
    pub async fn rcpt_done(&self, id: MessageId, rcpt: u32) -> Result<(), SpoolError> {
        match self {
            Spool::Disk(d) => d.rcpt_done(id, rcpt).await,
            // A memory spool keeps no envelopes: the engine knows which recipients are done.
            Spool::Memory(_) => Ok(()),
        }
    }

    /// Marks the message finished.
    pub async fn message_done(&self, id: MessageId) -> Result<(), SpoolError> {
        match self {
            Spool::Disk(d) => d.message_done(id).await,
            Spool::Memory(m) => {
                m.message_done(id);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: usize) -> Envelope {
        Envelope {
            mail_from: "s@x.test".into(),
            rcpts: (0..n)
                .map(|i| Recipient {
                    address: format!("r{i}@y.test"),
                    orcpt: None,
                    done: false,
                })
                .collect(),
            vmta: None,
            pool: None,
            job_id: None,
            env_id: None,
            source_ip: None,
            received_ms: 1,
            size: 3,
            message_id: None,
            dot_free: false,
        }
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_complete_recover_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let dirs = vec![dir.path().join("a"), dir.path().join("b")];
        let (sp, rec) = DiskSpool::open(&dirs).unwrap_or_else(|e| panic!("{e}"));
        assert!(rec.is_empty());
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(
                sp.store(&env(2), format!("body {i}").into_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
        assert_eq!(sp.body(ids[3]).unwrap_or_default(), b"body 3");
        sp.rcpt_done(ids[0], 0)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sp.message_done(ids[1])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            dirs.iter()
                .all(|d| std::fs::read_dir(d).map(|r| r.count()).unwrap_or(0) == 1),
            "both directories used"
        );
        drop(sp);
        // A torn record at the end of one segment (a crash mid-write).
        let seg = segment_path(&dirs[0], 0);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{', b'"'])
            .unwrap_or_else(|e| panic!("{e}"));
        drop(f);
        let (sp, rec) = DiskSpool::open(&dirs).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<MessageId> = rec.iter().map(|r| r.id).collect();
        let want: Vec<MessageId> = ids.iter().copied().filter(|i| *i != ids[1]).collect();
        assert_eq!(got, want, "every unfinished message, none of the finished");
        let first = rec
            .iter()
            .find(|r| r.id == ids[0])
            .map(|r| r.envelope.rcpts.iter().map(|x| x.done).collect::<Vec<_>>());
        assert_eq!(
            first,
            Some(vec![true, false]),
            "recipient progress survives"
        );
        assert_eq!(sp.body(ids[5]).unwrap_or_default(), b"body 5");
        let fresh = sp
            .store(&env(1), b"new".to_vec())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!ids.contains(&fresh), "ids stay unique across restarts");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_stores_share_fsyncs() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (sp, _) =
            DiskSpool::open(&[dir.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
        let mut tasks = Vec::new();
        for t in 0..20 {
            let sp = sp.clone();
            tasks.push(tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..25 {
                    ids.push(
                        sp.store(&env(1), vec![b'x'; 2048 + t * 25 + i])
                            .await
                            .unwrap_or_else(|e| panic!("{e}")),
                    );
                }
                ids
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 500);
        drop(sp);
        let (_, rec) =
            DiskSpool::open(&[dir.path().to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rec.len(), 500, "every acknowledged message is on disk");
    }

    /// Body buffers kept in a list (last in, first out), counting what was taken.
    #[derive(Default)]
    struct Kept {
        bufs: std::sync::Mutex<Vec<Vec<u8>>>,
        taken: AtomicU64,
    }

    impl BodyBuffers for Kept {
        fn take(&self, capacity: usize) -> Vec<u8> {
            self.taken.fetch_add(1, Ordering::Relaxed);
            let kept = self.bufs.lock().ok().and_then(|mut b| b.pop());
            kept.unwrap_or_else(|| Vec::with_capacity(capacity))
        }

        fn put(&self, buf: Vec<u8>) {
            if let Ok(mut b) = self.bufs.lock() {
                b.push(buf);
            }
        }
    }

    impl Kept {
        fn ptrs(&self) -> Vec<*const u8> {
            self.bufs
                .lock()
                .map(|b| b.iter().map(|v| v.as_ptr()).collect())
                .unwrap_or_default()
        }
    }

    /// A finished message's body buffer goes to the recycler when nothing else holds it (a
    /// delivery still in flight keeps it), and never while the message waits.
    #[test]
    fn memory_spool_hands_finished_bodies_back() {
        let kept = Arc::new(Kept::default());
        let spool = MemorySpool::default().recycling(kept.clone());
        let body = b"Subject: x\r\n\r\nhi\r\n".to_vec();
        let ptr = body.as_ptr();
        let a = spool.store(body).unwrap_or_else(|e| panic!("{e}"));
        let b = spool
            .store(b"other".to_vec())
            .unwrap_or_else(|e| panic!("{e}"));
        let held = spool.body(b).unwrap_or_else(|e| panic!("{e}"));
        assert!(kept.ptrs().is_empty());
        spool.message_done(a);
        spool.message_done(b);
        assert_eq!(
            kept.ptrs(),
            vec![ptr],
            "only the body nothing else holds is recycled"
        );
        assert_eq!(
            kept.taken.load(Ordering::Relaxed),
            0,
            "bodies in memory are not copied"
        );
        drop(held);
    }

    /// A body written to the overflow gives its buffer back, and a spilled body is read back
    /// into a buffer from the recycler, whatever that buffer held before.
    #[test]
    fn memory_spool_recycles_around_its_overflow() {
        let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let kept = Arc::new(Kept::default());
        let spool = MemorySpool::with_limits(100, 1000, parent.path())
            .unwrap_or_else(|e| panic!("{e}"))
            .recycling(kept.clone());
        let first = vec![b'a'; 80];
        let first_ptr = first.as_ptr();
        let a = spool.store(first).unwrap_or_else(|e| panic!("{e}"));
        let b = spool
            .store(vec![b'b'; 80])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            kept.ptrs(),
            vec![first_ptr],
            "the spilled body's buffer is given back"
        );
        // A stale buffer with other contents and the wrong length is what the read gets.
        kept.put(vec![b'z'; 200]);
        let stale = kept.ptrs()[1];
        let back = spool.body(a).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(*back, vec![b'a'; 80]);
        assert_eq!(back.as_ptr(), stale, "read back into the recycler's buffer");
        assert_eq!(kept.taken.load(Ordering::Relaxed), 1);
        drop(back);
        spool.message_done(a);
        spool.message_done(b);
        assert_eq!(
            kept.ptrs().len(),
            2,
            "the body held in memory goes back when done"
        );
    }

    /// Past its budget the memory spool writes bodies out and reads them back unchanged; a
    /// finished message's file is removed, and the directory goes with the spool.
    #[test]
    fn memory_spool_spills_past_its_budget() {
        let parent = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        // 100 bytes in memory; segments take bodies until they hold 100 bytes.
        let spool =
            MemorySpool::with_limits(100, 100, parent.path()).unwrap_or_else(|e| panic!("{e}"));
        let store = |fill: u8| {
            spool
                .store(vec![fill; 80])
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let files = || {
            std::fs::read_dir(parent.path())
                .unwrap_or_else(|e| panic!("{e}"))
                .flat_map(|d| d.ok())
                .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten())
                .count()
        };
        let (a, b) = (store(b'a'), store(b'b'));
        assert_eq!(
            spool.bytes_in_memory(),
            80,
            "the older body was written out"
        );
        assert_eq!(files(), 1);
        let c = store(b'c'); // b joins a's segment (80 < 100 bytes in it)
        assert_eq!(files(), 1);
        let d = store(b'd'); // c starts a second segment
        assert_eq!((files(), spool.bytes_in_memory()), (2, 80));
        for (id, fill) in [(a, b'a'), (b, b'b'), (c, b'c'), (d, b'd')] {
            assert_eq!(
                spool.body(id).unwrap_or_else(|e| panic!("{e}")).as_slice(),
                &[fill; 80][..]
            );
        }
        spool.message_done(a);
        assert_eq!(files(), 2, "b still waits in the first segment");
        assert!(matches!(spool.body(a), Err(SpoolError::Unknown(_))));
        spool.message_done(b);
        assert_eq!(files(), 1, "the first segment went with its last body");
        spool.message_done(c);
        assert_eq!(files(), 1, "the segment being appended to stays");
        spool.message_done(d);
        assert_eq!(spool.bytes_in_memory(), 0);
        store(b'e');
        assert_eq!(spool.bytes_in_memory(), 80, "room again once bodies left");
        assert_eq!(spool.len(), 1);
        drop(spool);
        assert_eq!(
            std::fs::read_dir(parent.path())
                .unwrap_or_else(|e| panic!("{e}"))
                .count(),
            0,
            "the spill directory is removed with the spool"
        );
    }
}
