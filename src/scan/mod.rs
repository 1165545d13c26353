//! The chunked, work-efficient Blelloch scan, generic over a linear
//! recurrence's monoid.
//!
//! A problem is `P` independent sequences of length `T`. For one sequence the
//! engine runs the same three phases as the CUDA kernels (SPEC §2):
//!
//! 1. **Reduce**: split `0..T` into chunks of `C` steps and fold each chunk
//!    into one aggregate `(A, b)` (serial within the chunk).
//! 2. **Scan**: an exclusive Blelloch scan (up-sweep, then down-sweep) of the
//!    chunk aggregates, padded with identities to a power of two; each
//!    chunk's carry-in is its exclusive prefix applied to `h_0`.
//! 3. **Rescan**: each chunk restarts from its carry-in and writes `h_t`.
//!
//! Chunks of all sequences run in parallel on rayon. With a single chunk
//! (`N = 1`) phases 1 and 2 are skipped: that is the sequential loop.
//!
//! The engine knows nothing about the arithmetic: a family implements
//! [`ScanOp`]. Running the engine over [`depth::DepthOp`] instead of a real
//! family counts the combines on the critical path, which is how depth is
//! *measured* (see [`plan`] for the formula it is checked against).

pub mod depth;
pub mod plan;
pub mod segmented;

pub use plan::{Plan, PlanRequest};

use rayon::prelude::*;

/// A linear recurrence `h_t = A_t h_{t-1} + b_t` seen as a monoid of
/// transition/offset pairs, for `problems()` independent sequences of
/// length `len()`.
///
/// Composition order: `combine(earlier, later)` is the element that applies
/// `earlier` first, then `later` (`later ∘ earlier`).
// `len` is the sequence length T ≥ 1, never empty, so no `is_empty`.
#[allow(clippy::len_without_is_empty)]
pub trait ScanOp: Sync {
    /// An aggregate element `(A, b)` (a chunk's or a prefix's transition).
    type Agg: Clone + Send + Sync;
    /// A state `h`.
    type State: Clone + Send + Sync;
    /// One scalar of the output buffer.
    type Out: Copy + Send + Sync;

    /// Number of independent sequences.
    fn problems(&self) -> usize;
    /// Sequence length `T` (≥ 1).
    fn len(&self) -> usize;
    /// Output scalars written per step (e.g. `D` for a `[B,T,D]` diagonal
    /// row); the output of sequence `p` occupies
    /// `out[p·T·w .. (p+1)·T·w]`, step `t` at offset `t·w` inside it.
    fn out_per_step(&self) -> usize;
    /// The identity element (used to pad the Blelloch tree).
    fn identity(&self) -> Self::Agg;
    /// Step `t` of sequence `p` as an element.
    fn leaf(&self, p: usize, t: usize) -> Self::Agg;
    /// `agg := step(p, t) ∘ agg` (the reduce phase's serial fold).
    fn fold(&self, agg: &mut Self::Agg, p: usize, t: usize);
    /// `later ∘ earlier`.
    fn combine(&self, earlier: &Self::Agg, later: &Self::Agg) -> Self::Agg;
    /// The initial state `h_0` of sequence `p`.
    fn initial(&self, p: usize) -> Self::State;
    /// `A h + b`.
    fn apply(&self, agg: &Self::Agg, h: &Self::State) -> Self::State;
    /// `h := A_t h + b_t` for step `t` of sequence `p`; write that step's
    /// output (`out_per_step()` scalars) into `out`.
    fn advance(&self, h: &mut Self::State, p: usize, t: usize, out: &mut [Self::Out]);
}

/// Runs `op` under `plan` (already resolved for this op's shape), writing
/// every step's output into `out` (`problems·len·out_per_step` scalars) and
/// returning the final state `h_T` of each sequence.
///
/// The caller (a family's entry point) has validated the shapes; this
/// function only checks `out`'s length, which it indexes itself.
pub fn run<Op: ScanOp>(op: &Op, plan: &Plan, out: &mut [Op::Out]) -> Vec<Op::State> {
    run_directed(op, plan, out, false)
}

/// The same engine right to left: `h_t = A_t h_{t+1} + b_t` for
/// `t = T−1, …, 0`, starting from `op.initial(p)` as the state after the
/// last step. Step `t`'s output is written at offset `t·w` (the same place
/// the forward scan writes it) and the returned state of each sequence is
/// the one at `t = 0`. Same phases, plan, depth and work as [`run`]: the
/// chunks are taken from the right end, so the sequence's *last* chunk is
/// the one that starts from `h_0`.
pub fn run_reverse<Op: ScanOp>(op: &Op, plan: &Plan, out: &mut [Op::Out]) -> Vec<Op::State> {
    run_directed(op, plan, out, true)
}

/// [`run`] (`reverse = false`) or [`run_reverse`]: the engine walks steps
/// `s = 0..T` in its own order and `time(s)` maps them to the op's step
/// index (`s`, or `T − 1 − s`).
fn run_directed<Op: ScanOp>(
    op: &Op,
    plan: &Plan,
    out: &mut [Op::Out],
    reverse: bool,
) -> Vec<Op::State> {
    let (p_count, t_len, w) = (op.problems(), op.len(), op.out_per_step());
    assert!(w >= 1 && t_len >= 1, "scan::run: empty steps");
    assert_eq!(out.len(), p_count * t_len * w, "scan::run: output length");
    let chunk = plan.chunk.clamp(1, t_len);
    let n_chunks = t_len.div_ceil(chunk);
    let time = |s: usize| if reverse { t_len - 1 - s } else { s };

    if n_chunks == 1 {
        // The sequential loop: no aggregates at all.
        return out
            .par_chunks_mut(t_len * w)
            .enumerate()
            .map(|(p, out_p)| {
                let mut h = op.initial(p);
                for s in 0..t_len {
                    let t = time(s);
                    op.advance(&mut h, p, t, &mut out_p[t * w..(t + 1) * w]);
                }
                h
            })
            .collect();
    }

    // Phase 1: reduce every chunk of every sequence to one aggregate.
    let aggs: Vec<Op::Agg> = (0..p_count * n_chunks)
        .into_par_iter()
        .map(|i| {
            let (p, c) = (i / n_chunks, i % n_chunks);
            let (s0, s1) = (c * chunk, ((c + 1) * chunk).min(t_len));
            let mut agg = op.leaf(p, time(s0));
            for s in s0 + 1..s1 {
                op.fold(&mut agg, p, time(s));
            }
            agg
        })
        .collect();

    // Phase 2: exclusive Blelloch scan of each sequence's aggregates, then
    // carry-in = prefix applied to h_0 (chunk 0 starts from h_0 itself).
    let carries: Vec<Op::State> = aggs
        .par_chunks(n_chunks)
        .enumerate()
        .flat_map_iter(|(p, row)| {
            let prefix = blelloch_exclusive(op, row);
            let h0 = op.initial(p);
            let mut carry = Vec::with_capacity(n_chunks);
            carry.push(h0.clone());
            carry.extend(prefix[1..].iter().map(|e| op.apply(e, &h0)));
            carry
        })
        .collect();
    drop(aggs);

    // Phase 3: rescan every chunk from its carry-in. Engine chunk `c` holds
    // steps `s ∈ [c·C, …)`; its outputs are the `c`-th block of `C` steps
    // from the left (forward) or from the right (reverse) of the sequence.
    let rescan = |p: usize, c: usize, out_c: &mut [Op::Out]| {
        let mut h = carries[p * n_chunks + c].clone();
        let steps = out_c.len() / w;
        for k in 0..steps {
            // Offset of this step inside the block `out_c`.
            let local = if reverse { steps - 1 - k } else { k };
            op.advance(
                &mut h,
                p,
                time(c * chunk + k),
                &mut out_c[local * w..(local + 1) * w],
            );
        }
        // Only the last chunk's end state is h_T; drop the others here.
        (c + 1 == n_chunks).then_some(h)
    };
    out.par_chunks_mut(t_len * w)
        .enumerate()
        .map(|(p, out_p)| {
            let last = if reverse {
                out_p
                    .par_rchunks_mut(chunk * w)
                    .enumerate()
                    .filter_map(|(c, out_c)| rescan(p, c, out_c))
                    .reduce_with(|h_t, _| h_t)
            } else {
                out_p
                    .par_chunks_mut(chunk * w)
                    .enumerate()
                    .filter_map(|(c, out_c)| rescan(p, c, out_c))
                    .reduce_with(|h_t, _| h_t)
            };
            last.expect("the last chunk exists")
        })
        .collect()
}

/// Exclusive Blelloch scan (up-sweep, then down-sweep) of `row`, padded with
/// identities to the next power of two. Element `i` of the result is the
/// composition of `row[0..i]` (identity for `i = 0`). Each tree level runs
/// in parallel.
pub fn blelloch_exclusive<Op: ScanOp>(op: &Op, row: &[Op::Agg]) -> Vec<Op::Agg> {
    let n = row.len();
    let size = n.next_power_of_two();
    let mut tree: Vec<Op::Agg> = row.to_vec();
    tree.resize(size, op.identity());

    // Up-sweep: node (i + 2s - 1) := node(i + s - 1) then node(i + 2s - 1).
    let mut stride = 1;
    while stride < size {
        tree.par_chunks_mut(2 * stride).for_each(|pair| {
            let (left, right) = (&pair[stride - 1], &pair[2 * stride - 1]);
            pair[2 * stride - 1] = op.combine(left, right);
        });
        stride *= 2;
    }

    // Down-sweep: the root becomes the identity; a left child inherits its
    // parent's prefix, a right child gets parent-prefix then left-sum.
    tree[size - 1] = op.identity();
    let mut stride = size / 2;
    while stride >= 1 {
        tree.par_chunks_mut(2 * stride).for_each(|pair| {
            let left_sum = pair[stride - 1].clone();
            let parent = pair[2 * stride - 1].clone();
            pair[2 * stride - 1] = op.combine(&parent, &left_sum);
            pair[stride - 1] = parent;
        });
        stride /= 2;
    }
    tree.truncate(n);
    tree
}
