//! Packed variable-length batches (`cu_seqlens`) on the BlockDiagonal
//! kernels (`kernels/varlen_block.cu`) in the SIMT emulator, under every
//! fiber order: random partitions of the packed axis (lengths 0, 1, odd,
//! multiples of the chunk, one very long among many short) under every
//! plan (P0–P2, the aggregate tree with one and several levels), every
//! block size, give per sequence the outputs and `h_T` of the f64 oracle
//! and of a separate call per sequence (`varlen_suite::block`); every
//! dtype; typed errors for bad arguments.

mod common;
mod varlen_suite;

use half::{bf16, f16};
use parascan::backend::emu::EmuBackend;
use parascan::backend::launch::KernelRunner;
use parascan::family::block_diagonal::BlockDiagonal;
use parascan::family::varlen::Varlen;
use parascan::kernels::block_diagonal::BlockShape;
use parascan::kernels::varlen_block::{
    plan_block_diagonal_varlen, VarlenBlockBuffers, VarlenBlockPlan, VarlenBlockWorkspace,
};
use parascan::kernels::{launch_scan_buffers, KernelScan};
use parascan::{DType, Error, PlanRequest};
use proptest::prelude::*;
use varlen_suite::block::{check_partition_bd, PackedBd};
use varlen_suite::{expect_offsets, lengths, long_among_short, orders};

fn every_order<S: parascan::Storage + bytemuck::Pod>(
    lens: &[usize],
    batch: usize,
    blocks: usize,
    block: usize,
    h0: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    for emu in orders() {
        let what = format!("emu {}", emu.order());
        check_partition_bd::<S, _>(&emu, lens, batch, blocks, block, h0, seed, &what)
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
        (blocks, block) in prop_oneof![Just((1usize, 1usize)), Just((2, 2)), Just((1, 3)), Just((2, 4))],
        h0 in any::<bool>(),
        seed in any::<u64>(),
    ) {
        every_order::<f32>(&lens, batch, blocks, block, h0, seed)?;
    }
}

/// The larger block sizes (the rolled row loops of k = 32, 64).
#[test]
fn every_block_size_partitions() {
    let emu = EmuBackend::shuffled(5);
    for (i, k) in [1usize, 2, 3, 4, 8, 16, 32, 64].into_iter().enumerate() {
        check_partition_bd::<f32, _>(&emu, &[5, 0, 1, 8, 3], 1, 1, k, true, i as u64, "emu")
            .unwrap();
    }
}

#[test]
fn one_long_among_many_short() {
    every_order::<f32>(&long_among_short(600), 1, 2, 2, true, 0x1a2b).unwrap();
}

#[test]
fn every_dtype_partitions() {
    let lens = [5, 0, 1, 8, 13, 0];
    let emu = EmuBackend::shuffled(7);
    check_partition_bd::<f64, _>(&emu, &lens, 2, 2, 3, true, 11, "emu f64").unwrap();
    check_partition_bd::<f16, _>(&emu, &lens, 1, 2, 4, true, 12, "emu f16").unwrap();
    check_partition_bd::<bf16, _>(&emu, &lens, 1, 2, 4, true, 13, "emu bf16").unwrap();
}

/// A tree of several levels (chunk 1, radix 2 over a long packed axis).
#[test]
fn deep_tree_partitions() {
    let lens = long_among_short(300);
    let data = PackedBd::<f32>::new(&lens, 1, 1, 2, 0x77);
    let packed = Varlen::new(data.problem(), &data.cu, Some(&data.h0)).unwrap();
    for emu in orders() {
        let run = packed.kernel_scan(&emu, PlanRequest::Chunk(1)).unwrap();
        assert!(run.plan.kind.starts_with("P2"), "{}", run.plan.kind);
        data.check(
            &emu,
            true,
            &run.out,
            &run.h_last,
            &format!("emu {} deep tree", emu.order()),
        )
        .unwrap();
    }
}

/// A non-finite state in one sequence does not reach the next, on every
/// plan kind (the levels above level 0 included).
#[test]
fn overflow_in_one_sequence_does_not_leak() {
    let (t, k) = (40, 2);
    let cu = [0usize, 20, 40];
    let mut a = vec![0.0f32; t * k * k];
    for step in a.chunks_mut(k * k) {
        step[0] = 0.5;
        step[3] = 0.5;
    }
    for step in a[..20 * k * k].chunks_mut(k * k) {
        step[0] = 1e30;
        step[1] = 1e30;
    }
    let mut b = vec![0.5f32; t * k];
    b[0] = 1e30;
    let problem = BlockDiagonal {
        a: &a,
        b: &b,
        h0: None,
        batch: 1,
        len: t,
        blocks: 1,
        block: k,
    };
    let packed = Varlen::new(problem, &cu, None).unwrap();
    let second = BlockDiagonal {
        a: &a[20 * k * k..],
        b: &b[20 * k..],
        h0: None,
        batch: 1,
        len: 20,
        blocks: 1,
        block: k,
    };
    let (want, want_t) = parascan::oracle::block_diagonal(&second);
    for emu in orders() {
        for req in [
            PlanRequest::Sequential,
            PlanRequest::Chunk(3),
            PlanRequest::Chunk(1),
        ] {
            let run = packed.kernel_scan(&emu, req).unwrap();
            assert!(
                run.h_last[..k].iter().any(|x| !x.is_finite()),
                "first sequence overflows"
            );
            let got = &run.out[20 * k..];
            assert!(
                parascan::oracle::rel_l2(got, &want) <= 1e-5,
                "{req} {}",
                emu.order()
            );
            assert!(parascan::oracle::rel_l2(&run.h_last[k..], &want_t) <= 1e-5);
        }
    }
}

// ---------------------------------------------------------------------------
// Typed errors, before any launch: one test per kind
// ---------------------------------------------------------------------------

fn shape() -> BlockShape {
    BlockShape::new(1, 10, 2, 2)
}

fn plan_with(cu: &[i64]) -> parascan::Result<VarlenBlockPlan> {
    plan_block_diagonal_varlen(shape(), cu, DType::F32, PlanRequest::Auto, 4)
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
fn look_back_is_an_error() {
    let data = PackedBd::<f32>::new(&[3, 7], 1, 1, 2, 5);
    let packed = Varlen::new(data.problem(), &data.cu, None).unwrap();
    match packed.kernel_scan(&EmuBackend::forward(), PlanRequest::LookBack) {
        Err(Error::Plan(why)) => assert!(why.contains("look-back"), "{why}"),
        other => panic!(
            "expected a look-back plan error, got {:?}",
            other.map(|r| r.plan)
        ),
    }
}

#[test]
fn depth_of_a_packed_plan_is_unsupported() {
    let data = PackedBd::<f32>::new(&[3, 7], 1, 1, 2, 5);
    let packed = Varlen::new(data.problem(), &data.cu, None).unwrap();
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
    let mut plan =
        plan_block_diagonal_varlen(shape(), &cu, DType::F32, PlanRequest::Auto, 4).unwrap();
    let (na, n) = (10 * 2 * 2 * 2, 10 * 4);
    let states = 3 * 4;
    let sized = |k: usize| emu.alloc(4 * k).unwrap();
    let (a, b, h) = (sized(na), sized(n), sized(n));
    let h0 = sized(if which == "h0" { states - 1 } else { states });
    let h_t = sized(if which == "h_t" { 4 } else { states });
    if which == "plan" {
        plan.inner.reverse = true;
    }
    let mut ws = VarlenBlockWorkspace::new();
    let bufs = VarlenBlockBuffers {
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
