//! ntb_perf's test (`perf_run_test`): every thread copies `2^total_order`
//! bytes in chunks from a random-filled buffer into its part of the outbound
//! window, wrapping around the part; and the same copy from private memory to
//! private memory, the ceiling it is measured against.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use ivlink::ntb::Ntb;

/// Parts of the window start on this boundary.
const PART_ALIGN: usize = 64;

/// What every thread copies.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Bytes per copy call (at most a thread's part).
    pub chunk: usize,
    /// Bytes each thread copies in all.
    pub total: u64,
    /// Threads, each with a part of the window of its own.
    pub threads: usize,
}

/// One thread's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Bytes copied.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl Copied {
    /// Microseconds, as ntb_perf prints them.
    pub fn usecs(&self) -> u64 {
        self.elapsed.as_micros() as u64
    }

    /// ntb_perf's `MBytes/s`: bytes per microsecond, integer division.
    pub fn mbytes_per_s(&self) -> u64 {
        self.bytes / self.usecs().max(1)
    }

    /// The threads together: every byte over the longest time.
    pub fn total(all: &[Copied]) -> Copied {
        Copied {
            bytes: all.iter().map(|c| c.bytes).sum(),
            elapsed: all.iter().map(|c| c.elapsed).max().unwrap_or_default(),
        }
    }
}

/// Where each thread writes: `threads` parts of `window` bytes, each a whole
/// number of chunks.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    /// Bytes between the starts of two parts.
    pub stride: usize,
    /// Bytes of a part written (a multiple of `chunk`).
    pub len: usize,
    /// Bytes per copy call.
    pub chunk: usize,
}

impl Parts {
    /// Splits a window of `window` bytes for `plan`.
    pub fn new(window: usize, plan: &Plan) -> anyhow::Result<Parts> {
        let stride = window / plan.threads / PART_ALIGN * PART_ALIGN;
        if stride == 0 {
            anyhow::bail!(
                "a window of {window} bytes is too small for {} threads",
                plan.threads
            );
        }
        let chunk = plan.chunk.min(stride).min(plan.total as usize).max(1);
        Ok(Parts {
            stride,
            len: stride / chunk * chunk,
            chunk,
        })
    }
}

/// Runs the test through outbound window `widx`: every thread starts at
/// once; each reads back its last chunk afterwards and fails if it differs.
pub fn through_window(
    ntb: &Ntb<'_>,
    widx: u32,
    parts: Parts,
    plan: &Plan,
) -> anyhow::Result<Vec<Copied>> {
    let start = Barrier::new(plan.threads);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..plan.threads)
            .map(|tidx| {
                let start = &start;
                scope.spawn(move || -> anyhow::Result<Copied> {
                    let base = tidx * parts.stride;
                    let source = random_bytes(parts.len, tidx as u64);
                    start.wait();
                    let began = Instant::now();
                    let last = copy_chunks(plan.total, parts, &source, |at, bytes| {
                        ntb.peer_mw_write(widx, base + at, bytes)
                    })?;
                    let elapsed = began.elapsed();
                    let (at, len) = last;
                    let mut back = vec![0; len];
                    ntb.peer_mw_read(widx, base + at, &mut back)?;
                    if back != source[at..at + len] {
                        anyhow::bail!("thread {tidx}: the last chunk read back differs");
                    }
                    Ok(Copied {
                        bytes: plan.total,
                        elapsed,
                    })
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a copy thread panicked"))?
            })
            .collect()
    })
}

/// The same copies from private memory to private memory.
pub fn memcpy(parts: Parts, plan: &Plan) -> Vec<Copied> {
    let start = Barrier::new(plan.threads);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..plan.threads)
            .map(|tidx| {
                let start = &start;
                scope.spawn(move || {
                    let source = random_bytes(parts.len, tidx as u64);
                    // Written before the clock starts, so that no page
                    // fault is timed: the ceiling is the copy alone.
                    let mut target = vec![0x5a_u8; parts.len];
                    start.wait();
                    let began = Instant::now();
                    let copied = copy_chunks(plan.total, parts, &source, |at, bytes| {
                        target[at..at + bytes.len()].copy_from_slice(bytes);
                        std::hint::black_box(&mut target);
                        Ok::<_, std::convert::Infallible>(())
                    });
                    let elapsed = began.elapsed();
                    let Ok(_) = copied;
                    Copied {
                        bytes: plan.total,
                        elapsed,
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a memcpy thread panicked"))
            .collect()
    })
}

/// Copies `total` bytes of `source` in chunks, wrapping around it, through
/// `write(at, bytes)` (the target is as long as the source, so one offset
/// serves both); the range of the last chunk.
fn copy_chunks<E>(
    total: u64,
    parts: Parts,
    source: &[u8],
    mut write: impl FnMut(usize, &[u8]) -> Result<(), E>,
) -> Result<(usize, usize), E> {
    let mut copied = 0u64;
    let mut at = 0usize;
    let mut last = (0, 0);
    while copied < total {
        let len = parts.chunk.min((total - copied) as usize);
        write(at, &source[at..at + len])?;
        last = (at, len);
        copied += len as u64;
        at += len;
        if at >= parts.len {
            at = 0;
        }
    }
    Ok(last)
}

/// `len` pseudo-random bytes (xorshift64*), different for every `seed`.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    state ^= clock | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_whole_chunks_inside_the_window() {
        let plan = Plan {
            chunk: 1 << 19,
            total: 1 << 30,
            threads: 3,
        };
        let parts = Parts::new(1 << 20, &plan).unwrap();
        assert_eq!(parts.stride, (1 << 20) / 3 / 64 * 64);
        assert_eq!(parts.chunk, parts.stride, "a chunk never outgrows a part");
        assert!(2 * parts.stride + parts.len <= 1 << 20);
        let tiny = Plan {
            threads: 32,
            ..plan
        };
        assert!(Parts::new(1024, &tiny).is_err());
    }

    #[test]
    fn wraps_around_the_part_and_ends_on_the_total() {
        let parts = Parts {
            stride: 4096,
            len: 3000,
            chunk: 1000,
        };
        let source = random_bytes(3000, 1);
        let mut writes = Vec::new();
        let last = copy_chunks(4500, parts, &source, |at, bytes| {
            writes.push((at, bytes.len()));
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(
            writes,
            [
                (0, 1000),
                (1000, 1000),
                (2000, 1000),
                (0, 1000),
                (1000, 500)
            ]
        );
        assert_eq!(last, (1000, 500));
    }

    #[test]
    fn mbytes_per_second_is_bytes_per_microsecond_rounded_down() {
        let copied = Copied {
            bytes: 1999,
            elapsed: Duration::from_micros(1000),
        };
        assert_eq!(copied.mbytes_per_s(), 1);
        let instant = Copied {
            bytes: 10,
            elapsed: Duration::ZERO,
        };
        assert_eq!(instant.mbytes_per_s(), 10);
        let both = Copied::total(&[copied, instant]);
        assert_eq!((both.bytes, both.usecs()), (2009, 1000));
    }
}
