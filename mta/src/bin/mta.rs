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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(a)
        | Command::Test {
            what: TestWhat::Config(a),
        } => check(&a),
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
