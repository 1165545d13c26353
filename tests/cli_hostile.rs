//! Hostile command lines (issue 14): huge sizes, a closed stdout, an
//! unwritable output folder, a backend that does not open. Each ends with a
//! message (exit 2) or a quiet, complete run; never a panic or an abort.

#[path = "common/cli.rs"]
mod cli;

use std::process::{Command, Stdio};

use cli::{parascan, temp_dir, text};

/// A small sweep (one family, the quick grid, no bandwidth case).
const SMALL: [&str; 8] = [
    "sweep",
    "--quick",
    "--families",
    "diagonal",
    "--plans",
    "auto",
    "--no-bandwidth-case",
    "--min-time-ms=1",
];

fn assert_message(out: &std::process::Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for n in needles {
        assert!(stderr.contains(n), "missing `{n}` in: {stderr}");
    }
}

#[test]
fn memory_cap_above_the_machine_is_refused() {
    let out = parascan(&["sweep", "--max-t", "2^40", "--max-case-mb", "1000000000"]);
    assert_message(&out, &["max-case-mb", "got 1000000000"]);
    assert!(text(&out.stdout).is_empty());
}

#[test]
fn check_lengths_and_copy_sizes_are_capped() {
    let out = parascan(&["check", "--lengths", "2^40"]);
    assert_message(&out, &["lengths", "T = 1099511627776", "--max-case-mb"]);
    let out = parascan(&["info", "--copy-mb", "100000000"]);
    assert_message(&out, &["copy-mb", "got 100000000"]);
    assert!(text(&out.stdout).is_empty(), "refused before printing");
    let out = parascan(&["bench", "--copy-mb", "100000000", "--list"]);
    assert_message(&out, &["copy-mb"]);
}

/// Nonlinear rows obey `--max-case-mb`: huge `T`, units or batch are
/// skipped rows with the reason, and the run completes.
#[test]
fn nonlinear_rows_obey_the_memory_cap() {
    for (extra, reason) in [
        (
            &[
                "--min-t",
                "2^40",
                "--max-t",
                "2^40",
                "--newton-max-t",
                "2^40",
            ][..],
            "> cap",
        ),
        (&["--cell-units", "4294967296"][..], "overflows usize"),
        (&["--cell-batch", "1000000000000"][..], "> cap"),
    ] {
        let dir = temp_dir("hostile-cells");
        let mut args: Vec<&str> = SMALL.to_vec();
        args.extend(["--cells", "diag-gru,elman", "--out", dir.to_str().unwrap()]);
        args.extend(extra);
        let out = parascan(&args);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "{extra:?}: {}\n{stdout}",
            text(&out.stderr)
        );
        let skipped = stdout
            .lines()
            .filter(|l| {
                (l.starts_with("diag-gru") || l.starts_with("elman")) && l.contains("skipped")
            })
            .collect::<Vec<_>>();
        assert!(!skipped.is_empty(), "{extra:?}: {stdout}");
        assert!(
            skipped.iter().any(|l| l.contains(reason)),
            "{extra:?}: {stdout}"
        );
        assert!(dir.join("sweep.csv").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `parascan … | head`: stdout closed before the first line. The run goes
/// on quietly, exits 0 and still writes its files.
#[test]
fn closed_stdout_ends_quietly_and_keeps_the_files() {
    let dir = temp_dir("hostile-pipe");
    let mut args: Vec<&str> = SMALL.to_vec();
    args.extend(["--cells", "none", "--out", dir.to_str().unwrap()]);
    let runs: [Vec<&str>; 2] = [
        args,
        vec![
            "check",
            "-v",
            "--quick",
            "--families",
            "diagonal",
            "--dtypes",
            "f32",
            "--backends",
            "cpu",
        ],
    ];
    for args in runs {
        let mut child = Command::new(env!("CARGO_BIN_EXE_parascan"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn parascan");
        // Close the read end at once: every write to stdout fails (EPIPE).
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(dir.join("sweep.csv").exists() && dir.join("sweep.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// An output folder that cannot be created fails before any work, with
/// the OS error printed once.
#[test]
fn unwritable_out_fails_before_any_work() {
    let dir = temp_dir("hostile-out");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("sub");
    let mut args: Vec<&str> = SMALL.to_vec();
    args.extend(["--out", bad.to_str().unwrap()]);
    let out = parascan(&args);
    assert_message(&out, &["not writable"]);
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
    assert!(
        text(&out.stdout).is_empty(),
        "no sweep ran: {}",
        text(&out.stdout)
    );
    let out = parascan(&["bench", "--backend", "emu", "--out", bad.to_str().unwrap()]);
    assert_message(&out, &["not writable"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A backend that fails to open leaves no header-only `bench.csv`.
#[test]
fn bench_without_its_backend_leaves_no_files() {
    if parascan::backend::cuda::CudaBackend::new(0).is_ok() {
        return; // needs a machine without a GPU
    }
    let dir = temp_dir("hostile-bench");
    let out = parascan(&["bench", "--backend", "cuda", "--out", dir.to_str().unwrap()]);
    assert_message(&out, &["cuda"]);
    assert!(
        !dir.join("bench.csv").exists(),
        "header-only bench.csv left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `info` says the CUDA kernels are usable only when PTX was embedded.
#[test]
fn info_tells_whether_ptx_is_built() {
    let out = parascan(&["info", "--copy-mb", "1", "--threads", "1"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("cuda scan kernels:"))
        .expect("kernels line");
    assert_eq!(
        line == "cuda scan kernels: yes",
        parascan::ptx::PTX_BUILT,
        "{line}"
    );
}

/// Every bad-value message is a sentence: no doubled words, no
/// `expected \`x\`: expected`.
#[test]
fn bad_value_messages_read_as_sentences() {
    for args in [
        &["sweep", "--families", "foo"][..],
        &["sweep", "--dtypes", "f99"],
        &["sweep", "--layouts", "xyz"],
        &["sweep", "--plans", "fast"],
        &["sweep", "--plans", "chunk=0"],
        &["sweep", "--cells", "lstm2"],
        &["sweep", "--backend", "tpu"],
        &["sweep", "--cell-batch", "0"],
        &["check", "--lengths", "foo"],
        &["check", "--backends", "tpu"],
        &["bench", "--shapes", "foo", "--list"],
    ] {
        let out = parascan(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let words: Vec<&str> = stderr.split_whitespace().collect();
        for w in words.windows(2) {
            assert!(w[0] != w[1], "{args:?}: doubled `{}` in: {stderr}", w[0]);
        }
        assert!(!stderr.contains("expected `"), "{args:?}: {stderr}");
        assert!(!stderr.contains("by any"), "{args:?}: {stderr}");
    }
}
