//! `mta dkim keygen` and `mta dkim sign` from the command line.

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn keygen_writes_a_private_key_and_prints_the_record_and_sign_uses_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args([
            "dkim",
            "keygen",
            "--domain",
            "news.example.com",
            "--selector",
            "s1",
            "--algorithm",
            "ed25519",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("s1._domainkey.news.example.com. 3600 IN TXT \"v=DKIM1; k=ed25519; p="),
        "{text}"
    );
    let key = dir.path().join("news.example.com.s1.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600, "the private key is not world-readable");
    }
    // A second keygen never overwrites a key.
    let again = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args([
            "dkim",
            "keygen",
            "--domain",
            "news.example.com",
            "--selector",
            "s1",
            "--out",
        ])
        .arg(dir.path())
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.code(), Some(2));
    let mut child = Command::new(env!("CARGO_BIN_EXE_mta"))
        .args([
            "dkim",
            "sign",
            "--domain",
            "news.example.com",
            "--selector",
            "s1",
            "--key",
        ])
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(b"From: a@news.example.com\nTo: b@gmail.com\nSubject: hi\n\nbody\n")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let signed = String::from_utf8_lossy(&out.stdout);
    assert!(
        signed.starts_with(
            "DKIM-Signature: v=1; a=ed25519-sha256; s=s1; d=news.example.com; c=relaxed/relaxed;"
        ),
        "{signed}"
    );
    assert!(
        signed.ends_with(
            "From: a@news.example.com\r\nTo: b@gmail.com\r\nSubject: hi\r\n\r\nbody\r\n"
        ),
        "LF input goes out as CRLF: {signed:?}"
    );
}
