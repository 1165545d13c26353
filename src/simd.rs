//! Runtime CPU-feature dispatch for the CPU engine's hot loops.
//!
//! A loop body written as plain (vectorizable) scalar code is compiled twice
//! by [`multiversion!`]: once for the target's baseline (SSE2 on x86-64)
//! and once with AVX2 and FMA enabled; the wrapper picks one per call after
//! checking the CPU (a cached load), so one binary runs on every x86-64 and
//! uses 8-lane vectors where they exist. Other targets compile the baseline
//! only.
//!
//! The bodies form no fused multiply-adds themselves (Rust never contracts
//! `a * b + c`), so both versions return bit-identical results.

/// Whether this CPU has AVX2 and FMA (cached by the standard library).
#[inline]
pub(crate) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `multiversion!(pub(crate) fn name<T: Bound>(args...) => body);` defines
/// `name`, which calls the `#[inline(always)]` function `body` with the same
/// arguments, compiled with AVX2+FMA when the CPU has them.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident<$T:ident: $bound:path>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $body:path) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$T: $bound>($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide<$T: $bound>($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::simd::avx2_fma() {
                    // SAFETY: the CPU has the features `wide` is compiled for.
                    return unsafe { wide($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// `s` viewed as `&[B]` when `A` and `B` are the same type (a no-op),
/// else `None`: lets generic code take a path written for one concrete
/// type (an AVX2 loop over `f32`, say).
pub(crate) fn same_type<A: 'static, B: 'static>(s: &[A]) -> Option<&[B]> {
    if std::any::TypeId::of::<A>() != std::any::TypeId::of::<B>() {
        return None;
    }
    // SAFETY: `A` and `B` are one type (equal type ids), so the memory is
    // `s.len()` values of `B`, borrowed for the same lifetime.
    Some(unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<B>(), s.len()) })
}

/// [`same_type`] for a mutable slice.
pub(crate) fn same_type_mut<A: 'static, B: 'static>(s: &mut [A]) -> Option<&mut [B]> {
    if std::any::TypeId::of::<A>() != std::any::TypeId::of::<B>() {
        return None;
    }
    // SAFETY: `A` and `B` are one type (equal type ids), so the memory is
    // `s.len()` values of `B`, borrowed exclusively for the same lifetime.
    Some(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<B>(), s.len()) })
}
