//! The `parascan` binary: `info`, a tiny `sweep` with flags (also as the
//! default subcommand), `check`, and clear errors for bad flags.

use std::path::PathBuf;

#[path = "common/cli.rs"]
mod cli;

use cli::{parascan, text};

fn temp_dir(name: &str) -> PathBuf {
    cli::temp_dir(&format!("cli-{name}"))
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
fn info_writes_the_embedded_ptx_with_fingerprints() {
    let dir = temp_dir("ptx");
    let out = parascan(&[
        "info",
        "--write-ptx",
        dir.to_str().expect("utf-8 temp path"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (module, ptx) in parascan::ptx::MODULES {
        let written = std::fs::read_to_string(dir.join(format!("{module}.ptx"))).expect("ptx");
        assert_eq!(&written, ptx);
        let key = std::fs::read_to_string(dir.join(format!("{module}.ptx-fnv"))).expect("fnv");
        assert_eq!(key.trim(), parascan::backend::cuda::ptx_fingerprint(ptx));
    }
    let _ = std::fs::remove_dir_all(&dir);
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
        "--cells",
        "none",
        "--backward",
        "none",
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
fn check_runs_only_the_named_backends() {
    let out = parascan(&[
        "check",
        "--quick",
        "--families",
        "diagonal",
        "--dtypes",
        "f32",
        "--backends",
        "cpu",
        "--threads",
        "2",
        "--verbose",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("PASS cpu"), "{stdout}");
    assert!(
        !stdout.contains(" emu ") && !stdout.contains("cuda"),
        "{stdout}"
    );

    let out = parascan(&["check", "--backends", "cpu,tpu"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("argument `backends`") && stderr.contains("`tpu`"),
        "{stderr}"
    );
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

    // No device: a clear error, not a silent CPU run.
    if parascan::backend::cuda::CudaBackend::new(0).is_err() {
        let out = parascan(&["sweep", "--backend", "cuda", "--quick"]);
        assert_eq!(out.status.code(), Some(2));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("cuda"), "{stderr}");
        assert!(
            text(&out.stdout).is_empty(),
            "fails before printing a table"
        );
    }

    let out = parascan(&["sweep", "--backend", "tpu", "--quick"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("emu"), "{}", text(&out.stderr));
}

#[test]
fn emu_sweep_reports_the_kernels_measured_depth() {
    use parascan::backend::emu::EmuBackend;
    use parascan::dtype::DType;
    use parascan::family::Layout;
    use parascan::kernels::diagonal::{plan_diagonal, DiagShape};
    use parascan::PlanRequest;
    let dir = temp_dir("emu");
    let out = parascan(&[
        "sweep",
        "--backend",
        "emu",
        "--families",
        "diagonal",
        "--quick",
        "--no-bandwidth-case",
        "--cells",
        "none",
        "--backward",
        "none",
        "--out",
        dir.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("backend: emu"), "{stdout}");
    let csv = std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let mut chunked = 0;
    let mut rows = 0;
    for line in lines {
        // The shape field is quoted and holds commas: split it out first.
        let (head, rest) = line.split_once('"').unwrap();
        let (shape, tail) = rest.split_once('"').unwrap();
        let fields: Vec<&str> = head
            .trim_end_matches(',')
            .split(',')
            .chain(std::iter::once(shape))
            .chain(tail.trim_start_matches(',').split(','))
            .collect();
        assert_eq!(fields.len(), header.len(), "{line}");
        assert_eq!(fields[col("backend")], "emu", "{line}");
        assert_eq!(fields[col("timed")], "launches+sync", "{line}");
        let t: usize = fields[col("T")].parse().unwrap();
        let depth: u64 = fields[col("depth")].parse().unwrap();
        let formula: u64 = fields[col("depth_formula")].parse().unwrap();
        let plan = fields[col("plan")];
        let request: PlanRequest = plan.split(' ').next().unwrap().parse().unwrap();
        let gpu = plan_diagonal(
            DiagShape::new(
                fields[col("batch")].parse().unwrap(),
                t,
                fields[col("lanes")].parse().unwrap(),
            ),
            Layout::Btd,
            DType::F32,
            request,
            EmuBackend::default_workers(),
        )
        .unwrap();
        assert_eq!(depth, gpu.depth, "{line}");
        assert_eq!(depth, formula, "{line}");
        assert!(plan.contains(gpu.kind.label()), "{line}");
        if gpu.chunks > 1 {
            chunked += 1;
            assert!(depth > 0 && (depth as usize) < t, "{line}");
        }
        rows += 1;
    }
    // T = 64, 256, 1024 × plans sequential, auto, chunk=64.
    assert_eq!(rows, 9);
    assert!(chunked > 0, "{csv}");
    let _ = std::fs::remove_dir_all(&dir);
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
