//! Packed variable-length batches (`cu_seqlens`) on the Diagonal,
//! PermDiagonal and BlockDiagonal kernels on a CUDA device (a GPU, or the
//! emulated CUDA driver in CI): the checks of `tests/emu_varlen.rs`,
//! `tests/emu_varlen_perm.rs` and `tests/emu_varlen_block.rs` (per
//! sequence against the f64 oracle and a separate call, every plan, and
//! the look-back's aggregate path where there is a look-back) on fixed
//! partitions. Without a device every test prints `skipped` and passes,
//! except under `REQUIRE_CUDA=1`/`REQUIRE_GPU=1` (`tests/common/gpu.rs`).

mod common;
#[path = "common/gpu.rs"]
mod gpu;
mod varlen_suite;

use half::bf16;
use varlen_suite::block::check_partition_bd;
use varlen_suite::perm::check_partition_pd;
use varlen_suite::{check_partition, long_among_short};

#[test]
fn partitions_every_plan() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    let cases: [&[usize]; 4] = [&[1], &[0, 7, 0, 1, 8, 13], &[4, 4, 4, 3], &[33, 0, 2, 65]];
    for (i, lens) in cases.iter().enumerate() {
        for (batch, dim) in [(1, 1), (2, 3), (1, 40)] {
            check_partition::<f32, _>(&cuda, lens, batch, dim, i % 2 == 0, i as u64, "cuda")
                .unwrap();
        }
    }
    check_partition::<bf16, _>(&cuda, &[5, 0, 9], 1, 16, true, 9, "cuda bf16").unwrap();
    check_partition::<f64, _>(&cuda, &[5, 0, 9], 1, 3, true, 10, "cuda f64").unwrap();
}

#[test]
fn one_long_among_many_short() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    let long = if cuda.is_emulated() { 600 } else { 100_000 };
    check_partition::<f32, _>(&cuda, &long_among_short(long), 1, 8, true, 0x99, "cuda").unwrap();
}

/// The PermDiagonal packed kernels (`kernels/varlen_perm.cu`): small and
/// wide teams, every plan, f32 plus one 16-bit and the f64 instantiation.
#[test]
fn perm_diagonal_partitions_every_plan() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    let cases: [&[usize]; 3] = [&[1], &[0, 7, 0, 1, 8, 13], &[33, 0, 2, 65]];
    for (i, lens) in cases.iter().enumerate() {
        for (batch, n) in [(1, 1), (2, 5), (1, 40), (1, 130)] {
            check_partition_pd::<f32, _>(&cuda, lens, batch, n, i % 2 == 0, i as u64, "cuda")
                .unwrap();
        }
    }
    check_partition_pd::<bf16, _>(&cuda, &[5, 0, 9], 1, 16, true, 9, "cuda bf16").unwrap();
    check_partition_pd::<f64, _>(&cuda, &[5, 0, 9], 1, 70, true, 10, "cuda f64").unwrap();
    let long = if cuda.is_emulated() { 600 } else { 100_000 };
    check_partition_pd::<f32, _>(&cuda, &long_among_short(long), 1, 8, true, 0x99, "cuda").unwrap();
}

/// The BlockDiagonal packed kernels (`kernels/varlen_block.cu`): several
/// block sizes, every plan, f32 plus one 16-bit and the f64 instantiation.
#[test]
fn block_diagonal_partitions_every_plan() {
    let Some(cuda) = gpu::cuda_or_skip() else {
        return;
    };
    let cases: [&[usize]; 3] = [&[1], &[0, 7, 0, 1, 8, 13], &[33, 0, 2, 65]];
    for (i, lens) in cases.iter().enumerate() {
        for (batch, blocks, block) in [(1, 1, 1), (2, 2, 3), (1, 1, 16)] {
            check_partition_bd::<f32, _>(
                &cuda,
                lens,
                batch,
                blocks,
                block,
                i % 2 == 0,
                i as u64,
                "cuda",
            )
            .unwrap();
        }
    }
    check_partition_bd::<bf16, _>(&cuda, &[5, 0, 9], 1, 2, 4, true, 9, "cuda bf16").unwrap();
    check_partition_bd::<f64, _>(&cuda, &[5, 0, 9], 1, 1, 8, true, 10, "cuda f64").unwrap();
    let long = if cuda.is_emulated() { 600 } else { 100_000 };
    check_partition_bd::<f32, _>(&cuda, &long_among_short(long), 1, 2, 2, true, 0x99, "cuda")
        .unwrap();
}
