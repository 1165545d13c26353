//! Head axes, strided views and mixed precision on the CPU engine.
//!
//! - Strided `[B,T,H,K]` views (a head slice of a fused `[B,T,3H,K]`
//!   projection, so neither the head nor the time axis is contiguous) give
//!   bit for bit the results of the contiguous `[B·H,T,K]` problem under the
//!   same plan (the arithmetic is the same, combine for combine).
//! - Mixed precision (decays/transitions and state f32, inputs/outputs
//!   bf16/f16) is within the stated tolerance of the f64 oracle on the
//!   rounded inputs: outputs within one storage rounding
//!   ([`common::tolerance`] of the output type), `h_T` within the f32
//!   tolerance — it never passes through bf16.

mod common;

use common::{rng, tolerance, uniform};
use half::{bf16, f16};
use parascan::backend::Cpu;
use parascan::family::diagonal::Diagonal;
use parascan::family::dplr::{Dplr, DplrOutput};
use parascan::family::heads::{DiagonalHeads, DplrHeads, Strided};
use parascan::family::varlen::Varlen;
use parascan::family::{Layout, LinearProblem};
use parascan::{oracle, Error, PlanRequest, Storage};

const PLANS: [PlanRequest; 4] = [
    PlanRequest::Sequential,
    PlanRequest::Chunk(4),
    PlanRequest::Chunk(7),
    PlanRequest::MinDepth,
];

/// A fused `[B,T,F·H,inner]` buffer and the view of its `slot`-th group of
/// `H` heads: strides `[T·F·H·inner, F·H·inner, inner]`.
fn fused<S: Storage>(
    r: &mut rand_chacha::ChaCha8Rng,
    (b, t, h, inner): (usize, usize, usize, usize),
    lo: f64,
    hi: f64,
) -> Vec<S> {
    uniform(r, b * t * 3 * h * inner, lo, hi)
}

fn view<S>(
    buf: &[S],
    (_b, t, h, inner): (usize, usize, usize, usize),
    slot: usize,
) -> Strided<'_, S> {
    Strided {
        data: &buf[slot * h * inner..],
        strides: [t * 3 * h * inner, 3 * h * inner, inner],
    }
}

/// The view's elements gathered into the contiguous `[B·H,T,inner]` layout.
fn gather<S: Copy>(v: &Strided<'_, S>, (b, t, h, inner): (usize, usize, usize, usize)) -> Vec<S> {
    let mut out = Vec::with_capacity(b * t * h * inner);
    for bi in 0..b {
        for hi in 0..h {
            for ti in 0..t {
                let o = bi * v.strides[0] + ti * v.strides[1] + hi * v.strides[2];
                out.extend_from_slice(&v.data[o..o + inner]);
            }
        }
    }
    out
}

#[test]
fn diagonal_heads_strided_equal_the_contiguous_bh_path() {
    let dims @ (b, t, h, k) = (2, 37, 3, 4);
    let mut r = rng(1);
    let a_buf: Vec<f32> = fused(&mut r, dims, 0.5, 1.0);
    let b_buf: Vec<f32> = fused(&mut r, dims, -1.0, 1.0);
    let h0: Vec<f32> = uniform(&mut r, b * h * k, -1.0, 1.0);
    let (av, bv) = (view(&a_buf, dims, 1), view(&b_buf, dims, 2));
    let heads = DiagonalHeads {
        a: av,
        b: bv,
        h0: Some(&h0),
        batch: b,
        len: t,
        heads: h,
        head_dim: k,
    };
    let (a_c, b_c) = (gather(&av, dims), gather(&bv, dims));
    let flat = Diagonal {
        a: &a_c,
        b: &b_c,
        h0: Some(&h0),
        batch: b * h,
        len: t,
        dim: k,
        layout: Layout::Btd,
    };
    let cpu = Cpu::new();
    for req in PLANS {
        let got = cpu.scan(&heads, req).unwrap();
        let want = cpu.scan(&flat, req).unwrap();
        assert_eq!(got.h_last, want.h_last, "{req}: h_T [B,H,K] = [B·H,K]");
        for (bi, hi, ti) in
            (0..b).flat_map(|x| (0..h).flat_map(move |y| (0..t).map(move |z| (x, y, z))))
        {
            let g = &got.out[((bi * t + ti) * h + hi) * k..][..k];
            let w = &want.out[((bi * h + hi) * t + ti) * k..][..k];
            assert_eq!(g, w, "{req}: b {bi} h {hi} t {ti}");
        }
    }
}

/// DPLR inputs in the fused layout: `(w, u, v, k, x, q)` buffers.
struct DplrBufs<A, X> {
    w: Vec<A>,
    u: Vec<A>,
    v: Vec<A>,
    k: Vec<X>,
    x: Vec<X>,
    q: Vec<X>,
}

fn dplr_bufs<A: Storage, X: Storage>(
    seed: u64,
    (b, t, h): (usize, usize, usize),
    n: usize,
    m: usize,
    rank: usize,
) -> DplrBufs<A, X> {
    let mut r = rng(seed);
    let s = (0.25 / (rank * n) as f64).sqrt();
    DplrBufs {
        w: fused(&mut r, (b, t, h, n), 0.5, 1.0),
        u: fused(&mut r, (b, t, h, rank * n), -s, s),
        v: fused(&mut r, (b, t, h, rank * n), -s, s),
        k: fused(&mut r, (b, t, h, n), -1.0, 1.0),
        x: fused(&mut r, (b, t, h, m), -1.0, 1.0),
        q: fused(&mut r, (b, t, h, n), -1.0, 1.0),
    }
}

fn dplr_heads<'a, A: Storage, X: Storage>(
    d: &'a DplrBufs<A, X>,
    (b, t, h): (usize, usize, usize),
    (n, m, rank): (usize, usize, usize),
    h0: Option<&'a [A]>,
    output: DplrOutput,
) -> DplrHeads<'a, A, X> {
    DplrHeads {
        w: view(&d.w, (b, t, h, n), 0),
        u: view(&d.u, (b, t, h, rank * n), 1),
        v: view(&d.v, (b, t, h, rank * n), 2),
        k: view(&d.k, (b, t, h, n), 1),
        x: view(&d.x, (b, t, h, m), 2),
        q: Some(view(&d.q, (b, t, h, n), 0)),
        h0,
        batch: b,
        len: t,
        heads: h,
        n,
        m,
        rank,
        output,
    }
}

#[test]
fn dplr_heads_strided_equal_the_contiguous_bh_path() {
    let (b, t, h, n, m, rank) = (2, 29, 3, 3, 2, 2);
    let d: DplrBufs<f32, f32> = dplr_bufs(2, (b, t, h), n, m, rank);
    let h0: Vec<f32> = uniform(&mut rng(3), b * h * n * m, -1.0, 1.0);
    let cpu = Cpu::new();
    for output in [DplrOutput::Readout, DplrOutput::States] {
        let heads = dplr_heads(&d, (b, t, h), (n, m, rank), Some(&h0), output);
        let g = |v: &Strided<'_, f32>, inner| gather(v, (b, t, h, inner));
        let (w, u, v) = (g(&heads.w, n), g(&heads.u, rank * n), g(&heads.v, rank * n));
        let (k, x, q) = (g(&heads.k, n), g(&heads.x, m), g(&heads.q.unwrap(), n));
        let flat = Dplr {
            w: &w,
            u: &u,
            v: &v,
            k: &k,
            x: &x,
            q: Some(&q),
            h0: Some(&h0),
            batch: b * h,
            len: t,
            n,
            m,
            rank,
            output,
        };
        for req in PLANS {
            let got = cpu.scan(&heads, req).unwrap();
            let want = cpu.scan(&flat, req).unwrap();
            assert_eq!(got.out, want.out, "{req} {output:?}: [B,H,T,·] = [B·H,T,·]");
            assert_eq!(got.h_last, want.h_last, "{req} {output:?}: h_T [B,H,K,V]");
        }
    }
}

/// The f64 copy of a view, contiguous `[B·H,T,inner]`.
fn wide<S: Storage>(v: &Strided<'_, S>, dims: (usize, usize, usize, usize)) -> Vec<f64> {
    gather(v, dims).into_iter().map(|x| x.to_f64()).collect()
}

fn mixed_diagonal<X: Storage<Compute = f32>>(seed: u64) {
    let dims @ (b, t, h, k) = (2, 300, 2, 8);
    let mut r = rng(seed);
    // Mamba-range decays exp(−Δ·A), many of which bf16 would round to 1.
    let a_buf: Vec<f32> = fused(&mut r, dims, 0.99, 0.9999);
    let b_buf: Vec<X> = fused(&mut r, dims, -1.0, 1.0);
    let h0: Vec<f32> = uniform(&mut r, b * h * k, -1.0, 1.0);
    let p = DiagonalHeads {
        a: view(&a_buf, dims, 0),
        b: view(&b_buf, dims, 1),
        h0: Some(&h0),
        batch: b,
        len: t,
        heads: h,
        head_dim: k,
    };
    let (a64, b64) = (wide(&p.a, dims), wide(&p.b, dims));
    let h064: Vec<f64> = h0.iter().map(|&x| x as f64).collect();
    let reference = Diagonal {
        a: &a64,
        b: &b64,
        h0: Some(&h064),
        batch: b * h,
        len: t,
        dim: k,
        layout: Layout::Btd,
    };
    let (want_out, want_h) = oracle::diagonal(&reference);
    let cpu = Cpu::new();
    for req in PLANS {
        let mut out = vec![X::from_f64(0.0); p.out_len()];
        let mut h_t = vec![0f32; p.state_len()];
        p.scan_into(&cpu, req, &mut out, &mut h_t).unwrap();
        // Outputs [B,T,H,K] against the oracle's [B·H,T,K].
        let mut got = Vec::with_capacity(out.len());
        for (bi, hi, ti) in
            (0..b).flat_map(|x| (0..h).flat_map(move |y| (0..t).map(move |z| (x, y, z))))
        {
            got.extend_from_slice(&out[((bi * t + ti) * h + hi) * k..][..k]);
        }
        let (e_out, e_h) = (
            oracle::rel_l2(&got, &want_out),
            oracle::rel_l2(&h_t, &want_h),
        );
        assert!(e_out <= tolerance::<X>(t), "{req}: outputs {e_out:.2e}");
        assert!(
            e_h <= tolerance::<f32>(t),
            "{req}: f32 h_T {e_h:.2e} > {:.2e}",
            tolerance::<f32>(t)
        );
    }
}

#[test]
fn diagonal_mixed_precision_bf16_inputs_f32_state() {
    mixed_diagonal::<bf16>(4);
}

#[test]
fn diagonal_mixed_precision_f16_inputs_f32_state() {
    mixed_diagonal::<f16>(5);
}

fn mixed_dplr<X: Storage<Compute = f32>>(seed: u64) {
    let (b, t, h, n, m, rank) = (1, 200, 2, 4, 3, 1);
    let d: DplrBufs<f32, X> = dplr_bufs(seed, (b, t, h), n, m, rank);
    let h0: Vec<f32> = uniform(&mut rng(seed + 1), b * h * n * m, -1.0, 1.0);
    let cpu = Cpu::new();
    for output in [DplrOutput::Readout, DplrOutput::States] {
        let p = dplr_heads(&d, (b, t, h), (n, m, rank), Some(&h0), output);
        let g = |v: &Strided<'_, f32>, inner| wide(v, (b, t, h, inner));
        let gx = |v: &Strided<'_, X>, inner| wide(v, (b, t, h, inner));
        let (w, u, v) = (g(&p.w, n), g(&p.u, rank * n), g(&p.v, rank * n));
        let (k, x, q) = (gx(&p.k, n), gx(&p.x, m), gx(&p.q.unwrap(), n));
        let h064: Vec<f64> = h0.iter().map(|&x| x as f64).collect();
        let reference = Dplr {
            w: &w,
            u: &u,
            v: &v,
            k: &k,
            x: &x,
            q: Some(&q),
            h0: Some(&h064),
            batch: b * h,
            len: t,
            n,
            m,
            rank,
            output,
        };
        let (want_out, want_h) = oracle::dplr(&reference);
        for req in PLANS {
            let mut out = vec![X::from_f64(0.0); p.out_len()];
            let mut h_t = vec![0f32; p.state_len()];
            p.scan_into(&cpu, req, &mut out, &mut h_t).unwrap();
            let (e_out, e_h) = (
                oracle::rel_l2(&out, &want_out),
                oracle::rel_l2(&h_t, &want_h),
            );
            assert!(
                e_out <= tolerance::<X>(t),
                "{req} {output:?}: outputs {e_out:.2e}"
            );
            assert!(
                e_h <= tolerance::<f32>(t),
                "{req} {output:?}: f32 h_T {e_h:.2e}"
            );
        }
    }
}

#[test]
fn dplr_mixed_precision_bf16_inputs_f32_state() {
    mixed_dplr::<bf16>(6);
}

#[test]
fn dplr_mixed_precision_f16_inputs_f32_state() {
    mixed_dplr::<f16>(8);
}

/// fla's varlen call: `[1,T,H,K]` views, `cu_seqlens`, `h0`/`h_T` as
/// `[N,H,K,V]`; each sequence equals its own call.
#[test]
fn dplr_heads_packed_sequences_equal_separate_calls() {
    let (t, h, n, m, rank) = (23, 2, 3, 2, 1);
    let cu = [0usize, 6, 6, 7, 23];
    let d: DplrBufs<f32, f32> = dplr_bufs(9, (1, t, h), n, m, rank);
    let h0: Vec<f32> = uniform(&mut rng(10), 4 * h * n * m, -1.0, 1.0);
    let p = dplr_heads(&d, (1, t, h), (n, m, rank), None, DplrOutput::Readout);
    let packed = Varlen::new(p, &cu, Some(&h0)).unwrap();
    let cpu = Cpu::new();
    let run = cpu.scan(&packed, PlanRequest::Sequential).unwrap();
    let state = h * n * m;
    for s in 0..4 {
        let (lo, hi) = (cu[s], cu[s + 1]);
        let h0_s = &h0[s * state..(s + 1) * state];
        if lo == hi {
            assert_eq!(&run.h_last[s * state..(s + 1) * state], h0_s);
            continue;
        }
        // The sequence alone: the same views starting at step lo.
        fn shift(v: Strided<'_, f32>, lo: usize) -> Strided<'_, f32> {
            Strided {
                data: &v.data[lo * v.strides[1]..],
                strides: v.strides,
            }
        }
        let alone = DplrHeads {
            w: shift(p.w, lo),
            u: shift(p.u, lo),
            v: shift(p.v, lo),
            k: shift(p.k, lo),
            x: shift(p.x, lo),
            q: p.q.map(|q| shift(q, lo)),
            h0: Some(h0_s),
            len: hi - lo,
            ..p
        };
        let want = cpu.scan(&alone, PlanRequest::Sequential).unwrap();
        assert_eq!(
            &run.h_last[s * state..(s + 1) * state],
            &want.h_last[..],
            "h_T of {s}"
        );
        for hd in 0..h {
            for ti in 0..hi - lo {
                assert_eq!(
                    &run.out[(hd * t + lo + ti) * m..][..m],
                    &want.out[(hd * (hi - lo) + ti) * m..][..m],
                    "sequence {s} head {hd} step {ti}"
                );
            }
        }
    }
}

#[test]
fn view_past_its_buffer_is_an_error() {
    let buf = vec![0.5f32; 100];
    let p = DiagonalHeads {
        a: Strided {
            data: &buf,
            strides: [50, 10, 4],
        },
        b: Strided::contiguous(&buf, 5, 2, 4),
        h0: None,
        batch: 2,
        len: 5,
        heads: 2,
        head_dim: 4,
    };
    // a reaches 50 + 4·10 + 4 + 4 = 98 ≤ 100: fine; b is [2,5,2,4] = 80.
    assert!(p.validate().is_ok());
    // 60 + 40 + 4 + 4 = 108 > 100.
    let bad = DiagonalHeads {
        a: Strided {
            data: &buf,
            strides: [60, 10, 4],
        },
        ..p
    };
    match bad.validate() {
        Err(Error::Stride { arg, .. }) => assert_eq!(arg, "a"),
        other => panic!("expected a stride error on a, got {other:?}"),
    }
}

#[test]
fn view_strides_overflowing_usize_is_an_error() {
    let buf = vec![0.5f32; 200];
    let p = DiagonalHeads {
        a: Strided::contiguous(&buf, 5, 2, 4),
        b: Strided {
            data: &buf,
            strides: [usize::MAX / 2, 10, 4],
        },
        h0: None,
        batch: 3,
        len: 5,
        heads: 2,
        head_dim: 4,
    };
    match p.validate() {
        Err(Error::Stride { arg, .. }) => assert_eq!(arg, "b"),
        other => panic!("expected a stride error on b, got {other:?}"),
    }
}

#[test]
fn dplr_heads_readout_without_q_is_an_error() {
    let d: DplrBufs<f32, f32> = dplr_bufs(11, (1, 4, 1), 2, 2, 1);
    let p = DplrHeads {
        q: None,
        ..dplr_heads(&d, (1, 4, 1), (2, 2, 1), None, DplrOutput::Readout)
    };
    assert!(matches!(
        p.validate(),
        Err(Error::Unsupported {
            what: "q = None",
            ..
        })
    ));
}

#[test]
fn mixed_precision_output_buffer_wrong_length_is_an_error() {
    let dims @ (b, t, h, k) = (1, 6, 2, 3);
    let mut r = rng(12);
    let a_buf: Vec<f32> = fused(&mut r, dims, 0.5, 1.0);
    let b_buf: Vec<bf16> = fused(&mut r, dims, -1.0, 1.0);
    let p = DiagonalHeads {
        a: view(&a_buf, dims, 0),
        b: view(&b_buf, dims, 1),
        h0: None,
        batch: b,
        len: t,
        heads: h,
        head_dim: k,
    };
    let mut out = vec![bf16::ZERO; p.out_len() - 1];
    let mut h_t = vec![0f32; p.state_len()];
    match p.scan_into(&Cpu::new(), PlanRequest::Auto, &mut out, &mut h_t) {
        Err(Error::Shape { arg, .. }) => assert_eq!(arg, "out"),
        other => panic!("expected a shape error on out, got {other:?}"),
    }
}
