//! Typed, borrowed device memory: what the safe kernel entry points take.
//!
//! A kernel reads and writes raw device addresses; which memory they may
//! touch is the kernel's contract and no runner can check it. The safe
//! entry points ([`launch_scan_buffers`](super::launch_scan_buffers) for every family, and the Newton solver
//! on device memory) therefore take only memory that carries its own size,
//! owner and, where known, element type:
//!
//! - [`DeviceRef`] (read) and [`DeviceMut`] (written) borrow a parascan
//!   [`DeviceBuffer`] (untyped: its size is checked, not its element type),
//!   a [`DeviceTensor<T>`] (parascan's typed buffer, on any runner), or —
//!   with the `cuda` feature — cudarc's `CudaSlice<T>`, `CudaView<T>` and
//!   `CudaViewMut<T>` through `CudaBackend::input` / `CudaBackend::output`
//!   (memory of a candle or cubecl model, used in place).
//! - Every entry point checks each argument's owner against the runner, its
//!   size in elements against the shape, its element type against the
//!   plan's dtype, and that no output overlaps another argument, all before
//!   the first launch, with a typed [`Error`] naming the argument.
//!
//! The entry points on raw addresses ([`launch_scan`](super::launch_scan) with the family's `*Io`)
//! are `unsafe fn`s: their caller vouches for the sizes.

use std::any::TypeId;
use std::marker::PhantomData;

use crate::backend::launch::{DeviceBuffer, KernelRunner};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// The element type of typed device memory (`TypeId` plus name and size),
/// compared with what a plan expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElemType {
    id: TypeId,
    /// The Rust type's name, for errors (e.g. `f32`, `half::f16`).
    pub name: &'static str,
    /// Size in bytes.
    pub size: usize,
}

impl ElemType {
    /// The element type `T`.
    pub fn of<T: 'static>() -> Self {
        ElemType {
            id: TypeId::of::<T>(),
            name: std::any::type_name::<T>(),
            size: std::mem::size_of::<T>(),
        }
    }

    /// The Rust type that stores `dtype`.
    pub fn of_dtype(dtype: DType) -> Self {
        match dtype {
            DType::F32 => Self::of::<f32>(),
            DType::F64 => Self::of::<f64>(),
            DType::F16 => Self::of::<half::f16>(),
            DType::Bf16 => Self::of::<half::bf16>(),
        }
    }
}

/// Who owns a piece of device memory: the runner's backend name, and for
/// CUDA the context (device addresses are only valid in their context).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) backend: &'static str,
    /// `CUcontext` as an integer for CUDA memory; 0 where not known (a
    /// [`DeviceBuffer`], whose stream the CUDA runner checks itself).
    pub(crate) context: usize,
}

/// Keeps something alive until the launches that use an address are
/// queued: cudarc's stream-ordering guard for a `CudaSlice`.
pub(crate) trait Held {}
impl<T> Held for T {}

/// Device memory a kernel reads: address, size, owner and (when typed)
/// element type, borrowed for `'a`.
pub struct DeviceRef<'a> {
    pub(crate) addr: u64,
    pub(crate) bytes: usize,
    pub(crate) elem: Option<ElemType>,
    pub(crate) owner: Owner,
    _guard: Option<Box<dyn Held + 'a>>,
    _borrow: PhantomData<&'a ()>,
}

/// Device memory a kernel writes (see [`DeviceRef`]).
pub struct DeviceMut<'a>(pub(crate) DeviceRef<'a>);

impl std::fmt::Debug for DeviceRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceRef")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("bytes", &self.bytes)
            .field("elem", &self.elem.map(|e| e.name))
            .field("backend", &self.owner.backend)
            .finish()
    }
}

impl std::fmt::Debug for DeviceMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceMut({:?})", self.0)
    }
}

impl<'a> DeviceRef<'a> {
    /// # Safety
    /// `addr..addr + bytes` must be device memory of `owner` that stays
    /// allocated for `'a` (`guard` keeps whatever ensures that).
    pub(crate) unsafe fn from_raw_parts(
        addr: u64,
        bytes: usize,
        elem: Option<ElemType>,
        owner: Owner,
        guard: Option<Box<dyn Held + 'a>>,
    ) -> Self {
        DeviceRef {
            addr,
            bytes,
            elem,
            owner,
            _guard: guard,
            _borrow: PhantomData,
        }
    }

    /// Size in bytes.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// The element type, when the memory is typed.
    pub fn elem(&self) -> Option<ElemType> {
        self.elem
    }

    /// The device address (for reports; launching on it needs `unsafe`).
    pub fn addr(&self) -> u64 {
        self.addr
    }
}

impl DeviceMut<'_> {
    /// Size in bytes.
    pub fn len_bytes(&self) -> usize {
        self.0.bytes
    }

    /// The device address (for reports; launching on it needs `unsafe`).
    pub fn addr(&self) -> u64 {
        self.0.addr
    }
}

impl<'a> From<&'a DeviceBuffer> for DeviceRef<'a> {
    /// The whole buffer, untyped (its size is checked, not its element type).
    fn from(buf: &'a DeviceBuffer) -> Self {
        // SAFETY: the buffer owns `len_bytes()` bytes at `ptr()` and the
        // borrow keeps it alive for 'a.
        unsafe {
            DeviceRef::from_raw_parts(buf.ptr(), buf.len_bytes(), None, buffer_owner(buf), None)
        }
    }
}

impl<'a> From<&'a DeviceBuffer> for DeviceMut<'a> {
    /// The whole buffer as an output. [`DeviceBuffer`]s are device memory
    /// behind a shared reference (like a `Cell`); overlapping outputs are
    /// rejected by every entry point.
    fn from(buf: &'a DeviceBuffer) -> Self {
        DeviceMut(buf.into())
    }
}

fn buffer_owner(buf: &DeviceBuffer) -> Owner {
    Owner {
        backend: buf.backend_name(),
        context: 0,
    }
}

/// A device buffer of `len` values of `T` on some runner: parascan's typed
/// memory for the safe entry points on any backend.
pub struct DeviceTensor<T> {
    buf: DeviceBuffer,
    len: usize,
    _elem: PhantomData<T>,
}

impl<T: bytemuck::Pod> DeviceTensor<T> {
    /// `len` values, contents unspecified (poisoned with `0xFF` bytes, NaN
    /// for floats, so an unwritten output shows).
    pub fn alloc<R: KernelRunner>(runner: &R, len: usize) -> Result<Self> {
        let bytes = crate::mem::checked_product(
            "DeviceTensor",
            &[("len", len), ("element bytes", std::mem::size_of::<T>())],
        )?;
        let buf = runner.alloc(bytes)?;
        runner.fill(&buf, 0xFF)?;
        Ok(DeviceTensor {
            buf,
            len,
            _elem: PhantomData,
        })
    }

    /// A copy of `host` on the device.
    pub fn upload<R: KernelRunner>(runner: &R, host: &[T]) -> Result<Self> {
        Ok(DeviceTensor {
            buf: runner.upload(host)?,
            len: host.len(),
            _elem: PhantomData,
        })
    }

    /// Copies the tensor to the host (waits for the work queued before).
    pub fn download<R: KernelRunner>(&self, runner: &R) -> Result<Vec<T>> {
        let mut host = crate::mem::try_vec("download", self.len, T::zeroed())?;
        runner.download(&self.buf, &mut host)?;
        Ok(host)
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The untyped buffer underneath.
    pub fn buffer(&self) -> &DeviceBuffer {
        &self.buf
    }

    /// Read access for a kernel, typed.
    pub fn as_ref(&self) -> DeviceRef<'_>
    where
        T: 'static,
    {
        // SAFETY: the tensor owns `len` values of `T` at the buffer's address
        // and the borrow keeps it alive.
        unsafe {
            DeviceRef::from_raw_parts(
                self.buf.ptr(),
                self.buf.len_bytes(),
                Some(ElemType::of::<T>()),
                buffer_owner(&self.buf),
                None,
            )
        }
    }

    /// Write access for a kernel, typed (the `&mut` borrow makes it the only
    /// access while the kernels are queued).
    pub fn as_mut(&mut self) -> DeviceMut<'_>
    where
        T: 'static,
    {
        DeviceMut(self.as_ref())
    }
}

impl<'a, T: bytemuck::Pod + 'static> From<&'a DeviceTensor<T>> for DeviceRef<'a> {
    fn from(t: &'a DeviceTensor<T>) -> Self {
        t.as_ref()
    }
}

impl<'a, T: bytemuck::Pod + 'static> From<&'a mut DeviceTensor<T>> for DeviceMut<'a> {
    fn from(t: &'a mut DeviceTensor<T>) -> Self {
        t.as_mut()
    }
}

/// Checks one argument before any launch: it belongs to `runner`, holds
/// exactly `elements` values of `elem` (element type checked when the
/// memory is typed), and its address is aligned to the element.
pub(crate) fn check_arg<R: KernelRunner + ?Sized>(
    runner: &R,
    arg: &'static str,
    mem: &DeviceRef<'_>,
    elements: usize,
    elem: ElemType,
    shape: impl Fn() -> String,
) -> Result<()> {
    if mem.owner.backend != runner.backend_name() {
        return Err(Error::BackendUnavailable {
            backend: runner.backend_name(),
            reason: format!(
                "argument `{arg}`: memory of the {} backend was passed to the {} backend",
                mem.owner.backend,
                runner.backend_name()
            ),
        });
    }
    if let Some(have) = mem.elem {
        if have.id != elem.id {
            return Err(Error::ElemType {
                arg,
                expected: elem.name,
                got: have.name,
            });
        }
    }
    let size = elem.size;
    if mem.bytes != elements.saturating_mul(size) {
        return Err(Error::shape(
            arg,
            format!("{} of {size}-byte elements", shape()),
            elements,
            mem.bytes / size.max(1),
        ));
    }
    if mem.addr % size.max(1) as u64 != 0 {
        return Err(Error::size(
            arg,
            mem.addr as usize,
            format!("an address aligned to the {size}-byte element"),
        ));
    }
    Ok(())
}

#[cfg(feature = "cuda")]
mod cuda_memory {
    use cudarc::driver::{DevicePtr, DevicePtrMut, DeviceRepr};

    use super::{DeviceMut, DeviceRef, ElemType, Held, Owner};
    use crate::backend::cuda::CudaBackend;
    use crate::error::{Error, Result};

    impl CudaBackend {
        /// cudarc memory (`CudaSlice<T>`, `CudaView<T>`, `CudaViewMut<T>`:
        /// e.g. a candle tensor's storage) as a kernel input, in place.
        ///
        /// The slice may live on another stream of this backend's context:
        /// cudarc makes this backend's stream wait for the slice's pending
        /// writes, and records the read when the returned value is dropped
        /// (drop it after the launches are issued, i.e. after the entry point
        /// returns). Errors: the slice belongs to another context.
        pub fn input<'a, T, S>(&'a self, slice: &'a S) -> Result<DeviceRef<'a>>
        where
            T: DeviceRepr + 'static,
            S: DevicePtr<T>,
        {
            self.check_context(slice.stream().context())?;
            let bytes = slice.num_bytes();
            let (addr, guard) = slice.device_ptr(self.stream());
            // SAFETY: cudarc guarantees `bytes` bytes of `T` at `addr` in this
            // context while `slice` is borrowed (for 'a); the guard orders
            // the use on this stream with the slice's other streams.
            Ok(unsafe { self.borrowed::<T>(addr, bytes, Box::new(guard)) })
        }

        /// cudarc memory as a kernel output, in place (see [`input`](Self::input);
        /// the `&mut` borrow makes it the only access while launches are
        /// queued).
        pub fn output<'a, T, S>(&'a self, slice: &'a mut S) -> Result<DeviceMut<'a>>
        where
            T: DeviceRepr + 'static,
            S: DevicePtrMut<T>,
        {
            self.check_context(slice.stream().context())?;
            let bytes = slice.num_bytes();
            let (addr, guard) = slice.device_ptr_mut(self.stream());
            // SAFETY: as in `input`, with exclusive access through `&mut`.
            Ok(DeviceMut(unsafe {
                self.borrowed::<T>(addr, bytes, Box::new(guard))
            }))
        }

        /// `bytes` bytes of `T` at `addr`, owned by this backend's context.
        ///
        /// # Safety
        /// The memory stays allocated in this context for `'a` (`guard`
        /// keeps what ensures that and orders the use across streams).
        unsafe fn borrowed<'a, T: DeviceRepr + 'static>(
            &self,
            addr: u64,
            bytes: usize,
            guard: Box<dyn Held + 'a>,
        ) -> DeviceRef<'a> {
            // SAFETY: forwarded to the caller.
            unsafe {
                DeviceRef::from_raw_parts(
                    addr,
                    bytes,
                    Some(ElemType::of::<T>()),
                    self.owner(),
                    Some(guard),
                )
            }
        }

        fn owner(&self) -> Owner {
            Owner {
                backend: "cuda",
                context: self.context().cu_ctx() as usize,
            }
        }

        fn check_context(&self, ctx: &std::sync::Arc<cudarc::driver::CudaContext>) -> Result<()> {
            if ctx.cu_ctx() != self.context().cu_ctx() {
                return Err(Error::BackendUnavailable {
                    backend: "cuda",
                    reason: "the memory belongs to another CUDA context than this backend's \
                             (device addresses are only valid in their own context)"
                        .into(),
                });
            }
            Ok(())
        }
    }
}
