//! PLACEHOLDER — the BlockDiagonal helper replaces the body; the struct's
//! fields are the agreed public API.

/// A batch of block-diagonal recurrences, `n = blocks · block`.
/// Shapes: `a: [B,T,nb,k,k]` (row-major blocks), `b: [B,T,n]`, `h0: [B,n]`.
/// Outputs `h: [B,T,n]`, `h_T: [B,n]`.
#[derive(Clone, Copy, Debug)]
pub struct BlockDiagonal<'a, S> {
    /// Transition blocks.
    pub a: &'a [S],
    /// Inputs.
    pub b: &'a [S],
    /// Initial state `[B,n]`; zeros when `None`.
    pub h0: Option<&'a [S]>,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// Number of blocks `nb`.
    pub blocks: usize,
    /// Block size `k`.
    pub block: usize,
}
