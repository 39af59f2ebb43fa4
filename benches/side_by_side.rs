//! Postfix and our MTA side by side in the same simulated world with the same traffic (issue 24):
//! each MTA in its own instance of the world, all at once, the same messages into each; per
//! provider, the messages delivered within 1..N minutes and the deferrals, as the world saw them.
//! Prints the table and writes `reports/side-by-side/side-by-side.json`.
//!
//! `cargo bench -p simulator --bench side_by_side [-- --minutes 10 --messages 2000
//! --sides postfix,ours-minimal,ours-hot --seed 42]`. Needs root and Postfix
//! (`/usr/sbin/postfix`) for the postfix side; builds the release `mta` binary first
//! (`MTASIM_MTA_BIN` names another).

use clap::Parser;
use simulator::live::LiveOptions;
use simulator::side_by_side::{run, Options, Side};
use std::path::{Path, PathBuf};

#[derive(Parser)]
struct Args {
    /// Minutes to watch.
    #[arg(long, default_value_t = 10)]
    minutes: u32,
    /// Messages into each MTA.
    #[arg(long, default_value_t = 2000)]
    messages: u64,
    /// The MTAs under test, comma-separated: postfix, ours-minimal, ours-hot.
    #[arg(long, default_value = "postfix,ours-minimal,ours-hot")]
    sides: String,
    /// The traffic's seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Where the report and each side's files go.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The release `mta` binary, built now unless MTASIM_MTA_BIN names one.
fn mta_binary() -> anyhow::Result<PathBuf> {
    if std::env::var_os("MTASIM_MTA_BIN").is_none() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = std::process::Command::new(cargo)
            .args(["build", "--release", "-p", "mta", "--bin", "mta"])
            .status()?;
        anyhow::ensure!(st.success(), "cargo build --release -p mta failed");
    }
    Ok(LiveOptions::find_mta().map_err(anyhow::Error::msg)?.mta_bin)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sides = args
        .sides
        .split(',')
        .map(|s| Side::parse(s).ok_or_else(|| anyhow::anyhow!("--sides: unknown side `{s}`")))
        .collect::<anyhow::Result<Vec<Side>>>()?;
    let out = args
        .out
        .unwrap_or_else(|| root.join("reports/side-by-side"));
    let opts = Options {
        root: root.clone(),
        work: out.join("run"),
        mta_bin: mta_binary()?,
        minutes: args.minutes,
        messages: args.messages,
        seed: args.seed,
        sides,
    };
    eprintln!(
        "side by side: {} messages into each of {}, watched for {} minutes",
        opts.messages, args.sides, opts.minutes
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let c = rt.block_on(run(&opts))?;
    print!("{}", c.table());
    let json = out.join("side-by-side.json");
    std::fs::write(&json, serde_json::to_string_pretty(&c)?)?;
    println!("\nwrote {}", json.display());
    Ok(())
}
