//! Packed variable-length batches (`cu_seqlens`) on the PermDiagonal
//! kernels (`kernels/varlen_perm.cu`) in the SIMT emulator, under every
//! fiber order: random partitions of the packed axis (lengths 0, 1, odd,
//! multiples of the chunk, one very long among many short) under every
//! plan (P0–P4 and the look-back's aggregate path), small and wide teams
//! (every look-back width SPL = 1, 2, 4, 8), give per sequence the outputs
//! and `h_T` of the f64 oracle and of a separate call per sequence
//! (`varlen_suite::perm`); every dtype; `u16` permutations; typed errors
//! for bad arguments.

mod common;
mod varlen_suite;

use half::{bf16, f16};
use parascan::backend::emu::EmuBackend;
use parascan::backend::launch::KernelRunner;
use parascan::family::perm_diagonal::PermDiagonal;
use parascan::family::varlen::Varlen;
use parascan::kernels::perm_diagonal::PdShape;
use parascan::kernels::varlen_perm::{
    plan_perm_diagonal_varlen, VarlenPdBuffers, VarlenPdPlan, VarlenPdWorkspace,
};
use parascan::kernels::{launch_scan_buffers, KernelScan};
use parascan::{DType, Error, PlanRequest};
use proptest::prelude::*;
use varlen_suite::perm::{check_partition_pd, PackedPd};
use varlen_suite::{expect_offsets, lengths, long_among_short, orders};

fn every_order<S: parascan::Storage + bytemuck::Pod>(
    lens: &[usize],
    batch: usize,
    n: usize,
    h0: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    for emu in orders() {
        let what = format!("emu {}", emu.order());
        check_partition_pd::<S, _>(&emu, lens, batch, n, h0, seed, &what)
            .map_err(TestCaseError::fail)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    /// Small teams (n ≤ 32, several chunks per warp) and the first wide
    /// width (n = 33).
    #[test]
    fn f32_partitions_every_plan_every_order(
        lens in lengths(),
        batch in 1usize..3,
        n in prop_oneof![Just(1usize), Just(5), Just(32), Just(33)],
        h0 in any::<bool>(),
        seed in any::<u64>(),
    ) {
        every_order::<f32>(&lens, batch, n, h0, seed)?;
    }
}

/// The wider look-back widths (SPL = 4 and 8) and wide reduce/rescan.
#[test]
fn wide_teams_partitions() {
    for (n, seed) in [(70, 1u64), (130, 2), (256, 3)] {
        every_order::<f32>(&[5, 0, 1, 8, 13, 0, 4], 1, n, true, seed).unwrap();
    }
}

#[test]
fn one_long_among_many_short() {
    for n in [3, 40] {
        every_order::<f32>(&long_among_short(600), 1, n, true, 0x1a2b).unwrap();
    }
}

#[test]
fn every_dtype_partitions() {
    let lens = [5, 0, 1, 8, 13, 0];
    let emu = EmuBackend::shuffled(7);
    for n in [5, 40] {
        check_partition_pd::<f64, _>(&emu, &lens, 2, n, true, 11, "emu f64").unwrap();
        check_partition_pd::<f16, _>(&emu, &lens, 1, n, true, 12, "emu f16").unwrap();
        check_partition_pd::<bf16, _>(&emu, &lens, 1, n, true, 13, "emu bf16").unwrap();
    }
}

/// The two-level phase 2 (P3: more than 1024 chunks) on packed sequences.
#[test]
fn two_level_plan_partitions() {
    let lens = long_among_short(2100);
    let data = PackedPd::<f32>::new(&lens, 1, 2, 0x77);
    let packed = Varlen::new(data.problem(), &data.cu, Some(&data.h0)).unwrap();
    for emu in orders() {
        let run = packed.kernel_scan(&emu, PlanRequest::Chunk(1)).unwrap();
        assert!(run.plan.kind.starts_with("P3"), "{}", run.plan.kind);
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

/// `u16` and `u32` permutations run on the same kernels (narrowed on
/// upload) and give the `u8` problem's bits.
#[test]
fn wide_index_types_match_u8() {
    let data = PackedPd::<f32>::new(&[7, 0, 12, 1], 2, 6, 0x16);
    let wide16: Vec<u16> = data.perm.iter().map(|&p| p as u16).collect();
    let wide32: Vec<u32> = data.perm.iter().map(|&p| p as u32).collect();
    let emu = EmuBackend::shuffled(3);
    for req in [PlanRequest::Chunk(4), PlanRequest::LookBack] {
        let base = Varlen::new(data.problem(), &data.cu, Some(&data.h0))
            .unwrap()
            .kernel_scan(&emu, req)
            .unwrap();
        data.check(&emu, true, &base.out, &base.h_last, "emu u8")
            .unwrap();
        let p16 = PermDiagonal {
            perm: &wide16,
            d: &data.d,
            b: &data.b,
            h0: None,
            batch: data.batch,
            len: data.len(),
            n: data.n,
        };
        let r16 = Varlen::new(p16, &data.cu, Some(&data.h0))
            .unwrap()
            .kernel_scan(&emu, req)
            .unwrap();
        let p32 = PermDiagonal {
            perm: &wide32,
            d: &data.d,
            b: &data.b,
            h0: None,
            batch: data.batch,
            len: data.len(),
            n: data.n,
        };
        let r32 = Varlen::new(p32, &data.cu, Some(&data.h0))
            .unwrap()
            .kernel_scan(&emu, req)
            .unwrap();
        assert_eq!(r16.out, base.out, "{req} u16");
        assert_eq!(r16.h_last, base.h_last, "{req} u16");
        assert_eq!(r32.out, base.out, "{req} u32");
        assert_eq!(r32.h_last, base.h_last, "{req} u32");
    }
}

/// A non-finite state in one sequence does not reach the next: the reset
/// absorbs it exactly (no 0·inf), on every plan kind.
#[test]
fn overflow_in_one_sequence_does_not_leak() {
    let (t, n) = (40, 3);
    let cu = [0usize, 20, 40];
    let perm: Vec<u8> = (0..t).flat_map(|_| [1u8, 2, 0]).collect();
    let mut d = vec![0.9f32; t * n];
    let mut b = vec![0.5f32; t * n];
    for x in &mut d[..20 * n] {
        *x = 1e30;
    }
    b[0] = 1e30;
    let problem = PermDiagonal {
        perm: &perm,
        d: &d,
        b: &b,
        h0: None,
        batch: 1,
        len: t,
        n,
    };
    let packed = Varlen::new(problem, &cu, None).unwrap();
    let second = PermDiagonal {
        perm: &perm[20 * n..],
        d: &d[20 * n..],
        b: &b[20 * n..],
        h0: None,
        batch: 1,
        len: 20,
        n,
    };
    let (want, want_t) = parascan::oracle::perm_diagonal(&second);
    for emu in orders() {
        for req in [
            PlanRequest::Sequential,
            PlanRequest::Chunk(3),
            PlanRequest::LookBack,
        ] {
            let run = packed.kernel_scan(&emu, req).unwrap();
            assert!(
                run.h_last[..n].iter().all(|x| !x.is_finite()),
                "first sequence overflows"
            );
            let got = &run.out[20 * n..];
            assert!(
                parascan::oracle::rel_l2(got, &want) <= 1e-5,
                "{req} {}",
                emu.order()
            );
            assert!(parascan::oracle::rel_l2(&run.h_last[n..], &want_t) <= 1e-5);
        }
    }
}

// ---------------------------------------------------------------------------
// Typed errors, before any launch: one test per kind
// ---------------------------------------------------------------------------

fn shape() -> PdShape {
    PdShape::new(1, 10, 4)
}

fn plan_with(cu: &[i64]) -> parascan::Result<VarlenPdPlan> {
    plan_perm_diagonal_varlen(shape(), cu, DType::F32, PlanRequest::Auto, 4)
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
fn n_past_the_kernels_limit_is_an_error() {
    let (t, n) = (2, 300);
    let perm: Vec<u16> = (0..t).flat_map(|_| 0..n as u16).collect();
    let (d, b) = (vec![0.5f32; t * n], vec![0.5f32; t * n]);
    let p = PermDiagonal {
        perm: &perm,
        d: &d,
        b: &b,
        h0: None,
        batch: 1,
        len: t,
        n,
    };
    let packed = Varlen::new(p, &[0usize, 1, 2], None).unwrap();
    match packed.kernel_scan(&EmuBackend::forward(), PlanRequest::Auto) {
        Err(Error::Size { arg: "n", got, .. }) => assert_eq!(got, n),
        other => panic!("expected Size on n, got {other:?}"),
    }
}

#[test]
fn depth_of_a_packed_plan_is_unsupported() {
    let data = PackedPd::<f32>::new(&[3, 7], 1, 4, 5);
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
        plan_perm_diagonal_varlen(shape(), &cu, DType::F32, PlanRequest::Auto, 4).unwrap();
    let n = 10 * 4;
    let states = 3 * 4;
    let sized = |k: usize| emu.alloc(k).unwrap();
    let (perm, d, b, h) = (sized(n), sized(4 * n), sized(4 * n), sized(4 * n));
    let h0 = sized(4 * if which == "h0" { states - 1 } else { states });
    let h_t = sized(4 * if which == "h_t" { 4 } else { states });
    if which == "plan" {
        plan.inner.reverse = true;
    }
    let mut ws = VarlenPdWorkspace::new();
    let bufs = VarlenPdBuffers {
        perm: (&perm).into(),
        d: (&d).into(),
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
