//! Typed errors for every public entry point.
//!
//! Every variant names the offending argument and says what was expected, so
//! a caller can fix the call without reading the source.

use thiserror::Error;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in parascan.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A buffer had the wrong number of elements for the declared shape.
    #[error("argument `{arg}`: expected {expected} elements (shape {shape}), got {got}")]
    Shape {
        /// The argument's name, e.g. `"a"`.
        arg: &'static str,
        /// The shape it should have, e.g. `"[B,T,D] = [2,7,3]"`.
        shape: String,
        /// Number of elements the shape implies.
        expected: usize,
        /// Number of elements that were passed.
        got: usize,
    },
    /// Typed device memory of another element type than the plan's.
    #[error("argument `{arg}`: expected device memory of {expected} elements, got {got}")]
    ElemType {
        /// Which argument.
        arg: &'static str,
        /// The element type the plan needs (a Rust type name).
        expected: &'static str,
        /// The element type of the memory passed.
        got: &'static str,
    },
    /// A size argument was out of its allowed range (e.g. `T = 0`).
    #[error("argument `{arg}` = {got}: expected {expected}")]
    Size {
        /// The argument's name, e.g. `"len"`.
        arg: &'static str,
        /// The value passed.
        got: usize,
        /// What was expected, in words.
        expected: String,
    },
    /// A product of sizes (an element or byte count) does not fit in
    /// `usize`; the message names every factor with its value.
    #[error("argument `{arg}`: {} overflows usize", overflow_text(.factors))]
    Overflow {
        /// The argument (buffer) whose size it is, e.g. `"x"`.
        arg: &'static str,
        /// The factors, named: `[("batch", 2^62+1), ("len", 4), ("dim", 3)]`.
        factors: Vec<(&'static str, usize)>,
    },
    /// A host buffer sized by the input could not be allocated: larger than
    /// the memory budget ([`crate::mem::host_budget`]) or refused by the
    /// allocator. Nothing was allocated.
    #[error("out of memory: buffer `{buffer}` needs {bytes} bytes ({}); {reason}", human_bytes(*.bytes))]
    OutOfMemory {
        /// The buffer, e.g. `"h_last"`.
        buffer: &'static str,
        /// Bytes it needs.
        bytes: usize,
        /// Why it was refused, in words.
        reason: String,
    },
    /// A `perm` row was not a permutation of `0..n`.
    #[error("argument `perm`: row (batch {batch}, step {step}) is not a permutation of 0..{n}: {detail}")]
    NotPermutation {
        /// Batch index of the bad row.
        batch: usize,
        /// Time step (0-based) of the bad row.
        step: usize,
        /// Permutation size.
        n: usize,
        /// What is wrong (out-of-range or repeated index).
        detail: String,
    },
    /// A parameter that must be finite was NaN or infinite.
    #[error("argument `{arg}`: element {index} is not finite ({value})")]
    NonFinite {
        /// The argument's name.
        arg: &'static str,
        /// Flat index of the first bad element.
        index: usize,
        /// The value found, printed.
        value: String,
    },
    /// The requested layout is not supported for this family.
    #[error("argument `layout`: `{layout}` is not {}; expected {expected}", layout_scope(.family))]
    Layout {
        /// Family name.
        family: &'static str,
        /// The layout passed.
        layout: String,
        /// The layouts this family accepts.
        expected: String,
    },
    /// The plan is not valid for this problem (e.g. `chunk = 0`).
    #[error("argument `plan`: {0}")]
    Plan(String),
    /// A backend could not be used (no driver, no device, no PTX, ...).
    #[error("backend `{backend}` unavailable: {reason}")]
    BackendUnavailable {
        /// Backend name (`cuda`, `emu`, ...).
        backend: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// A kernel launch was rejected or failed: unknown kernel, launch
    /// configuration outside CUDA's limits, wrong arguments, or a fault
    /// while it ran (in the emulator: barrier divergence, shared-memory
    /// overrun, `__trap()`, ...).
    #[error("{backend} kernel `{kernel}`: {message}")]
    Launch {
        /// Backend name (`cuda`, `emu`).
        backend: &'static str,
        /// The kernel's name.
        kernel: String,
        /// What went wrong, in words.
        message: String,
    },
    /// A kernel loaded or stored outside every live device buffer (the
    /// emulator: it touched the guard page next to a buffer, or unmapped
    /// memory). The launch failed; the backend stays usable.
    #[error("{backend} kernel `{kernel}`: illegal address {address:#x}: {message}")]
    IllegalAddress {
        /// Backend name (`emu`).
        backend: &'static str,
        /// The kernel's name.
        kernel: String,
        /// The faulting address.
        address: u64,
        /// Signed distance in bytes from the nearest live buffer: `d >= 0`
        /// is `d` bytes past its end (0 = the first byte after it), `d < 0`
        /// is `-d` bytes before its start; `None` when no buffer was live.
        distance: Option<i64>,
        /// Block, thread, access kind and the nearest buffer, in words.
        message: String,
    },
    /// A CUDA driver call failed.
    #[error("CUDA error in {context}: {message}")]
    Cuda {
        /// What parascan was doing.
        context: String,
        /// The driver's message.
        message: String,
    },
    /// A Newton solve diverged (policy [`Policy::Error`](crate::newton::Policy)).
    #[error("Newton solve of `{}` ({}) diverged after {} iterations: {}; best residual {:.3e}", .0.cell, .0.mode, .0.residuals.len().saturating_sub(1), .0.reason, .0.best_residual)]
    Diverged(Box<crate::newton::Diverged>),
    /// The operation is not provided by this family or cell (e.g. the
    /// backward pass of a user-defined [`Cell`](crate::newton::Cell) that
    /// implements no vector-Jacobian product).
    #[error("`{what}` is not supported by {by}; {hint}")]
    Unsupported {
        /// The operation, e.g. `"Cell::step_vjp"`.
        what: &'static str,
        /// Who lacks it (a family or cell name).
        by: String,
        /// What to do instead, in words.
        hint: String,
    },
    /// A backward pass was asked for the gradient of a Newton solve that
    /// did not converge: its states are not the trajectory of the
    /// recurrence, so no gradient of them is returned.
    #[error("backward of `{cell}`: the forward solve did not converge ({stop}); last residual {residual:.3e} > tolerance {tolerance:.3e}")]
    NotConverged {
        /// The cell's name.
        cell: String,
        /// Why the solve stopped, in words.
        stop: String,
        /// The last residual of the solve.
        residual: f64,
        /// The tolerance it had to meet.
        tolerance: f64,
    },
    /// A `cu_seqlens` entry (sequence offsets into a packed time axis) was
    /// out of order or out of range, or there were too few entries.
    #[error("argument `{arg}`: entry {index} is {got}; expected {expected}")]
    SeqOffsets {
        /// The argument, e.g. `"cu_seqlens"`.
        arg: &'static str,
        /// Index of the first bad entry (0 when there are too few).
        index: usize,
        /// The entry found, printed (or the entry count).
        got: String,
        /// What was expected, in words.
        expected: String,
    },
    /// A strided view's strides or innermost axis do not fit the shape:
    /// overlapping rows, a non-contiguous innermost axis, or a view that
    /// reaches past its buffer.
    #[error("argument `{arg}`: {detail}; expected {expected}")]
    Stride {
        /// The argument, e.g. `"a"`.
        arg: &'static str,
        /// What is wrong, with the values.
        detail: String,
        /// What was expected, in words.
        expected: String,
    },
    /// An I/O error while writing results.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// "a layout" (parsing) or "supported by the diagonal family".
fn layout_scope(family: &str) -> String {
    if family == "any" {
        "a layout".into()
    } else {
        format!("supported by the {family} family")
    }
}

/// `batch × len × dim = 4611686018427387905 × 4 × 3`.
fn overflow_text(factors: &[(&'static str, usize)]) -> String {
    let names: Vec<&str> = factors.iter().map(|(n, _)| *n).collect();
    let values: Vec<String> = factors.iter().map(|(_, v)| v.to_string()).collect();
    format!("{} = {}", names.join(" × "), values.join(" × "))
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub(crate) fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

impl Error {
    /// Builds a [`Error::Shape`] error from a shape description.
    pub fn shape(arg: &'static str, shape: impl Into<String>, expected: usize, got: usize) -> Self {
        Error::Shape {
            arg,
            shape: shape.into(),
            expected,
            got,
        }
    }

    /// Builds a [`Error::Size`] error.
    pub fn size(arg: &'static str, got: usize, expected: impl Into<String>) -> Self {
        Error::Size {
            arg,
            got,
            expected: expected.into(),
        }
    }
}
