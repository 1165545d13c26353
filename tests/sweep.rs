//! The sweep and `check` drivers through the library API: a tiny sweep
//! writes CSV / JSON / SVG files that parse, its depth column is the
//! planner's formula (linear in `T` for the sequential loop, logarithmic
//! for fixed chunks and min-depth), and `check` passes on the CPU backend.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::ProgressBar;
use parascan::check::{self, CheckConfig};
use parascan::dtype::DType;
use parascan::scan::plan::{depth_formula, work_formula};
use parascan::sweep::config::{self, BandwidthCase, Family, TimingPolicy};
use parascan::sweep::report::CSV_HEADER;
use parascan::sweep::{self, BackendChoice, Row, RowKind, SweepConfig, SweepError};
use parascan::PlanRequest;

/// A fresh, empty folder under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("parascan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

const LENGTHS: [usize; 4] = [64, 256, 1024, 4096];

/// Every family, four plans, `T = 64 … 4096`, one timed run per case.
fn tiny_config() -> SweepConfig {
    SweepConfig {
        families: Family::ALL.to_vec(),
        plans: vec![
            PlanRequest::Sequential,
            PlanRequest::MinDepth,
            PlanRequest::Chunk(8),
            PlanRequest::Auto,
        ],
        dtypes: vec![DType::F32],
        backend: BackendChoice::Cpu,
        threads: Some(2),
        lengths: LENGTHS.to_vec(),
        timing: TimingPolicy {
            warmup: 0,
            min_reps: 1,
            min_time: Duration::ZERO,
            max_reps: 1,
        },
        copy_bytes: 4 << 20,
        copy_reps: 2,
        bandwidth_case: Some(BandwidthCase {
            batch: 2,
            len: 512,
            dim: 8,
        }),
        // Nonlinear rows have their own test.
        cells: Vec::new(),
        // Backward rows have their own test (tests/sweep_backward.rs).
        backward: Vec::new(),
        ..SweepConfig::quick()
    }
}

/// Splits one CSV line, honouring double-quoted fields.
fn csv_split(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            _ => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[test]
fn tiny_sweep_writes_parseable_outputs_with_formula_depths() {
    let cfg = tiny_config();
    let mut events = 0usize;
    let report =
        sweep::run(&cfg, &ProgressBar::hidden(), &mut |_| events += 1).expect("sweep runs");
    assert_eq!(report.meta.backend, "cpu");
    assert_eq!(report.meta.threads, 2);
    assert!(report.meta.copy_gbs.is_finite() && report.meta.copy_gbs > 0.0);
    assert!(report.skipped.is_empty(), "nothing this small hits the cap");
    // 2 diagonal-free instances per family at most: count what default_shapes gives.
    let instances: usize = Family::ALL
        .iter()
        .map(|&f| config::default_shapes(f, &cfg.diagonal_layouts).len())
        .sum();
    assert_eq!(
        report.rows.len(),
        instances * LENGTHS.len() * cfg.plans.len()
    );
    // Backend, copy bandwidth, every row and the bandwidth line.
    assert_eq!(events, 2 + report.rows.len() + 1);

    let families: BTreeSet<&str> = report.rows.iter().map(|r| r.family.as_str()).collect();
    for f in Family::ALL {
        assert!(families.contains(f.name()), "no rows for {f}");
    }

    for r in &report.rows {
        assert_eq!(r.kind, RowKind::Sweep);
        // The measured depth and work are the planner's formulas.
        assert_eq!(r.depth, r.depth_formula, "{r:?}");
        assert_eq!(r.work, r.work_formula, "{r:?}");
        assert_eq!(r.depth, depth_formula(r.len, r.chunk));
        assert_eq!(r.work, work_formula(r.len, r.chunk));
        assert!(r.median_ms > 0.0 && r.median_ms.is_finite(), "{r:?}");
        assert!(r.gb_per_s > 0.0 && r.pct_copy_bw.is_finite(), "{r:?}");
        assert_eq!(r.elements, r.batch * r.len * r.lanes);
        // Flops of one pass, counted here per family from the row's own
        // fields, and the FMA-peak ratio recomputed from the time.
        let bt = (r.batch * r.len) as u64;
        let per_step = match r.family.as_str() {
            "diagonal" | "perm-diagonal" => 2 * r.lanes,
            "dense" => 2 * r.lanes * r.lanes,
            "block-diagonal" => {
                let k: usize = r.label.rsplit('x').next().unwrap().parse().unwrap();
                2 * r.lanes * k
            }
            "dplr" => {
                let rank: usize = r.label.rsplit(" r").next().unwrap().parse().unwrap();
                let readout = if r.shape.contains("readout") { 2 } else { 0 };
                r.lanes * (1 + 4 * rank + 2 + readout)
            }
            other => panic!("unexpected family {other}"),
        };
        assert_eq!(r.flops, per_step as u64 * bt, "{r:?}");
        let pct = 100.0 * r.flops as f64 / (r.median_ms * 1e-3) / 1e9 / report.meta.fma_gflops;
        assert!(
            (r.pct_fma_peak - pct).abs() <= 1e-9 * pct.max(1.0),
            "{r:?}: {pct}"
        );
        let log_t = r.len.trailing_zeros() as u64;
        match r.plan.as_str() {
            // Linear: the sequential loop's depth is T.
            "sequential" => assert_eq!(r.depth, r.len as u64),
            // Blelloch over all T steps: 2·log2 T + 1.
            "min-depth" => assert_eq!(r.depth, 2 * log_t + 1),
            // Chunks of 8: 2·8 + 2·log2(T/8) − 1.
            "chunk=8" => assert_eq!(r.depth, 16 + 2 * (log_t - 3) - 1),
            "auto" => assert!(r.depth <= r.len as u64 + 2 * log_t + r.chunk as u64),
            other => panic!("unexpected plan {other}"),
        }
    }

    // Growth along T for one family instance: ×4 for sequential, +4 (two
    // more levels of the tree, twice) for the log-depth plans.
    let series = |plan: &str| -> Vec<u64> {
        report
            .rows
            .iter()
            .filter(|r| r.label == "diagonal" && r.plan == plan)
            .map(|r| r.depth)
            .collect()
    };
    for w in series("sequential").windows(2) {
        assert_eq!(w[1], 4 * w[0]);
    }
    for plan in ["min-depth", "chunk=8"] {
        let s = series(plan);
        assert_eq!(s.len(), LENGTHS.len());
        for w in s.windows(2) {
            assert_eq!(w[1], w[0] + 4, "{plan}: {s:?}");
        }
    }

    let bw = report.bandwidth.as_ref().expect("bandwidth line");
    assert_eq!(bw.kind, RowKind::Bandwidth);
    assert_eq!(bw.plan, "auto");
    assert_eq!((bw.batch, bw.len, bw.lanes), (2, 512, 8));

    // The table has a header, every row and the bandwidth line.
    let table = report.table();
    assert!(table.contains("median ms") && table.contains("% copy BW"));
    assert!(table.contains("(bandwidth)"));
    assert_eq!(
        table.lines().filter(|l| l.contains(" f32 ")).count(),
        report.rows.len() + 1
    );

    // Files.
    let dir = temp_dir("sweep-lib");
    let out = sweep::write_outputs(&report, &dir).expect("outputs written");

    let csv = std::fs::read_to_string(&out.csv).expect("csv");
    let mut lines = csv.lines();
    let header = csv_split(lines.next().expect("csv header"));
    assert_eq!(header, csv_split(CSV_HEADER));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let body: Vec<Vec<String>> = lines.map(csv_split).collect();
    assert_eq!(body.len(), report.rows.len() + 1);
    for (fields, row) in body
        .iter()
        .zip(report.rows.iter().chain(report.bandwidth.iter()))
    {
        assert_eq!(fields.len(), header.len());
        assert_eq!(fields[col("shape")], row.shape, "quoted shape survives");
        let t: usize = fields[col("T")].parse().unwrap();
        let chunk: usize = fields[col("chunk")].parse().unwrap();
        let depth: u64 = fields[col("depth")].parse().unwrap();
        assert_eq!(depth, depth_formula(t, chunk));
        let ms: f64 = fields[col("median_ms")].parse().unwrap();
        assert!(ms > 0.0);
    }
    assert_eq!(body.last().unwrap()[col("kind")], "bandwidth");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out.json).expect("json"))
            .expect("valid JSON");
    let rows: Vec<Row> = serde_json::from_value(json["rows"].clone()).expect("rows deserialize");
    // serde_json's float parsing may differ in the last bit: compare the
    // exact fields exactly and the timings to 1e-12.
    assert_eq!(rows.len(), report.rows.len());
    for (a, b) in rows.iter().zip(&report.rows) {
        assert_eq!(
            (
                &a.label,
                &a.plan,
                a.len,
                a.chunk,
                a.depth,
                a.work,
                a.bytes_moved
            ),
            (
                &b.label,
                &b.plan,
                b.len,
                b.chunk,
                b.depth,
                b.work,
                b.bytes_moved
            )
        );
        assert!((a.median_ms - b.median_ms).abs() <= 1e-12 * b.median_ms);
    }
    assert_eq!(json["meta"]["backend"], "cpu");
    assert!(json["meta"]["copy_gbs"].as_f64().unwrap() > 0.0);
    assert!(json["bandwidth"]["median_ms"].as_f64().unwrap() > 0.0);

    let svg = |p: &PathBuf| {
        let text = std::fs::read_to_string(p).expect("svg");
        assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
        text
    };
    // Time: one legend entry per family instance × plan.
    let time = svg(&out.time_plot);
    assert!(time.contains("diagonal f32 · sequential"));
    assert!(time.contains("dplr 16x16 r1 f32 · chunk=8"));
    // Depth: fixed plans give the same curve for every family, merged.
    let depth = svg(&out.depth_plot);
    for plan in ["sequential", "min-depth", "chunk=8"] {
        assert!(depth.contains(&format!("{plan} · every family")), "{plan}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn memory_cap_skips_instead_of_reshaping() {
    let cfg = SweepConfig {
        families: vec![Family::Dense],
        plans: vec![PlanRequest::Sequential],
        lengths: vec![64, 1 << 16],
        max_case_bytes: 1 << 20,
        bandwidth_case: None,
        ..tiny_config()
    };
    let report = sweep::run(&cfg, &ProgressBar::hidden(), &mut |_| {}).expect("sweep runs");
    // T = 64 fits in 1 MiB (72 KiB); T = 65536 (72 MiB) does not.
    assert_eq!(report.rows.len(), 1);
    assert_eq!(report.rows[0].len, 64);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].len, 1 << 16);
    assert!(report.skipped[0].reason.contains("cap"));
    assert!(report.bandwidth.is_none());
}

#[test]
fn bad_configuration_is_a_typed_error() {
    assert!(matches!(
        config::log_grid(0, 10, 2),
        Err(SweepError::Core(_))
    ));
    assert!(config::log_grid(16, 8, 2).is_err());
    assert!(config::log_grid(16, 64, 1).is_err());
    assert_eq!(config::log_grid(256, 1 << 20, 4).unwrap().len(), 7);
    assert_eq!(config::log_grid(3, 100, 3).unwrap(), vec![3, 9, 27, 81]);

    assert!(matches!(
        config::parse_families("diagonal,nope"),
        Err(SweepError::Invalid {
            arg: "families",
            ..
        })
    ));
    assert_eq!(config::parse_families("all").unwrap().len(), 5);
    assert!(config::parse_plans("chunk=0").is_err());
    assert!(config::parse_plans("").is_err());
    assert_eq!(
        config::parse_plans("sequential, chunk=64 ,min-depth").unwrap(),
        vec![
            PlanRequest::Sequential,
            PlanRequest::Chunk(64),
            PlanRequest::MinDepth
        ]
    );
    assert!(config::parse_dtypes("f8").is_err());
    assert_eq!(config::parse_dtypes("all").unwrap().len(), 4);
    assert!("tpu".parse::<BackendChoice>().is_err());

    let empty = SweepConfig {
        plans: vec![],
        ..tiny_config()
    };
    let err = sweep::run(&empty, &ProgressBar::hidden(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("plans"), "{err}");

    let zero_threads = SweepConfig {
        threads: Some(0),
        ..tiny_config()
    };
    assert!(sweep::run(&zero_threads, &ProgressBar::hidden(), &mut |_| {}).is_err());
}

#[test]
fn cuda_backend_is_selected_only_when_a_device_opens() {
    let has_gpu = parascan::backend::cuda::CudaBackend::new(0).is_ok();
    let auto = sweep::select_backend(BackendChoice::Auto).expect("auto always lands somewhere");
    assert!(!auto.reason.is_empty());
    if has_gpu {
        let sel = sweep::select_backend(BackendChoice::Cuda).expect("device opens");
        assert_eq!(sel.kind.to_string(), "cuda");
        assert_eq!(auto.kind.to_string(), "cuda");
    } else {
        let err = sweep::select_backend(BackendChoice::Cuda).unwrap_err();
        assert!(err.to_string().contains("cuda"), "{err}");
        assert_eq!(auto.kind.to_string(), "cpu");
    }
    let emu = sweep::select_backend(BackendChoice::Emu).expect("the emulator always runs");
    assert_eq!(emu.kind.to_string(), "emu");
}

#[test]
fn emu_sweep_runs_diagonal_on_the_kernels_and_other_families_on_the_cpu() {
    use parascan::backend::emu::EmuBackend;
    use parascan::family::Layout;
    use parascan::kernels::diagonal::{plan_diagonal, DiagShape};
    let cfg = SweepConfig {
        families: vec![Family::Diagonal, Family::Dense],
        plans: vec![PlanRequest::Sequential, PlanRequest::Chunk(16)],
        backend: BackendChoice::Emu,
        lengths: vec![37, 256],
        bandwidth_case: None,
        ..tiny_config()
    };
    let report = sweep::run(&cfg, &ProgressBar::hidden(), &mut |_| {}).expect("emu sweep runs");
    assert_eq!(report.meta.backend, "emu");
    assert_eq!(report.rows.len(), 2 * 2 * 2);
    for r in &report.rows {
        if r.family == "diagonal" {
            assert_eq!(r.backend, "emu", "{r:?}");
            assert_eq!(r.timed, "launches+sync");
            let request: PlanRequest = r.plan.split(' ').next().unwrap().parse().unwrap();
            let plan = plan_diagonal(
                DiagShape::new(r.batch, r.len, r.lanes),
                Layout::Btd,
                DType::F32,
                request,
                EmuBackend::default_workers(),
            )
            .unwrap();
            assert_eq!(r.depth, plan.depth, "{r:?}");
            assert_eq!(r.depth, r.depth_formula);
            assert_eq!(r.chunk, plan.chunk);
            assert!(r.plan.contains(plan.kind.label()), "{}", r.plan);
            if request == PlanRequest::Sequential {
                assert_eq!(r.depth, r.len as u64);
            } else if r.len == 256 {
                assert!(r.depth > 0 && r.depth < 256, "{r:?}");
            }
        } else {
            // Other families with kernels run on them, the rest on the CPU engine.
            let kernels = Family::ALL
                .iter()
                .any(|f| f.name() == r.family && f.has_kernels());
            let (backend, timed) = if kernels {
                ("emu", "launches+sync")
            } else {
                ("cpu", "host-call")
            };
            assert_eq!(r.backend, backend, "{r:?}");
            assert_eq!(r.timed, timed);
        }
    }
}

#[test]
fn check_passes_on_the_cpu_backend() {
    let cfg = CheckConfig {
        lengths: vec![1, 37, 300],
        threads: Some(2),
        ..CheckConfig::default()
    };
    let mut seen = 0usize;
    let report = check::run(&cfg, &ProgressBar::hidden(), &mut |_| seen += 1).expect("check runs");
    assert_eq!(seen, report.rows.len());
    let on = |b: &str| report.rows.iter().filter(|r| r.backend == b).count();
    assert_eq!(on("cpu"), check::case_count(&cfg));
    // The emulated Diagonal kernels: 2 shapes × 4 dtypes × 2 h0 × (3 T × 4
    // plans + the two-level case + the look-back case).
    let diagonal_on_emu = report
        .rows
        .iter()
        .filter(|r| r.backend == "emu" && r.label.starts_with("diagonal"))
        .count();
    assert_eq!(diagonal_on_emu, 2 * 4 * 2 * (3 * 4 + 2));
    assert_eq!(on("emu"), check::kernel_case_count(&cfg, &cfg.lengths));
    assert!(report
        .rows
        .iter()
        .any(|r| r.backend == "emu" && r.plan.contains("[P3]") && r.pass));
    for order in ["forward", "reverse", "shuffle"] {
        assert!(report
            .rows
            .iter()
            .any(|r| r.backend == "emu" && r.plan.ends_with(order)));
    }
    let has_gpu = parascan::backend::cuda::CudaBackend::new(0).is_ok();
    assert_eq!(on("cuda") > 0, has_gpu);
    let failures: Vec<_> = report.failures().collect();
    assert!(failures.is_empty(), "{}", report.failure_lines());
    assert!(report.passed());
    for dtype in [DType::F32, DType::F64, DType::Bf16, DType::F16] {
        assert!(report.rows.iter().any(|r| r.dtype == dtype));
    }
    assert!(report.rows.iter().any(|r| r.len == 1 && r.h0));
    assert!(report.rows.iter().any(|r| r.len == 37 && !r.h0));
    let table = report.summary_table();
    assert!(table.contains("PASS") && !table.contains("FAIL"));
    assert_eq!(
        report.skipped_backends.iter().any(|(b, _)| b == "cuda"),
        !has_gpu
    );
}

#[test]
fn tolerance_rule_is_the_stated_one() {
    assert_eq!(check::tolerance(DType::F32, 1 << 10), 1e-4);
    assert_eq!(check::tolerance(DType::F64, 1 << 10), 1e-11);
    assert_eq!(check::tolerance(DType::Bf16, 5), 8e-3);
    assert_eq!(check::tolerance(DType::F16, 5), 1e-3);
    // T = 1 is judged like T = 2.
    assert_eq!(
        check::tolerance(DType::F32, 1),
        check::tolerance(DType::F32, 2)
    );
}

#[test]
fn nonlinear_rows_show_flat_and_growing_newton_depth() {
    use parascan::sweep::cells::CellKind;
    let lengths = vec![64, 256, 1024];
    let cfg = SweepConfig {
        families: vec![Family::Diagonal],
        plans: vec![PlanRequest::Sequential, PlanRequest::MinDepth],
        lengths: lengths.clone(),
        cells: vec![CellKind::DiagGru, CellKind::Parity],
        bandwidth_case: None,
        ..tiny_config()
    };
    let report = sweep::run(&cfg, &ProgressBar::hidden(), &mut |_| {}).expect("sweep runs");
    let newton: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.family == "newton")
        .collect();
    assert_eq!(newton.len(), 2 * 2 * lengths.len());
    let get = |cell: &str, plan: &str, t: usize| -> &Row {
        newton
            .iter()
            .copied()
            .find(|r| r.label == cell && r.plan.starts_with(plan) && r.len == t)
            .unwrap_or_else(|| panic!("no {cell} {plan} T={t} row"))
    };
    for &t in &lengths {
        for cell in ["diag-gru", "parity"] {
            let seq = get(cell, "sequential", t);
            assert_eq!(
                seq.depth, t as u64,
                "{cell}: the sequential loop has depth T"
            );
            assert_eq!(seq.iterations, None);
        }
        let gru = get("diag-gru", "newton", t);
        let iters = gru.iterations.expect("newton rows carry iterations");
        assert!(
            (1..=6).contains(&iters),
            "diag-gru T={t}: {iters} iterations"
        );
        // min-depth scans: depth about iterations · (2·log2 T + 1 + log2 T).
        let log = t.trailing_zeros() as u64;
        assert!(
            gru.depth <= (iters as u64 + 1) * (3 * log + 4),
            "T={t}: depth {}",
            gru.depth
        );
        let hard = get("parity", "newton", t);
        // The hard cell needs about T iterations (never more than T).
        let k = hard.iterations.unwrap();
        assert!(k <= t && k >= t / 2, "parity T={t}: {k} iterations");
        assert!(
            hard.depth > t as u64,
            "parity T={t}: depth {} not above T",
            hard.depth
        );
    }
    let dir = temp_dir("hierarchy");
    let out = sweep::write_outputs(&report, &dir).expect("outputs");
    let svg = std::fs::read_to_string(&out.hierarchy_plot).unwrap();
    for needle in [
        "newton · diag-gru",
        "newton · parity",
        "scan · diagonal",
        "reference: T",
    ] {
        assert!(svg.contains(needle), "hierarchy.svg lacks `{needle}`");
    }
    let csv = std::fs::read_to_string(&out.csv).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header.ends_with(",iterations,flops,pct_fma_peak,backward_over_forward"),
        "{header}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
