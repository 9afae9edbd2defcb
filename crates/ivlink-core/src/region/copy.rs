//! Volatile word copies between private memory and the region.
//!
//! Not `memcpy`: peers write the region at any time, and the compiler may split,
//! merge, repeat or elide plain accesses to memory it believes it owns. Here the
//! region is only touched by accesses the compiler must emit as written: volatile
//! accesses of aligned words, or moves in inline assembly. A racing write by a
//! peer then shows up as some mix of old and new bytes, which callers validate
//! like any other hostile input.
//!
//! Short copies are words: bytes up to word alignment, words, bytes at the end,
//! like `vm-memory`'s `copy_slice`. On x86-64 CPUs with AVX2 (found once at run
//! time) copies from 128 bytes to 4 KiB are unaligned 32-byte moves whose first
//! and last overlap their neighbours, the way `memcpy` copies these sizes (see
//! `avx2::moves`); an overlap moves some bytes twice, which a racing peer cannot
//! tell from a slower copy. Copies of 4 KiB and more are one `rep movsb`, which
//! moves whole cache lines the way `memcpy` does for large sizes. Elsewhere long
//! copies are aligned 16-byte (SSE2) or word chunks.

use core::ptr;

const WORD: usize = core::mem::size_of::<usize>();

#[cfg(target_arch = "x86_64")]
type Chunk = core::arch::x86_64::__m128i;
#[cfg(not(target_arch = "x86_64"))]
type Chunk = usize;

/// Copies shorter than this are done in words only.
const SHORT: usize = 128;
/// Copies this long or longer are one string move on x86-64 (see [`rep_movsb`]):
/// below it the move's start-up costs more than chunks do.
#[cfg(all(target_arch = "x86_64", not(miri)))]
const STRING_MOVE: usize = 4096;

/// Calls `byte`, `word` and `chunk` with the offsets (from `addr`) of every piece
/// of an access of `len` bytes, each piece aligned to its own size.
#[inline(always)]
fn pieces<C>(
    addr: usize,
    len: usize,
    mut byte: impl FnMut(usize),
    mut word: impl FnMut(usize),
    mut chunk: impl FnMut(usize),
) {
    let mut at = 0;
    while at < len && (addr + at) % WORD != 0 {
        byte(at);
        at += 1;
    }
    // Short copies stay in words: aligning to a chunk would cost more than it saves.
    if len - at >= SHORT {
        let size = core::mem::size_of::<C>();
        while (addr + at) % size != 0 {
            word(at);
            at += WORD;
        }
        let chunks = (len - at) / size;
        for i in 0..chunks {
            chunk(at + i * size);
        }
        at += chunks * size;
    }
    // Counted loops (not `while len - at >= ..`): the compiler unrolls them.
    let words = (len - at) / WORD;
    for i in 0..words {
        word(at + i * WORD);
    }
    at += words * WORD;
    while at < len {
        byte(at);
        at += 1;
    }
}

/// Copies `dst.len()` bytes of the region at `src` into `dst`.
///
/// # Safety
/// `src..src + dst.len()` must be valid for reads (region memory, see
/// `RawRegion::new`) and must not overlap `dst`.
#[inline(always)]
pub(super) unsafe fn from_region(src: *const u8, dst: &mut [u8]) {
    // Short copies, the common case for small messages, stay inline.
    if dst.len() < SHORT {
        // SAFETY: the caller's contract.
        return unsafe { from_region_in::<usize>(src, dst) };
    }
    // SAFETY: the caller's contract.
    unsafe { from_region_long(src, dst) }
}

/// [`from_region`] of [`SHORT`] bytes or more.
///
/// # Safety
/// As [`from_region`].
#[inline(never)]
unsafe fn from_region_long(src: *const u8, dst: &mut [u8]) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        if dst.len() >= STRING_MOVE {
            // SAFETY: the caller's contract.
            return unsafe { rep_movsb(src, dst.as_mut_ptr(), dst.len()) };
        }
        // Short copies stay inline, in words: a call into the AVX2 code costs more.
        if dst.len() >= SHORT && avx2::available() {
            // SAFETY: the caller's contract; the CPU has AVX2 (checked).
            return unsafe { avx2::from_region(src, dst) };
        }
    }
    // SAFETY: the caller's contract.
    unsafe { from_region_in::<Chunk>(src, dst) }
}

/// [`from_region`] in chunks of `C`.
///
/// # Safety
/// As [`from_region`].
#[inline(always)]
unsafe fn from_region_in<C>(src: *const u8, dst: &mut [u8]) {
    let out = dst.as_mut_ptr();
    // In each closure: `pieces` hands out offsets of pieces inside `0..dst.len()`,
    // aligned to their size at `src`; `dst` is private memory, written unaligned.
    let byte = |at: usize| {
        // SAFETY: see above.
        unsafe { out.add(at).write(ptr::read_volatile(src.add(at))) }
    };
    let word = |at: usize| {
        // SAFETY: see above.
        unsafe {
            let v = ptr::read_volatile(src.add(at).cast::<usize>());
            out.add(at).cast::<usize>().write_unaligned(v);
        }
    };
    let chunk = |at: usize| {
        // SAFETY: see above.
        unsafe {
            let v = ptr::read_volatile(src.add(at).cast::<C>());
            out.add(at).cast::<C>().write_unaligned(v);
        }
    };
    pieces::<C>(src as usize, dst.len(), byte, word, chunk);
}

/// Copies `data` into the region at `dst`.
///
/// # Safety
/// `dst..dst + data.len()` must be valid for writes (region memory) and must not
/// overlap `data`.
#[inline(always)]
pub(super) unsafe fn to_region(data: &[u8], dst: *mut u8) {
    // Short copies, the common case for small messages, stay inline.
    if data.len() < SHORT {
        // SAFETY: the caller's contract.
        return unsafe { to_region_in::<usize>(data, dst) };
    }
    // SAFETY: the caller's contract.
    unsafe { to_region_long(data, dst) }
}

/// [`to_region`] of [`SHORT`] bytes or more.
///
/// # Safety
/// As [`to_region`].
#[inline(never)]
unsafe fn to_region_long(data: &[u8], dst: *mut u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        if data.len() >= STRING_MOVE {
            // SAFETY: the caller's contract.
            return unsafe { rep_movsb(data.as_ptr(), dst, data.len()) };
        }
        // Short copies stay inline, in words: a call into the AVX2 code costs more.
        if data.len() >= SHORT && avx2::available() {
            // SAFETY: the caller's contract; the CPU has AVX2 (checked).
            return unsafe { avx2::to_region(data, dst) };
        }
    }
    // SAFETY: the caller's contract.
    unsafe { to_region_in::<Chunk>(data, dst) }
}

/// [`to_region`] in chunks of `C`.
///
/// # Safety
/// As [`to_region`].
#[inline(always)]
unsafe fn to_region_in<C>(data: &[u8], dst: *mut u8) {
    let src = data.as_ptr();
    // In each closure: as in `from_region`, with the roles swapped.
    let byte = |at: usize| {
        // SAFETY: see above.
        unsafe { ptr::write_volatile(dst.add(at), src.add(at).read()) }
    };
    let word = |at: usize| {
        // SAFETY: see above.
        unsafe {
            let v = src.add(at).cast::<usize>().read_unaligned();
            ptr::write_volatile(dst.add(at).cast::<usize>(), v);
        }
    };
    let chunk = |at: usize| {
        // SAFETY: see above.
        unsafe {
            let v = src.add(at).cast::<C>().read_unaligned();
            ptr::write_volatile(dst.add(at).cast::<C>(), v);
        }
    };
    pieces::<C>(dst as usize, data.len(), byte, word, chunk);
}

/// Calls `word` with the offset of each whole word of `len` bytes (a multiple
/// of 8) at an 8-byte aligned address: no byte pieces and no alignment loop, the
/// few branches of a small message. (16-byte moves measured slower here, aligned
/// or unaligned: the alignment of a payload after an 8-byte header alternates
/// between records, and unaligned ones put a move across a cache line.)
#[inline(always)]
fn short_words(len: usize, mut word: impl FnMut(usize)) {
    for i in 0..len / 8 {
        word(i * 8);
    }
}

/// The last `data.len() % 8` bytes of `data` (at least one) as a little-endian
/// word padded with zeros, the way they lie in memory.
#[inline(always)]
fn tail_word(data: &[u8]) -> u64 {
    let len = data.len();
    let rem = len % 8;
    if len >= 8 {
        // The last eight bytes, shifted so that the wanted ones come first.
        let mut last = [0u8; 8];
        last.copy_from_slice(&data[len - 8..]);
        u64::from_le_bytes(last) >> ((8 - rem) * 8)
    } else {
        data.iter()
            .enumerate()
            .fold(0, |word, (i, &b)| word | u64::from(b) << (8 * i))
    }
}

/// Writes the little-endian `header` word at `dst`, then `payload`, then zeros
/// up to the next word: one record of a word-aligned ring.
///
/// # Safety
/// `dst` must be 8-byte aligned, `dst..dst + 8 + payload.len().next_multiple_of(8)`
/// valid for writes (region memory) and not overlapping `payload`.
#[inline(always)]
pub(super) unsafe fn record_to_region(header: u64, payload: &[u8], dst: *mut u8) {
    // SAFETY: the caller's contract: an aligned word, then the payload's words.
    unsafe {
        ptr::write_volatile(dst.cast::<u64>(), header.to_le());
        words_to_region(payload, dst.add(8));
    }
}

/// Copies `data` to `dst` in whole words, the last one padded with zeros.
///
/// # Safety
/// `dst` must be 8-byte aligned, `dst..dst + data.len().next_multiple_of(8)` valid
/// for writes (region memory) and not overlapping `data`.
#[inline(always)]
pub(super) unsafe fn words_to_region(data: &[u8], dst: *mut u8) {
    let full = data.len() & !7;
    let src = data.as_ptr();
    if full >= SHORT {
        // SAFETY: the caller's contract, for the whole words.
        unsafe { to_region_long(&data[..full], dst) };
    } else {
        // In each closure: `short_words` hands out offsets of words inside
        // `0..full`, aligned at `dst`; `data` is read unaligned.
        let word = |at: usize| {
            // SAFETY: see above.
            unsafe {
                let v = src.add(at).cast::<u64>().read_unaligned();
                ptr::write_volatile(dst.add(at).cast::<u64>(), v);
            }
        };
        short_words(full, word);
    }
    if full != data.len() {
        // SAFETY: the last, padded word is inside the destination (contract).
        unsafe { ptr::write_volatile(dst.add(full).cast::<u64>(), tail_word(data).to_le()) };
    }
}

/// Copies `dst.len()` bytes from `src` in whole words; the bytes of the last word
/// past `dst.len()` are read and dropped.
///
/// # Safety
/// `src` must be 8-byte aligned, `src..src + dst.len().next_multiple_of(8)` valid
/// for reads (region memory) and not overlapping `dst`.
#[inline(always)]
pub(super) unsafe fn words_from_region(src: *const u8, dst: &mut [u8]) {
    let full = dst.len() & !7;
    if full >= SHORT {
        // SAFETY: the caller's contract, for the whole words.
        unsafe { from_region_long(src, &mut dst[..full]) };
    } else {
        let out = dst.as_mut_ptr();
        // In each closure: as in `words_to_region`, with the roles swapped.
        let word = |at: usize| {
            // SAFETY: see above.
            unsafe {
                let v = ptr::read_volatile(src.add(at).cast::<u64>());
                out.add(at).cast::<u64>().write_unaligned(v);
            }
        };
        short_words(full, word);
    }
    if full != dst.len() {
        // SAFETY: the last, padded word is inside the source (contract).
        let word = unsafe { ptr::read_volatile(src.add(full).cast::<u64>()) };
        let bytes = word.to_ne_bytes();
        for (to, from) in dst[full..].iter_mut().zip(bytes) {
            *to = from;
        }
    }
}

/// Sets `len` bytes of the region at `dst` to `value`.
///
/// # Safety
/// `dst..dst + len` must be valid for writes (region memory).
pub(super) unsafe fn fill_region(dst: *mut u8, len: usize, value: u8) {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if avx2::available() {
        // SAFETY: the caller's contract; the CPU has AVX2 (checked).
        return unsafe { avx2::fill_region(dst, len, value) };
    }
    // SAFETY: the caller's contract.
    unsafe { fill_region_in::<Chunk>(dst, len, value) }
}

/// [`fill_region`] in chunks of `C`.
///
/// # Safety
/// As [`fill_region`].
#[inline(always)]
unsafe fn fill_region_in<C>(dst: *mut u8, len: usize, value: u8) {
    let pattern = [value; 32];
    const { assert!(core::mem::size_of::<C>() <= 32) };
    let src = pattern.as_ptr();
    // In each closure: offsets from `pieces` lie inside `0..len`, aligned at `dst`;
    // `pattern` holds a whole chunk.
    let byte = |at: usize| {
        // SAFETY: see above.
        unsafe { ptr::write_volatile(dst.add(at), value) }
    };
    let word = |at: usize| {
        // SAFETY: see above.
        unsafe {
            ptr::write_volatile(
                dst.add(at).cast::<usize>(),
                src.cast::<usize>().read_unaligned(),
            )
        }
    };
    let chunk = |at: usize| {
        // SAFETY: see above.
        unsafe { ptr::write_volatile(dst.add(at).cast::<C>(), src.cast::<C>().read_unaligned()) }
    };
    pieces::<C>(dst as usize, len, byte, word, chunk);
}

/// The 32-byte copies, compiled for AVX2 and used only where the CPU has it.
#[cfg(all(target_arch = "x86_64", not(miri)))]
mod avx2 {
    use core::arch::asm;
    use core::arch::x86_64::{
        __cpuid, __cpuid_count, __m256i, _mm256_loadu_si256, _mm256_storeu_si256, _xgetbv,
    };
    use core::sync::atomic::{AtomicU8, Ordering};

    const UNKNOWN: u8 = 0;
    const ABSENT: u8 = 1;
    const PRESENT: u8 = 2;
    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// Whether the CPU has AVX2 and the OS saves its registers (asked once).
    #[inline]
    pub(super) fn available() -> bool {
        match STATE.load(Ordering::Relaxed) {
            PRESENT => true,
            ABSENT => false,
            _ => {
                let present = detect();
                STATE.store(if present { PRESENT } else { ABSENT }, Ordering::Relaxed);
                present
            }
        }
    }

    fn detect() -> bool {
        const OSXSAVE: u32 = 1 << 27;
        const AVX: u32 = 1 << 28;
        const AVX2: u32 = 1 << 5;
        const XMM_YMM_STATE: u64 = 0b110;
        let leaf1 = __cpuid(1);
        if leaf1.ecx & (OSXSAVE | AVX) != OSXSAVE | AVX || __cpuid(0).eax < 7 {
            return false;
        }
        // SAFETY: OSXSAVE (checked) means the OS enabled XGETBV.
        let xcr0 = unsafe { xgetbv0() };
        xcr0 & XMM_YMM_STATE == XMM_YMM_STATE && __cpuid_count(7, 0).ebx & AVX2 != 0
    }

    /// # Safety
    /// The OS must have enabled XGETBV (CPUID's OSXSAVE bit).
    #[target_feature(enable = "xsave")]
    unsafe fn xgetbv0() -> u64 {
        // SAFETY: the caller's contract.
        unsafe { _xgetbv(0) }
    }

    /// Bytes per unrolled step: four 32-byte moves.
    const BLOCK: usize = 128;
    const _: () = assert!(super::SHORT >= BLOCK, "every long copy holds a block");

    /// Calls `move32` and `block` with the offsets of the 32-byte move and the
    /// 128-byte blocks that cover `len` bytes (at least [`BLOCK`]) at `region` (the
    /// region side's address). Up to two blocks: the first and one that ends at
    /// `len`. Longer: one unaligned move at 0, aligned blocks from the next 32-byte
    /// boundary on (no load or store splits a cache line), and an unaligned last
    /// block that ends at `len`. No alignment pieces and no loop of
    /// leftovers: about the instructions `memcpy` spends at these sizes. The
    /// overlaps move some bytes twice: a write stores the same value again, and a
    /// read keeps the second value it saw, as good as any a racing peer could leave.
    #[inline(always)]
    fn moves(
        region: usize,
        len: usize,
        mut move32: impl FnMut(usize),
        mut block: impl FnMut(usize),
    ) {
        if len <= 2 * BLOCK {
            // Two blocks, the second ending at `len`: fewer moves and no
            // alignment arithmetic, which costs more than a split line here.
            block(0);
            block(len - BLOCK);
            return;
        }
        move32(0);
        let start = 32 - region % 32;
        let blocks = (len - start) / BLOCK;
        for i in 0..blocks {
            block(start + i * BLOCK);
        }
        if start + blocks * BLOCK < len {
            block(len - BLOCK);
        }
    }

    /// Copies `dst.len()` (at least [`BLOCK`]) bytes of the region at `src` into
    /// `dst` (see [`moves`]).
    ///
    /// # Safety
    /// As `super::from_region`, `dst.len() >= BLOCK`, and the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn from_region(src: *const u8, dst: &mut [u8]) {
        let out = dst.as_mut_ptr().cast::<__m256i>();
        // In each closure: `moves` hands out moves inside `0..dst.len()`, which the
        // caller's contract makes valid on both sides; `dst` is private memory.
        let block = |at: usize| {
            // SAFETY: see above.
            unsafe {
                let [a, b, c, d] = load4(src.add(at));
                _mm256_storeu_si256(out.byte_add(at), a);
                _mm256_storeu_si256(out.byte_add(at + 32), b);
                _mm256_storeu_si256(out.byte_add(at + 64), c);
                _mm256_storeu_si256(out.byte_add(at + 96), d);
            }
        };
        // SAFETY: see above.
        let move32 =
            |at: usize| unsafe { _mm256_storeu_si256(out.byte_add(at), load(src.add(at))) };
        moves(src as usize, dst.len(), move32, block);
    }

    /// Copies `data` (at least [`BLOCK`] bytes) into the region at `dst` (see
    /// [`moves`]).
    ///
    /// # Safety
    /// As `super::to_region`, `data.len() >= BLOCK`, and the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn to_region(data: &[u8], dst: *mut u8) {
        let src = data.as_ptr().cast::<__m256i>();
        // In each closure: as in `from_region`, with the roles swapped.
        let block = |at: usize| {
            // SAFETY: see above.
            unsafe {
                let v = [0, 32, 64, 96].map(|i| _mm256_loadu_si256(src.byte_add(at + i)));
                store4(dst.add(at), v);
            }
        };
        // SAFETY: see above.
        let move32 =
            |at: usize| unsafe { store(dst.add(at), _mm256_loadu_si256(src.byte_add(at))) };
        moves(dst as usize, data.len(), move32, block);
    }

    /// Four 32-byte loads from the region at `src`, any alignment, in one
    /// assembly block (one address register for all four).
    ///
    /// # Safety
    /// `src..src + 128` valid for reads; the CPU has AVX.
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn load4(src: *const u8) -> [__m256i; 4] {
        let (a, b, c, d): (__m256i, __m256i, __m256i, __m256i);
        // SAFETY: the caller's contract.
        unsafe {
            asm!(
                "vmovdqu {a}, ymmword ptr [{src}]",
                "vmovdqu {b}, ymmword ptr [{src} + 32]",
                "vmovdqu {c}, ymmword ptr [{src} + 64]",
                "vmovdqu {d}, ymmword ptr [{src} + 96]",
                src = in(reg) src,
                a = out(ymm_reg) a,
                b = out(ymm_reg) b,
                c = out(ymm_reg) c,
                d = out(ymm_reg) d,
                options(nostack, preserves_flags, readonly)
            );
        }
        [a, b, c, d]
    }

    /// Four 32-byte stores to the region at `dst`, any alignment (see [`load4`]).
    ///
    /// # Safety
    /// `dst..dst + 128` valid for writes; the CPU has AVX.
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn store4(dst: *mut u8, [a, b, c, d]: [__m256i; 4]) {
        // SAFETY: the caller's contract.
        unsafe {
            asm!(
                "vmovdqu ymmword ptr [{dst}], {a}",
                "vmovdqu ymmword ptr [{dst} + 32], {b}",
                "vmovdqu ymmword ptr [{dst} + 64], {c}",
                "vmovdqu ymmword ptr [{dst} + 96], {d}",
                dst = in(reg) dst,
                a = in(ymm_reg) a,
                b = in(ymm_reg) b,
                c = in(ymm_reg) c,
                d = in(ymm_reg) d,
                options(nostack, preserves_flags)
            );
        }
    }

    /// One 32-byte load from the region at `src`, any alignment. Inline assembly
    /// (not `read_volatile`, which needs alignment): the compiler can neither
    /// split, repeat nor elide it.
    ///
    /// # Safety
    /// `src..src + 32` valid for reads; the CPU has AVX.
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn load(src: *const u8) -> __m256i {
        let value: __m256i;
        // SAFETY: the caller's contract.
        unsafe {
            asm!(
                "vmovdqu {value}, ymmword ptr [{src}]",
                src = in(reg) src,
                value = out(ymm_reg) value,
                options(nostack, preserves_flags, readonly)
            );
        }
        value
    }

    /// One 32-byte store to the region at `dst`, any alignment (see [`load`]).
    ///
    /// # Safety
    /// `dst..dst + 32` valid for writes; the CPU has AVX.
    #[inline]
    #[target_feature(enable = "avx")]
    unsafe fn store(dst: *mut u8, value: __m256i) {
        // SAFETY: the caller's contract.
        unsafe {
            asm!(
                "vmovdqu ymmword ptr [{dst}], {value}",
                dst = in(reg) dst,
                value = in(ymm_reg) value,
                options(nostack, preserves_flags)
            );
        }
    }

    /// # Safety
    /// As `super::fill_region`, and the CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn fill_region(dst: *mut u8, len: usize, value: u8) {
        // SAFETY: the caller's contract.
        unsafe { super::fill_region_in::<__m256i>(dst, len, value) }
    }
}

/// Copies `len` bytes from `src` to `dst` with one `rep movsb`: an instruction
/// the compiler cannot split, repeat or elide, and which CPUs with fast string
/// moves (ERMS/FSRM) run at `memcpy`'s speed, full cache lines at a time.
///
/// # Safety
/// `src..src + len` valid for reads, `dst..dst + len` valid for writes, not
/// overlapping.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(always)]
unsafe fn rep_movsb(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: the caller's contract; the direction flag is clear at every call
    // boundary (System V ABI), so the copy runs upwards.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rcx") len => _,
            inout("rsi") src => _,
            inout("rdi") dst => _,
            options(nostack, preserves_flags)
        );
    }
}
