//! A private Postfix instance with stock settings, for comparisons against the live world
//! (`crate::side_by_side`). Everything lives in one directory of its own: `conf/` (`main.cf`,
//! `master.cf`, the transport table), `queue/`, `data/` and `maillog` (written by postlogd, so no
//! syslog is needed). It runs as `postfix -c DIR/conf start` as root; neither `/etc/postfix` nor
//! the system instance is touched (a non-default config directory needs registering in the
//! default `main.cf` only for the set-gid commands, postdrop and postqueue, which are not used:
//! mail comes in over SMTP).
//!
//! Settings beyond Postfix's defaults, each needed to run beside the world and nothing more:
//! the instance's own directories, `compatibility_level = 3.6` (what Debian's stock `main.cf`
//! sets), IPv4 only, `myhostname` (the host name the world publishes for its sending address),
//! `mynetworks` = loopback, `mydestination` empty, `smtp_bind_address`, no chroot (the master.cf
//! column), smtpd on a loopback address and port of its own, and `transport_maps` sending each
//! provider's domains to the world's MX addresses (a list of `[ip]:port` next hops, Postfix 3.5+)
//! and everything else to `discard:` (so bounces to the sending domain never leave loopback).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `postfix` command.
pub const POSTFIX: &str = "/usr/sbin/postfix";

/// What can go wrong with the instance.
#[derive(Debug, thiserror::Error)]
pub enum PostfixError {
    /// Postfix is not installed.
    #[error("Postfix is not installed ({POSTFIX} missing; Debian: apt-get install postfix with debconf postfix/main_mailer_type 'No configuration')")]
    Missing,
    /// Postfix is started as root only.
    #[error(
        "starting a Postfix instance needs root (its master binds and drops to the postfix user)"
    )]
    NotRoot,
    /// A file or directory could not be made.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A command failed; `log` is the end of the instance's maillog.
    #[error("`{command}` failed ({status}): {output}\n{log}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Its output.
        output: String,
        /// The last lines of the maillog.
        log: String,
    },
    /// The instance did not come up.
    #[error("Postfix did not start listening on {addr}: {log}")]
    NotListening {
        /// Its smtpd address.
        addr: SocketAddr,
        /// The last lines of the maillog.
        log: String,
    },
}

/// Checks that Postfix can be run here: installed, and we are root.
pub fn available() -> Result<(), PostfixError> {
    if !Path::new(POSTFIX).is_file() {
        return Err(PostfixError::Missing);
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match uid.as_deref() {
        Ok("0") => Ok(()),
        _ => Err(PostfixError::NotRoot),
    }
}

/// Where a domain's mail goes: the world's MX addresses of its provider, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The recipient domain.
    pub domain: String,
    /// Next hops, tried in order.
    pub hops: Vec<SocketAddr>,
}

/// How the instance is set up.
#[derive(Debug, Clone)]
pub struct PostfixConfig {
    /// smtpd's address (loopback).
    pub listen: SocketAddr,
    /// The address the smtp client sends from.
    pub bind_ip: IpAddr,
    /// `myhostname`.
    pub host_name: String,
    /// The transport table.
    pub routes: Vec<Route>,
}

/// `main.cf`: the instance's directories and the settings above, all else Postfix's defaults.
pub fn main_cf(dir: &Path, c: &PostfixConfig) -> String {
    let d = dir.display();
    format!(
        "# A private instance for mtasim's side-by-side comparison: stock settings but for these.\n\
         compatibility_level = 3.6\n\
         queue_directory = {d}/queue\n\
         data_directory = {d}/data\n\
         maillog_file = {d}/maillog\n\
         maillog_file_prefixes = {d}\n\
         inet_interfaces = loopback-only\n\
         inet_protocols = ipv4\n\
         myhostname = {host}\n\
         mynetworks = 127.0.0.0/8\n\
         mydestination =\n\
         smtp_bind_address = {bind}\n\
         transport_maps = texthash:{d}/conf/transport\n",
        host = c.host_name,
        bind = c.bind_ip,
    )
}

/// `master.cf`: Debian's stock services with chroot off, smtpd on `listen`, and postlogd.
pub fn master_cf(listen: SocketAddr) -> String {
    let mut o = format!("{listen} inet n - n - - smtpd\n");
    for line in [
        "pickup unix n - n 60 1 pickup",
        "cleanup unix n - n - 0 cleanup",
        "qmgr unix n - n 300 1 qmgr",
        "tlsmgr unix - - n 1000? 1 tlsmgr",
        "rewrite unix - - n - - trivial-rewrite",
        "bounce unix - - n - 0 bounce",
        "defer unix - - n - 0 bounce",
        "trace unix - - n - 0 bounce",
        "verify unix - - n - 1 verify",
        "flush unix n - n 1000? 0 flush",
        "proxymap unix - - n - - proxymap",
        "proxywrite unix - - n - 1 proxymap",
        "smtp unix - - n - - smtp",
        "relay unix - - n - - smtp",
        "showq unix n - n - - showq",
        "error unix - - n - - error",
        "retry unix - - n - - error",
        "discard unix - - n - - discard",
        "local unix - n n - - local",
        "virtual unix - n n - - virtual",
        "lmtp unix - - n - - lmtp",
        "anvil unix - - n - 1 anvil",
        "scache unix - - n - 1 scache",
        "postlog unix-dgram n - n - 1 postlogd",
    ] {
        o.push_str(line);
        o.push('\n');
    }
    o
}

/// The transport table: each route to its list of `[ip]:port` next hops, the rest discarded.
pub fn transport(routes: &[Route]) -> String {
    let mut o = String::new();
    for r in routes {
        let hops: Vec<String> = r
            .hops
            .iter()
            .map(|h| format!("[{}]:{}", h.ip(), h.port()))
            .collect();
        let _ = writeln!(o, "{} smtp:{}", r.domain, hops.join(", "));
    }
    o.push_str("* discard:not in the simulated world\n");
    o
}

/// What the maillog says about deliveries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogCounts {
    /// `status=sent` lines.
    pub sent: u64,
    /// `status=deferred` lines.
    pub deferred: u64,
    /// `status=bounced` lines.
    pub bounced: u64,
}

/// Counts the delivery status lines of a maillog.
pub fn count_log(text: &str) -> LogCounts {
    let mut c = LogCounts::default();
    // Only deliveries to a next hop: `relay=none` are the discarded DSNs to the sending domain.
    for l in text
        .lines()
        .filter(|l| l.contains(" relay=") && !l.contains(" relay=none"))
    {
        if l.contains(" status=sent") {
            c.sent += 1;
        } else if l.contains(" status=deferred") {
            c.deferred += 1;
        } else if l.contains(" status=bounced") {
            c.bounced += 1;
        }
    }
    c
}

/// A running instance; stopped (its master killed if need be) when dropped.
pub struct Postfix {
    dir: PathBuf,
    listen: SocketAddr,
    running: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PostfixError + '_ {
    move |source| PostfixError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: &Path, text: &str) -> Result<(), PostfixError> {
    std::fs::write(path, text).map_err(io(path))
}

/// Runs a command; a failure carries its output and the end of `maillog`.
fn run(cmd: &mut Command, maillog: &Path) -> Result<Output, PostfixError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| PostfixError::Io {
        path: PathBuf::from(POSTFIX),
        source,
    })?;
    if out.status.success() {
        return Ok(out);
    }
    Err(PostfixError::Command {
        command,
        status: out.status.to_string(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        log: log_tail(maillog),
    })
}

/// The last lines of a maillog.
fn log_tail(maillog: &Path) -> String {
    let text = std::fs::read_to_string(maillog).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl Postfix {
    /// Sets up `dir` (made if missing; it must be reachable by the `postfix` user, so it and its
    /// parents get mode 0755 where they are ours) and starts the instance, waiting until smtpd
    /// accepts connections.
    pub fn start(dir: &Path, c: &PostfixConfig) -> Result<Postfix, PostfixError> {
        available()?;
        let dir = std::path::absolute(dir).map_err(io(dir))?;
        for sub in ["conf", "queue", "data"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(io(&p))?;
        }
        open_up(&dir)?;
        let conf = dir.join("conf");
        write(&conf.join("main.cf"), &main_cf(&dir, c))?;
        write(&conf.join("master.cf"), &master_cf(c.listen))?;
        write(&conf.join("transport"), &transport(&c.routes))?;
        let maillog = dir.join("maillog");
        run(
            Command::new("chown").arg("postfix").arg(dir.join("data")),
            &maillog,
        )?;
        let pf = Postfix {
            dir,
            listen: c.listen,
            // For Drop: a start that fails half-way may leave a master behind.
            running: true,
        };
        run(&mut pf.command("start"), &maillog)?;
        pf.wait_listening(Duration::from_secs(20))?;
        Ok(pf)
    }

    fn command(&self, what: &str) -> Command {
        let mut cmd = Command::new(POSTFIX);
        cmd.arg("-c").arg(self.dir.join("conf")).arg(what);
        cmd
    }

    fn wait_listening(&self, limit: Duration) -> Result<(), PostfixError> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if std::net::TcpStream::connect_timeout(&self.listen, Duration::from_millis(200))
                .is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(PostfixError::NotListening {
            addr: self.listen,
            log: log_tail(&self.maillog()),
        })
    }

    /// Where smtpd listens.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The maillog.
    pub fn maillog(&self) -> PathBuf {
        self.dir.join("maillog")
    }

    /// The maillog's delivery counts so far.
    pub fn log_counts(&self) -> LogCounts {
        count_log(&std::fs::read_to_string(self.maillog()).unwrap_or_default())
    }

    fn master_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("queue/pid/master.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// `postfix stop`; the master is killed if it is still there a few seconds later.
    pub fn stop(mut self) -> Result<(), PostfixError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), PostfixError> {
        if !std::mem::replace(&mut self.running, false) {
            return Ok(());
        }
        let pid = self.master_pid();
        let stopped = run(&mut self.command("stop"), &self.maillog());
        if let Some(pid) = pid {
            kill_waiting(pid, Duration::from_secs(5));
        }
        stopped.map(|_| ())
    }
}

/// Gives `dir` and its parent mode 0755 if they are closed (a temp dir is 0700), so the `postfix`
/// user (the queue's owner) can reach the queue and data directories; a closed directory further
/// up is an error rather than opened.
fn open_up(dir: &Path) -> Result<(), PostfixError> {
    use std::os::unix::fs::PermissionsExt as _;
    for (i, d) in dir.ancestors().enumerate() {
        let m = std::fs::metadata(d).map_err(io(d))?;
        if m.permissions().mode() & 0o005 == 0o005 {
            continue;
        }
        if i > 1 {
            return Err(PostfixError::Io {
                path: d.to_path_buf(),
                source: std::io::Error::other(
                    "the postfix user cannot enter it: pick another directory",
                ),
            });
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).map_err(io(d))?;
    }
    Ok(())
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

/// Waits up to `grace` for `pid` to exit, then sends it SIGKILL.
fn kill_waiting(pid: u32, grace: Duration) {
    let until = Instant::now() + grace;
    while Instant::now() < until && alive(pid) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        // A failed run: the master first (it takes its children down), no waiting for queues.
        if let Some(pid) = self.master_pid() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
            kill_waiting(pid, Duration::from_secs(3));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_lists_next_hops_and_discards_the_rest() {
        let t = transport(&[Route {
            domain: "gmail.com".into(),
            hops: vec![
                "127.100.1.1:2525".parse().unwrap_or_else(|e| panic!("{e}")),
                "127.100.2.1:2525".parse().unwrap_or_else(|e| panic!("{e}")),
            ],
        }]);
        assert_eq!(
            t,
            "gmail.com smtp:[127.100.1.1]:2525, [127.100.2.1]:2525\n* discard:not in the simulated world\n"
        );
    }

    #[test]
    fn maillog_status_lines_are_counted() {
        let log = "x postfix/smtp[1]: A: to=<a@gmail.com>, relay=127.100.1.1[127.100.1.1]:2525, delay=1, status=sent (250 ok)\n\
                   x postfix/smtp[1]: B: to=<b@yahoo.com>, relay=127.101.1.1[127.101.1.1]:2525, delay=1, status=deferred (host said 421)\n\
                   x postfix/smtp[1]: C: to=<c@yahoo.com>, relay=127.101.1.1[127.101.1.1]:2525, delay=1, status=bounced (554)\n\
                   x postfix/qmgr[1]: D: from=<n@x>, status=expired, returned to sender\n";
        assert_eq!(
            count_log(log),
            LogCounts {
                sent: 1,
                deferred: 1,
                bounced: 1
            }
        );
    }
}
