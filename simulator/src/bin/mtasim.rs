//! `mtasim`: runs scenarios against the reference MTA in a simulated internet.

use clap::{Parser, Subcommand};
use simulator::scenario::Loaded;
use simulator::sim::{run, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc instead of the system allocator: a simulated run allocates and frees small buffers
/// for every command, reply and record (about a fifth of its time in glibc's malloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "mtasim",
    version,
    about = "Replays mailbox-provider scenarios against the reference MTA"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios (default: the demo scenario scenarios/yahoo-tss04-storm.toml); exit 0 only if
    /// every expectation holds.
    Run {
        /// Scenario files.
        scenarios: Vec<PathBuf>,
        /// Seed (overrides the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Live mode: the MTA (`mta run`, found beside mtasim or at $MTASIM_MTA_BIN) as its own
        /// process, the providers and a DNS server on loopback, real TCP, real time; the
        /// scenario's `live_scale` shortens its durations.
        #[arg(long)]
        live: bool,
        /// Use this MTA config instead of the scenario's.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where reports go (reports/<scenario>/ below it).
        #[arg(long, default_value = "reports")]
        report: PathBuf,
        /// Multiply every stream's message count by this (e.g. 0.01 for a quick run).
        #[arg(long, default_value_t = 1.0)]
        volume: f64,
        /// Providers do not offer STARTTLS (for throughput benchmarks: the world's and the MTA's
        /// TLS handshakes are then not measured; TLS requirements of profiles fail as they would).
        #[arg(long)]
        no_tls: bool,
        /// The MTA does not sign and the providers take every message as DKIM-signed and aligned
        /// (for throughput benchmarks without the signing cost; simulated runs only).
        #[arg(long)]
        no_dkim: bool,
        #[command(flatten)]
        roles: RoleArgs,
    },
    /// Validate a config: run the incident suite (every scenario in --suite, or the scenarios
    /// given) against it, binding each scenario's roles to the config; print the findings, one
    /// row per scenario, and exit 0 only if every scenario held.
    Validate(ValidateArgs),
    /// Throughput benchmark: one scenario in simulated mode (default: mixed-production at full
    /// volume), without STARTTLS and DKIM unless asked; prints simulated messages per wall-second
    /// and peak memory, and writes them to reports/<scenario>/bench.json.
    Bench {
        /// Scenario file [default: scenarios/mixed-production.toml].
        scenario: Option<PathBuf>,
        /// Multiply every stream's message count by this.
        #[arg(long, default_value_t = 1.0)]
        volume: f64,
        /// Seed (overrides the scenario's).
        #[arg(long)]
        seed: Option<u64>,
        /// Use this MTA config instead of the scenario's.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where reports go (reports/<scenario>/ below it).
        #[arg(long, default_value = "reports")]
        report: PathBuf,
        /// Providers offer STARTTLS and the MTA uses it (measures the handshakes).
        #[arg(long)]
        tls: bool,
        /// The MTA signs as its config says and the providers verify (measures DKIM).
        #[arg(long)]
        dkim: bool,
    },
    /// The simulated internet, live: DNS server and fake providers on loopback for any MTA.
    World {
        #[command(subcommand)]
        what: WorldWhat,
    },
}

#[derive(Subcommand)]
enum WorldWhat {
    /// Start the DNS server and every provider; print their addresses and what the sending side
    /// publishes; serve until Ctrl-C or SIGTERM, then print totals per provider and per sending IP.
    Up(WorldUp),
}

/// How a scenario's roles bind to the config under test.
#[derive(clap::Args, Debug, Clone, Default)]
struct RoleArgs {
    /// Bind a role explicitly: `vmta:SCENARIO-NAME=CONFIG-NAME` (a vMTA or pool),
    /// `sender:SCENARIO-DOMAIN=CONFIG-DOMAIN` or `return-path:SCENARIO-DOMAIN=CONFIG-DOMAIN`
    /// (repeatable).
    #[arg(long = "map", value_name = "KIND:FROM=TO")]
    maps: Vec<simulator::bind::RoleMap>,
    /// Bindings from a TOML file: `[vmta]`, `[sender]` and `[return-path]` tables of
    /// `"from" = "to"`.
    #[arg(long, value_name = "FILE")]
    map_file: Option<PathBuf>,
    /// Look for the config's absolute paths (includes, DKIM keys) under this directory, e.g. a
    /// checkout of the production host's /etc/pmta (simulated runs).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

impl RoleArgs {
    /// Every binding, the file's first, then `--map`s (later ones win).
    fn resolve(&self) -> Result<Vec<simulator::bind::RoleMap>, String> {
        let mut v = match &self.map_file {
            Some(f) => simulator::bind::read_map_file(f)?,
            None => Vec::new(),
        };
        v.extend(self.maps.iter().cloned());
        v.reverse();
        Ok(v)
    }
}

/// `mtasim world up`'s flags.
#[derive(clap::Args)]
struct WorldUp {
    /// Provider profiles.
    #[arg(long, default_value = "isp-profiles")]
    profiles: PathBuf,
    /// An MTA config whose sending addresses (A, PTR, SPF) and DKIM keys go into DNS; addresses
    /// outside loopback that are not this machine's are mapped onto 127.2.x.y.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A sending domain (SPF, DKIM, DMARC), for an MTA without a PowerMTA config (repeatable).
    #[arg(long = "sender-domain", value_name = "DOMAIN")]
    sender_domains: Vec<String>,
    /// A sending address with its host name (A + PTR; default mail-N.<first sender domain>), in
    /// 127.0.0.0/8 or a documentation range (mapped onto 127.2.x.y) (repeatable; default 127.0.0.1
    /// when sender domains are given).
    #[arg(long = "sender-ip", value_name = "IP[=HOSTNAME]")]
    sender_ips: Vec<simulator::world_auth::SenderIp>,
    /// A DKIM private key to publish (repeatable); a sender domain without one gets a generated key.
    #[arg(long = "dkim-key", value_name = "SELECTOR:DOMAIN:PATH")]
    dkim_keys: Vec<simulator::world_auth::DkimKeyArg>,
    /// Where generated keys are written (and found again on the next start).
    #[arg(long, default_value = "world-keys")]
    key_dir: PathBuf,
    /// The type of generated keys.
    #[arg(long, value_enum, default_value = "rsa-2048")]
    key_type: mta::dkim::KeyAlgorithm,
    /// The selector of generated keys.
    #[arg(long, default_value = "mtasim")]
    dkim_selector: String,
    /// The DMARC policy published for the sending domains.
    #[arg(long, value_enum, default_value = "none")]
    dmarc_policy: simulator::world_auth::DmarcPolicy,
    /// DNS server address.
    #[arg(long, default_value = "127.0.0.1:5353")]
    dns: std::net::SocketAddr,
    /// Port of every MX host (default: 25 if it can be bound, else 2525).
    #[arg(long)]
    smtp_port: Option<u16>,
    /// The MTA's inbound listener, where providers send late DSNs and ARF complaints.
    #[arg(long)]
    mta: Option<std::net::SocketAddr>,
    /// text: for people; json: a readiness line on stderr at start, one JSON document
    /// ({"world": ..., "totals": ...}) on stdout at the end.
    #[arg(long, default_value = "text")]
    format: String,
}

fn world_up(a: WorldUp) -> ExitCode {
    if a.format != "text" && a.format != "json" {
        eprintln!("mtasim: --format is text or json");
        return ExitCode::from(2);
    }
    let json = a.format == "json";
    let opts = simulator::world::WorldOptions {
        profiles: a.profiles,
        config: a.config,
        dns: a.dns,
        smtp_port: a.smtp_port.unwrap_or(0),
        mta: a.mta,
        senders: simulator::world_auth::SenderOptions {
            domains: a.sender_domains,
            ips: a.sender_ips,
            dkim_keys: a.dkim_keys,
            dmarc_policy: a.dmarc_policy,
            key_dir: a.key_dir,
            key_type: a.key_type,
            selector: a.dkim_selector,
        },
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mtasim: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let world = match simulator::world::World::start(&opts).await {
            Ok(w) => w,
            Err(e) => {
                eprintln!("mtasim: {e}");
                return ExitCode::from(1);
            }
        };
        use std::io::Write as _;
        use tokio::signal::unix::{signal, SignalKind};
        // Signal handlers first, so that a SIGTERM right after the readiness line is caught.
        let signals = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        if json {
            eprintln!(
                "{}",
                serde_json::json!({ "ready": true, "dns": world.dns.addr().to_string() })
            );
            let _ = std::io::stderr().flush();
        } else {
            print!("{}", world.describe());
            println!("Serving until Ctrl-C or SIGTERM.");
            let _ = std::io::stdout().flush();
        }
        match signals {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! {
                    _ = t.recv() => {}
                    _ = i.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        let totals = world.all_totals();
        if json {
            println!("{}", world.final_json(&totals));
        } else {
            print!("{}", world.describe_totals(&totals));
        }
        let _ = std::io::stdout().flush();
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(Command::World {
        what: WorldWhat::Up(a),
    }) = cli.command
    {
        return world_up(a);
    }
    if let Some(Command::Bench {
        scenario,
        volume,
        seed,
        config,
        report,
        tls,
        dkim,
    }) = cli.command
    {
        let opts = RunOptions {
            seed,
            volume,
            config,
            report_dir: report,
            no_tls: !tls,
            no_dkim: !dkim,
            maps: Vec::new(),
            root: None,
        };
        let path = scenario.unwrap_or_else(|| PathBuf::from("scenarios/mixed-production.toml"));
        return bench(&path, &opts);
    }
    if let Some(Command::Validate(a)) = cli.command {
        return validate(a);
    }
    match cli.command {
        Some(Command::Run {
            scenarios,
            seed,
            live,
            config,
            report,
            volume,
            no_tls,
            no_dkim,
            roles,
        }) => {
            let maps = match roles.resolve() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("mtasim: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = RunOptions {
                seed,
                volume,
                config,
                report_dir: report,
                no_tls,
                no_dkim,
                maps,
                root: roles.root.clone(),
            };
            run_scenarios(scenarios, live, &opts)
        }
        _ => run_scenarios(Vec::new(), false, &RunOptions::default()),
    }
}

/// `mtasim run`: each scenario's totals, findings and failed expectations.
fn run_scenarios(scenarios: Vec<PathBuf>, live: bool, opts: &RunOptions) -> ExitCode {
    let live = if live {
        match simulator::live::LiveOptions::find_mta() {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("mtasim: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    if let Err(code) = check_volume(opts.volume) {
        return code;
    }
    let scenarios = if scenarios.is_empty() {
        vec![PathBuf::from("scenarios/yahoo-tss04-storm.toml")]
    } else {
        scenarios
    };
    let mut all_ok = true;
    println!(
        "{:<22} {:>8} {:>9} {:>8} {:>8} {:>9}  result",
        "scenario", "accepted", "delivered", "bounced", "expired", "deferrals"
    );
    for path in scenarios {
        let loaded = match Loaded::load_with(&path, opts.config.as_deref()) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mtasim: {e}");
                return ExitCode::from(2);
            }
        };
        let started = std::time::Instant::now();
        let result = match &live {
            Some(lo) => simulator::sim::run_live(&loaded, opts, lo),
            None => run(&loaded, opts),
        };
        match result {
            Ok(r) => {
                let t = &r.totals;
                println!(
                    "{:<22} {:>8} {:>9} {:>8} {:>8} {:>9}  {} ({} of {} expectations, {:.1}s wall)",
                    r.scenario,
                    t.accepted,
                    t.delivered,
                    t.bounced,
                    t.expired,
                    t.deferrals,
                    if r.passed { "PASSED" } else { "FAILED" },
                    r.verdicts.iter().filter(|v| v.passed).count(),
                    r.verdicts.len(),
                    started.elapsed().as_secs_f64()
                );
                for f in &r.findings {
                    println!("    finding: {f}");
                }
                for n in r.notes.iter().skip(1) {
                    println!("    note: {n}");
                }
                for v in r.verdicts.iter().filter(|v| !v.passed) {
                    println!(
                        "    {} {}: expected {}, observed {} ({})",
                        if v.exercised {
                            "FAILED"
                        } else {
                            "NOT EXERCISED"
                        },
                        v.expectation,
                        v.expected,
                        v.observed,
                        v.location
                    );
                }
                println!(
                    "    report: {}",
                    opts.report_dir
                        .join(&r.scenario)
                        .join("report.html")
                        .display()
                );
                all_ok &= r.passed;
            }
            Err(e) => {
                eprintln!("mtasim: {}: {e}", path.display());
                all_ok = false;
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `mtasim validate`'s arguments.
#[derive(clap::Args)]
struct ValidateArgs {
    /// The MTA config under test.
    #[arg(long)]
    config: PathBuf,
    /// Scenario files (default: every *.toml in --suite that is part of the suite, i.e. does
    /// not say `suite = false`).
    scenarios: Vec<PathBuf>,
    /// The suite's directory.
    #[arg(long, default_value = "scenarios")]
    suite: PathBuf,
    #[command(flatten)]
    roles: RoleArgs,
    /// Multiply every stream's message count by this; count thresholds scale with it.
    #[arg(long, default_value_t = 1.0)]
    volume: f64,
    /// Seed (overrides each scenario's).
    #[arg(long)]
    seed: Option<u64>,
    /// Where reports go (one directory per scenario below it).
    #[arg(long, default_value = "reports/validate")]
    report: PathBuf,
    /// Also write JUnit XML here (one test suite per scenario, a test case per expectation).
    #[arg(long)]
    junit: Option<PathBuf>,
}

/// `mtasim validate`: the suite against one config.
fn validate(a: ValidateArgs) -> ExitCode {
    if let Err(code) = check_volume(a.volume) {
        return code;
    }
    let maps = match a.roles.resolve() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("mtasim: {e}");
            return ExitCode::from(2);
        }
    };
    if !a.config.is_file() {
        eprintln!("mtasim: {}: no such config file", a.config.display());
        return ExitCode::from(2);
    }
    let files = if a.scenarios.is_empty() {
        match simulator::validate::suite_files(&a.suite) {
            Ok((f, left)) if !f.is_empty() => {
                for l in left {
                    println!("not in the suite (run it by name to include it): {l}");
                }
                f
            }
            Ok(_) => {
                eprintln!("mtasim: {}: no scenario files (*.toml)", a.suite.display());
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("mtasim: {}: {e}", a.suite.display());
                return ExitCode::from(2);
            }
        }
    } else {
        a.scenarios
    };
    let opts = RunOptions {
        seed: a.seed,
        volume: a.volume,
        config: Some(a.config.clone()),
        report_dir: a.report,
        maps,
        root: a.roles.root.clone(),
        ..RunOptions::default()
    };
    let rows = simulator::validate::validate(&files, &opts);
    print!("{}", simulator::validate::render_text(&a.config, &rows));
    if let Some(path) = &a.junit {
        let xml = match simulator::validate::junit(&a.config, &rows) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("mtasim: JUnit XML: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = std::fs::write(path, xml) {
            eprintln!("mtasim: {}: {e}", path.display());
            return ExitCode::from(2);
        }
        println!("JUnit XML: {}", path.display());
    }
    if rows.iter().all(|r| r.passed()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `--volume` must be a number above 0 (exit code 2 otherwise).
fn check_volume(volume: f64) -> Result<(), ExitCode> {
    if volume.is_nan() || volume <= 0.0 {
        eprintln!("mtasim: --volume must be above 0");
        return Err(ExitCode::from(2));
    }
    Ok(())
}

/// `mtasim bench`: runs one scenario, prints and records throughput and peak memory.
fn bench(path: &std::path::Path, opts: &RunOptions) -> ExitCode {
    if let Err(code) = check_volume(opts.volume) {
        return code;
    }
    let loaded = match Loaded::load_with(path, opts.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mtasim: {e}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let r = match run(&loaded, opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mtasim: {}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    let wall = started.elapsed().as_secs_f64();
    let peak_mb = peak_rss_kb().map(|k| k as f64 / 1024.0);
    let t = &r.totals;
    let per_s = t.accepted as f64 / wall.max(1e-9);
    let json = serde_json::json!({
        "scenario": r.scenario,
        "volume": opts.volume,
        "seed": r.seed,
        "tls": !opts.no_tls,
        "dkim": !opts.no_dkim,
        "accepted": t.accepted,
        "delivered": t.delivered,
        "bounced": t.bounced,
        "deferrals": t.deferrals,
        "wall_s": (wall * 100.0).round() / 100.0,
        "messages_per_wall_s": per_s.round(),
        "peak_rss_mb": peak_mb.map(|m| m.round()),
        "passed": r.passed,
    });
    println!(
        "{}: {} messages accepted ({} delivered) in {:.1} s wall = {:.0} simulated messages per wall-second; peak RSS {}; TLS {}, DKIM {}; {}",
        r.scenario,
        t.accepted,
        t.delivered,
        wall,
        per_s,
        peak_mb.map_or("unknown".to_string(), |m| format!("{m:.0} MB")),
        if opts.no_tls { "off" } else { "on" },
        if opts.no_dkim { "off" } else { "on" },
        if r.passed { "expectations held" } else { "EXPECTATIONS FAILED" }
    );
    let out = opts.report_dir.join(&r.scenario).join("bench.json");
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    if let Err(e) = std::fs::write(&out, text + "\n") {
        eprintln!("mtasim: {}: {e}", out.display());
        return ExitCode::from(2);
    }
    println!("    {}", out.display());
    if r.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The process's peak resident set size (Linux `VmHWM`), in KiB.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
