//! The `parascan` binary: `info`, a tiny `sweep` with flags (also as the
//! default subcommand), `check`, and clear errors for bad flags.

use std::path::PathBuf;
use std::process::{Command, Output};

fn parascan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parascan"))
        .args(args)
        .output()
        .expect("run parascan")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("parascan-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn info_reports_backend_ptx_and_bandwidth() {
    let out = parascan(&["info", "--copy-mb", "8", "--threads", "2"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for needle in [
        "backend (auto):",
        "cpu:",
        "2 engine threads",
        "cuda:",
        "ptx:",
        "cpu copy bandwidth:",
        "gpu copy bandwidth:",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
}

#[test]
fn tiny_sweep_with_flags_writes_outputs() {
    let dir = temp_dir("sweep");
    let out = parascan(&[
        "sweep",
        "--quick",
        "--families",
        "diagonal,perm-diagonal,dplr",
        "--plans",
        "sequential,chunk=4,min-depth",
        "--dtypes",
        "f32,bf16",
        "--layouts",
        "btd,bdt",
        "--backend",
        "cpu",
        "--threads",
        "2",
        "--min-t",
        "16",
        "--max-t",
        "2^8",
        "--step",
        "4",
        "--min-time-ms",
        "0",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("backend: cpu"), "{stdout}");
    assert!(stdout.contains("copy bandwidth:"), "{stdout}");
    assert!(stdout.contains("median ms"), "{stdout}");
    assert!(stdout.contains("bandwidth case"), "{stdout}");
    assert!(stdout.contains("[B,D,T]"), "{stdout}");
    // T = 16, 64, 256; the sequential loop's depth is T.
    let seq_256 = stdout
        .lines()
        .find(|l| l.starts_with("diagonal ") && l.contains(" 256 sequential") && l.contains("f32"))
        .unwrap_or_else(|| panic!("no diagonal T=256 sequential row:\n{stdout}"));
    assert!(seq_256.split_whitespace().any(|w| w == "256"));
    // 4 instances (diag btd, bdt, pd 5, pd 64, dplr = 5) × 2 dtypes × 3 T × 3 plans.
    let rows = stdout
        .lines()
        .filter(|l| l.contains(" f32 ") || l.contains(" bf16 "))
        .count();
    assert_eq!(rows, 5 * 2 * 3 * 3 + 1, "{stdout}");
    for f in ["sweep.csv", "sweep.json", "depth_vs_t.svg", "time_vs_t.svg"] {
        let p = dir.join(f);
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{} missing or empty", p.display());
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 5 * 2 * 3 * 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sweep_is_the_default_subcommand() {
    let dir = temp_dir("default");
    let out = parascan(&[
        "--quick",
        "--families",
        "dense",
        "--plans",
        "sequential",
        "--max-t",
        "64",
        "--no-bandwidth-case",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("dense n=16"), "{stdout}");
    assert!(!stdout.contains("bandwidth case"), "{stdout}");
    assert!(dir.join("sweep.csv").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_passes_and_prints_a_table() {
    let out = parascan(&[
        "check",
        "--families",
        "diagonal,block-diagonal",
        "--dtypes",
        "f32,f16",
        "--lengths",
        "1,37",
        "--threads",
        "2",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("worst err") && stdout.contains("tol"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.trim() == "PASS"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn bad_flags_fail_with_a_message() {
    let out = parascan(&["sweep", "--families", "bogus", "--quick"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("families"),
        "{}",
        text(&out.stderr)
    );

    let out = parascan(&["sweep", "--plans", "chunk=0", "--quick"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("chunk"), "{}", text(&out.stderr));

    let out = parascan(&["sweep", "--min-t", "0", "--quick"]);
    assert!(!out.status.success());

    // No scan kernels yet: a clear error, not a silent CPU run.
    let out = parascan(&["sweep", "--backend", "cuda", "--quick"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cuda"), "{stderr}");
    assert!(
        text(&out.stdout).is_empty(),
        "fails before printing a table"
    );
}

#[test]
fn help_lists_the_subcommands() {
    let out = parascan(&["--help"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    for sub in ["sweep", "check", "info"] {
        assert!(stdout.contains(sub), "{stdout}");
    }
}
