//! What `parascan bench` measures: the fixed shapes of `GPU.md` per family,
//! and the plans each shape runs under.
//!
//! The shapes never change between sessions (that is what makes results
//! comparable); `--scale N` divides every `T` by `2^N` (at least 1) so the
//! same list runs on the CPU emulator, and `--quick` keeps one `T` of each
//! length list. The plan list of each family is one small function
//! ([`diagonal_plans`], [`perm_diagonal_plans`], [`dplr_plans`],
//! [`newton_plans`]): adding a plan variant is one line there.

use std::str::FromStr;

use crate::dtype::DType;
use crate::family::dplr::DplrOutput;
use crate::family::Layout;
use crate::scan::PlanRequest;
use crate::sweep::config::{invalid, parse_list, Shape};
use crate::sweep::{Result, SweepError};

/// A group of benchmark shapes, as `--shapes` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchFamily {
    /// Diagonal scans, f32 and bf16, both layouts.
    Diagonal,
    /// PermDiagonal scans, `n = 5` and `n = 64`.
    PermDiagonal,
    /// DeltaNet-like DPLR scans with readout.
    Dplr,
    /// Newton on `DiagGru` against its sequential kernel.
    Newton,
}

impl BenchFamily {
    /// Every family, in run order.
    pub const ALL: [BenchFamily; 4] = [
        BenchFamily::Diagonal,
        BenchFamily::PermDiagonal,
        BenchFamily::Dplr,
        BenchFamily::Newton,
    ];

    /// The `--shapes` name.
    pub fn name(self) -> &'static str {
        match self {
            BenchFamily::Diagonal => "diagonal",
            BenchFamily::PermDiagonal => "perm-diagonal",
            BenchFamily::Dplr => "dplr",
            BenchFamily::Newton => "newton",
        }
    }
}

impl std::fmt::Display for BenchFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BenchFamily {
    type Err = SweepError;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        BenchFamily::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                invalid(
                    "shapes",
                    format!("one of diagonal, perm-diagonal, dplr, newton (or all); got `{s}`"),
                )
            })
    }
}

/// Parses `diagonal,dplr`; `all` is every family.
pub fn parse_families(s: &str) -> Result<Vec<BenchFamily>> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(BenchFamily::ALL.to_vec());
    }
    let mut families: Vec<BenchFamily> = Vec::new();
    for f in parse_list("shapes", s, BenchFamily::from_str)? {
        if !families.contains(&f) {
            families.push(f);
        }
    }
    Ok(families)
}

/// One linear-scan shape at one length and storage type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScanCase {
    /// The group it belongs to.
    pub family: BenchFamily,
    /// The family instance (sizes other than `T`).
    pub shape: Shape,
    /// Storage type of inputs and outputs.
    pub dtype: DType,
    /// `T`.
    pub len: usize,
}

/// One Newton shape: `DiagGru` with `units` units, `B = batch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NewtonCase {
    /// `B`.
    pub batch: usize,
    /// Units `n` (the Diagonal scan's `D`).
    pub units: usize,
    /// `T`.
    pub len: usize,
}

/// `T / 2^scale`, at least 1.
pub fn scaled(len: usize, scale: u32) -> usize {
    len.checked_shr(scale).unwrap_or(0).max(1)
}

/// The DPLR lengths: `2^12 … 2^16` (time per token should stay flat);
/// `--quick` keeps `8192`, the `GPU.md` shape.
const DPLR_LOG_LENS: [u32; 5] = [12, 13, 14, 15, 16];
const DPLR_QUICK_LOG_LEN: u32 = 13;
/// The Newton lengths: `2^12 … 2^17`; `--quick` keeps `2^16`.
const NEWTON_LOG_LENS: [u32; 6] = [12, 13, 14, 15, 16, 17];
const NEWTON_QUICK_LOG_LEN: u32 = 16;

/// The scan cases of `family` (empty for [`BenchFamily::Newton`], see
/// [`newton_cases`]), in run order.
pub fn scan_cases(family: BenchFamily, quick: bool, scale: u32) -> Vec<ScanCase> {
    let case = |shape, dtype, log_len: u32| ScanCase {
        family,
        shape,
        dtype,
        len: scaled(1 << log_len, scale),
    };
    match family {
        BenchFamily::Diagonal => {
            // (B, D, log2 T): the accelerated-scan shape, then few lanes and
            // a long sequence.
            let mut v = Vec::new();
            for (batch, dim, log_len) in [(8, 1536, 16), (1, 64, 24)] {
                for layout in [Layout::Bdt, Layout::Btd] {
                    for dtype in [DType::F32, DType::Bf16] {
                        let shape = Shape::Diagonal { batch, dim, layout };
                        v.push(case(shape, dtype, log_len));
                    }
                }
            }
            v
        }
        BenchFamily::PermDiagonal => [5, 64]
            .into_iter()
            .map(|n| case(Shape::PermDiagonal { batch: 16, n }, DType::F32, 20))
            .collect(),
        BenchFamily::Dplr => {
            let shape = Shape::Dplr {
                batch: 64,
                n: 64,
                m: 64,
                rank: 1,
                output: DplrOutput::Readout,
            };
            let lens: &[u32] = if quick {
                &[DPLR_QUICK_LOG_LEN]
            } else {
                &DPLR_LOG_LENS
            };
            lens.iter().map(|&l| case(shape, DType::F32, l)).collect()
        }
        BenchFamily::Newton => Vec::new(),
    }
}

/// The Newton cases: `DiagGru`, `B = 8`, `n = 256`, `T = 2^12 … 2^17`
/// (`--quick`: `2^16`).
pub fn newton_cases(quick: bool, scale: u32) -> Vec<NewtonCase> {
    let lens: &[u32] = if quick {
        &[NEWTON_QUICK_LOG_LEN]
    } else {
        &NEWTON_LOG_LENS
    };
    lens.iter()
        .map(|&l| NewtonCase {
            batch: 8,
            units: 256,
            len: scaled(1 << l, scale),
        })
        .collect()
}

/// The plans a case of `family` with `T = len` runs under, `Sequential`
/// first (later rows quote their speed-up over it).
pub fn plans(family: BenchFamily, len: usize) -> Vec<PlanRequest> {
    match family {
        BenchFamily::Diagonal => diagonal_plans(len),
        BenchFamily::PermDiagonal => perm_diagonal_plans(len),
        BenchFamily::Dplr => dplr_plans(len),
        BenchFamily::Newton => newton_plans(len),
    }
}

/// `Chunk(c)` for each `c < len` (a chunk of `len` or more is the single
/// pass, listed once as `Chunk(len)`).
fn shorter_chunks(len: usize, chunks: &[usize]) -> impl Iterator<Item = PlanRequest> + '_ {
    chunks
        .iter()
        .filter(move |&&c| c < len)
        .map(|&c| PlanRequest::Chunk(c))
}

/// Diagonal: the same list as PermDiagonal.
pub fn diagonal_plans(len: usize) -> Vec<PlanRequest> {
    perm_diagonal_plans(len)
}

/// PermDiagonal (and Diagonal): the sequential kernel, the planner's
/// choice, the shallowest plan, the single pass (what `auto` picks when
/// lanes fill the GPU), two fixed chunks on either side of what the
/// three-pass plans would take, and the single-pass look-back (P4, what
/// `auto` picks when the lanes alone do not fill the GPU); without the
/// look-back when `PARASCAN_NO_LOOKBACK` is set
/// ([`crate::kernels::lookback_switch`]).
pub fn perm_diagonal_plans(len: usize) -> Vec<PlanRequest> {
    let mut v = vec![
        PlanRequest::Sequential,
        PlanRequest::Auto,
        PlanRequest::MinDepth,
        PlanRequest::Chunk(len),
    ];
    v.extend(shorter_chunks(len, &[2048, 64]));
    if crate::kernels::lookback_switch::auto_lookback_allowed() {
        v.push(PlanRequest::LookBack);
    }
    v
}

/// DPLR: as Diagonal, with chunks around what `auto` picks for the
/// DeltaNet shape (`C ≈ 248` at `T = 8192`).
pub fn dplr_plans(len: usize) -> Vec<PlanRequest> {
    let mut v = vec![
        PlanRequest::Sequential,
        PlanRequest::Auto,
        PlanRequest::MinDepth,
        PlanRequest::Chunk(len),
    ];
    v.extend(shorter_chunks(len, &[1024, 64]));
    v
}

/// Newton: `Sequential` is the cell's sequential kernel; every other plan
/// is a Newton solve whose Diagonal scans use it (`auto` is the look-back,
/// with the cell fused into the scan; `chunk=2048` the unfused assemble +
/// three-pass scan, for comparison).
pub fn newton_plans(len: usize) -> Vec<PlanRequest> {
    let mut v = vec![
        PlanRequest::Sequential,
        PlanRequest::Auto,
        PlanRequest::MinDepth,
    ];
    v.extend(shorter_chunks(len, &[2048]));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_md_shapes() {
        let d = scan_cases(BenchFamily::Diagonal, false, 0);
        assert_eq!(d.len(), 8);
        assert_eq!(d[0].len, 65536);
        assert_eq!(d[7].len, 1 << 24);
        assert_eq!(scan_cases(BenchFamily::PermDiagonal, false, 0).len(), 2);
        let dplr = scan_cases(BenchFamily::Dplr, false, 0);
        assert_eq!(
            dplr.iter().map(|c| c.len).collect::<Vec<_>>(),
            [4096, 8192, 16384, 32768, 65536]
        );
        assert_eq!(scan_cases(BenchFamily::Dplr, true, 0)[0].len, 8192);
        assert_eq!(newton_cases(false, 0).len(), 6);
        assert_eq!(newton_cases(true, 0)[0].len, 65536);
        assert_eq!(newton_cases(true, 20)[0].len, 1);
    }

    #[test]
    fn plans_skip_chunks_not_shorter_than_t() {
        assert_eq!(diagonal_plans(65536).len(), 7);
        assert_eq!(
            diagonal_plans(16),
            [
                PlanRequest::Sequential,
                PlanRequest::Auto,
                PlanRequest::MinDepth,
                PlanRequest::Chunk(16),
                PlanRequest::LookBack
            ]
        );
        assert_eq!(newton_plans(65536).last(), Some(&PlanRequest::Chunk(2048)));
        assert_eq!(plans(BenchFamily::Newton, 8)[0], PlanRequest::Sequential);
    }

    #[test]
    fn families_parse() {
        assert_eq!(parse_families("all").unwrap(), BenchFamily::ALL.to_vec());
        assert_eq!(
            parse_families("dplr, newton").unwrap(),
            [BenchFamily::Dplr, BenchFamily::Newton]
        );
        let e = parse_families("diagonal,bogus").unwrap_err().to_string();
        assert!(e.contains("shapes") && e.contains("bogus"), "{e}");
        assert!(parse_families(",").is_err());
    }
}
