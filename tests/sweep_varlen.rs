//! Varlen rows of the sweep (`SweepConfig::varlen`): every CPU forward row
//! of a family with varlen rows is followed by a packed (`cu_seqlens`) row
//! and a padded row over the same tokens, under the same plan; both count
//! the forward row's tokens and bytes, the padded batch holds every
//! sequence (`N·L_max ≥ B·T`), and each row's measured depth is the plan's
//! formula for the length it ran. Under a kernel backend they are skipped
//! and reported.

use std::time::Duration;

use indicatif::ProgressBar;
use parascan::dtype::DType;
use parascan::scan::plan::{depth_formula, work_formula};
use parascan::sweep::config::{self, Family, TimingPolicy};
use parascan::sweep::{self, BackendChoice, RowKind, SweepConfig};
use parascan::PlanRequest;

const LENGTHS: [usize; 3] = [64, 256, 1024];

fn config(varlen: Vec<Family>, backend: BackendChoice) -> SweepConfig {
    SweepConfig {
        families: Family::ALL.to_vec(),
        plans: vec![
            PlanRequest::Sequential,
            PlanRequest::MinDepth,
            PlanRequest::Chunk(8),
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
        backward: Vec::new(),
        varlen,
        varlen_max_t: 256,
        ..SweepConfig::quick()
    }
}

#[test]
fn cpu_varlen_rows_follow_every_forward_row_over_the_same_tokens() {
    let cfg = config(Family::ALL.to_vec(), BackendChoice::Cpu);
    let mut events = 0usize;
    let report = sweep::run(&cfg, &ProgressBar::hidden(), &mut |_| events += 1).expect("runs");
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let instances: usize = Family::ALL
        .iter()
        .map(|&f| config::default_shapes(f, &cfg.diagonal_layouts).len())
        .sum();
    let forward = instances * LENGTHS.len() * cfg.plans.len();
    // T = 64 and 256 get varlen rows (varlen_max_t = 256), 1024 not.
    let varlen = 2 * instances * 2 * cfg.plans.len();
    assert_eq!(report.rows.len(), forward + varlen);
    assert_eq!(sweep::case_count(&cfg), forward + varlen);
    assert_eq!(events, 2 + report.rows.len());

    let triples: Vec<_> = report
        .rows
        .windows(3)
        .filter(|w| w[0].kind == RowKind::Sweep && w[1].kind == RowKind::Varlen)
        .collect();
    assert_eq!(2 * triples.len(), varlen);
    for w in triples {
        let (fwd, packed, padded) = (&w[0], &w[1], &w[2]);
        assert_eq!(padded.kind, RowKind::Varlen);
        assert!(fwd.len <= 256);
        let n = 4 * fwd.batch;
        let tokens = fwd.batch * fwd.len;
        assert_eq!(packed.label, format!("{} varlen N={n}", fwd.label));
        assert!(
            padded
                .label
                .starts_with(&format!("{} padded N={n} ×", fwd.label)),
            "{}",
            padded.label
        );
        for r in [packed, padded] {
            assert_eq!((&r.plan, r.dtype), (&fwd.plan, fwd.dtype));
            assert_eq!((r.backend.as_str(), r.timed.as_str()), ("cpu", "host-call"));
            // Same work counted: the grid point's tokens and bytes.
            assert_eq!(
                (r.elements, r.bytes_moved, r.flops),
                (fwd.elements, fwd.bytes_moved, fwd.flops)
            );
            assert_eq!(r.depth, r.depth_formula, "{r:?}");
            assert_eq!(r.work, r.work_formula, "{r:?}");
            assert_eq!(r.depth, depth_formula(r.len, r.chunk), "{r:?}");
            assert_eq!(r.work, work_formula(r.len, r.chunk), "{r:?}");
            assert!(r.median_ms > 0.0 && r.gb_per_s > 0.0, "{r:?}");
        }
        // The packed axis holds exactly the tokens, in one batch row.
        assert_eq!((packed.batch, packed.len), (1, tokens));
        // The padded batch holds every sequence: N rows of the longest.
        assert_eq!(padded.batch, n);
        assert!(n * padded.len >= tokens, "{padded:?}");
        assert!(padded.len <= tokens, "{padded:?}");
        if fwd.plan == "sequential" {
            assert_eq!(packed.depth, tokens as u64);
            assert_eq!(padded.depth, padded.len as u64);
        }
    }
    // The CSV names the kind.
    let csv = report.csv();
    assert!(csv
        .lines()
        .any(|l| l.contains(",varlen,") || l.starts_with("varlen,")));
}

#[test]
fn varlen_none_adds_no_rows_and_bad_lists_are_errors() {
    let cfg = config(Vec::new(), BackendChoice::Cpu);
    let report = sweep::run(&cfg, &ProgressBar::hidden(), &mut |_| {}).expect("runs");
    assert!(report.rows.iter().all(|r| r.kind != RowKind::Varlen));
    assert_eq!(config::parse_varlen("none").expect("none"), Vec::new());
    assert_eq!(
        config::parse_varlen("all").expect("all"),
        Family::ALL.to_vec()
    );
    let err = config::parse_varlen("diagonal,nope").expect_err("bad family");
    assert!(err.to_string().contains("varlen"), "{err}");
    let zero = SweepConfig {
        varlen_max_t: 0,
        ..config(vec![Family::Diagonal], BackendChoice::Cpu)
    };
    let err = sweep::run(&zero, &ProgressBar::hidden(), &mut |_| {}).expect_err("T = 0");
    assert!(err.to_string().contains("varlen-max-t"), "{err}");
}

#[test]
fn emu_backend_skips_varlen_rows_with_a_reason() {
    let cfg = SweepConfig {
        families: vec![Family::Diagonal],
        lengths: vec![64],
        ..config(vec![Family::Diagonal], BackendChoice::Emu)
    };
    let report = sweep::run(&cfg, &ProgressBar::hidden(), &mut |_| {}).expect("runs");
    assert!(report.rows.iter().all(|r| r.kind != RowKind::Varlen));
    let skipped: Vec<_> = report
        .skipped
        .iter()
        .filter(|s| s.label.ends_with(" varlen"))
        .collect();
    assert_eq!(skipped.len(), 1, "{:?}", report.skipped);
    assert!(skipped[0].reason.contains("CPU backend only"));
}
