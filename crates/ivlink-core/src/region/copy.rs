//! Word-wise copies between private memory and the region.
//!
//! Not `memcpy`: peers write the region at any time, and a plain (non-atomic) access
//! that races with a write is undefined behaviour in Rust's memory model; the
//! compiler may also split, merge or repeat plain accesses. Each byte of the region is
//! instead read or written exactly once, by a relaxed atomic access of a whole
//! aligned machine word (bytes at the unaligned ends), like `vm-memory`'s
//! `copy_slice`. A racing write then shows up as some mix of old and new words,
//! which callers validate like any other hostile input. On x86-64 and aarch64 a
//! relaxed atomic word access is a plain `mov`/`ldr`/`str`, so the copy costs only
//! the wider SIMD moves `memcpy` would use.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering::Relaxed};

const WORD: usize = core::mem::size_of::<usize>();

/// Splits a copy of `len` bytes at `addr` into a byte head up to word alignment, a
/// run of whole words, and a byte tail.
fn split(addr: *const u8, len: usize) -> (usize, usize) {
    let head = addr.align_offset(WORD).min(len);
    let words = (len - head) / WORD;
    (head, words)
}

/// Copies `dst.len()` bytes of the region at `src` into `dst`.
///
/// # Safety
/// `src..src + dst.len()` must be valid region memory (see `RawRegion::new`) that
/// is only ever accessed atomically in this process; it cannot overlap `dst`.
pub(super) unsafe fn from_region(src: *const u8, dst: &mut [u8]) {
    let (head, words) = split(src, dst.len());
    let body = head + words * WORD;
    let byte = |i: usize| {
        // SAFETY: `i < dst.len()`, so `src + i` is in the region (caller's contract);
        // bytes need no alignment.
        unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Relaxed)
    };
    for (i, out) in dst[..head].iter_mut().enumerate() {
        *out = byte(i);
    }
    for (w, out) in dst[head..body].chunks_exact_mut(WORD).enumerate() {
        // SAFETY: `src + head` is word-aligned (`split`) and the word lies inside
        // `src..src + dst.len()`.
        let word = unsafe { AtomicUsize::from_ptr(src.add(head + w * WORD).cast_mut().cast()) };
        out.copy_from_slice(&word.load(Relaxed).to_ne_bytes());
    }
    for (i, out) in dst[body..].iter_mut().enumerate() {
        *out = byte(body + i);
    }
}

/// Copies `data` into the region at `dst`.
///
/// # Safety
/// As [`from_region`], for `dst..dst + data.len()`.
pub(super) unsafe fn to_region(data: &[u8], dst: *mut u8) {
    let (head, words) = split(dst, data.len());
    let body = head + words * WORD;
    let byte = |i: usize, value: u8| {
        // SAFETY: `i < data.len()`, so `dst + i` is in the region (caller's contract).
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(value, Relaxed);
    };
    for (i, &b) in data[..head].iter().enumerate() {
        byte(i, b);
    }
    for (w, chunk) in data[head..body].chunks_exact(WORD).enumerate() {
        let mut bytes = [0u8; WORD];
        bytes.copy_from_slice(chunk);
        // SAFETY: word-aligned (`split`) and inside `dst..dst + data.len()`.
        let word = unsafe { AtomicUsize::from_ptr(dst.add(head + w * WORD).cast()) };
        word.store(usize::from_ne_bytes(bytes), Relaxed);
    }
    for (i, &b) in data[body..].iter().enumerate() {
        byte(body + i, b);
    }
}

/// Sets `len` bytes of the region at `dst` to `value`.
///
/// # Safety
/// As [`from_region`], for `dst..dst + len`.
pub(super) unsafe fn fill_region(dst: *mut u8, len: usize, value: u8) {
    let (head, words) = split(dst, len);
    let body = head + words * WORD;
    let byte = |i: usize| {
        // SAFETY: `i < len`, so `dst + i` is in the region (caller's contract).
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(value, Relaxed);
    };
    let pattern = usize::from_ne_bytes([value; WORD]);
    (0..head).for_each(byte);
    for w in 0..words {
        // SAFETY: word-aligned (`split`) and inside `dst..dst + len`.
        let word = unsafe { AtomicUsize::from_ptr(dst.add(head + w * WORD).cast()) };
        word.store(pattern, Relaxed);
    }
    (body..len).for_each(byte);
}
