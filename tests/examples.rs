//! Runs the examples' exact checks at small sizes.

/// Under `REQUIRE_CUDA=1` / `REQUIRE_GPU=1` (the emulated driver's script
/// and the GPU machines) an example that skipped CUDA fails.
fn require_cuda_ran(results: &[(String, f64)]) {
    let required = ["REQUIRE_CUDA", "REQUIRE_GPU"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|s| s.trim() == "1"));
    if required {
        assert!(
            results.iter().any(|(name, _)| name.starts_with("cuda")),
            "REQUIRE_CUDA=1 but the example did not run on CUDA: {results:?}"
        );
    }
}

#[path = "../examples/s5_word_problem.rs"]
mod s5_word_problem;

#[path = "../examples/iterated_matmul.rs"]
mod iterated_matmul;

#[test]
fn s5_word_problem_is_exact() {
    s5_word_problem::run(12).unwrap();
}

#[test]
fn iterated_matmul_is_exact() {
    iterated_matmul::run(10).unwrap();
}

#[path = "../examples/newton_hardness.rs"]
mod newton_hardness;

#[test]
fn newton_hardness_checks_both_cells() {
    newton_hardness::run(8).unwrap();
}

#[path = "../examples/selective_scan.rs"]
mod selective_scan;

/// CPU engine, emulated kernels and (when a device opens) CUDA, each
/// against the f64 sequential reference, with h0/h_T across two halves.
#[test]
fn selective_scan_matches_its_reference_everywhere() {
    let results = selective_scan::run(600).unwrap();
    assert!(results.iter().any(|(name, _)| name == "emu"), "{results:?}");
    require_cuda_ran(&results);
}

#[path = "../examples/deltanet.rs"]
mod deltanet;

/// The delta rule in fla's `[B,T,H,K]` convention on DPLR: CPU engine,
/// emulated kernels and (when a device opens) CUDA, against f64.
#[test]
fn deltanet_matches_the_delta_rule_everywhere() {
    let results = deltanet::run(200).unwrap();
    assert!(results.iter().any(|(name, _)| name == "emu"), "{results:?}");
    // fla's varlen call (cu_seqlens, [1,T,H,K] views) ran and was checked.
    assert!(
        results
            .iter()
            .any(|(name, _)| name.starts_with("cpu packed")),
        "{results:?}"
    );
    require_cuda_ran(&results);
}

#[path = "../examples/train_gru.rs"]
mod train_gru;

#[test]
fn train_gru_loss_goes_down() {
    // 60 SGD steps on 4 sequences of 128 steps, forward and backward by
    // parascan only: the loss must fall to well under half.
    let (first, last) = train_gru::run(60, 128).unwrap();
    assert!(first.is_finite() && last.is_finite());
    assert!(last < 0.3 * first, "loss {first:.3e} → {last:.3e}");
}

#[path = "../examples/gru_layer.rs"]
mod gru_layer;

/// A GRU layer through device-resident Newton in four chunks (h0 in, h_T
/// out, one warm workspace): CPU engine, emulated kernels (adaptive and
/// fixed-iteration) and (when a device opens) CUDA, against f64.
#[test]
fn gru_layer_matches_its_reference_everywhere() {
    let results = gru_layer::run(256).unwrap();
    assert!(
        results.iter().any(|(name, _)| name.starts_with("emu")),
        "{results:?}"
    );
    require_cuda_ran(&results);
}
