//! Running the `parascan` binary from the integration tests (`tests/cli.rs`,
//! `tests/bench.rs`): include with `#[path = "common/cli.rs"] mod cli;`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs the release `parascan` binary with `args`.
pub fn parascan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parascan"))
        .args(args)
        .output()
        .expect("run parascan")
}

/// Captured output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh temporary folder `parascan-{name}-{pid}` (any old one removed).
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("parascan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
