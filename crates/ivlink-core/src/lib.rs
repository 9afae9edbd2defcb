//! Protocols that live inside an ivshmem shared-memory region.
//!
//! This crate is `no_std`: it sees the region only through the [`Region`] trait
//! (bounds-checked volatile and atomic access at offsets) and the doorbell only
//! through the [`Notify`] trait. It makes no syscalls, starts no threads and reads
//! no clocks, so it runs unchanged in a host process, a Linux guest and an RTOS.
//!
//! The region is shared with peers that are not trusted: every access is checked
//! against the region's bounds and no Rust reference into the region is ever handed
//! out.
#![no_std]

#[cfg(any(test, feature = "alloc"))]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod channel;
pub mod console;
pub mod directory;
pub mod mailbox;
pub mod members;
pub mod notify;
pub mod ntb;
pub mod raw_message;
pub mod region;
pub mod ring;
pub mod rpmsg;
pub mod section;
pub mod setup;
pub mod stream;
pub mod virtio;

pub use directory::{Directory, DirectoryError, SectionInfo, SectionKind, SectionName};
pub use notify::{Notify, NotifyError, PeerId, Vector};
pub use region::{RawRegion, Region, RegionError};

#[cfg(any(test, feature = "alloc"))]
pub use region::HeapRegion;

/// The longest operation sequence a model-based proptest draws: `native`
/// natively; under Miri, which interprets every step, a fifth of it: each
/// access path is reached within a few dozen steps, and Miri checks the accesses,
/// not the model's coverage (that is what the native cases are for).
#[cfg(test)]
pub(crate) const fn model_ops(native: usize) -> usize {
    if cfg!(miri) { native / 5 } else { native }
}
