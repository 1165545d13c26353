//! Runs the examples' exact checks at small sizes.

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
