//! Volatile word copies between private memory and the region.
//!
//! Not `memcpy`: peers write the region at any time, and the compiler may split,
//! merge, repeat or elide plain accesses to memory it believes it owns. Here each
//! byte of the region is read or written exactly once, by a volatile access of an
//! aligned chunk, like `vm-memory`'s `copy_slice`: bytes up to word alignment, words
//! up to chunk alignment, whole chunks, then words and bytes at the end. A racing
//! write by a peer then shows up as some mix of old and new chunks, which callers
//! validate like any other hostile input.
//!
//! A chunk is 16 bytes (an SSE2 register) on x86-64, where that copies about 1.4
//! times as fast as 8-byte words; elsewhere it is a machine word.

use core::ptr;

const WORD: usize = core::mem::size_of::<usize>();

#[cfg(target_arch = "x86_64")]
type Chunk = core::arch::x86_64::__m128i;
#[cfg(not(target_arch = "x86_64"))]
type Chunk = usize;

const CHUNK: usize = core::mem::size_of::<Chunk>();
/// Copies shorter than this are done in words only.
const SHORT: usize = 8 * CHUNK;

/// Calls `byte`, `word` and `chunk` with the offsets (from `addr`) of every piece
/// of an access of `len` bytes, each piece aligned to its own size.
#[inline(always)]
fn pieces(
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
        while (addr + at) % CHUNK != 0 {
            word(at);
            at += WORD;
        }
        let chunks = (len - at) / CHUNK;
        for i in 0..chunks {
            chunk(at + i * CHUNK);
        }
        at += chunks * CHUNK;
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
pub(super) unsafe fn from_region(src: *const u8, dst: &mut [u8]) {
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
            let v = ptr::read_volatile(src.add(at).cast::<Chunk>());
            out.add(at).cast::<Chunk>().write_unaligned(v);
        }
    };
    pieces(src as usize, dst.len(), byte, word, chunk);
}

/// Copies `data` into the region at `dst`.
///
/// # Safety
/// `dst..dst + data.len()` must be valid for writes (region memory) and must not
/// overlap `data`.
pub(super) unsafe fn to_region(data: &[u8], dst: *mut u8) {
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
            let v = src.add(at).cast::<Chunk>().read_unaligned();
            ptr::write_volatile(dst.add(at).cast::<Chunk>(), v);
        }
    };
    pieces(dst as usize, data.len(), byte, word, chunk);
}

/// Sets `len` bytes of the region at `dst` to `value`.
///
/// # Safety
/// `dst..dst + len` must be valid for writes (region memory).
pub(super) unsafe fn fill_region(dst: *mut u8, len: usize, value: u8) {
    let pattern = [value; CHUNK];
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
        unsafe {
            ptr::write_volatile(
                dst.add(at).cast::<Chunk>(),
                src.cast::<Chunk>().read_unaligned(),
            )
        }
    };
    pieces(dst as usize, len, byte, word, chunk);
}
