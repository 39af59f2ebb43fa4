//! `mta`: the reference MTA's command line.

use clap::{Args, Parser, Subcommand};
use mta::config::{self, render::Format};
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
    },
}

fn bounce(what: BounceWhat) -> ExitCode {
    let BounceWhat::Classify {
        files,
        reply,
        config: cfg_path,
        format,
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
    let json = format == Format::Json;
    if let Some(r) = reply {
        print!(
            "{}",
            mta::bounce::classify_reply_report(&r, &classifier, json)
        );
        return ExitCode::SUCCESS;
    }
    if files.is_empty() {
        eprintln!("mta: give bounce files or --reply TEXT");
        return ExitCode::from(2);
    }
    let (out, ok) = mta::bounce::classify_files_report(&files, &classifier, json);
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
}

fn dkim(what: DkimWhat) -> ExitCode {
    use std::io::{Read, Write};
    match what {
        DkimWhat::Keygen {
            domain,
            selector,
            algorithm,
            out,
        } => {
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
            if let Err(e) =
                std::fs::create_dir_all(&out).and_then(|_| std::fs::write(&path, &g.private_pem))
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
            println!(
                "{}",
                mta::dkim::keys::zone_record(&selector, &domain, &g.txt)
            );
            ExitCode::SUCCESS
        }
        DkimWhat::Sign {
            key,
            domain,
            selector,
            file,
        } => {
            let key = match mta::dkim::LoadedKey::load(&key) {
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
                std::fs::read(&file).map(|m| msg = m)
            };
            if let Err(e) = read {
                eprintln!("mta: cannot read {file}: {e}");
                return ExitCode::from(2);
            }
            let msg = mta::dkim::to_crlf(&msg);
            match mta::dkim::sign(
                &msg,
                &key,
                &domain,
                &selector,
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
    }
}

#[derive(Subcommand)]
enum TestWhat {
    /// Validate a config file (same as `mta check-config`).
    Config(CheckArgs),
}

#[derive(Args)]
struct CheckArgs {
    /// The config file.
    file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Subcommand)]
enum ShowWhat {
    /// Every effective setting of a queue (DOMAIN/VMTA, `*` allowed in either part) and where it came from.
    Settings {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
        /// The queue, e.g. gmail.com/vmta-1, gmail.com/* or */vmta-1.
        queue: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

fn check(args: &CheckArgs) -> ExitCode {
    if !args.file.is_file() {
        eprintln!(
            "mta: cannot read config file `{}`: not found or not a file",
            args.file.display()
        );
        return ExitCode::from(2);
    }
    let loaded = config::load(&args.file);
    print!("{}", config::render::check_report(&loaded, args.format));
    if loaded.is_valid() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run(config: &std::path::Path) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if !config.is_file() {
        eprintln!(
            "mta: cannot read config file `{}`: not found or not a file",
            config.display()
        );
        return ExitCode::from(2);
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
        Command::Show {
            what:
                ShowWhat::Settings {
                    config: path,
                    queue,
                    format,
                },
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
