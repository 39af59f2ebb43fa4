//! `mtasim bench`: runs the scenario without TLS and DKIM, prints its throughput and peak memory and
//! records them in bench.json beside the report.

use std::process::Command;

#[test]
fn bench_records_throughput_and_peak_memory() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_mtasim"))
        .args([
            "bench",
            "../scenarios/mixed-production.toml",
            "--volume",
            "0.002",
        ])
        .arg("--report")
        .arg(dir.path())
        .env("MTASIM_NO_PROGRESS", "1")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("simulated messages per wall-second") && stdout.contains("peak RSS"),
        "{stdout}"
    );
    let json = std::fs::read_to_string(dir.path().join("mixed-production/bench.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
    let num = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {json}"));
    assert!(num("accepted") >= 2000.0, "{json}");
    assert!(
        num("messages_per_wall_s") > 0.0 && num("peak_rss_mb") > 0.0,
        "{json}"
    );
    assert_eq!(v["tls"], false);
    assert_eq!(v["dkim"], false);
    assert_eq!(v["passed"], true);
    assert!(dir.path().join("mixed-production/report.json").is_file());
}
