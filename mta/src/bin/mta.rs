//! `mta`: the reference MTA's command line.

use clap::{Args, Parser, Subcommand};
use mta::config::{self, render::CheckFormat, render::Format};
use mta::mgmt::cli::enc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mta",
    version,
    about = "mtasim's reference MTA (PowerMTA-compatible configuration)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file: exit 0 when valid (warnings allowed), 1 on errors, 2 on usage or I/O errors.
    CheckConfig(CheckArgs),
    /// PowerMTA's spelling: `mta test config FILE` is `mta check-config FILE`.
    Test {
        #[command(subcommand)]
        what: TestWhat,
    },
    /// Show things about a config (offline, with --config).
    Show {
        #[command(subcommand)]
        what: ShowWhat,
    },
    /// Run the MTA: listen, spool, queue and deliver until SIGTERM or SIGINT.
    Run {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Bounce handling.
    Bounce {
        #[command(subcommand)]
        what: BounceWhat,
    },
    /// DKIM keys and signatures.
    Dkim {
        #[command(subcommand)]
        what: DkimWhat,
    },
    /// Pause a queue on the running MTA (`mta pause queue gmail.com/mkt-1`; `*` allowed).
    Pause {
        #[command(subcommand)]
        what: QueueWord,
    },
    /// Resume a paused queue.
    Resume {
        #[command(subcommand)]
        what: QueueWord,
    },
    /// Change a queue: `mta set queue --mode=normal Q` is PowerMTA's "reset backoff".
    Set {
        #[command(subcommand)]
        what: SetWhat,
    },
    /// Retry now: make everything in the queue(s) due.
    Schedule {
        /// DOMAIN/VMTA, `*` allowed (`*/*` is every queue).
        queue: String,
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
    /// Delete waiting recipients by queue or job id (each gets a `b` accounting record).
    Delete {
        /// DOMAIN/VMTA, `*` allowed.
        #[arg(long)]
        queue: Option<String>,
        /// Job id (X-Job header).
        #[arg(long, alias = "jobId")]
        job: Option<String>,
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
    /// Take a source IP out of service.
    Disable {
        #[command(subcommand)]
        what: SourceWord,
    },
    /// Put a source IP back into service.
    Enable {
        #[command(subcommand)]
        what: SourceWord,
    },
    /// The suppression list of the running MTA (`suppress-after`): list, export, add, remove.
    Suppression {
        #[command(subcommand)]
        what: SuppressionWhat,
    },
    /// Reload the running MTA's config file (as SIGHUP does); an invalid file changes nothing.
    Reload {
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
    /// `mta reset counters`: zero the traffic counters.
    Reset {
        #[command(subcommand)]
        what: ResetWhat,
    },
}

/// Where the running MTA's management interface is, and how to print.
#[derive(Args, Clone)]
struct MgmtArgs {
    /// Management URL (default: from --config's http-mgmt-port, else http://127.0.0.1:8080).
    #[arg(long)]
    mgmt: Option<String>,
    /// Read http-mgmt-port from this config to find the management URL.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

impl MgmtArgs {
    fn client(&self) -> Result<mta::mgmt::cli::Client, String> {
        let key = std::env::var("MTA_API_KEY").ok();
        if let Some(u) = &self.mgmt {
            return Ok(mta::mgmt::cli::Client::new(u, key));
        }
        let mut url = "http://127.0.0.1:8080".to_string();
        if let Some(p) = &self.config {
            let loaded = config::load(p);
            if !loaded.is_valid() {
                return Err(config::render::check_report(&loaded, Format::Text));
            }
            if let Some(mut a) = mta::mgmt::listen_addr(&loaded.config)? {
                if a.ip().is_unspecified() {
                    a.set_ip(std::net::IpAddr::from([127, 0, 0, 1]));
                }
                url = format!("http://{a}");
            }
        }
        Ok(mta::mgmt::cli::Client::new(&url, key))
    }
}

#[derive(Subcommand)]
enum QueueWord {
    /// A queue: DOMAIN/VMTA, `*` allowed.
    Queue {
        /// DOMAIN/VMTA.
        queue: String,
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
}

#[derive(Subcommand)]
enum SetWhat {
    /// Set a queue's mode.
    Queue {
        /// normal or backoff.
        #[arg(long)]
        mode: String,
        /// DOMAIN/VMTA, `*` allowed.
        queue: String,
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
}

#[derive(Subcommand)]
enum SourceWord {
    /// A source IP of a vMTA.
    Source {
        /// The address.
        ip: std::net::IpAddr,
        /// (disable) Re-enable by itself after this many minutes.
        #[arg(long)]
        minutes: Option<u64>,
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
}

#[derive(Subcommand)]
enum SuppressionWhat {
    /// Every suppressed address with its reason and since when.
    List {
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
    /// The list as CSV (address,reason,detail,since) on standard output.
    Export {
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
    /// Suppress an address by hand.
    Add {
        /// The address.
        address: String,
        /// Why (kept with the entry).
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
    /// Take an address off the list.
    Remove {
        /// The address.
        address: String,
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
}

#[derive(Subcommand)]
enum ResetWhat {
    /// The traffic counters.
    Counters {
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
}

/// Runs one management request and prints its answer; exit 1 on a refusal, 2 when unreachable.
fn mgmt_call(
    mgmt: &MgmtArgs,
    post: bool,
    path: &str,
    render: impl Fn(&serde_json::Value) -> String,
) -> ExitCode {
    let client = match mgmt.client() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mta: {e}");
            return ExitCode::from(2);
        }
    };
    let res = if post {
        client.post(path)
    } else {
        client.get(path)
    };
    match res {
        Ok(v) => {
            if mgmt.format == Format::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
                );
            } else {
                print!("{}", render(&v));
            }
            ExitCode::SUCCESS
        }
        Err(e @ mta::mgmt::cli::CliError::Unreachable { .. }) => {
            eprintln!("mta: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("mta: {e}");
            ExitCode::from(1)
        }
    }
}

fn message(v: &serde_json::Value) -> String {
    format!("{}\n", v["message"].as_str().unwrap_or("done."))
}

fn top(mgmt: &MgmtArgs, iterations: Option<u64>, interval: u64) -> ExitCode {
    let client = match mgmt.client() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mta: {e}");
            return ExitCode::from(2);
        }
    };
    let mut i = 0u64;
    loop {
        let screen = client.get("/api/v1/status").and_then(|s| {
            client.get("/api/v1/queues?maxItems=20").map(|q| {
                format!(
                    "{}\n{}",
                    mta::mgmt::cli::render_status(&s),
                    mta::mgmt::cli::render_queues(&q, 20)
                )
            })
        });
        match screen {
            // Clear the screen and go home, like top.
            Ok(text) => print!("\x1b[2J\x1b[H{text}"),
            Err(e) => {
                eprintln!("mta: {e}");
                return ExitCode::from(2);
            }
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        i += 1;
        if iterations.is_some_and(|n| i >= n) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(std::time::Duration::from_secs(interval.max(1)));
    }
}

#[derive(Subcommand)]
enum BounceWhat {
    /// Print, for every recipient found in each bounce message (RFC 3464 DSN or the usual
    /// non-standard formats), file, recipient, status, diagnostic and category; or classify one
    /// SMTP reply with --reply.
    Classify {
        /// Bounce message files.
        files: Vec<PathBuf>,
        /// Classify this reply text instead (e.g. "550 5.1.1 user unknown").
        #[arg(long)]
        reply: Option<String>,
        /// Use this config's <bounce-category-patterns> in front of the built-in rules.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Say, per classification, which rule decided it: config file:line or built-in rules
        /// table line, its regex and source, or "no rule matched".
        #[arg(long)]
        explain: bool,
    },
}

fn bounce(what: BounceWhat) -> ExitCode {
    let BounceWhat::Classify {
        files,
        reply,
        config: cfg_path,
        format,
        explain,
    } = what;
    let classifier = match cfg_path {
        None => mta::bounce::Classifier::default(),
        Some(p) => {
            let loaded = config::load(&p);
            if !loaded.is_valid() {
                eprint!("{}", config::render::check_report(&loaded, Format::Text));
                return ExitCode::from(1);
            }
            match mta::bounce::Classifier::from_config(&loaded.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("mta: {e}");
                    return ExitCode::from(1);
                }
            }
        }
    };
    let opts = mta::bounce::ReportOptions {
        json: format == Format::Json,
        explain,
    };
    if let Some(r) = reply {
        print!(
            "{}",
            mta::bounce::classify_reply_report(&r, &classifier, opts)
        );
        return ExitCode::SUCCESS;
    }
    if files.is_empty() {
        eprintln!("mta: give bounce files or --reply TEXT");
        return ExitCode::from(2);
    }
    let (out, ok) = mta::bounce::classify_files_report(&files, &classifier, opts);
    print!("{out}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[derive(Subcommand)]
enum DkimWhat {
    /// Generate a private key (PKCS#8 PEM) and print the DNS TXT record to publish.
    Keygen {
        /// The signing domain (d=).
        #[arg(long)]
        domain: String,
        /// The selector (s=).
        #[arg(long)]
        selector: String,
        /// Key type.
        #[arg(long, value_enum, default_value = "rsa-2048")]
        algorithm: mta::dkim::KeyAlgorithm,
        /// Directory for the key file `DOMAIN.SELECTOR.pem` (default: current directory).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Print a message signed exactly as the MTA signs it (relaxed/relaxed, default header set).
    Sign {
        /// The private key (PEM: PKCS#1 or PKCS#8 RSA, PKCS#8 Ed25519).
        #[arg(long)]
        key: PathBuf,
        /// The signing domain (d=).
        #[arg(long)]
        domain: String,
        /// The selector (s=).
        #[arg(long)]
        selector: String,
        /// The message file, or `-` for standard input.
        #[arg(default_value = "-")]
        file: String,
    },
    /// Look every configured domain-key up in DNS and say whether the published public key
    /// matches the private key (exit 0 when all match, 1 otherwise).
    Check {
        /// The config file (its `name-server`, else the system resolver, is asked).
        #[arg(long)]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

fn dkim(what: DkimWhat) -> ExitCode {
    match what {
        DkimWhat::Check { config, format } => dkim_check(&config, format),
        DkimWhat::Keygen {
            domain,
            selector,
            algorithm,
            out,
        } => dkim_keygen(&domain, &selector, algorithm, &out),
        DkimWhat::Sign {
            key,
            domain,
            selector,
            file,
        } => dkim_sign(&key, &domain, &selector, &file),
    }
}

/// `mta dkim check`: every configured key against what DNS publishes.
fn dkim_check(path: &std::path::Path, format: Format) -> ExitCode {
    let loaded = config::load(path);
    if !loaded.is_valid() {
        eprint!("{}", config::render::check_report(&loaded, Format::Text));
        return ExitCode::from(1);
    }
    let cfg = loaded.config;
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mta: {e}");
            return ExitCode::from(2);
        }
    };
    let checks = rt.block_on(async {
        let dns: Result<mta::dns::HickoryResolver, String> = if cfg.name_servers.is_empty() {
            mta::dns::HickoryResolver::system()
        } else {
            mta::dns::HickoryResolver::with_nameservers(&cfg.name_servers)
        };
        dns.map(|d| async move { mta::dkim::check::check_config(&cfg, &d).await })
    });
    let checks = match checks {
        Ok(f) => rt.block_on(f),
        Err(e) => {
            eprintln!("mta: resolver: {e}");
            return ExitCode::from(2);
        }
    };
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&checks).unwrap_or_default()
        );
    } else if checks.is_empty() {
        println!("no domain-key in {}", path.display());
    } else {
        print!("{}", mta::dkim::check::render(&checks));
    }
    let ok = checks.iter().all(|c| {
        matches!(
            c.status,
            mta::dkim::check::KeyStatus::Match | mta::dkim::check::KeyStatus::Wildcard
        )
    });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `mta dkim keygen`: a new key file (never overwriting) and its TXT record.
fn dkim_keygen(
    domain: &str,
    selector: &str,
    algorithm: mta::dkim::KeyAlgorithm,
    out: &std::path::Path,
) -> ExitCode {
    let g = match mta::dkim::generate(algorithm) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("mta: key generation failed: {e}");
            return ExitCode::from(1);
        }
    };
    let path = out.join(format!("{domain}.{selector}.pem"));
    if path.exists() {
        eprintln!("mta: {} exists; not overwriting it", path.display());
        return ExitCode::from(2);
    }
    if let Err(e) = std::fs::create_dir_all(out).and_then(|_| std::fs::write(&path, &g.private_pem))
    {
        eprintln!("mta: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    println!("; private key written to {}", path.display());
    println!(
        "; config: domain-key {selector}, {domain}, {}",
        path.display()
    );
    println!("{}", mta::dkim::keys::zone_record(selector, domain, &g.txt));
    ExitCode::SUCCESS
}

/// `mta dkim sign`: the message signed as the MTA signs it.
fn dkim_sign(key: &std::path::Path, domain: &str, selector: &str, file: &str) -> ExitCode {
    use std::io::{Read, Write};
    let key = match mta::dkim::LoadedKey::load(key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("mta: {e}");
            return ExitCode::from(2);
        }
    };
    let mut msg = Vec::new();
    let read = if file == "-" {
        std::io::stdin().read_to_end(&mut msg).map(|_| ())
    } else {
        std::fs::read(file).map(|m| msg = m)
    };
    if let Err(e) = read {
        eprintln!("mta: cannot read {file}: {e}");
        return ExitCode::from(2);
    }
    let msg = mta::dkim::to_crlf(&msg);
    match mta::dkim::sign(
        &msg,
        &key,
        domain,
        selector,
        mta::dkim::DEFAULT_HEADERS,
        None,
    ) {
        Ok(h) => {
            let mut out = std::io::stdout().lock();
            let _ = out
                .write_all(h.as_bytes())
                .and_then(|_| out.write_all(&msg));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mta: {e}");
            ExitCode::from(1)
        }
    }
}

#[derive(Subcommand)]
enum TestWhat {
    /// Validate a config file (same as `mta check-config`).
    Config(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// The config file; `-` reads it from standard input (includes relative to the current directory).
    file: PathBuf,
    /// Output format (`github`: GitHub Actions annotations, one per diagnostic).
    #[arg(long, value_enum, default_value = "text")]
    format: CheckFormat,
    /// Checks of this machine's files (paths, programs, key and certificate files) that fail become
    /// `host-check-deferred` warnings: they will be made on the production host.
    #[arg(long)]
    no_host_checks: bool,
    /// Look for absolute paths (includes, keys, spool, accounting and log files, programs) under DIR,
    /// e.g. a checkout of the production machine's files.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ShowWhat {
    /// Every effective setting of a queue (DOMAIN/VMTA, `*` allowed in either part) and where it came from.
    Settings {
        /// The config file (offline); without it the running MTA is asked (--mgmt).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The queue, e.g. gmail.com/vmta-1, gmail.com/* or */vmta-1.
        queue: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Management URL of the running MTA (when no --config).
        #[arg(long)]
        mgmt: Option<String>,
    },
    /// Traffic, connections, queue and spool totals of the running MTA.
    Status {
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
    /// Queues of the running MTA, largest first.
    Queues {
        /// Rows to show.
        #[arg(long, default_value_t = 50)]
        max: usize,
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
    /// The largest queues (20).
    Topqueues {
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
    /// Destination domains (queues summed over vMTAs), largest first.
    Domains {
        /// Rows to show.
        #[arg(long, default_value_t = 50)]
        max: usize,
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
    /// Virtual MTAs with their queues and source IPs.
    Vmtas {
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
    /// Status and top queues, refreshed in place like `top` (Ctrl-C to stop).
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2)]
        interval: u64,
        /// Stop after this many screens (default: run until interrupted).
        #[arg(long)]
        iterations: Option<u64>,
        #[command(flatten)]
        mgmt: MgmtArgs,
    },
}

fn check(args: &CheckArgs) -> ExitCode {
    if let Some(r) = args.root.as_ref().filter(|r| !r.is_dir()) {
        eprintln!("mta: --root `{}` is not a directory", r.display());
        return ExitCode::from(2);
    }
    let host = config::HostPaths::new(args.root.clone(), args.no_host_checks);
    let loaded = if args.file.as_os_str() == "-" {
        let mut text = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
            eprintln!("mta: cannot read the config from standard input: {e}");
            return ExitCode::from(2);
        }
        config::check_text("<stdin>", &text, &host)
    } else if !args.file.is_file() {
        eprintln!(
            "mta: cannot read config file `{}`: not found or not a file",
            args.file.display()
        );
        return ExitCode::from(2);
    } else {
        config::check_file(&args.file, &host)
    };
    print!("{}", config::render::check_report(&loaded, args.format));
    if loaded.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The config's `log-file`, opened for appending (created if missing); `None` without one or when
/// the config does not parse (`mta run` reports that itself).
fn open_log_file(config: &std::path::Path) -> Result<Option<std::fs::File>, String> {
    let loaded = config::load_with(config, &config::syntax::DiskFiles, false);
    let Some((path, span)) = config::host::log_file(&loaded.config) else {
        return Ok(None);
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map(Some)
        .map_err(|e| format!("{span}: log-file `{}`: {e}", path.display()))
}

/// Logs go to stderr and, with `log-file`, to that file too (without colours).
fn init_logging(file: Option<std::fs::File>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let to_file = file.map(|f| {
        tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(to_file)
        .init();
}

fn run(config: &std::path::Path) -> ExitCode {
    if !config.is_file() {
        init_logging(None);
        eprintln!(
            "mta: cannot read config file `{}`: not found or not a file",
            config.display()
        );
        return ExitCode::from(2);
    }
    match open_log_file(config) {
        Ok(f) => init_logging(f),
        Err(e) => {
            eprintln!("mta: {e}");
            return ExitCode::from(1);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mta: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        let stop = async {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        mta::run::run(config, stop).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mta: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(a)
        | Command::Test {
            what: TestWhat::Config(a),
        } => check(&a),
        Command::Dkim { what } => dkim(what),
        Command::Bounce { what } => bounce(what),
        Command::Run { config } => run(&config),
        Command::Show { what } => show(what),
        Command::Pause {
            what: QueueWord::Queue { queue, mgmt },
        } => mgmt_call(
            &mgmt,
            true,
            &format!("/api/v1/queues/pause?queue={}", enc(&queue)),
            message,
        ),
        Command::Resume {
            what: QueueWord::Queue { queue, mgmt },
        } => mgmt_call(
            &mgmt,
            true,
            &format!("/api/v1/queues/resume?queue={}", enc(&queue)),
            message,
        ),
        Command::Set {
            what: SetWhat::Queue { mode, queue, mgmt },
        } => mgmt_call(
            &mgmt,
            true,
            &format!(
                "/api/v1/queues/mode?queue={}&mode={}",
                enc(&queue),
                enc(&mode)
            ),
            message,
        ),
        Command::Schedule { queue, mgmt } => mgmt_call(
            &mgmt,
            true,
            &format!("/api/v1/queues/schedule?queue={}", enc(&queue)),
            message,
        ),
        Command::Delete { queue, job, mgmt } => {
            let mut q = Vec::new();
            if let Some(x) = &queue {
                q.push(format!("queue={}", enc(x)));
            }
            if let Some(j) = &job {
                q.push(format!("job={}", enc(j)));
            }
            if q.is_empty() {
                eprintln!("mta: delete needs --queue=DOMAIN/VMTA or --job=ID");
                return ExitCode::from(2);
            }
            mgmt_call(
                &mgmt,
                true,
                &format!("/api/v1/queues/delete?{}", q.join("&")),
                message,
            )
        }
        Command::Disable {
            what: SourceWord::Source { ip, minutes, mgmt },
        } => mgmt_call(
            &mgmt,
            true,
            &format!(
                "/api/v1/source-ips/disable?ip={ip}{}",
                minutes.map(|m| format!("&minutes={m}")).unwrap_or_default()
            ),
            message,
        ),
        Command::Enable {
            what: SourceWord::Source { ip, mgmt, .. },
        } => mgmt_call(
            &mgmt,
            true,
            &format!("/api/v1/source-ips/enable?ip={ip}"),
            message,
        ),
        Command::Reset {
            what: ResetWhat::Counters { mgmt },
        } => mgmt_call(&mgmt, true, "/api/v1/counters/reset", message),
        Command::Suppression { what } => match what {
            SuppressionWhat::List { mgmt } => mgmt_call(&mgmt, false, "/api/v1/suppression", |v| {
                mta::mgmt::cli::render_suppression(v, false)
            }),
            SuppressionWhat::Export { mgmt } => {
                mgmt_call(&mgmt, false, "/api/v1/suppression", |v| {
                    mta::mgmt::cli::render_suppression(v, true)
                })
            }
            SuppressionWhat::Add {
                address,
                note,
                mgmt,
            } => mgmt_call(
                &mgmt,
                true,
                &format!(
                    "/api/v1/suppression/add?address={}{}",
                    enc(&address),
                    note.map(|n| format!("&note={}", enc(&n)))
                        .unwrap_or_default()
                ),
                message,
            ),
            SuppressionWhat::Remove { address, mgmt } => mgmt_call(
                &mgmt,
                true,
                &format!("/api/v1/suppression/remove?address={}", enc(&address)),
                message,
            ),
        },
        Command::Reload { mgmt } => mgmt_call(&mgmt, true, "/api/v1/reload", |v| {
            let mut out = message(v);
            for n in v["notes"].as_array().into_iter().flatten() {
                out.push_str(&format!("note: {}\n", n.as_str().unwrap_or("")));
            }
            out
        }),
    }
}

fn show(what: ShowWhat) -> ExitCode {
    use mta::mgmt::cli::{render_domains, render_queues, render_status, render_vmtas};
    match what {
        ShowWhat::Status { mgmt } => mgmt_call(&mgmt, false, "/api/v1/status", render_status),
        ShowWhat::Queues { max, mgmt } => {
            mgmt_call(&mgmt, false, "/api/v1/queues", |v| render_queues(v, max))
        }
        ShowWhat::Topqueues { mgmt } => {
            mgmt_call(&mgmt, false, "/api/v1/queues", |v| render_queues(v, 20))
        }
        ShowWhat::Domains { max, mgmt } => {
            mgmt_call(&mgmt, false, "/api/v1/domains", |v| render_domains(v, max))
        }
        ShowWhat::Vmtas { mgmt } => mgmt_call(&mgmt, false, "/api/v1/vmtas", render_vmtas),
        ShowWhat::Top {
            interval,
            iterations,
            mgmt,
        } => top(&mgmt, iterations, interval),
        ShowWhat::Settings {
            config: None,
            queue,
            format,
            mgmt,
        } => {
            let m = MgmtArgs {
                mgmt,
                config: None,
                format,
            };
            mgmt_call(
                &m,
                false,
                &format!("/api/v1/queueDetail?queue={}", enc(&queue)),
                mta::mgmt::cli::render_settings,
            )
        }
        ShowWhat::Settings {
            config: Some(path),
            queue,
            format,
            ..
        } => {
            if !path.is_file() {
                eprintln!(
                    "mta: cannot read config file `{}`: not found or not a file",
                    path.display()
                );
                return ExitCode::from(2);
            }
            let loaded = config::load(&path);
            if !loaded.is_valid() {
                eprint!("{}", config::render::check_report(&loaded, Format::Text));
                return ExitCode::from(1);
            }
            match config::render::settings_report(&loaded.config, &queue, format) {
                Ok(s) => {
                    print!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("mta: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
