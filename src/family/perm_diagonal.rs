//! PLACEHOLDER — the PermDiagonal helper replaces the body; the struct's
//! fields are the agreed public API.
//!
//! Permutation-diagonal transitions: `(A_t h)_i = d_{t,i} · h_{π_t(i)}`.

/// An integer type that can hold a permutation index (u8 for n ≤ 256).
pub trait PermIndex: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// The index as usize.
    fn index(self) -> usize;
    /// Largest n this type can index.
    const MAX_N: usize;
}
impl PermIndex for u8 {
    fn index(self) -> usize {
        self as usize
    }
    const MAX_N: usize = 256;
}
impl PermIndex for u16 {
    fn index(self) -> usize {
        self as usize
    }
    const MAX_N: usize = 65536;
}
impl PermIndex for u32 {
    fn index(self) -> usize {
        self as usize
    }
    const MAX_N: usize = u32::MAX as usize;
}

/// A batch of PD recurrences. Shapes: `perm, d, b: [B,T,n]`, `h0: [B,n]`.
/// Outputs `h: [B,T,n]`, `h_T: [B,n]`.
#[derive(Clone, Copy, Debug)]
pub struct PermDiagonal<'a, S, P = u8> {
    /// `π_t`, each row a permutation of `0..n`.
    pub perm: &'a [P],
    /// Diagonal scales `d_t`.
    pub d: &'a [S],
    /// Inputs `b_t`.
    pub b: &'a [S],
    /// Initial state `[B,n]`; zeros when `None`.
    pub h0: Option<&'a [S]>,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub len: usize,
    /// `n`.
    pub n: usize,
}
