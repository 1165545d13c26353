//! Backward rows of the sweep (`SweepConfig::backward`): every forward row
//! of a family with backward rows is followed by one backward row under the
//! same plan, whose measured depth is the reverse plan's formula (the
//! forward's: `T` sequential, `2·log2 T + 1` min-depth, ...), whose bytes
//! are the per-family minimum recounted here from the shape, and whose
//! ratio to the forward is the two rows' medians; the CSV carries them; and
//! on the emulated kernels the depth is the one the `_rev_` depth kernels
//! measure, equal to the plan's formula.

use std::time::Duration;

use indicatif::ProgressBar;
use parascan::dtype::DType;
use parascan::family::dplr::DplrOutput;
use parascan::scan::plan::{depth_formula, work_formula};
use parascan::sweep::config::{self, Family, Shape, TimingPolicy};
use parascan::sweep::report::CSV_HEADER;
use parascan::sweep::{self, BackendChoice, Row, RowKind, SweepConfig};
use parascan::PlanRequest;

const LENGTHS: [usize; 3] = [64, 256, 1024];

fn config(families: Vec<Family>, backend: BackendChoice) -> SweepConfig {
    SweepConfig {
        families: families.clone(),
        plans: vec![
            PlanRequest::Sequential,
            PlanRequest::MinDepth,
            PlanRequest::Chunk(8),
            PlanRequest::Auto,
        ],
        dtypes: vec![DType::F32],
        backend,
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
        bandwidth_case: None,
        cells: Vec::new(),
        backward: families,
        backward_max_t: 256,
        ..SweepConfig::quick()
    }
}

/// Scalars per batch row and step a backward pass must read and write,
/// counted from the shape (independently of `sweep::backward`).
fn backward_scalars(shape: &Shape) -> usize {
    match *shape {
        // a, h, dy read; da, db written.
        Shape::Diagonal { dim, .. } => 5 * dim,
        Shape::PermDiagonal { n, .. } => 5 * n,
        // A, h, dy read; dA, db written.
        Shape::BlockDiagonal { blocks, block, .. } => {
            2 * blocks * block * block + 3 * blocks * block
        }
        Shape::Dplr {
            n, m, rank, output, ..
        } => {
            let params = n + 2 * rank * n + n + m; // w, u, v, k, x
            match output {
                // + q read and dq written, dy (m) read.
                DplrOutput::Readout => 2 * (params + n) + m,
                // + H and dH read.
                DplrOutput::States => 2 * params + 2 * n * m,
            }
        }
    }
}

fn shape_of(row: &Row, cfg: &SweepConfig) -> Shape {
    Family::ALL
        .iter()
        .flat_map(|&f| config::default_shapes(f, &cfg.diagonal_layouts))
        .find(|s| format!("{} backward", s.label()) == row.label)
        .unwrap_or_else(|| panic!("no shape for {}", row.label))
}

/// The backward rows of `report`, each with its forward row (the row just
/// before it).
fn pairs(rows: &[Row]) -> Vec<(&Row, &Row)> {
    rows.windows(2)
        .filter(|w| w[1].kind == RowKind::Backward)
        .map(|w| (&w[0], &w[1]))
        .collect()
}

#[test]
fn cpu_backward_rows_follow_every_forward_row_with_formula_depths() {
    let cfg = config(Family::ALL.to_vec(), BackendChoice::Cpu);
    let mut events = 0usize;
    let report = sweep::run(&cfg, &ProgressBar::hidden(), &mut |_| events += 1).expect("runs");
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let instances: usize = Family::ALL
        .iter()
        .map(|&f| config::default_shapes(f, &cfg.diagonal_layouts).len())
        .sum();
    let forward = instances * LENGTHS.len() * cfg.plans.len();
    // T = 64 and 256 get backward rows (backward_max_t = 256), 1024 not.
    let backward = instances * 2 * cfg.plans.len();
    assert_eq!(report.rows.len(), forward + backward);
    assert_eq!(sweep::case_count(&cfg), forward + backward);
    // Backend, copy bandwidth, every row.
    assert_eq!(events, 2 + report.rows.len());

    let pairs = pairs(&report.rows);
    assert_eq!(pairs.len(), backward);
    for (fwd, r) in pairs {
        assert_eq!(fwd.kind, RowKind::Sweep, "{r:?}");
        assert_eq!(r.label, format!("{} backward", fwd.label));
        assert_eq!((r.len, &r.plan, r.dtype), (fwd.len, &fwd.plan, fwd.dtype));
        assert!(r.len <= 256);
        assert_eq!(
            (r.backend.as_str(), r.timed.as_str()),
            ("cpu", "backward-call")
        );
        // The reverse engine's measured depth and work are the planner's
        // formulas; a fixed request gives the forward's chunking (`auto`
        // may choose differently for the adjoint problem).
        if r.plan != "auto" {
            assert_eq!((r.chunk, r.depth), (fwd.chunk, fwd.depth), "{r:?}");
        }
        assert_eq!(r.depth, r.depth_formula, "{r:?}");
        assert_eq!(r.work, r.work_formula, "{r:?}");
        assert_eq!(r.depth, depth_formula(r.len, r.chunk));
        assert_eq!(r.work, work_formula(r.len, r.chunk));
        let log_t = r.len.trailing_zeros() as u64;
        match r.plan.as_str() {
            "sequential" => assert_eq!(r.depth, r.len as u64),
            "min-depth" => assert_eq!(r.depth, 2 * log_t + 1),
            "chunk=8" => assert_eq!(r.depth, 16 + 2 * (log_t - 3) - 1),
            "auto" => {}
            other => panic!("unexpected plan {other}"),
        }
        // Bytes: the minimum traffic, recounted from the shape.
        let shape = shape_of(r, &cfg);
        let index = match shape {
            Shape::PermDiagonal { n, .. } => n,
            _ => 0,
        };
        let per_step = backward_scalars(&shape) * 4 + index;
        assert_eq!(r.bytes_moved, r.batch * r.len * per_step, "{r:?}");
        assert!(r.median_ms > 0.0 && r.median_ms.is_finite());
        let gbs = r.bytes_moved as f64 / (r.median_ms * 1e-3) / 1e9;
        assert!((r.gb_per_s - gbs).abs() <= 1e-9 * gbs, "{r:?}");
        let pct = 100.0 * gbs / report.meta.copy_gbs;
        assert!((r.pct_copy_bw - pct).abs() <= 1e-9 * pct, "{r:?}");
        // The ratio is the two rows' medians.
        let ratio = r.backward_over_forward.expect("backward ratio");
        assert!(
            (ratio - r.median_ms / fwd.median_ms).abs() <= 1e-9 * ratio,
            "{r:?}"
        );
        assert_eq!(fwd.backward_over_forward, None);
    }

    // Log-depth growth along T of the backward's min-depth rows: +2 per ×4.
    let min_depth: Vec<u64> = report
        .rows
        .iter()
        .filter(|r| r.label == "diagonal backward" && r.plan == "min-depth")
        .map(|r| r.depth)
        .collect();
    assert_eq!(min_depth, vec![13, 17]);

    // The table shows the ratio column; the CSV carries it.
    let table = report.table();
    assert!(table.contains("÷ fwd"));
    let csv = report.csv();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header, CSV_HEADER.split(',').collect::<Vec<_>>());
    let kind = header.iter().position(|h| *h == "kind").unwrap();
    let ratio = header
        .iter()
        .position(|h| *h == "backward_over_forward")
        .unwrap();
    let mut seen = 0;
    for (line, row) in lines.zip(&report.rows) {
        // No field of these rows holds a comma except the quoted shape;
        // `kind` is first and the ratio last.
        let first = line.split(',').next().unwrap();
        let last = line.rsplit(',').next().unwrap();
        assert_eq!(kind, 0);
        assert_eq!(ratio, header.len() - 1);
        match row.kind {
            RowKind::Backward => {
                seen += 1;
                assert_eq!(first, "backward");
                let v: f64 = last.parse().unwrap();
                assert!((v - row.backward_over_forward.unwrap()).abs() <= 1e-4 * v.max(1.0));
            }
            _ => {
                assert_eq!(first, "sweep");
                assert_eq!(last, "");
            }
        }
    }
    assert_eq!(seen, backward);
}

#[test]
fn backward_none_and_the_default_families() {
    assert_eq!(
        config::parse_backward("none").unwrap(),
        Vec::<Family>::new()
    );
    assert_eq!(
        config::parse_backward("diagonal,dplr").unwrap(),
        vec![Family::Diagonal, Family::Dplr]
    );
    assert!(config::parse_backward("nope").is_err());
    let d = SweepConfig::default();
    assert_eq!(d.backward, vec![Family::Diagonal, Family::PermDiagonal]);
    // Backward rows only for the families that run: dense has none here.
    let cfg = SweepConfig {
        backward: vec![Family::Dense],
        ..config(vec![Family::Diagonal], BackendChoice::Cpu)
    };
    let report = sweep::run(&cfg, &ProgressBar::hidden(), &mut |_| {}).expect("runs");
    assert!(report.rows.iter().all(|r| r.kind == RowKind::Sweep));
    assert_eq!(report.rows.len(), LENGTHS.len() * cfg.plans.len());
}

#[test]
fn emu_backward_rows_measure_the_reverse_kernels_depth() {
    let cfg = SweepConfig {
        plans: vec![PlanRequest::Sequential, PlanRequest::Chunk(16)],
        lengths: vec![37, 256],
        ..config(
            vec![Family::Diagonal, Family::PermDiagonal, Family::Dplr],
            BackendChoice::Emu,
        )
    };
    let report = sweep::run(&cfg, &ProgressBar::hidden(), &mut |_| {}).expect("emu sweep runs");
    let pairs = pairs(&report.rows);
    // diagonal, two perm-diagonal instances, dplr; two lengths, two plans.
    assert_eq!(pairs.len(), 4 * 2 * 2);
    for (fwd, r) in pairs {
        assert_eq!(
            (r.backend.as_str(), r.timed.as_str()),
            ("emu", "backward-call")
        );
        assert_eq!(fwd.backend, "emu");
        // The `_rev_` depth kernels measure the plan's formula, which is the
        // forward plan's (same request, same chunking).
        assert_eq!(r.depth, r.depth_formula, "{r:?}");
        assert_eq!(r.depth, fwd.depth, "{r:?}");
        assert!(r.plan.contains("reverse]"), "{}", r.plan);
        if r.plan.starts_with("sequential") {
            assert_eq!(r.depth, r.len as u64);
        } else if r.len == 256 {
            assert!(r.depth > 0 && r.depth < 256, "{r:?}");
        }
        assert!(r.backward_over_forward.unwrap() > 0.0);
    }
}
