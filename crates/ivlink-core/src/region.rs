//! Bounds-checked access to a shared-memory region.
//!
//! The region is written concurrently by peers we do not trust, so nothing here
//! hands out a Rust reference into it. Plain bytes are copied in and out; words that
//! peers synchronise on are accessed with atomics at checked, aligned offsets.

use core::fmt;
use core::ptr::NonNull;
#[cfg(target_has_atomic = "64")]
use core::sync::atomic::AtomicU64;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, Ordering};

pub mod area;
mod copy;
pub mod field;

pub use area::Area;
pub use field::{Le8, Le16, Le32, Le64, LeField};

/// An access that does not fit the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionError {
    /// `offset..offset + len` is not inside the region.
    OutOfBounds {
        /// First byte of the access.
        offset: usize,
        /// Length of the access in bytes.
        len: usize,
        /// Length of the region in bytes.
        region_len: usize,
    },
    /// An atomic access at an offset that is not a multiple of its size.
    Misaligned {
        /// Offset of the access.
        offset: usize,
        /// Required alignment in bytes.
        align: usize,
    },
    /// An atomic access of a width the target has no atomics for (64 bits on a
    /// 32-bit microcontroller such as Cortex-M).
    Unsupported {
        /// Offset of the access.
        offset: usize,
        /// Width of the access in bytes.
        width: usize,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RegionError::OutOfBounds {
                offset,
                len,
                region_len,
            } => write!(
                f,
                "access of {len} bytes at offset {offset:#x} is outside the {region_len}-byte region"
            ),
            RegionError::Misaligned { offset, align } => {
                write!(f, "offset {offset:#x} is not {align}-byte aligned")
            }
            RegionError::Unsupported { offset, width } => write!(
                f,
                "this target has no {width}-byte atomics (access at offset {offset:#x})"
            ),
        }
    }
}

impl core::error::Error for RegionError {}

/// Checks that `offset..offset + len` lies inside a region of `region_len` bytes.
pub fn check_bounds(offset: usize, len: usize, region_len: usize) -> Result<(), RegionError> {
    match offset.checked_add(len) {
        Some(end) if end <= region_len => Ok(()),
        _ => Err(RegionError::OutOfBounds {
            offset,
            len,
            region_len,
        }),
    }
}

/// Checks that `offset` is a multiple of 8 (the word accessors' alignment).
#[inline]
fn check_word_aligned(offset: usize) -> Result<(), RegionError> {
    if offset % 8 != 0 {
        return Err(RegionError::Misaligned { offset, align: 8 });
    }
    Ok(())
}

/// A shared-memory region seen through checked accessors.
///
/// Every method validates its offset; an access outside the region or a misaligned
/// atomic is an error, never a panic or an out-of-bounds access.
pub trait Region {
    /// Length of the region in bytes.
    fn len(&self) -> usize;

    /// Whether the region has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `buf.len()` bytes starting at `offset` out of the region.
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), RegionError>;

    /// Copies `data` into the region starting at `offset`.
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), RegionError>;

    /// Sets `len` bytes starting at `offset` to `byte`.
    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), RegionError>;

    /// Writes a word-aligned record: the 8-byte little-endian `header` at `offset`
    /// (a multiple of 8), then `payload`, then zeros up to the next multiple of 8.
    /// That is `8 + payload.len().next_multiple_of(8)` bytes, all checked at once.
    ///
    /// Rings of 8-byte aligned records write a message with one call; a region
    /// over memory it maps copies whole words without re-deriving bounds per word.
    /// The default does three checked copies.
    fn write_record(&self, offset: usize, header: u64, payload: &[u8]) -> Result<(), RegionError> {
        check_word_aligned(offset)?;
        check_bounds(offset, 8 + payload.len().next_multiple_of(8), self.len())?;
        self.write(offset, &header.to_le_bytes())?;
        self.write_words(offset + 8, payload)
    }

    /// Copies `data` to `offset` (a multiple of 8), then zeros up to the next
    /// multiple of 8: `data.len().next_multiple_of(8)` bytes, checked at once.
    fn write_words(&self, offset: usize, data: &[u8]) -> Result<(), RegionError> {
        check_word_aligned(offset)?;
        let padded = data.len().next_multiple_of(8);
        check_bounds(offset, padded, self.len())?;
        self.write(offset, data)?;
        self.fill(offset + data.len(), padded - data.len(), 0)
    }

    /// Copies `buf.len()` bytes at `offset` (a multiple of 8) out of the region,
    /// reading whole words: the region must hold `buf.len().next_multiple_of(8)`
    /// bytes there (the bytes past `buf.len()` are read and dropped).
    fn read_words(&self, offset: usize, buf: &mut [u8]) -> Result<(), RegionError> {
        check_word_aligned(offset)?;
        check_bounds(offset, buf.len().next_multiple_of(8), self.len())?;
        self.read(offset, buf)
    }

    /// [`write_record`](Self::write_record) without its checks, for a caller
    /// that made them already ([`Area`] checks its window once). The default
    /// makes them anyway.
    ///
    /// # Safety
    /// `write_record(offset, header, payload)` must be an access this region
    /// accepts: inside it, at an offset it takes word accesses at.
    #[inline]
    unsafe fn write_record_unchecked(
        &self,
        offset: usize,
        header: u64,
        payload: &[u8],
    ) -> Result<(), RegionError> {
        self.write_record(offset, header, payload)
    }

    /// [`write_words`](Self::write_words) without its checks (see
    /// [`write_record_unchecked`](Self::write_record_unchecked)).
    ///
    /// # Safety
    /// `write_words(offset, data)` must be an access this region accepts.
    #[inline]
    unsafe fn write_words_unchecked(&self, offset: usize, data: &[u8]) -> Result<(), RegionError> {
        self.write_words(offset, data)
    }

    /// [`read_words`](Self::read_words) without its checks (see
    /// [`write_record_unchecked`](Self::write_record_unchecked)).
    ///
    /// # Safety
    /// `read_words(offset, buf)` must be an access this region accepts.
    #[inline]
    unsafe fn read_words_unchecked(
        &self,
        offset: usize,
        buf: &mut [u8],
    ) -> Result<(), RegionError> {
        self.read_words(offset, buf)
    }

    /// Atomically loads the byte at `offset`.
    fn load_u8(&self, offset: usize, order: Ordering) -> Result<u8, RegionError>;

    /// Atomically stores the byte at `offset`.
    fn store_u8(&self, offset: usize, value: u8, order: Ordering) -> Result<(), RegionError>;

    /// Atomically loads the 16-bit word at `offset` (2-byte aligned).
    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, RegionError>;

    /// Atomically stores the 16-bit word at `offset` (2-byte aligned).
    fn store_u16(&self, offset: usize, value: u16, order: Ordering) -> Result<(), RegionError>;

    /// Atomically loads the 32-bit word at `offset` (4-byte aligned).
    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, RegionError>;

    /// Atomically stores the 32-bit word at `offset` (4-byte aligned).
    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), RegionError>;

    /// Atomically loads the 64-bit word at `offset` (8-byte aligned).
    fn load_u64(&self, offset: usize, order: Ordering) -> Result<u64, RegionError>;

    /// Atomically stores the 64-bit word at `offset` (8-byte aligned).
    fn store_u64(&self, offset: usize, value: u64, order: Ordering) -> Result<(), RegionError>;

    /// Atomic compare-and-exchange of the 32-bit word at `offset`.
    ///
    /// The outer result reports a bad offset; the inner one is
    /// [`AtomicU32::compare_exchange`]'s (the previous value either way).
    fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, RegionError>;

    /// Atomic compare-and-exchange of the 64-bit word at `offset`.
    fn compare_exchange_u64(
        &self,
        offset: usize,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, RegionError>;

    /// Atomic compare-and-exchange of the byte at `offset` (see
    /// [`compare_exchange_u32`](Self::compare_exchange_u32)).
    fn compare_exchange_u8(
        &self,
        offset: usize,
        current: u8,
        new: u8,
    ) -> Result<Result<u8, u8>, RegionError>;

    /// Atomic compare-and-exchange of the 16-bit word at `offset` (2-byte aligned).
    fn compare_exchange_u16(
        &self,
        offset: usize,
        current: u16,
        new: u16,
    ) -> Result<Result<u16, u16>, RegionError>;

    /// Atomically ORs `value` into the 32-bit word at `offset`; returns the previous
    /// word (a doorbell register sets its bits this way).
    fn fetch_or_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<u32, RegionError>;

    /// Atomically ANDs `value` into the 32-bit word at `offset`; returns the previous
    /// word.
    fn fetch_and_u32(&self, offset: usize, value: u32, order: Ordering)
    -> Result<u32, RegionError>;

    /// Atomically ORs `value` into the 64-bit word at `offset`; returns the previous
    /// word.
    fn fetch_or_u64(&self, offset: usize, value: u64, order: Ordering) -> Result<u64, RegionError>;

    /// Atomically ANDs `value` into the 64-bit word at `offset`; returns the previous
    /// word.
    fn fetch_and_u64(&self, offset: usize, value: u64, order: Ordering)
    -> Result<u64, RegionError>;

    /// Hints that the bytes around `offset` will be accessed soon (`Intent::Write`:
    /// written), so their cache line can be fetched while the caller does other
    /// work. Nothing is read or written; an offset outside the region is ignored.
    /// The default does nothing.
    #[inline(always)]
    fn prefetch(&self, offset: usize, intent: Intent) {
        let _ = (offset, intent);
    }

    /// A memory fence of the given ordering, as seen by every peer of the region.
    ///
    /// Protocols fence through the region rather than calling
    /// [`core::sync::atomic::fence`] themselves, so that a region with its own
    /// memory model (a model checker's, or a device's) sees every fence.
    fn fence(&self, order: Ordering) {
        core::sync::atomic::fence(order);
    }

    /// Reads a NUL-terminated string of at most `max` bytes at `offset` into `buf`,
    /// returning the number of bytes before the NUL (or before the end of the region
    /// or `buf`). Useful for the raw layouts of foreign samples that put a C string at
    /// a fixed offset.
    fn read_c_str(&self, offset: usize, buf: &mut [u8]) -> Result<usize, RegionError> {
        check_bounds(offset, 0, self.len())?;
        let n = buf.len().min(self.len() - offset);
        self.read(offset, &mut buf[..n])?;
        Ok(buf[..n].iter().position(|&b| b == 0).unwrap_or(n))
    }
}

/// What a [`Region::prefetch`] prepares a cache line for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// The line will be read: fetch a shared copy.
    Read,
    /// The line will be written: fetch it owned, so the store does not wait for
    /// the other peers' copies to be invalidated.
    Write,
}

/// A region at a raw address: a mapping made by a transport, or memory owned by a
/// [`HeapRegion`].
#[derive(Debug)]
pub struct RawRegion {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a RawRegion is a pointer and a length; all accesses through it are
// atomics or copies whose data races with other peers are part of the shared-memory
// contract (see `RawRegion::new`). Moving or sharing it between threads adds nothing.
unsafe impl Send for RawRegion {}
// SAFETY: as above; `&RawRegion` only exposes the checked accessors.
unsafe impl Sync for RawRegion {}

impl RawRegion {
    /// Wraps `len` bytes at `base`.
    ///
    /// # Safety
    /// `base..base + len` must stay valid for reads and writes for the lifetime of the
    /// returned value, and must not be accessed through Rust references elsewhere in
    /// this process (other processes and devices may write it at any time).
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        RawRegion { base, len }
    }

    /// Address of the first byte (for display and for address translation only).
    pub fn base_address(&self) -> usize {
        self.base.as_ptr() as usize
    }

    #[inline]
    fn ptr_at(&self, offset: usize, len: usize) -> Result<*mut u8, RegionError> {
        check_bounds(offset, len, self.len)?;
        // SAFETY: offset + len <= self.len, so the result stays inside the mapping.
        Ok(unsafe { self.base.as_ptr().add(offset) })
    }

    /// The address of `len` bytes at `offset`, checked to lie inside the region
    /// and to start on an 8-byte boundary.
    #[inline]
    fn words_at(&self, offset: usize, len: usize) -> Result<*mut u8, RegionError> {
        let ptr = self.ptr_at(offset, len)?;
        if (ptr as usize) % 8 != 0 {
            return Err(RegionError::Misaligned { offset, align: 8 });
        }
        Ok(ptr)
    }

    #[inline]
    fn aligned_ptr_at(&self, offset: usize, size: usize) -> Result<*mut u8, RegionError> {
        let ptr = self.ptr_at(offset, size)?;
        if (ptr as usize) % size != 0 {
            return Err(RegionError::Misaligned {
                offset,
                align: size,
            });
        }
        Ok(ptr)
    }

    #[inline]
    fn atomic_u8(&self, offset: usize) -> Result<&AtomicU8, RegionError> {
        let ptr = self.ptr_at(offset, 1)?;
        // SAFETY: in bounds (checked above), bytes need no alignment; see `atomic_u32`.
        Ok(unsafe { AtomicU8::from_ptr(ptr) })
    }

    #[inline]
    fn atomic_u16(&self, offset: usize) -> Result<&AtomicU16, RegionError> {
        let ptr = self.aligned_ptr_at(offset, 2)?;
        // SAFETY: in bounds and 2-byte aligned (checked above); see `atomic_u32`.
        Ok(unsafe { AtomicU16::from_ptr(ptr.cast()) })
    }

    #[inline]
    fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32, RegionError> {
        let ptr = self.aligned_ptr_at(offset, 4)?;
        // SAFETY: in bounds and 4-byte aligned (checked above); the memory is valid
        // for the lifetime of `self` (contract of `new`), and every word peers
        // synchronise on is only ever accessed atomically.
        Ok(unsafe { AtomicU32::from_ptr(ptr.cast()) })
    }

    #[cfg(target_has_atomic = "64")]
    #[inline]
    fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64, RegionError> {
        let ptr = self.aligned_ptr_at(offset, 8)?;
        // SAFETY: in bounds and 8-byte aligned (checked above); see `atomic_u32`.
        Ok(unsafe { AtomicU64::from_ptr(ptr.cast()) })
    }

    /// Without 64-bit atomics the word is checked like any other, then refused: two
    /// 32-bit halves would let a peer see a torn index.
    #[cfg(not(target_has_atomic = "64"))]
    fn atomic_u64(&self, offset: usize) -> Result<Unsupported64, RegionError> {
        self.aligned_ptr_at(offset, 8)?;
        Err(RegionError::Unsupported { offset, width: 8 })
    }
}

impl Region for RawRegion {
    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), RegionError> {
        let src = self.ptr_at(offset, buf.len())?;
        // SAFETY: `src..src + buf.len()` is inside the region (checked), which stays
        // valid for `self`'s lifetime (contract of `new`), and cannot overlap `buf`,
        // which is private memory. See `copy` for why the copy is word-wise.
        unsafe { copy::from_region(src, buf) };
        Ok(())
    }

    #[inline]
    fn write(&self, offset: usize, data: &[u8]) -> Result<(), RegionError> {
        let dst = self.ptr_at(offset, data.len())?;
        // SAFETY: `dst..dst + data.len()` is inside the region (checked) and does not
        // overlap `data`, which is private memory.
        unsafe { copy::to_region(data, dst) };
        Ok(())
    }

    #[inline(always)]
    fn prefetch(&self, offset: usize, intent: Intent) {
        if offset >= self.len {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use core::arch::x86_64::{_MM_HINT_ET0, _MM_HINT_T0, _mm_prefetch};
            let at = self
                .base
                .as_ptr()
                .wrapping_add(offset)
                .cast::<i8>()
                .cast_const();
            // SAFETY: a prefetch is a hint: it cannot fault and changes no memory, and
            // `at` lies inside the mapping. `ET0` is `prefetchw`, a no-op on
            // processors without it.
            unsafe {
                match intent {
                    Intent::Read => _mm_prefetch::<_MM_HINT_T0>(at),
                    Intent::Write => _mm_prefetch::<_MM_HINT_ET0>(at),
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = intent;
    }

    #[inline]
    fn write_record(&self, offset: usize, header: u64, payload: &[u8]) -> Result<(), RegionError> {
        let dst = self.words_at(offset, 8 + payload.len().next_multiple_of(8))?;
        // SAFETY: `dst..dst + 8 + padded` is inside the region and 8-byte aligned
        // (checked), and does not overlap `payload`, which is private memory.
        unsafe { copy::record_to_region(header, payload, dst) };
        Ok(())
    }

    #[inline]
    fn write_words(&self, offset: usize, data: &[u8]) -> Result<(), RegionError> {
        let dst = self.words_at(offset, data.len().next_multiple_of(8))?;
        // SAFETY: as in `write_record`, without the header word.
        unsafe { copy::words_to_region(data, dst) };
        Ok(())
    }

    #[inline]
    fn read_words(&self, offset: usize, buf: &mut [u8]) -> Result<(), RegionError> {
        let src = self.words_at(offset, buf.len().next_multiple_of(8))?;
        // SAFETY: `src..src + padded` is inside the region and 8-byte aligned
        // (checked), and does not overlap `buf`, which is private memory.
        unsafe { copy::words_from_region(src, buf) };
        Ok(())
    }

    #[inline]
    unsafe fn write_record_unchecked(
        &self,
        offset: usize,
        header: u64,
        payload: &[u8],
    ) -> Result<(), RegionError> {
        // SAFETY: the caller guarantees that `write_record` would accept the
        // access: `offset..offset + 8 + padded` inside the region, 8-byte aligned.
        // `payload` is private memory, so they do not overlap.
        unsafe { copy::record_to_region(header, payload, self.base.as_ptr().add(offset)) };
        Ok(())
    }

    #[inline]
    unsafe fn write_words_unchecked(&self, offset: usize, data: &[u8]) -> Result<(), RegionError> {
        // SAFETY: as in `write_record_unchecked`, for `write_words`.
        unsafe { copy::words_to_region(data, self.base.as_ptr().add(offset)) };
        Ok(())
    }

    #[inline]
    unsafe fn read_words_unchecked(
        &self,
        offset: usize,
        buf: &mut [u8],
    ) -> Result<(), RegionError> {
        // SAFETY: as in `write_record_unchecked`, for `read_words`.
        unsafe { copy::words_from_region(self.base.as_ptr().add(offset), buf) };
        Ok(())
    }

    fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), RegionError> {
        let dst = self.ptr_at(offset, len)?;
        // SAFETY: `dst..dst + len` is inside the region (checked).
        unsafe { copy::fill_region(dst, len, byte) };
        Ok(())
    }

    fn load_u8(&self, offset: usize, order: Ordering) -> Result<u8, RegionError> {
        Ok(self.atomic_u8(offset)?.load(order))
    }

    fn store_u8(&self, offset: usize, value: u8, order: Ordering) -> Result<(), RegionError> {
        self.atomic_u8(offset)?.store(value, order);
        Ok(())
    }

    fn load_u16(&self, offset: usize, order: Ordering) -> Result<u16, RegionError> {
        Ok(self.atomic_u16(offset)?.load(order))
    }

    fn store_u16(&self, offset: usize, value: u16, order: Ordering) -> Result<(), RegionError> {
        self.atomic_u16(offset)?.store(value, order);
        Ok(())
    }

    fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, RegionError> {
        Ok(self.atomic_u32(offset)?.load(order))
    }

    fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), RegionError> {
        self.atomic_u32(offset)?.store(value, order);
        Ok(())
    }

    fn load_u64(&self, offset: usize, order: Ordering) -> Result<u64, RegionError> {
        Ok(self.atomic_u64(offset)?.load(order))
    }

    fn store_u64(&self, offset: usize, value: u64, order: Ordering) -> Result<(), RegionError> {
        self.atomic_u64(offset)?.store(value, order);
        Ok(())
    }

    fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, RegionError> {
        Ok(self.atomic_u32(offset)?.compare_exchange(
            current,
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ))
    }

    fn compare_exchange_u64(
        &self,
        offset: usize,
        current: u64,
        new: u64,
    ) -> Result<Result<u64, u64>, RegionError> {
        Ok(self.atomic_u64(offset)?.compare_exchange(
            current,
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ))
    }

    fn compare_exchange_u8(
        &self,
        offset: usize,
        current: u8,
        new: u8,
    ) -> Result<Result<u8, u8>, RegionError> {
        Ok(self.atomic_u8(offset)?.compare_exchange(
            current,
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ))
    }

    fn compare_exchange_u16(
        &self,
        offset: usize,
        current: u16,
        new: u16,
    ) -> Result<Result<u16, u16>, RegionError> {
        Ok(self.atomic_u16(offset)?.compare_exchange(
            current,
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ))
    }

    fn fetch_or_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<u32, RegionError> {
        Ok(self.atomic_u32(offset)?.fetch_or(value, order))
    }

    fn fetch_and_u32(
        &self,
        offset: usize,
        value: u32,
        order: Ordering,
    ) -> Result<u32, RegionError> {
        Ok(self.atomic_u32(offset)?.fetch_and(value, order))
    }

    fn fetch_or_u64(&self, offset: usize, value: u64, order: Ordering) -> Result<u64, RegionError> {
        Ok(self.atomic_u64(offset)?.fetch_or(value, order))
    }

    fn fetch_and_u64(
        &self,
        offset: usize,
        value: u64,
        order: Ordering,
    ) -> Result<u64, RegionError> {
        Ok(self.atomic_u64(offset)?.fetch_and(value, order))
    }
}

/// Stands in for `&AtomicU64` on targets without 64-bit atomics: it has no values,
/// so its methods (the ones `RawRegion` calls) can never run.
#[cfg(not(target_has_atomic = "64"))]
enum Unsupported64 {}

#[cfg(not(target_has_atomic = "64"))]
impl Unsupported64 {
    fn load(&self, _: Ordering) -> u64 {
        match *self {}
    }
    fn store(&self, _: u64, _: Ordering) {
        match *self {}
    }
    fn compare_exchange(&self, _: u64, _: u64, _: Ordering, _: Ordering) -> Result<u64, u64> {
        match *self {}
    }
    fn fetch_or(&self, _: u64, _: Ordering) -> u64 {
        match *self {}
    }
    fn fetch_and(&self, _: u64, _: Ordering) -> u64 {
        match *self {}
    }
}

/// Eight bytes of a [`HeapRegion`], aligned for the 64-bit words in it.
#[cfg(any(test, feature = "alloc"))]
#[repr(C, align(8))]
struct HeapWord(core::cell::UnsafeCell<[u8; 8]>);

/// A zeroed region on the heap: what tests, Miri and single-process users run on.
#[cfg(any(test, feature = "alloc"))]
pub struct HeapRegion {
    // Points into the words allocated by `new`, which `drop` frees. They are held as
    // a raw pointer, not a `Box`: moving a `Box` asserts unique access to its memory,
    // which would invalidate `raw`'s pointer (Miri's Stacked Borrows rejects it).
    raw: RawRegion,
    words: usize,
}

#[cfg(any(test, feature = "alloc"))]
impl HeapRegion {
    /// Allocates a zeroed region of `len` bytes (8-byte aligned).
    pub fn new(len: usize) -> Self {
        let words = len.div_ceil(8);
        let base = match Self::layout(words) {
            // SAFETY: the layout has a non-zero size (`words > 0`).
            Some(layout) => NonNull::new(unsafe { alloc::alloc::alloc_zeroed(layout) })
                .unwrap_or_else(|| alloc::alloc::handle_alloc_error(layout)),
            None => NonNull::<HeapWord>::dangling().cast::<u8>(),
        };
        // One zeroed allocation, not a word at a time: Miri interprets every step
        // of a loop, and tests make megabyte regions.
        //
        // SAFETY: the words stay allocated until `drop` frees them, and nothing
        // else owns or moves them; they are only reached through `raw`, and the
        // `UnsafeCell` in each word (zero bytes are a valid `HeapWord`) permits
        // mutation through a shared pointer.
        let raw = unsafe { RawRegion::new(base, len) };
        HeapRegion { raw, words }
    }

    /// The allocation of `words` words (`None`: nothing to allocate).
    fn layout(words: usize) -> Option<core::alloc::Layout> {
        if words == 0 {
            return None;
        }
        Some(core::alloc::Layout::array::<HeapWord>(words).expect("region too large"))
    }
}

#[cfg(any(test, feature = "alloc"))]
impl Drop for HeapRegion {
    fn drop(&mut self) {
        if let Some(layout) = Self::layout(self.words) {
            // SAFETY: `new` allocated exactly this layout at this pointer; it is
            // freed only here, once, and `raw` is not used afterwards.
            unsafe { alloc::alloc::dealloc(self.raw.base.as_ptr(), layout) };
        }
    }
}

#[cfg(any(test, feature = "alloc"))]
impl core::ops::Deref for HeapRegion {
    type Target = RawRegion;

    fn deref(&self) -> &RawRegion {
        &self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_bytes_and_words() {
        let region = HeapRegion::new(64);
        region.write(3, b"hello").unwrap();
        let mut buf = [0u8; 5];
        region.read(3, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        region
            .store_u64(8, 0x1122_3344_5566_7788, Ordering::Release)
            .unwrap();
        assert_eq!(region.load_u32(8, Ordering::Acquire).unwrap(), 0x5566_7788);
        assert_eq!(
            region.compare_exchange_u32(8, 0x5566_7788, 7).unwrap(),
            Ok(0x5566_7788)
        );
        assert_eq!(region.compare_exchange_u32(8, 0, 9).unwrap(), Err(7));
        assert_eq!(region.compare_exchange_u64(16, 0, 5).unwrap(), Ok(0));
        assert_eq!(region.load_u64(16, Ordering::Relaxed).unwrap(), 5);
        region.store_u16(24, 0xBEEF, Ordering::Release).unwrap();
        region.store_u8(27, 0x42, Ordering::Release).unwrap();
        assert_eq!(region.load_u32(24, Ordering::Acquire).unwrap(), 0x4200_BEEF);
        assert_eq!(region.load_u8(24, Ordering::Acquire).unwrap(), 0xEF);
        assert_eq!(
            region.load_u16(25, Ordering::Relaxed),
            Err(RegionError::Misaligned {
                offset: 25,
                align: 2
            })
        );
        assert!(region.load_u8(64, Ordering::Relaxed).is_err());
    }

    #[test]
    fn rejects_out_of_bounds_and_misaligned_accesses() {
        let region = HeapRegion::new(16);
        let mut buf = [0u8; 4];
        assert_eq!(
            region.read(13, &mut buf),
            Err(RegionError::OutOfBounds {
                offset: 13,
                len: 4,
                region_len: 16
            })
        );
        assert!(region.write(usize::MAX, b"x").is_err());
        assert!(region.fill(0, 17, 0).is_err());
        assert_eq!(
            region.load_u32(2, Ordering::Relaxed),
            Err(RegionError::Misaligned {
                offset: 2,
                align: 4
            })
        );
        assert!(region.load_u64(12, Ordering::Relaxed).is_err());
        assert!(region.store_u64(16, 1, Ordering::Relaxed).is_err());
    }

    #[test]
    fn word_copies_touch_exactly_their_bytes_at_every_alignment() {
        let region = HeapRegion::new(64);
        let pattern: alloc::vec::Vec<u8> = (1..=40).collect();
        for offset in 0..16 {
            for len in 0..=40 {
                region.fill(0, 64, 0xAA).unwrap();
                region.write(offset, &pattern[..len]).unwrap();
                let mut all = [0u8; 64];
                region.read(0, &mut all).unwrap();
                assert!(all[..offset].iter().all(|&b| b == 0xAA));
                assert_eq!(&all[offset..offset + len], &pattern[..len]);
                assert!(all[offset + len..].iter().all(|&b| b == 0xAA));
                let mut back = [0u8; 40];
                region.read(offset, &mut back[..len]).unwrap();
                assert_eq!(&back[..len], &pattern[..len]);
                region.fill(offset, len, 0x55).unwrap();
                region.read(0, &mut all).unwrap();
                assert!(all[offset..offset + len].iter().all(|&b| b == 0x55));
                assert!(all[offset + len..].iter().all(|&b| b == 0xAA));
            }
        }
    }

    /// Every copy strategy (words, wide blocks with overlapping ends, string moves)
    /// at its edges, and every length where the wide copy's pieces change.
    #[test]
    #[cfg_attr(miri, ignore)] // Miri runs the word paths only, which the test above covers
    fn long_copies_touch_exactly_their_bytes_at_every_strategy() {
        let region = HeapRegion::new(3 * 4096 + 64);
        let pattern: alloc::vec::Vec<u8> =
            (0..2 * 4096 + 200).map(|i| (i % 251) as u8 + 1).collect();
        let lens = (120..=420).chain([1000, 4095, 4096, 4097, 2 * 4096 + 100]);
        for len in lens {
            for offset in [0, 1, 7, 8, 15, 24, 31, 33] {
                region.fill(0, region.len(), 0xAA).unwrap();
                region.write(offset, &pattern[..len]).unwrap();
                let mut back = alloc::vec![0u8; len + 2];
                region.read(offset, &mut back[..len]).unwrap();
                assert_eq!(&back[..len], &pattern[..len], "len {len} at {offset}");
                let mut edges = [0u8; 1];
                if offset > 0 {
                    region.read(offset - 1, &mut edges).unwrap();
                    assert_eq!(edges[0], 0xAA, "byte before len {len} at {offset}");
                }
                region.read(offset + len, &mut edges).unwrap();
                assert_eq!(edges[0], 0xAA, "byte after len {len} at {offset}");
                region.fill(offset, len, 0x55).unwrap();
                region.read(offset, &mut back[..len + 1]).unwrap();
                assert!(back[..len].iter().all(|&b| b == 0x55));
                assert_eq!(back[len], 0xAA);
            }
        }
    }

    #[test]
    fn word_records_write_their_padding_and_nothing_past_it() {
        let region = HeapRegion::new(256);
        let pattern: alloc::vec::Vec<u8> = (1..=200).collect();
        for offset in [0, 8, 16, 40] {
            for len in (0..=20).chain([127, 128, 129, 135, 136, 170, 200]) {
                region.fill(0, 256, 0xAA).unwrap();
                region
                    .write_record(offset, 0x1122_3344_5566_7788, &pattern[..len])
                    .unwrap();
                let mut all = [0u8; 256];
                region.read(0, &mut all).unwrap();
                let end = offset + 8 + len.next_multiple_of(8);
                assert!(all[..offset].iter().all(|&b| b == 0xAA));
                assert_eq!(
                    all[offset..offset + 8],
                    0x1122_3344_5566_7788u64.to_le_bytes()
                );
                assert_eq!(&all[offset + 8..offset + 8 + len], &pattern[..len]);
                assert!(
                    all[offset + 8 + len..end].iter().all(|&b| b == 0),
                    "padding"
                );
                assert!(
                    all[end..].iter().all(|&b| b == 0xAA),
                    "len {len} at {offset}"
                );
                let mut back = [0u8; 200];
                region.read_words(offset + 8, &mut back[..len]).unwrap();
                assert_eq!(&back[..len], &pattern[..len]);
                region.write_words(offset, &pattern[..len]).unwrap();
                region.read(0, &mut all).unwrap();
                assert_eq!(&all[offset..offset + len], &pattern[..len]);
                assert!(
                    all[offset + len..offset + len.next_multiple_of(8)]
                        .iter()
                        .all(|&b| b == 0)
                );
            }
        }
    }

    #[test]
    fn word_accessors_refuse_misaligned_and_outside_accesses() {
        let region = HeapRegion::new(64);
        let mut buf = [0u8; 9];
        assert_eq!(
            region.write_record(4, 0, b"x"),
            Err(RegionError::Misaligned {
                offset: 4,
                align: 8
            })
        );
        assert!(region.write_words(12, b"x").is_err());
        assert!(region.read_words(1, &mut buf).is_err());
        // The padded length must fit, not only the bytes asked for.
        assert!(region.read_words(56, &mut buf).is_err());
        assert!(region.read_words(48, &mut buf).is_ok());
        assert!(region.write_words(56, &buf).is_err());
        assert!(region.write_record(48, 0, &buf).is_err());
        assert!(region.write_record(40, 0, &buf).is_ok());
        assert!(region.write_words(usize::MAX - 7, b"x").is_err());
    }

    #[test]
    fn bit_operations_and_narrow_exchanges_return_the_previous_word() {
        let region = HeapRegion::new(16);
        region.store_u32(0, 0b1010, Ordering::Relaxed).unwrap();
        assert_eq!(
            region.fetch_or_u32(0, 0b0101, Ordering::AcqRel).unwrap(),
            0b1010
        );
        assert_eq!(
            region.fetch_and_u32(0, 0b0110, Ordering::AcqRel).unwrap(),
            0b1111
        );
        assert_eq!(region.load_u32(0, Ordering::Relaxed).unwrap(), 0b0110);
        assert_eq!(
            region.fetch_or_u64(8, 1 << 63, Ordering::AcqRel).unwrap(),
            0
        );
        assert_eq!(
            region.fetch_and_u64(8, 1, Ordering::AcqRel).unwrap(),
            1 << 63
        );
        assert_eq!(region.compare_exchange_u8(1, 0, 7).unwrap(), Ok(0));
        assert_eq!(region.compare_exchange_u16(2, 1, 7).unwrap(), Err(0));
        assert!(region.fetch_or_u32(2, 1, Ordering::Relaxed).is_err());
        assert!(region.compare_exchange_u16(1, 0, 1).is_err());
        region.fence(Ordering::SeqCst);
    }

    #[test]
    fn reads_c_strings_bounded_by_region_and_buffer() {
        let region = HeapRegion::new(8);
        region.write(0, b"hi\0rest!").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(region.read_c_str(0, &mut buf).unwrap(), 2);
        assert_eq!(region.read_c_str(3, &mut buf).unwrap(), 5);
        assert_eq!(region.read_c_str(8, &mut buf).unwrap(), 0);
        assert!(region.read_c_str(9, &mut buf).is_err());
        let mut small = [0u8; 2];
        assert_eq!(region.read_c_str(3, &mut small).unwrap(), 2);
    }

    proptest! {
        #[test]
        #[cfg_attr(miri, ignore)] // proptest needs file-system access Miri isolates
        fn any_access_is_checked_never_panics(offset in 0usize..80, len in 0usize..80, word in 0usize..80) {
            let region = HeapRegion::new(64);
            let mut buf = alloc::vec![0u8; len];
            let fits = offset + len <= 64;
            prop_assert_eq!(region.read(offset, &mut buf).is_ok(), fits);
            prop_assert_eq!(region.write(offset, &buf).is_ok(), fits);
            let word_ok = word + 4 <= 64 && word % 4 == 0;
            prop_assert_eq!(region.load_u32(word, Ordering::Relaxed).is_ok(), word_ok);
        }
    }
}
