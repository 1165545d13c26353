//! Measured depth and work of the CPU engine equal the plan's formulas.

use parascan::scan::depth::measure;
use parascan::scan::plan::{depth_formula, work_formula, ScanShape};
use parascan::{Plan, PlanRequest};

fn check(len: usize, request: PlanRequest) {
    let plan = Plan::resolve(request, ScanShape::new(1, len), 2).unwrap();
    let m = measure(len, &plan);
    assert_eq!(
        m.depth, plan.depth,
        "depth, T={len} {request}: measured vs formula"
    );
    assert_eq!(
        m.work, plan.work,
        "work, T={len} {request}: measured vs formula"
    );
}

#[test]
fn measured_depth_equals_formula() {
    for len in [1, 2, 3, 5, 8, 31, 64, 100, 257, 1000, 4096, 10_007] {
        for req in [
            PlanRequest::Sequential,
            PlanRequest::MinDepth,
            PlanRequest::Auto,
            PlanRequest::Chunk(1),
            PlanRequest::Chunk(2),
            PlanRequest::Chunk(3),
            PlanRequest::Chunk(16),
            PlanRequest::Chunk(100),
        ] {
            check(len, req);
        }
    }
}

#[test]
fn closed_forms_for_powers_of_two() {
    // T = N·C with N a power of two: depth 2C + 2·log2 N − 1, work 2T + 2N − 3.
    for log_n in 1..12 {
        for c in [1usize, 4, 32] {
            let n = 1usize << log_n;
            let t = n * c;
            assert_eq!(depth_formula(t, c), (2 * c + 2 * log_n - 1) as u64);
            assert_eq!(work_formula(t, c), (2 * t + 2 * n - 3) as u64);
        }
    }
    assert_eq!(depth_formula(1000, 1000), 1000);
}

#[test]
fn scan_depth_grows_like_log_and_sequential_like_t() {
    let d = |t: usize, r| Plan::resolve(r, ScanShape::new(1, t), 1).unwrap().depth;
    for k in 10..20 {
        let t = 1usize << k;
        assert_eq!(d(t, PlanRequest::Sequential), t as u64);
        assert_eq!(d(t, PlanRequest::MinDepth), (2 * k + 1) as u64);
    }
}
