//! Packed variable-length batches (`cu_seqlens`) on the Diagonal kernels
//! (`kernels/varlen.cu`) in the SIMT emulator, under every fiber order:
//! random partitions of the packed axis (lengths 0, 1, odd, multiples of
//! the chunk, one very long among many short) under every plan (P0–P4,
//! and the look-back's aggregate path) give, per sequence, the outputs and
//! `h_T` of the f64 oracle and of a separate call per sequence
//! (`varlen_suite`); every dtype; typed errors for bad arguments.

mod common;
mod varlen_suite;

use half::{bf16, f16};
use parascan::backend::emu::EmuBackend;
use parascan::backend::launch::KernelRunner;
use parascan::family::diagonal::Diagonal;
use parascan::family::varlen::Varlen;
use parascan::family::Layout;
use parascan::kernels::varlen::{plan_diagonal_varlen, VarlenBuffers, VarlenWorkspace};
use parascan::kernels::{launch_scan_buffers, DiagShape, GpuPlanKind, KernelScan};
use parascan::{DType, Error, PlanRequest};
use proptest::prelude::*;
use varlen_suite::{check_partition, expect_offsets, lengths, long_among_short, orders, Packed};

fn every_order<S: parascan::Storage + bytemuck::Pod>(
    lens: &[usize],
    batch: usize,
    dim: usize,
    h0: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    for emu in orders() {
        let what = format!("emu {}", emu.order());
        check_partition::<S, _>(&emu, lens, batch, dim, h0, seed, &what)
            .map_err(TestCaseError::fail)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn f32_partitions_every_plan_every_order(
        lens in lengths(),
        batch in 1usize..3,
        dim in prop_oneof![Just(1usize), Just(3), Just(33)],
        h0 in any::<bool>(),
        seed in any::<u64>(),
    ) {
        every_order::<f32>(&lens, batch, dim, h0, seed)?;
    }
}

#[test]
fn one_long_among_many_short() {
    for dim in [1, 5] {
        every_order::<f32>(&long_among_short(600), 1, dim, true, 0x1a2b).unwrap();
    }
}

#[test]
fn every_dtype_partitions() {
    let lens = [5, 0, 1, 8, 13, 0];
    let emu = EmuBackend::shuffled(7);
    check_partition::<f64, _>(&emu, &lens, 2, 3, true, 11, "emu f64").unwrap();
    check_partition::<f16, _>(&emu, &lens, 1, 8, true, 12, "emu f16").unwrap();
    check_partition::<bf16, _>(&emu, &lens, 1, 8, true, 13, "emu bf16").unwrap();
}

/// The two-level phase 2 (P3: more than 2048 chunks) on packed sequences.
#[test]
fn two_level_plan_partitions() {
    let lens = long_among_short(2100);
    let data = Packed::<f32>::new(&lens, 1, 1, 0x77);
    let packed = Varlen::new(data.problem(), &data.cu, Some(&data.h0)).unwrap();
    for emu in orders() {
        let run = packed.kernel_scan(&emu, PlanRequest::Chunk(1)).unwrap();
        assert!(
            run.plan.kind.starts_with(GpuPlanKind::TwoLevel.label()),
            "{}",
            run.plan.kind
        );
        data.check(
            &emu,
            true,
            &run.out,
            &run.h_last,
            &format!("emu {} P3", emu.order()),
        )
        .unwrap();
    }
}

/// A non-finite state in one sequence does not reach the next: the reset
/// absorbs it exactly (no 0·inf).
#[test]
fn overflow_in_one_sequence_does_not_leak() {
    let (t, d) = (40, 2);
    let cu = [0usize, 20, 40];
    let mut a = vec![0.9f32; t * d];
    let mut b = vec![0.5f32; t * d];
    for x in &mut a[..20 * d] {
        *x = 1e30;
    }
    b[0] = 1e30;
    let problem = Diagonal {
        a: &a,
        b: &b,
        h0: None,
        batch: 1,
        len: t,
        dim: d,
        layout: Layout::Btd,
    };
    let packed = Varlen::new(problem, &cu, None).unwrap();
    let second = Diagonal {
        a: &a[20 * d..],
        b: &b[20 * d..],
        h0: None,
        batch: 1,
        len: 20,
        dim: d,
        layout: Layout::Btd,
    };
    let (want, want_t) = parascan::oracle::diagonal(&second);
    for emu in orders() {
        for req in [
            PlanRequest::Sequential,
            PlanRequest::Chunk(3),
            PlanRequest::LookBack,
        ] {
            let run = packed.kernel_scan(&emu, req).unwrap();
            assert!(
                run.h_last[..d].iter().all(|x| !x.is_finite()),
                "first sequence overflows"
            );
            let got = &run.out[20 * d..];
            assert!(
                parascan::oracle::rel_l2(got, &want) <= 1e-5,
                "{req} {}",
                emu.order()
            );
            assert!(parascan::oracle::rel_l2(&run.h_last[d..], &want_t) <= 1e-5);
        }
    }
}

// ---------------------------------------------------------------------------
// Typed errors, before any launch: one test per kind
// ---------------------------------------------------------------------------

fn shape() -> DiagShape {
    DiagShape::new(1, 10, 4)
}

fn plan_with(cu: &[i64]) -> parascan::Result<parascan::kernels::varlen::VarlenPlan> {
    plan_diagonal_varlen(shape(), cu, DType::F32, PlanRequest::Auto, 4)
}

#[test]
fn offsets_too_few_is_an_error() {
    expect_offsets(plan_with(&[0]), 0);
}

#[test]
fn offsets_first_not_zero_is_an_error() {
    expect_offsets(plan_with(&[1, 10]), 0);
}

#[test]
fn offsets_decreasing_is_an_error() {
    expect_offsets(plan_with(&[0, 6, 4, 10]), 2);
}

#[test]
fn offsets_past_the_end_is_an_error() {
    expect_offsets(plan_with(&[0, 11, 10]), 1);
}

#[test]
fn offsets_short_of_the_end_is_an_error() {
    expect_offsets(plan_with(&[0, 4, 9]), 2);
}

#[test]
fn offsets_negative_is_an_error() {
    expect_offsets(plan_with(&[0, -1, 10]), 1);
}

#[test]
fn bdt_layout_is_unsupported_on_the_kernels() {
    let (a, b) = (vec![0.5f32; 40], vec![0.5f32; 40]);
    let p = Diagonal {
        a: &a,
        b: &b,
        h0: None,
        batch: 1,
        len: 10,
        dim: 4,
        layout: Layout::Bdt,
    };
    let packed = Varlen::new(p, &[0usize, 3, 10], None).unwrap();
    match packed.kernel_scan(&EmuBackend::forward(), PlanRequest::Auto) {
        Err(Error::Unsupported { what: "layout", .. }) => {}
        other => panic!("expected Unsupported layout, got {other:?}"),
    }
}

#[test]
fn depth_of_a_packed_plan_is_unsupported() {
    let (a, b) = (vec![0.5f32; 40], vec![0.5f32; 40]);
    let p = Diagonal {
        a: &a,
        b: &b,
        h0: None,
        batch: 1,
        len: 10,
        dim: 4,
        layout: Layout::Btd,
    };
    let packed = Varlen::new(p, &[0usize, 3, 10], None).unwrap();
    match packed.kernel_depth(&EmuBackend::forward(), PlanRequest::Auto) {
        Err(Error::Unsupported { .. }) => {}
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

/// Wrong-sized `h0`/`h_t` buffers and a plan edited after planning are
/// refused by the device API before any launch.
fn device_api_error(which: &str) -> Error {
    let emu = EmuBackend::forward();
    let cu = [0usize, 3, 3, 10];
    let mut plan = plan_diagonal_varlen(shape(), &cu, DType::F32, PlanRequest::Auto, 4).unwrap();
    let n = 10 * 4;
    let states = 3 * 4;
    let sized = |k: usize| emu.alloc(k * 4).unwrap();
    let (a, b, h) = (sized(n), sized(n), sized(n));
    let h0 = sized(if which == "h0" { states - 1 } else { states });
    let h_t = sized(if which == "h_t" { 4 } else { states });
    if which == "plan" {
        plan.inner.reverse = true;
    }
    let mut ws = VarlenWorkspace::new();
    let bufs = VarlenBuffers {
        a: (&a).into(),
        b: (&b).into(),
        h0: Some((&h0).into()),
        h: (&h).into(),
        h_t: (&h_t).into(),
    };
    launch_scan_buffers(&emu, &mut ws, &plan, bufs).unwrap_err()
}

#[test]
fn per_sequence_h0_wrong_length_is_an_error() {
    match device_api_error("h0") {
        Error::Shape { arg, .. } => assert_eq!(arg, "h0"),
        other => panic!("expected Shape on h0, got {other:?}"),
    }
}

#[test]
fn per_sequence_h_t_wrong_length_is_an_error() {
    match device_api_error("h_t") {
        Error::Shape { arg, .. } => assert_eq!(arg, "h_t"),
        other => panic!("expected Shape on h_t, got {other:?}"),
    }
}

#[test]
fn edited_plan_is_an_error() {
    assert!(matches!(device_api_error("plan"), Error::Plan(_)));
}
