//! The `f32` `DiagGru` cell (the AVX2+FMA path where the CPU has it, the
//! portable one elsewhere) against the GRU evaluated in `f64` from the same
//! `f32` inputs, asserting the error bounds documented in
//! `parascan::newton::gru_avx2` (which bound the AVX2 path: on a CPU
//! without AVX2 and FMA the bound tests say so and check nothing), and NaN
//! propagation (both paths).

use parascan::newton::{gru_avx2, Cell, DiagGru};

/// The GRU unit in `f64`, written out here from its definition:
/// `(h', ∂h'/∂h, error scale of h', error scale of ∂h'/∂h)` (the scales of
/// the bounds in the module docs of `gru_avx2`).
fn reference(a: [f32; 3], h: f32, x: [f32; 3]) -> [f64; 4] {
    let [az, ar, ac] = a.map(f64::from);
    let [xz, xr, xc] = x.map(f64::from);
    let h = f64::from(h);
    // σ(u), and 1 − σ(u) as σ(−u): no cancellation near σ = 1.
    let sig = |u: f64| 1.0 / (1.0 + (-u).exp());
    let (uz, ur) = (xz + az * h, xr + ar * h);
    let (z, zc, r, rc) = (sig(uz), sig(-uz), sig(ur), sig(-ur));
    let uc = xc + ac * r * h;
    let c = uc.tanh();
    // 1 − tanh² as 1/cosh²: no cancellation near |c| = 1.
    let c2 = 1.0 / (uc.cosh() * uc.cosh());
    let out = zc * h + z * c;
    let dz = z * zc * az;
    let dr = r * rc * ar;
    let dc = c2 * ac * (r + h * dr);
    let jac = zc + (c - h) * dz + z * dc;
    let kappa =
        1.0 + xz.abs() + (az * h).abs() + xr.abs() + (ar * h).abs() + xc.abs() + (ac * r * h).abs();
    let out_scale = zc * h.abs() + z * c.abs() + kappa * (z * zc * (c.abs() + h.abs()) + z * c2);
    let jac_scale =
        kappa * (zc + (c.abs() + h.abs()) * dz.abs() + z * c2 * ac.abs() * (r + (h * dr).abs()));
    [out, jac, out_scale, jac_scale]
}

/// A small deterministic generator (xorshift64*), uniform in `[lo, hi)`.
struct Rng(u64);
impl Rng {
    fn next(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let u = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

/// Worst errors seen, in units of each bound's scale.
#[derive(Default, Debug)]
struct Worst {
    out: f64,
    jac: f64,
    checked: usize,
}

/// Runs `n` units through `step_jacobian` (and `step`, which must agree
/// bitwise) and checks every unit against [`reference`].
fn check(a: [Vec<f32>; 3], h: &[f32], x: &[f32], worst: &mut Worst) {
    let n = h.len();
    let cell = DiagGru::new(a[0].clone(), a[1].clone(), a[2].clone()).unwrap();
    let (mut out, mut jac, mut out2) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    cell.step_jacobian(h, x, &mut out, &mut jac);
    cell.step(h, x, &mut out2);
    for i in 0..n {
        assert_eq!(
            out[i].to_bits(),
            out2[i].to_bits(),
            "step vs step_jacobian, unit {i}"
        );
        let w = [a[0][i], a[1][i], a[2][i]];
        let xi = [x[i], x[n + i], x[2 * n + i]];
        let [ro, rj, so, sj] = reference(w, h[i], xi);
        let eps = 2f64.powi(-24);
        let floor = 2f64.powi(-124) * (1.0 + f64::from(h[i]).abs());
        let wsum = 1.0 + w.iter().map(|v| f64::from(*v).abs()).sum::<f64>();
        let eo = (f64::from(out[i]) - ro).abs();
        let ej = (f64::from(jac[i]) - rj).abs();
        let bo = gru_avx2::OUT_MAX_ERR * eps * so + floor;
        let bj = gru_avx2::JAC_MAX_ERR * eps * sj + floor * wsum;
        let ctx = format!(
            "a={w:?} h={} x={xi:?}: out {} vs {ro:e}, jac {} vs {rj:e}",
            h[i], out[i], jac[i]
        );
        assert!(eo <= bo, "h' error {eo:e} > bound {bo:e}: {ctx}");
        assert!(ej <= bj, "∂h'/∂h error {ej:e} > bound {bj:e}: {ctx}");
        worst.out = worst
            .out
            .max((eo - floor).max(0.0) / (eps * so).max(f64::MIN_POSITIVE));
        worst.jac = worst
            .jac
            .max((ej - floor * wsum).max(0.0) / (eps * sj).max(f64::MIN_POSITIVE));
        worst.checked += 1;
    }
}

/// Random units: weights in `[-2, 2]`, `h` in `[-3, 3]`, inputs in
/// `[-s, s]` for scales from 0.1 to 120 (the largest saturate every gate,
/// past the AVX2 path's clamp of `|u| = 87`), with `n` not a multiple of 8
/// so that the padded tail runs too.
#[test]
fn random_units_within_bounds() {
    if !gru_avx2::available() {
        eprintln!("no AVX2+FMA on this CPU: the bounds are the AVX2 path's");
        return;
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut worst = Worst::default();
    let n = 8 * 64 + 5;
    for &s in &[0.1f32, 1.0, 3.0, 10.0, 40.0, 120.0] {
        for _ in 0..40 {
            let a = [0, 1, 2].map(|_| (0..n).map(|_| rng.next(-2.0, 2.0)).collect::<Vec<_>>());
            let h: Vec<f32> = (0..n).map(|_| rng.next(-3.0, 3.0)).collect();
            let x: Vec<f32> = (0..3 * n).map(|_| rng.next(-s, s)).collect();
            check(a, &h, &x, &mut worst);
        }
    }
    eprintln!(
        "AVX2 path: {}; worst (in bound units): {worst:?}",
        gru_avx2::available()
    );
    assert!(worst.checked > 100_000);
}

/// Dense sweeps where the formulas switch: `h` and each input through
/// `[-1, 1]` (the candidate's polynomial/exponential switch at
/// `|u_c| = 0.625`, ±0), and each input through the clamp at `±87`.
#[test]
fn dense_sweeps_within_bounds() {
    if !gru_avx2::available() {
        eprintln!("no AVX2+FMA on this CPU: the bounds are the AVX2 path's");
        return;
    }
    let mut worst = Worst::default();
    let n = 4001;
    let grid = |lo: f32, hi: f32| -> Vec<f32> {
        (0..n)
            .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
            .collect()
    };
    let ones = |v: f32| vec![v; n];
    for (lo, hi) in [
        (-1.0f32, 1.0f32),
        (-90.0, -84.0),
        (84.0, 90.0),
        (-1e-3, 1e-3),
    ] {
        let g = grid(lo, hi);
        for which in 0..3 {
            let mut x = vec![0.3f32; 3 * n];
            x[which * n..(which + 1) * n].copy_from_slice(&g);
            check(
                [ones(0.7), ones(-0.9), ones(1.3)],
                &ones(0.45),
                &x,
                &mut worst,
            );
        }
        // h itself through the grid (bounded: h' is a convex mix).
        if hi <= 1.0 {
            let x = vec![-0.2f32; 3 * n];
            check([ones(0.7), ones(-0.9), ones(1.3)], &g, &x, &mut worst);
        }
    }
    // ±0 state and inputs.
    check(
        [ones(0.5), ones(0.5), ones(0.5)],
        &ones(-0.0),
        &vec![0.0; 3 * n],
        &mut worst,
    );
    eprintln!(
        "AVX2 path: {}; worst (in bound units): {worst:?}",
        gru_avx2::available()
    );
}

/// NaN in `h` or in any input gives NaN in both outputs, unit by unit
/// (the other units stay finite).
#[test]
fn nan_propagates() {
    let n = 11;
    let cell = DiagGru::new(vec![0.5f32; n], vec![-0.4; n], vec![0.9; n]).unwrap();
    for (which, unit) in [(0usize, 3usize), (1, 9), (2, 0), (3, 10)] {
        let mut h = vec![0.25f32; n];
        let mut x = vec![0.1f32; 3 * n];
        if which == 0 {
            h[unit] = f32::NAN;
        } else {
            x[(which - 1) * n + unit] = f32::NAN;
        }
        let (mut out, mut jac) = (vec![0f32; n], vec![0f32; n]);
        cell.step_jacobian(&h, &x, &mut out, &mut jac);
        for i in 0..n {
            assert_eq!(
                out[i].is_nan(),
                i == unit,
                "h' unit {i}, NaN at {which}/{unit}"
            );
            assert_eq!(
                jac[i].is_nan(),
                i == unit,
                "jac unit {i}, NaN at {which}/{unit}"
            );
        }
    }
}
