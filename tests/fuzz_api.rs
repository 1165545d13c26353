//! Fuzzing the public API's shapes and sizes (issue 14, item 7): every
//! family's problem struct, `NonlinearProblem` with built-in and user
//! cells, and plan requests, with sizes drawn from small, zero, huge and
//! overflowing values and buffers whose lengths match or not, on the CPU
//! engine and on the emulated kernels. Asserts that nothing panics, that an
//! invalid problem is never `Ok`, and (through a 64 MiB host budget) that
//! huge sizes are refused instead of allocated. Fixed budget: `CASES`
//! cases per test, no persistence, a few seconds in all.

use std::panic::{catch_unwind, AssertUnwindSafe};

use parascan::backend::emu::EmuBackend;
use parascan::backend::Cpu;
use parascan::family::block_diagonal::BlockDiagonal;
use parascan::family::diagonal::Diagonal;
use parascan::family::dplr::{Dplr, DplrOutput};
use parascan::family::perm_diagonal::PermDiagonal;
use parascan::family::Layout;
use parascan::kernels::KernelScan;
use parascan::newton::{
    solve, solve_kernels, Cell, DiagGru, Mode, NewtonOptions, NonlinearProblem, Structure,
};
use parascan::PlanRequest;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const CASES: u32 = 1024;
/// Largest buffer a case builds (inputs stay small; sizes need not).
const MAX_BUF: usize = 96;

fn runner() -> TestRunner {
    // Any input-sized buffer above this is refused with a typed error: a
    // huge size that reached an allocation would show as OutOfMemory (or,
    // through an infallible path, abort the test binary).
    parascan::mem::set_host_budget(Some(64 << 20));
    // A fixed seed: the same cases on every run (reproducible in CI).
    TestRunner::new_with_rng(
        Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    )
}

/// Zero, small, and huge sizes (overflowing in products, or just too big).
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..5,
        1 => Just(1usize << 32),
        1 => Just((1usize << 62) + 1),
        1 => Just(usize::MAX),
        1 => (1usize << 20)..(1usize << 40),
    ]
}

fn plan() -> impl Strategy<Value = PlanRequest> {
    prop_oneof![
        Just(PlanRequest::Sequential),
        Just(PlanRequest::MinDepth),
        Just(PlanRequest::Auto),
        Just(PlanRequest::LookBack),
        Just(PlanRequest::Chunk(0)),
        Just(PlanRequest::Chunk(1)),
        Just(PlanRequest::Chunk(3)),
        Just(PlanRequest::Chunk(usize::MAX)),
    ]
}

/// A buffer length for a declared element count: the count itself when it
/// is small (and `exact`), else an arbitrary small length.
fn buf_len(dims: &[usize], exact: bool, other: usize) -> usize {
    match prod(dims) {
        Some(p) if exact && p <= MAX_BUF => p,
        _ => other % MAX_BUF,
    }
}

fn prod(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// `len` values in (0.1, 0.9) (finite, contractive).
fn vals(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| 0.1 + 0.8 * (((i * 7919 + seed * 104_729) % 1000) as f32 / 1000.0))
        .collect()
}

/// Runs `f` and fails the case on a panic.
fn no_panic<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        TestCaseError::fail(format!("{what} panicked: {msg}"))
    })
}

fn plan_ok(p: PlanRequest) -> bool {
    p != PlanRequest::Chunk(0)
}

/// The dims, a per-buffer `exact` flag and a stray length each.
type Dims = (Vec<usize>, Vec<bool>, Vec<usize>);

fn dims(n: usize, bufs: usize) -> impl Strategy<Value = Dims> {
    (
        prop::collection::vec(size(), n),
        prop::collection::vec(prop::bool::weighted(0.85), bufs),
        prop::collection::vec(0usize..MAX_BUF, bufs),
    )
}

#[test]
fn diagonal_shapes() {
    let strategy = (dims(3, 3), plan(), any::<bool>(), any::<bool>());
    let checked = std::cell::Cell::new(0usize);
    runner()
        .run(&strategy, |((d, exact, other), request, with_h0, bdt)| {
            let (batch, len, dim) = (d[0], d[1], d[2]);
            let n_ab = [batch, len, dim];
            let a = vals(buf_len(&n_ab, exact[0], other[0]), 1);
            let b = vals(buf_len(&n_ab, exact[1], other[1]), 2);
            let h0 = vals(buf_len(&[batch, dim], exact[2], other[2]), 3);
            let p = Diagonal {
                a: &a,
                b: &b,
                h0: with_h0.then_some(&h0[..]),
                batch,
                len,
                dim,
                layout: if bdt { Layout::Bdt } else { Layout::Btd },
            };
            let valid = batch >= 1
                && len >= 1
                && dim >= 1
                && prod(&n_ab) == Some(a.len())
                && b.len() == a.len()
                && (!with_h0 || prod(&[batch, dim]) == Some(h0.len()))
                && plan_ok(request);
            let cpu = no_panic("cpu diagonal", || Cpu::new().scan(&p, request))?;
            prop_assert!(
                valid || cpu.is_err(),
                "invalid problem accepted: {p:?} {request}"
            );
            if let Ok(out) = &cpu {
                checked.set(checked.get() + 1);
                // Oracle: the recurrence, one step at a time, in f64.
                if !bdt {
                    for bi in 0..batch {
                        for k in 0..dim {
                            let mut h = if with_h0 {
                                f64::from(h0[bi * dim + k])
                            } else {
                                0.0
                            };
                            for t in 0..len {
                                let i = (bi * len + t) * dim + k;
                                h = f64::from(a[i]) * h + f64::from(b[i]);
                                let got = f64::from(out.out[i]);
                                prop_assert!(
                                    (got - h).abs() <= 1e-4 * (1.0 + h.abs()),
                                    "{got} vs {h}"
                                );
                            }
                        }
                    }
                }
            }
            let emu = no_panic("emu diagonal", || {
                p.kernel_scan(&EmuBackend::default(), request)
            })?;
            prop_assert!(
                valid || emu.is_err(),
                "emu accepted an invalid problem: {p:?} {request}"
            );
            Ok(())
        })
        .unwrap();
    // The draw must also reach valid problems, not only errors.
    assert!(checked.get() >= 5, "only {} valid cases ran", checked.get());
}

#[test]
fn perm_diagonal_shapes() {
    let strategy = (dims(3, 4), plan(), any::<bool>(), any::<u64>());
    runner()
        .run(&strategy, |((d, exact, other), request, with_h0, seed)| {
            let (batch, len, n) = (d[0], d[1], d[2]);
            let total = [batch, len, n];
            let plen = buf_len(&total, exact[0], other[0]);
            // Permutation rows: the identity rotated, or (seed bit) random bytes.
            let perm: Vec<u8> = (0..plen)
                .map(|i| {
                    if seed & 1 == 0 && n > 0 && n <= 256 {
                        ((i % n + (i / n.max(1)) % n.max(1)) % n) as u8
                    } else {
                        ((seed >> 8) as usize).wrapping_add(i * 31) as u8
                    }
                })
                .collect();
            let dd = vals(buf_len(&total, exact[1], other[1]), 4);
            let b = vals(buf_len(&total, exact[2], other[2]), 5);
            let h0 = vals(buf_len(&[batch, n], exact[3], other[3]), 6);
            let p = PermDiagonal::<f32, u8> {
                perm: &perm,
                d: &dd,
                b: &b,
                h0: with_h0.then_some(&h0[..]),
                batch,
                len,
                n,
            };
            // (u8 indices: n ≤ 256, so the oracle's `seen` stays small.)
            let rows_ok = (1..=256).contains(&n)
                && perm.chunks(n).all(|row| {
                    let mut seen = vec![false; n];
                    row.iter().all(|&j| {
                        let j = j as usize;
                        j < n && !std::mem::replace(&mut seen[j], true)
                    })
                });
            let valid = batch >= 1
                && len >= 1
                && (1..=256).contains(&n)
                && prod(&total) == Some(perm.len())
                && dd.len() == perm.len()
                && b.len() == perm.len()
                && (!with_h0 || prod(&[batch, n]) == Some(h0.len()))
                && rows_ok
                && plan_ok(request);
            let cpu = no_panic("cpu perm-diagonal", || Cpu::new().scan(&p, request))?;
            prop_assert!(valid || cpu.is_err(), "invalid problem accepted: {request}");
            let emu = no_panic("emu perm-diagonal", || {
                p.kernel_scan(&EmuBackend::default(), request)
            })?;
            prop_assert!(
                valid || emu.is_err(),
                "emu accepted an invalid problem: {request}"
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn block_diagonal_shapes() {
    let strategy = (dims(4, 3), plan(), any::<bool>());
    runner()
        .run(&strategy, |((d, exact, other), request, with_h0)| {
            let (batch, len, blocks, block) = (d[0], d[1], d[2], d[3]);
            let a_dims = [batch, len, blocks, block, block];
            let b_dims = [batch, len, blocks, block];
            let a = vals(buf_len(&a_dims, exact[0], other[0]), 7)
                .iter()
                .map(|x| x * 0.2)
                .collect::<Vec<_>>();
            let b = vals(buf_len(&b_dims, exact[1], other[1]), 8);
            let h0 = vals(buf_len(&[batch, blocks, block], exact[2], other[2]), 9);
            let p = BlockDiagonal {
                a: &a,
                b: &b,
                h0: with_h0.then_some(&h0[..]),
                batch,
                len,
                blocks,
                block,
            };
            let valid = [batch, len, blocks, block].iter().all(|&x| x >= 1)
                && prod(&a_dims) == Some(a.len())
                && prod(&b_dims) == Some(b.len())
                && (!with_h0 || prod(&[batch, blocks, block]) == Some(h0.len()))
                && plan_ok(request);
            let cpu = no_panic("cpu block-diagonal", || Cpu::new().scan(&p, request))?;
            prop_assert!(valid || cpu.is_err(), "invalid problem accepted: {request}");
            let emu = no_panic("emu block-diagonal", || {
                p.kernel_scan(&EmuBackend::default(), request)
            })?;
            prop_assert!(
                valid || emu.is_err(),
                "emu accepted an invalid problem: {request}"
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn dplr_shapes() {
    let strategy = (
        dims(5, 7),
        plan(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    );
    runner()
        .run(
            &strategy,
            |((d, exact, other), request, with_h0, readout, with_q)| {
                let (batch, len, n, m, rank) = (d[0], d[1], d[2], d[3], d[4]);
                let btn = [batch, len, n];
                let btrn = [batch, len, rank, n];
                let w = vals(buf_len(&btn, exact[0], other[0]), 10);
                let u = vals(buf_len(&btrn, exact[1], other[1]), 11)
                    .iter()
                    .map(|x| x * 0.1)
                    .collect::<Vec<_>>();
                let v = vals(buf_len(&btrn, exact[2], other[2]), 12)
                    .iter()
                    .map(|x| x * 0.1)
                    .collect::<Vec<_>>();
                let k = vals(buf_len(&btn, exact[3], other[3]), 13);
                let x = vals(buf_len(&[batch, len, m], exact[4], other[4]), 14);
                let q = vals(buf_len(&btn, exact[5], other[5]), 15);
                let h0 = vals(buf_len(&[batch, n, m], exact[6], other[6]), 16);
                let p = Dplr {
                    w: &w,
                    u: &u,
                    v: &v,
                    k: &k,
                    x: &x,
                    q: with_q.then_some(&q[..]),
                    h0: with_h0.then_some(&h0[..]),
                    batch,
                    len,
                    n,
                    m,
                    rank,
                    output: if readout {
                        DplrOutput::Readout
                    } else {
                        DplrOutput::States
                    },
                };
                let valid = [batch, len, n, m, rank].iter().all(|&x| x >= 1)
                    && prod(&btn) == Some(w.len())
                    && prod(&btn) == Some(k.len())
                    && prod(&btrn) == Some(u.len())
                    && prod(&btrn) == Some(v.len())
                    && prod(&[batch, len, m]) == Some(x.len())
                    && (!readout || (with_q && prod(&btn) == Some(q.len())))
                    && (readout || prod(&[batch, len, n, m]).is_some())
                    && (!with_h0 || prod(&[batch, n, m]) == Some(h0.len()))
                    && plan_ok(request);
                let cpu = no_panic("cpu dplr", || Cpu::new().scan(&p, request))?;
                prop_assert!(valid || cpu.is_err(), "invalid problem accepted: {request}");
                let emu = no_panic("emu dplr", || {
                    p.kernel_scan(&EmuBackend::default(), request)
                })?;
                prop_assert!(
                    valid || emu.is_err(),
                    "emu accepted an invalid problem: {request}"
                );
                Ok(())
            },
        )
        .unwrap();
}

/// A user cell declaring arbitrary sizes (a contraction when they are
/// consistent).
#[derive(Debug)]
struct Declared {
    n: usize,
    din: usize,
    structure: Structure,
}

impl Cell<f32> for Declared {
    fn name(&self) -> &str {
        "declared"
    }
    fn state_dim(&self) -> usize {
        self.n
    }
    fn input_dim(&self) -> usize {
        self.din
    }
    fn structure(&self) -> Structure {
        self.structure
    }
    fn step(&self, h: &[f32], x: &[f32], out: &mut [f32]) {
        let x0 = x.first().copied().unwrap_or(0.0);
        for (o, &hi) in out.iter_mut().zip(h) {
            *o = 0.5 * hi.tanh() + x0;
        }
    }
    fn step_jacobian(&self, h: &[f32], x: &[f32], out: &mut [f32], jac: &mut [f32]) {
        self.step(h, x, out);
        let k = self.structure.block(self.n).max(1);
        jac.fill(0.0);
        for (i, &hi) in h.iter().enumerate() {
            let (blk, r) = (i / k, i % k);
            let t = hi.tanh();
            jac[blk * k * k + r * k + r] = 0.5 * (1.0 - t * t);
        }
    }
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Newton),
        Just(Mode::QuasiNewton),
        Just(Mode::Picard),
        Just(Mode::Sequential),
        Just(Mode::Damped {
            shrink: 0.5,
            relax: 0.5
        }),
    ]
}

fn structure() -> impl Strategy<Value = Structure> {
    prop_oneof![
        Just(Structure::Diagonal),
        Just(Structure::Dense),
        size().prop_map(|k| Structure::Block { k }),
    ]
}

#[test]
fn nonlinear_problems() {
    let strategy = (
        (size(), size(), size(), size()),
        structure(),
        (
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.8),
            0usize..MAX_BUF,
            0usize..MAX_BUF,
        ),
        (mode(), plan(), any::<bool>(), any::<bool>()),
    );
    runner()
        .run(
            &strategy,
            |((batch, len, n, din), st, (ex, eh, ox, oh), (mode, request, with_h0, gru))| {
                let options = NewtonOptions {
                    mode,
                    plan: request,
                    max_iters: 40,
                    ..Default::default()
                };
                if gru {
                    // Built-in cell: n units (a zero or huge n is refused by `new`).
                    let units = n % 4;
                    let Ok(cell) = DiagGru::new(vals(units, 1), vals(units, 2), vals(units, 3))
                    else {
                        prop_assert_eq!(units, 0);
                        return Ok(());
                    };
                    let x = vals(buf_len(&[batch, len, 3 * units], ex, ox), 4);
                    let h0 = vals(buf_len(&[batch, units], eh, oh), 5);
                    let problem = NonlinearProblem {
                        x: &x,
                        h0: with_h0.then_some(&h0[..]),
                        batch,
                        len,
                    };
                    let valid = batch >= 1
                        && len >= 1
                        && prod(&[batch, len, 3 * units]) == Some(x.len())
                        && (!with_h0 || prod(&[batch, units]) == Some(h0.len()));
                    let cpu =
                        no_panic("cpu gru", || solve(&Cpu::new(), &cell, &problem, &options))?;
                    prop_assert!(valid || cpu.is_err(), "invalid gru problem accepted");
                    let emu = no_panic("emu gru", || {
                        solve_kernels(&EmuBackend::default(), (&cell).into(), &problem, &options)
                    })?;
                    prop_assert!(valid || emu.is_err(), "emu accepted an invalid gru problem");
                    return Ok(());
                }
                let cell = Declared {
                    n,
                    din,
                    structure: st,
                };
                let x = vals(buf_len(&[batch, len, din], ex, ox), 6);
                let h0 = vals(buf_len(&[batch, n], eh, oh), 7);
                let problem = NonlinearProblem {
                    x: &x,
                    h0: with_h0.then_some(&h0[..]),
                    batch,
                    len,
                };
                let k = st.block(n);
                let valid = batch >= 1
                    && len >= 1
                    && n >= 1
                    && k >= 1
                    && n % k == 0
                    && prod(&[n, k]).is_some()
                    && prod(&[batch, len, n, 4]).is_some()
                    && prod(&[batch, len, din]) == Some(x.len())
                    && (!with_h0 || prod(&[batch, n]) == Some(h0.len()))
                    && plan_ok(request);
                let cpu = no_panic("cpu user cell", || {
                    solve(&Cpu::new(), &cell, &problem, &options)
                })?;
                prop_assert!(
                    valid || cpu.is_err(),
                    "invalid problem accepted: {cell:?} B={batch} T={len}"
                );
                Ok(())
            },
        )
        .unwrap();
}
