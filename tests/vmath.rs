//! The vectorizable `f32` transcendental functions of `parascan::vmath`
//! against the `f64` standard library over the whole `f32` range: every
//! `f32` bit pattern visited with a stride (both signs, zeros, subnormals,
//! saturation, infinities, NaN), asserting the documented error bounds.

use parascan::vmath;

/// Size of one `f32` ulp at the magnitude of the exact value `r` (the
/// spacing of normal `f32`s in `r`'s binade).
fn ulp_at(r: f64) -> f64 {
    let e = ((r.abs().to_bits() >> 52) & 0x7ff) as i64 - 1023;
    2f64.powi((e - 23) as i32)
}

#[derive(Default, Debug)]
struct Worst {
    ulps: f64,
    at: f32,
    abs_subnormal: f64,
    checked: u64,
}

/// Checks `f` against `reference` at `x`: NaN exactly where the reference
/// is NaN, equal infinities, and the error in ulps (normal results) or
/// absolute (results below `f32::MIN_POSITIVE`).
fn check(f: fn(f32) -> f32, reference: fn(f64) -> f64, x: f32, w: &mut Worst) {
    let y = f(x);
    let r = reference(f64::from(x));
    w.checked += 1;
    if r.is_nan() {
        assert!(y.is_nan(), "f({x:e}) = {y:e}, expected NaN");
        return;
    }
    assert!(!y.is_nan(), "f({x:e}) = NaN, expected {r:e}");
    let rr = r as f32; // correctly rounded f32 result
    if rr.is_infinite() || y.is_infinite() {
        assert_eq!(y, rr, "f({x:e}) = {y:e}, expected {r:e}");
        return;
    }
    if r == 0.0 {
        assert_eq!(y, 0.0, "f({x:e}) = {y:e}, expected 0");
        assert_eq!(
            y.is_sign_negative(),
            r.is_sign_negative(),
            "f({x:e}): sign of zero"
        );
        return;
    }
    let err = (f64::from(y) - r).abs();
    if r.abs() < f64::from(f32::MIN_POSITIVE) {
        w.abs_subnormal = w.abs_subnormal.max(err);
        return;
    }
    let ulps = err / ulp_at(r);
    if ulps > w.ulps {
        w.ulps = ulps;
        w.at = x;
    }
}

/// Every `stride`-th `f32` bit pattern (positive and negative), plus the
/// special and boundary values.
fn sweep(f: fn(f32) -> f32, reference: fn(f64) -> f64) -> Worst {
    let mut w = Worst::default();
    let specials = [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::MAX,
        f32::MIN,
        88.72,
        88.73,
        -87.33,
        -103.9,
        -104.1,
        0.625,
        -0.625,
        0.624_999_94,
        1e-30,
        -1e-30,
    ];
    for &x in &specials {
        check(f, reference, x, &mut w);
    }
    // An odd stride visits every binade and every low-bit pattern class.
    const STRIDE: usize = 1021;
    for bits in (0u32..=0x7f80_0000).step_by(STRIDE) {
        check(f, reference, f32::from_bits(bits), &mut w);
        check(f, reference, f32::from_bits(bits | 0x8000_0000), &mut w);
    }
    // Dense where the approximations switch or saturate.
    for &(lo, hi) in &[
        (-1.0f32, 1.0f32),
        (-120.0, -80.0),
        (80.0, 100.0),
        (-10.0, 10.0),
    ] {
        let steps = 200_000;
        for i in 0..=steps {
            let x = lo + (hi - lo) * (i as f32 / steps as f32);
            check(f, reference, x, &mut w);
        }
    }
    w
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn exp_error_is_within_its_bound() {
    let w = sweep(vmath::exp, f64::exp);
    println!("exp: {w:?}");
    assert!(w.checked > 4_000_000);
    assert!(
        w.ulps <= vmath::EXP_MAX_ULP,
        "exp: {} ulp at x = {:e} (bound {})",
        w.ulps,
        w.at,
        vmath::EXP_MAX_ULP
    );
    assert!(w.abs_subnormal <= 2f64.powi(-149), "{w:?}");
}

#[test]
fn sigmoid_error_is_within_its_bound() {
    let w = sweep(vmath::sigmoid, sigmoid64);
    println!("sigmoid: {w:?}");
    assert!(
        w.ulps <= vmath::SIGMOID_MAX_ULP,
        "sigmoid: {} ulp at x = {:e} (bound {})",
        w.ulps,
        w.at,
        vmath::SIGMOID_MAX_ULP
    );
    assert!(w.abs_subnormal <= 2f64.powi(-126), "{w:?}");
}

#[test]
fn tanh_error_is_within_its_bound() {
    let w = sweep(vmath::tanh, f64::tanh);
    println!("tanh: {w:?}");
    assert!(
        w.ulps <= vmath::TANH_MAX_ULP,
        "tanh: {} ulp at x = {:e} (bound {})",
        w.ulps,
        w.at,
        vmath::TANH_MAX_ULP
    );
    assert!(w.abs_subnormal <= 2f64.powi(-149), "{w:?}");
}

#[test]
fn special_values_follow_ieee() {
    assert_eq!(vmath::exp(f32::INFINITY), f32::INFINITY);
    assert_eq!(vmath::exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(vmath::exp(0.0), 1.0);
    assert_eq!(vmath::exp(-0.0), 1.0);
    assert_eq!(vmath::exp(89.0), f32::INFINITY);
    assert_eq!(vmath::sigmoid(f32::INFINITY), 1.0);
    assert_eq!(vmath::sigmoid(f32::NEG_INFINITY), 0.0);
    assert_eq!(vmath::sigmoid(0.0), 0.5);
    assert_eq!(vmath::tanh(f32::INFINITY), 1.0);
    assert_eq!(vmath::tanh(f32::NEG_INFINITY), -1.0);
    assert!(vmath::tanh(-0.0).is_sign_negative() && vmath::tanh(-0.0) == 0.0);
    assert!(vmath::tanh(0.0).is_sign_positive() && vmath::tanh(0.0) == 0.0);
    for f in [vmath::exp, vmath::sigmoid, vmath::tanh] {
        assert!(f(f32::NAN).is_nan());
        assert!(f(-f32::NAN).is_nan());
    }
    // Odd symmetry of tanh and σ(x) + σ(−x) = 1 hold to the bounds.
    for i in -2000..=2000 {
        let x = i as f32 * 0.01;
        assert_eq!(vmath::tanh(-x), -vmath::tanh(x));
        let s = f64::from(vmath::sigmoid(x)) + f64::from(vmath::sigmoid(-x));
        assert!((s - 1.0).abs() < 1e-6, "σ({x}) + σ(−{x}) = {s}");
    }
}

/// The vectorized loop (as the cells run it, 8 lanes under AVX2) returns
/// the same bits as the scalar calls.
#[test]
fn slices_match_scalar_calls() {
    let xs: Vec<f32> = (0..4096).map(|i| (i as f32 - 2048.0) * 0.037).collect();
    let mut out = vec![0.0f32; xs.len()];
    for (o, &x) in out.iter_mut().zip(&xs) {
        *o = vmath::tanh(x) + vmath::sigmoid(x) * vmath::exp(-x.abs());
    }
    for (&o, &x) in out.iter().zip(&xs) {
        let s = std::hint::black_box(x);
        let want = vmath::tanh(s) + vmath::sigmoid(s) * vmath::exp(-s.abs());
        assert_eq!(o.to_bits(), want.to_bits(), "x = {x}");
    }
}
