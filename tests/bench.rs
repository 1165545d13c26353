//! `parascan bench` on the SIMT emulator with every `T` scaled down: one
//! row per (shape, plan) with finite positive times, the markdown tables
//! and the JSON; bad flags are typed errors.

use std::collections::HashMap;
use std::path::PathBuf;

use parascan::bench::{cases, shape_text, BenchFamily};
use parascan::scan::PlanRequest;
use parascan::sweep::SweepError;

#[path = "common/cli.rs"]
mod cli;

use cli::{parascan, text};

fn temp_dir(name: &str) -> PathBuf {
    cli::temp_dir(&format!("bench-{name}"))
}

/// `--scale` of the test: `T = 2^24` becomes 1024, the GPU.md Diagonal
/// shape `[8,1536,4]`.
const SCALE: u32 = 14;

/// Every (case, shape, dtype, plan) the run must produce, from the
/// library's own case lists.
fn expected_rows() -> Vec<(String, String, String, String)> {
    let mut rows = Vec::new();
    for family in BenchFamily::ALL {
        if family == BenchFamily::Newton {
            for c in cases::newton_cases(true, SCALE) {
                let plans = cases::plans(family, c.len);
                for p in plans.iter().filter(|&&p| p != PlanRequest::Sequential) {
                    rows.push((
                        "diagonal scan".to_string(),
                        format!("[B,T,D]=[{},{},{}]", c.batch, c.len, c.units),
                        "f32".to_string(),
                        p.to_string(),
                    ));
                }
                for p in plans {
                    rows.push((
                        "diag-gru".to_string(),
                        format!("[B,T,n]=[{},{},{}]", c.batch, c.len, c.units),
                        "f32".to_string(),
                        p.to_string(),
                    ));
                    // The backward at each Newton plan's solution.
                    if p != PlanRequest::Sequential {
                        rows.push((
                            "diag-gru backward".to_string(),
                            format!("[B,T,n]=[{},{},{}]", c.batch, c.len, c.units),
                            "f32".to_string(),
                            p.to_string(),
                        ));
                    }
                }
            }
            continue;
        }
        for c in cases::scan_cases(family, true, SCALE) {
            for p in cases::plans(family, c.len) {
                let case = match family {
                    BenchFamily::Diagonal => "diagonal".to_string(),
                    _ => c.shape.label(),
                };
                rows.push((
                    case.clone(),
                    shape_text(&c.shape, c.len),
                    c.dtype.name().to_string(),
                    p.to_string(),
                ));
                // Diagonal, PermDiagonal: the reverse scan of the backward
                // under each plan.
                if matches!(family, BenchFamily::Diagonal | BenchFamily::PermDiagonal) {
                    rows.push((
                        format!("{case} backward"),
                        shape_text(&c.shape, c.len),
                        c.dtype.name().to_string(),
                        p.to_string(),
                    ));
                }
            }
        }
    }
    rows
}

/// Splits one CSV line (fields with commas are quoted, no quotes inside).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[test]
fn emu_bench_writes_a_row_per_shape_and_plan() {
    let dir = temp_dir("emu");
    let scale = SCALE.to_string();
    let out = parascan(&[
        "bench",
        "--backend",
        "emu",
        "--scale",
        &scale,
        "--quick",
        "--copy-mb",
        "4",
        "--out",
        dir.to_str().expect("utf-8 temp path"),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("copy bandwidth"), "{stdout}");

    let csv = std::fs::read_to_string(dir.join("bench.csv")).expect("bench.csv");
    let mut lines = csv.lines();
    let header = csv_fields(lines.next().expect("header"));
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column `{name}` in {header:?}"))
    };
    let (case, shape, dtype, plan) = (col("case"), col("shape"), col("dtype"), col("plan"));
    let (median, pct, finite, depth) = (
        col("median_ms"),
        col("pct_copy_bw"),
        col("finite"),
        col("depth"),
    );
    let mut seen: HashMap<(String, String, String, String), usize> = HashMap::new();
    for line in lines {
        let f = csv_fields(line);
        assert_eq!(f.len(), header.len(), "{line}");
        let key = (
            f[case].clone(),
            f[shape].clone(),
            f[dtype].clone(),
            f[plan].clone(),
        );
        let ms: f64 = f[median].parse().expect("median_ms");
        assert!(ms.is_finite() && ms > 0.0, "median {ms} in {line}");
        let p: f64 = f[pct].parse().expect("pct_copy_bw");
        assert!(p.is_finite() && p > 0.0, "% copy {p} in {line}");
        assert_eq!(f[finite], "true", "{line}");
        assert!(f[depth].parse::<u64>().expect("depth") >= 1, "{line}");
        *seen.entry(key).or_default() += 1;
    }
    let expected = expected_rows();
    for key in &expected {
        assert_eq!(seen.get(key), Some(&1), "row {key:?} missing or repeated");
    }
    assert_eq!(seen.len(), expected.len(), "unexpected rows: {seen:?}");

    let md = std::fs::read_to_string(dir.join("bench.md")).expect("bench.md");
    for needle in [
        "commit `",
        "Copy bandwidth **",
        "| family | shape | dtype | plan | kind | chunk | plan B/elem | depth | median ms | GB/s | % copy BW | × seq |",
        "| DPLR | T | plan |",
        "| Newton | shape | plan | plan B/elem | iterations |",
        "| diag-gru |",
        "| backward | shape | dtype | plan | kind | plan B/elem | depth | median ms | GB/s | % copy BW | ÷ forward |",
        "| diagonal backward |",
        "| diag-gru backward |",
    ] {
        assert!(md.contains(needle), "missing `{needle}` in:\n{md}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bench.json")).expect("json"))
            .expect("valid JSON");
    // Every row carries its plan's bytes per element; the PD look-back moves
    // at most 14 B per f32 slot and step (the three-pass plans 22).
    let rows = json["rows"].as_array().expect("rows");
    let field = |row: &serde_json::Value, k: &str| row[k].as_str().unwrap_or("").to_string();
    for row in rows {
        let fam = row["family"].as_str().unwrap_or("");
        let bytes = row["plan_bytes_per_elem"].as_f64();
        assert!(bytes.is_some_and(|b| b > 0.0), "no plan bytes: {row}");
        // A Newton iteration under plan p scans [B,T,n] as the reference
        // "diagonal scan" row of p does: the same planner count. The
        // sequential kernel reads x [B,T,3n] and writes h [B,T,n] in f32.
        if field(row, "case") == "diag-gru" {
            let expected = if field(row, "plan") == PlanRequest::Sequential.to_string() {
                Some(((3 + 1) * std::mem::size_of::<f32>()) as f64)
            } else {
                let dims = field(row, "shape").replace("[B,T,n]", "[B,T,D]");
                rows.iter()
                    .find(|r| {
                        field(r, "case") == "diagonal scan"
                            && field(r, "shape") == dims
                            && field(r, "plan") == field(row, "plan")
                    })
                    .and_then(|r| r["plan_bytes_per_elem"].as_f64())
            };
            assert!(expected.is_some(), "no reference scan row for {row}");
            assert_eq!(bytes, expected, "Newton plan bytes: {row}");
        }
        // Backward rows carry their time over the forward's, measured in this run.
        let backward = row["case"]
            .as_str()
            .is_some_and(|c| c.ends_with("backward"));
        assert_eq!(
            row["backward_over_forward"]
                .as_f64()
                .is_some_and(|r| r > 0.0 && r.is_finite()),
            backward,
            "backward ratio: {row}"
        );
        if fam == "perm-diagonal" && row["kind"].as_str() == Some("P4") {
            assert!(
                bytes.is_some_and(|b| b <= 14.0),
                "PD look-back bytes: {row}"
            );
        }
    }
    assert_eq!(json["rows"].as_array().map(Vec::len), Some(expected.len()));
    assert_eq!(json["meta"]["backend"], "emu");
    assert_eq!(json["meta"]["scale"], SCALE);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_shapes_value_is_a_typed_error() {
    match cases::parse_families("diagonal,bogus") {
        Err(SweepError::Invalid { arg, expected }) => {
            assert_eq!(arg, "shapes");
            assert!(expected.contains("bogus"), "{expected}");
            assert!(expected.contains("perm-diagonal"), "{expected}");
        }
        other => panic!("expected a typed `shapes` error, got {other:?}"),
    }
    let out = parascan(&["bench", "--backend", "emu", "--shapes", "diagonal,bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("argument `shapes`")
            && stderr.contains("one of diagonal, perm-diagonal, dplr, newton")
            && stderr.contains("`bogus`"),
        "{stderr}"
    );
    let out = parascan(&["bench", "--backend", "cpu"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("argument `backend`"));
    let out = parascan(&["bench", "--backend", "emu", "--time-limit=0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("time-limit"));
}

#[test]
fn list_prints_the_gpu_md_shapes_and_an_estimate() {
    let out = parascan(&["bench", "--list"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for needle in [
        "[B,D,T]=[8,1536,65536] f32",
        "[B,T,D]=[1,16777216,64] bf16",
        "perm-diagonal n=64 [B,T,n]=[16,1048576,64] u8",
        "dplr 64x64 r1 B=64 T=8192 n=64 m=64 R=1 readout",
        "newton diag-gru [B,T,n]=[8,131072,256]",
        "estimate:",
    ] {
        assert!(stdout.contains(needle), "missing `{needle}` in:\n{stdout}");
    }
}
