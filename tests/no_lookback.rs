//! `PARASCAN_NO_LOOKBACK=1` (the device bundle's fallback after a look-back
//! hang) keeps `Auto` off the look-back in Diagonal and PermDiagonal, drops
//! the look-back rows from `parascan bench`, and leaves an explicit
//! look-back request alone. One test in its own process: the switch is read
//! once per process.

use parascan::bench::{cases, BenchFamily};
use parascan::family::Layout;
use parascan::kernels::diagonal::{plan_diagonal, DiagShape, GpuPlanKind};
use parascan::kernels::lookback_switch::{auto_lookback_allowed, NO_LOOKBACK_ENV};
use parascan::kernels::perm_diagonal::{plan_perm_diagonal, PdPlanKind, PdShape};
use parascan::{DType, PlanRequest};

#[test]
fn auto_avoids_the_lookback_when_switched_off() {
    std::env::set_var(NO_LOOKBACK_ENV, "1");
    assert!(!auto_lookback_allowed());
    // Shapes where Auto picks P4 otherwise (the planners' unit tests): few
    // lanes, long T, 132 SMs.
    for (shape, layout) in [
        (DiagShape::new(1, 1 << 20, 64), Layout::Btd),
        (DiagShape::new(2, 1 << 20, 8), Layout::Bdt),
    ] {
        let auto = plan_diagonal(shape, layout, DType::F32, PlanRequest::Auto, 132).unwrap();
        assert_ne!(auto.kind, GpuPlanKind::LookBack, "{auto}");
        assert!(auto.chunks > 1, "still chunked along T: {auto}");
        let p4 = plan_diagonal(shape, layout, DType::F32, PlanRequest::LookBack, 132).unwrap();
        assert_eq!(p4.kind, GpuPlanKind::LookBack, "{p4}");
    }
    for n in [5, 64] {
        let shape = PdShape::new(16, 1 << 20, n);
        let auto = plan_perm_diagonal(shape, DType::F32, PlanRequest::Auto, 132).unwrap();
        assert_ne!(auto.kind, PdPlanKind::LookBack, "{auto}");
        assert!(auto.chunks > 1, "still chunked along T: {auto}");
        let p4 = plan_perm_diagonal(shape, DType::F32, PlanRequest::LookBack, 132).unwrap();
        assert_eq!(p4.kind, PdPlanKind::LookBack, "{p4}");
    }
    for family in [BenchFamily::Diagonal, BenchFamily::PermDiagonal] {
        let plans = cases::plans(family, 1 << 20);
        assert!(plans.contains(&PlanRequest::Auto), "{plans:?}");
        assert!(!plans.contains(&PlanRequest::LookBack), "{plans:?}");
    }
}
