//! Accounting: the CSV log of what happened to every recipient (`r` received, `d` delivered, `b`
//! bounced, `t`/`tq` deferred, `f` feedback, `rb` remote bounce), written to every `<acct-file>` that
//! wants the record type: files with size/interval rotation into `move-to`, and `|program` pipes
//! that are restarted when they die without losing records.

pub mod record;

pub use record::{FieldSelection, Record, RecordPool, RecordType};

use crate::config::model::{AcctFile, AcctTarget};
use crate::config::values::Value;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

/// Why an accounting file could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AcctError {
    /// A file or directory could not be created or written.
    #[error("accounting file {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Rotation and format settings of one `<acct-file>`.
#[derive(Debug, Clone)]
struct Settings {
    iso: bool,
    sync: bool,
    max_size: u64,
    move_interval_ms: Option<i64>,
    move_to: Option<PathBuf>,
    delete_after_ms: Option<i64>,
    retry_ms: i64,
}

impl Settings {
    fn from(a: &AcctFile) -> Settings {
        let get = |n: &str| a.settings.get(n).map(|s| &s.value);
        let dur_ms = |v: Option<&Value>, def: Option<i64>| match v {
            Some(Value::Interval(d)) => Some(d.as_millis() as i64),
            Some(Value::Never) | Some(Value::Cleared) => None,
            _ => def,
        };
        let is_pipe = matches!(a.target, AcctTarget::Pipe(_));
        Settings {
            iso: !matches!(get("iso-times"), Some(Value::Bool(false))),
            sync: matches!(get("sync"), Some(Value::Bool(true))),
            max_size: match get("max-size") {
                Some(Value::Size(n)) if *n > 0 => *n,
                _ => 250 << 20,
            },
            move_interval_ms: if is_pipe {
                None
            } else {
                dur_ms(get("move-interval"), Some(86_400_000))
            },
            move_to: match get("move-to") {
                Some(Value::Text(t)) => Some(PathBuf::from(t)),
                _ => None,
            },
            delete_after_ms: dur_ms(get("delete-after"), Some(8 * 86_400_000)),
            retry_ms: dur_ms(get("retry-interval"), Some(300_000)).unwrap_or(300_000),
        }
    }
}

struct FileOut {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    size: u64,
    opened_ms: i64,
}

struct PipeOut {
    command: String,
    child: Option<(Child, ChildStdin)>,
    dead_since_ms: Option<i64>,
}

enum Out {
    File(FileOut),
    Pipe(PipeOut),
}

/// One `<acct-file>`: selection, format, destination, and lines waiting to be written.
struct Sink {
    sel: FieldSelection,
    /// The columns each record type fills, resolved from `sel` and `header`.
    plan: record::LinePlan,
    header_line: String,
    set: Settings,
    out: Out,
    /// Lines not yet written (the pipe is down, or a write failed); written first next time.
    pending: VecDeque<String>,
    /// Why the last write or flush failed, while lines are still pending.
    failure: Option<String>,
}

/// Accounting lines that may wait for a destination that cannot take them before new mail is
/// refused (`acct-backlog-limit`'s default; the simulator gives up writing acct.csv there).
pub const DEFAULT_BACKLOG_LIMIT: usize = 100_000;

/// All accounting destinations of a config. `log` is cheap (buffered); call `flush` periodically
/// and at shutdown.
pub struct Accounting {
    sinks: Mutex<Vec<Sink>>,
    /// Time of the latest record seen (Unix ms), used when closing on drop.
    last_ms: std::sync::atomic::AtomicI64,
}

fn stamp(ms: i64) -> String {
    let t = record::iso_time(ms);
    // "YYYY-MM-DD HH:MM:SS+0000" -> "YYYYMMDD-HHMMSS"
    t.chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == ' ')
        .collect::<String>()
        .replace(' ', "-")
}

impl FileOut {
    fn open(&mut self, header_line: &str, now_ms: i64, set: &Settings) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // An existing file written with other columns is moved away rather than mixed.
        if let Ok(existing) = std::fs::File::open(&self.path) {
            // Only the first line matters: read at most the header's length and a newline.
            let mut first = Vec::with_capacity(header_line.len() + 1);
            Read::take(existing, header_line.len() as u64 + 1).read_to_end(&mut first)?;
            let line = first.split(|b| *b == b'\n').next().unwrap_or_default();
            if !first.is_empty() && line != header_line.trim_end().as_bytes() {
                self.move_away(now_ms, set)?;
            }
        }
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = f.metadata()?.len();
        let mut w = BufWriter::with_capacity(64 * 1024, f);
        if self.size == 0 {
            w.write_all(header_line.as_bytes())?;
            self.size = header_line.len() as u64;
        }
        self.out = Some(w);
        self.opened_ms = now_ms;
        Ok(())
    }

    /// Moves the current file to `move-to` (or beside itself) as `NAME-YYYYMMDD-HHMMSS.EXT`.
    fn move_away(&mut self, now_ms: i64, set: &Settings) -> std::io::Result<()> {
        if let Some(mut w) = self.out.take() {
            w.flush()?;
            w.get_ref().sync_data()?;
        }
        if !self.path.exists() {
            return Ok(());
        }
        let dir = set.move_to.clone().unwrap_or_else(|| {
            self.path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        });
        std::fs::create_dir_all(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &dir
        })?;
        let stem = self
            .path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("acct")
            .to_string();
        let ext = self
            .path
            .extension()
            .and_then(|s| s.to_str())
            .unwrap_or("csv")
            .to_string();
        let base = format!("{stem}-{}", stamp(now_ms));
        let mut target = dir.join(format!("{base}.{ext}"));
        let mut n = 1;
        while target.exists() {
            target = dir.join(format!("{base}-{n}.{ext}"));
            n += 1;
        }
        std::fs::rename(&self.path, &target)?;
        if let Some(keep) = set.delete_after_ms {
            delete_old(&dir, &stem, &ext, now_ms - keep);
        }
        Ok(())
    }
}

/// Removes rotated files `STEM-YYYYMMDD-HHMMSS*.EXT` in `dir` older than `cutoff_ms` (by name).
fn delete_old(dir: &Path, stem: &str, ext: &str, cutoff_ms: i64) {
    let cutoff = stamp(cutoff_ms);
    let Ok(rd) = std::fs::read_dir(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix(&format!("{stem}-"))
            .and_then(|r| r.strip_suffix(&format!(".{ext}")))
        else {
            continue;
        };
        let ts: String = rest.chars().take(15).collect();
        if ts.len() == 15 && ts.as_bytes()[8] == b'-' && ts < cutoff {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!(file = %e.path().display(), %err, "could not delete old accounting file");
            }
        }
    }
}

impl PipeOut {
    fn start(&mut self, header_line: &str) -> std::io::Result<()> {
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        stdin.write_all(header_line.as_bytes())?;
        self.child = Some((child, stdin));
        Ok(())
    }

    fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Sink {
    fn new(a: &AcctFile) -> Sink {
        let sel = FieldSelection::new(&a.records, &a.record_fields);
        let header = sel.header();
        let mut header_line = header.join(",");
        header_line.push('\n');
        let out = match &a.target {
            AcctTarget::File(p) => Out::File(FileOut {
                path: p.clone(),
                out: None,
                size: 0,
                opened_ms: 0,
            }),
            AcctTarget::Pipe(c) => Out::Pipe(PipeOut {
                command: c.clone(),
                child: None,
                dead_since_ms: None,
            }),
        };
        Sink {
            plan: sel.plan(&header),
            sel,
            header_line,
            set: Settings::from(a),
            out,
            pending: VecDeque::new(),
            failure: None,
        }
    }

    fn write(&mut self, line: String, now_ms: i64) {
        self.pending.push_back(line);
        self.drain(now_ms);
    }

    /// Writes pending lines; on failure they stay pending.
    fn drain(&mut self, now_ms: i64) {
        if self.pending.is_empty() {
            return;
        }
        let result = match &mut self.out {
            Out::File(f) => drain_file(f, &mut self.pending, &self.header_line, now_ms, &self.set),
            Out::Pipe(p) => drain_pipe(p, &mut self.pending, &self.header_line, now_ms, &self.set),
        };
        self.note(result, "accounting write failed; records kept for retry");
    }

    /// Keeps the reason of a failed write or flush until nothing is pending after a good one.
    fn note(&mut self, result: std::io::Result<()>, what: &str) {
        match result {
            Err(err) => {
                let target = self.target();
                tracing::error!(%target, %err, pending = self.pending.len(), "{what}");
                self.failure = Some(format!("{target}: {err}"));
            }
            Ok(()) if self.pending.is_empty() => self.failure = None,
            Ok(()) => {}
        }
    }

    /// The file or `|command` this sink writes to.
    fn target(&self) -> String {
        match &self.out {
            Out::File(f) => f.path.display().to_string(),
            Out::Pipe(p) => format!("|{}", p.command),
        }
    }

    fn flush(&mut self, now_ms: i64) {
        self.drain(now_ms);
        let res = match &mut self.out {
            Out::File(FileOut { out: Some(w), .. }) => w.flush().and_then(|_| {
                if self.set.sync {
                    w.get_ref().sync_data()
                } else {
                    Ok(())
                }
            }),
            Out::Pipe(PipeOut {
                child: Some((_, stdin)),
                ..
            }) => stdin.flush(),
            _ => Ok(()),
        };
        self.note(res, "accounting flush failed");
    }
}

fn drain_file(
    f: &mut FileOut,
    pending: &mut VecDeque<String>,
    header: &str,
    now_ms: i64,
    set: &Settings,
) -> std::io::Result<()> {
    while let Some(line) = pending.front() {
        let due = set
            .move_interval_ms
            .is_some_and(|iv| f.out.is_some() && now_ms - f.opened_ms >= iv);
        let full = f.out.is_some()
            && f.size + line.len() as u64 > set.max_size
            && f.size > header.len() as u64;
        if due || full {
            f.move_away(now_ms, set)?;
        }
        if f.out.is_none() {
            f.open(header, now_ms, set)?;
        }
        let Some(w) = f.out.as_mut() else { break };
        w.write_all(line.as_bytes())?;
        f.size += line.len() as u64;
        pending.pop_front();
    }
    Ok(())
}

fn drain_pipe(
    p: &mut PipeOut,
    pending: &mut VecDeque<String>,
    header: &str,
    now_ms: i64,
    set: &Settings,
) -> std::io::Result<()> {
    if let Some((child, _)) = p.child.as_mut() {
        if !matches!(child.try_wait(), Ok(None)) {
            p.stop();
            p.dead_since_ms = Some(now_ms);
        }
    }
    if p.child.is_none() {
        if p.dead_since_ms.is_some_and(|t| now_ms - t < set.retry_ms) {
            return Ok(()); // wait for retry-interval before restarting
        }
        if let Err(e) = p.start(header) {
            p.dead_since_ms = Some(now_ms);
            return Err(e);
        }
    }
    while let Some(line) = pending.front() {
        let Some((_, stdin)) = p.child.as_mut() else {
            break;
        };
        if let Err(e) = stdin.write_all(line.as_bytes()).and_then(|_| stdin.flush()) {
            // The line may have been partly taken; it is written again whole to the next process.
            p.stop();
            p.dead_since_ms = Some(now_ms);
            return Err(e);
        }
        pending.pop_front();
    }
    Ok(())
}

impl Accounting {
    /// Sets up every `<acct-file>` of a config. Files are opened on the first record.
    pub fn new(files: &[AcctFile]) -> Accounting {
        Accounting {
            sinks: Mutex::new(files.iter().map(Sink::new).collect()),
            last_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Writes `rec` to every destination that takes its type. Never fails: a destination that
    /// cannot take it now keeps it and tries again on the next record or flush.
    pub fn log(&self, rec: &Record) {
        let Some(ty) = rec.ty else { return };
        self.last_ms
            .fetch_max(rec.time_logged, std::sync::atomic::Ordering::Relaxed);
        let Ok(mut sinks) = self.sinks.lock() else {
            return;
        };
        for s in sinks.iter_mut().filter(|s| s.sel.wants(ty)) {
            let line = s.plan.line(rec, s.set.iso);
            s.write(line, rec.time_logged);
        }
    }

    /// Hands buffered file lines to the operating system (a write, no fsync), so that a record
    /// survives the process being killed. The engine calls this before it marks a recipient
    /// finished in the spool: a final record is never lost while the spool says "done".
    pub fn hand_over(&self) {
        if let Ok(mut sinks) = self.sinks.lock() {
            for s in sinks.iter_mut() {
                if let Out::File(FileOut { out: Some(w), .. }) = &mut s.out {
                    if let Err(err) = w.flush() {
                        tracing::error!(%err, "accounting write failed");
                    }
                }
            }
        }
    }

    /// Writes buffered lines out (fsyncing files with `sync yes`) and retries failed ones.
    pub fn flush(&self, now_ms: i64) {
        if let Ok(mut sinks) = self.sinks.lock() {
            for s in sinks.iter_mut() {
                s.flush(now_ms);
            }
        }
    }

    /// Lines still waiting for a destination that is down.
    pub fn pending(&self) -> usize {
        self.sinks
            .lock()
            .map(|s| s.iter().map(|s| s.pending.len()).sum())
            .unwrap_or(0)
    }

    /// The latest write failure of a destination that has not caught up since (`FILE: error`).
    pub fn failure(&self) -> Option<String> {
        let sinks = self.sinks.lock().ok()?;
        sinks.iter().find_map(|s| s.failure.clone())
    }

    /// Flushes everything and closes pipes (waiting for their programs to exit).
    pub fn close(&self, now_ms: i64) {
        self.flush(now_ms);
        if let Ok(mut sinks) = self.sinks.lock() {
            for s in sinks.iter_mut() {
                if let Out::Pipe(p) = &mut s.out {
                    p.stop();
                }
            }
        }
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        self.close(self.last_ms.load(std::sync::atomic::Ordering::Relaxed));
    }
}
