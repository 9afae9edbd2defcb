//! Little-endian typed fields: where a word lives, how wide it is, and its byte order,
//! in one place.
//!
//! Every word of every layout in this crate is little-endian on the region, whatever
//! the host, like the endian types of rust-vmm's `vm-memory` (`Le16`, `Le32`, `Le64`).
//! A field is a handle, not a value: `Le32::at(12)` names the `u32` at offset 12,
//! and its methods do the atomic access through the [`Region`] seam and convert
//! between little-endian and native order (nothing to do on a little-endian host).
//! Layouts declare their fields as constants relative to the start of their
//! structure and place them with [`of`](LeField::of):
//!
//! ```
//! use core::sync::atomic::Ordering;
//! use ivlink_core::region::{Le32, Region, RegionError};
//!
//! /// The state word of some header, 4 bytes into it.
//! const STATE: Le32 = Le32::at(4);
//!
//! fn publish<R: Region + ?Sized>(region: &R, header: usize) -> Result<u32, RegionError> {
//!     STATE.of(header).store(region, 2, Ordering::Release)?;
//!     STATE.of(header).load(region, Ordering::Acquire)
//! }
//! ```

use core::marker::PhantomData;
use core::sync::atomic::Ordering;

use super::{Region, RegionError};

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

/// An unsigned word a [`LeField`] can hold: `u8`, `u16`, `u32` or `u64`.
pub trait Word: sealed::Sealed + Copy + Eq + core::fmt::Debug {
    /// Size in bytes (also the alignment its atomics need).
    const SIZE: usize;
    /// Converts between native and little-endian order (its own inverse).
    fn swap_le(self) -> Self;
    /// Atomic load of the raw (region-order) word.
    fn load_raw<R: Region + ?Sized>(r: &R, at: usize, order: Ordering)
    -> Result<Self, RegionError>;
    /// Atomic store of the raw (region-order) word.
    fn store_raw<R: Region + ?Sized>(
        r: &R,
        at: usize,
        value: Self,
        order: Ordering,
    ) -> Result<(), RegionError>;
    /// Atomic compare-and-exchange of the raw (region-order) word.
    fn compare_exchange_raw<R: Region + ?Sized>(
        r: &R,
        at: usize,
        current: Self,
        new: Self,
    ) -> Result<Result<Self, Self>, RegionError>;
}

macro_rules! word {
    ($t:ty, $load:ident, $store:ident, $cas:ident) => {
        impl Word for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            fn swap_le(self) -> Self {
                <$t>::to_le(self)
            }
            fn load_raw<R: Region + ?Sized>(
                r: &R,
                at: usize,
                order: Ordering,
            ) -> Result<Self, RegionError> {
                r.$load(at, order)
            }
            fn store_raw<R: Region + ?Sized>(
                r: &R,
                at: usize,
                value: Self,
                order: Ordering,
            ) -> Result<(), RegionError> {
                r.$store(at, value, order)
            }
            fn compare_exchange_raw<R: Region + ?Sized>(
                r: &R,
                at: usize,
                current: Self,
                new: Self,
            ) -> Result<Result<Self, Self>, RegionError> {
                r.$cas(at, current, new)
            }
        }
    };
}

word!(u8, load_u8, store_u8, compare_exchange_u8);
word!(u16, load_u16, store_u16, compare_exchange_u16);
word!(u32, load_u32, store_u32, compare_exchange_u32);
word!(u64, load_u64, store_u64, compare_exchange_u64);

/// A little-endian word of type `T` at a fixed offset in the region.
///
/// Offsets are plain numbers until used: [`of`](Self::of) adds a structure's base
/// (saturating, so a hostile base gives an out-of-bounds error, never an overflow),
/// and every access is bounds- and alignment-checked by the [`Region`].
pub struct LeField<T: Word> {
    offset: usize,
    word: PhantomData<T>,
}

/// A byte (no byte order; here so that every layout field has one kind of handle).
pub type Le8 = LeField<u8>;
/// A little-endian `u16`.
pub type Le16 = LeField<u16>;
/// A little-endian `u32`.
pub type Le32 = LeField<u32>;
/// A little-endian `u64`.
pub type Le64 = LeField<u64>;

impl<T: Word> Clone for LeField<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Word> Copy for LeField<T> {}

impl<T: Word> PartialEq for LeField<T> {
    fn eq(&self, other: &Self) -> bool {
        self.offset == other.offset
    }
}

impl<T: Word> Eq for LeField<T> {}

impl<T: Word> core::fmt::Debug for LeField<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Le{}@{:#x}", T::SIZE * 8, self.offset)
    }
}

impl<T: Word> LeField<T> {
    /// The field at `offset` (relative to whatever base it is later placed at).
    pub const fn at(offset: usize) -> Self {
        LeField {
            offset,
            word: PhantomData,
        }
    }

    /// Its offset.
    pub const fn offset(self) -> usize {
        self.offset
    }

    /// Offset of the byte just past it.
    pub const fn end(self) -> usize {
        self.offset + T::SIZE
    }

    /// The same field in a structure that starts at `base`.
    pub const fn of(self, base: usize) -> Self {
        Self::at(base.saturating_add(self.offset))
    }

    /// The `index`-th field of an array of such fields starting here, `stride` bytes
    /// apart (saturating, like [`of`](Self::of)).
    pub const fn index(self, index: usize, stride: usize) -> Self {
        Self::at(self.offset.saturating_add(index.saturating_mul(stride)))
    }

    /// Atomically loads the field, in native order.
    pub fn load<R: Region + ?Sized>(self, region: &R, order: Ordering) -> Result<T, RegionError> {
        Ok(T::load_raw(region, self.offset, order)?.swap_le())
    }

    /// Atomically stores `value` (native order) into the field.
    pub fn store<R: Region + ?Sized>(
        self,
        region: &R,
        value: T,
        order: Ordering,
    ) -> Result<(), RegionError> {
        T::store_raw(region, self.offset, value.swap_le(), order)
    }

    /// Atomic compare-and-exchange (acquire-release on success, acquire on failure).
    ///
    /// The outer result reports a bad offset; the inner one holds the previous value
    /// (native order), `Ok` if it was `current` and `new` was stored.
    pub fn compare_exchange<R: Region + ?Sized>(
        self,
        region: &R,
        current: T,
        new: T,
    ) -> Result<Result<T, T>, RegionError> {
        Ok(
            T::compare_exchange_raw(region, self.offset, current.swap_le(), new.swap_le())?
                .map(Word::swap_le)
                .map_err(Word::swap_le),
        )
    }
}

macro_rules! bit_ops {
    ($t:ty, $or:ident, $and:ident) => {
        impl LeField<$t> {
            /// Atomically sets the bits of `mask` and returns the previous value (native
            /// order). Bitwise operations commute with the byte swap, so this is one
            /// atomic instruction on any host.
            pub fn fetch_or<R: Region + ?Sized>(
                self,
                region: &R,
                mask: $t,
                order: Ordering,
            ) -> Result<$t, RegionError> {
                Ok(<$t>::from_le(region.$or(
                    self.offset,
                    mask.to_le(),
                    order,
                )?))
            }

            /// Atomically clears the bits not in `mask` and returns the previous value
            /// (native order).
            pub fn fetch_and<R: Region + ?Sized>(
                self,
                region: &R,
                mask: $t,
                order: Ordering,
            ) -> Result<$t, RegionError> {
                Ok(<$t>::from_le(region.$and(
                    self.offset,
                    mask.to_le(),
                    order,
                )?))
            }
        }
    };
}

bit_ops!(u32, fetch_or_u32, fetch_and_u32);
bit_ops!(u64, fetch_or_u64, fetch_and_u64);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::HeapRegion;

    const A: Le16 = Le16::at(2);
    const B: Le32 = Le32::at(4);
    const C: Le64 = Le64::at(8);

    #[test]
    fn fields_are_little_endian_on_the_region() {
        let region = HeapRegion::new(32);
        let r = &*region;
        A.of(16).store(r, 0x0102, Ordering::Relaxed).unwrap();
        B.of(16).store(r, 0x0304_0506, Ordering::Relaxed).unwrap();
        C.of(16)
            .store(r, 0x0708_090a_0b0c_0d0e, Ordering::Relaxed)
            .unwrap();
        let mut bytes = [0u8; 16];
        r.read(16, &mut bytes).unwrap();
        assert_eq!(
            bytes,
            [0, 0, 2, 1, 6, 5, 4, 3, 0xe, 0xd, 0xc, 0xb, 0xa, 9, 8, 7]
        );
        assert_eq!(A.of(16).load(r, Ordering::Relaxed).unwrap(), 0x0102);
        assert_eq!(B.of(16).load(r, Ordering::Relaxed).unwrap(), 0x0304_0506);
        assert_eq!(C.of(16).end(), 32);
    }

    #[test]
    fn read_modify_write_ops_return_the_previous_value() {
        let region = HeapRegion::new(16);
        let r = &*region;
        assert_eq!(B.compare_exchange(r, 0, 5).unwrap(), Ok(0));
        assert_eq!(B.compare_exchange(r, 0, 6).unwrap(), Err(5));
        assert_eq!(B.fetch_or(r, 0x100, Ordering::AcqRel).unwrap(), 5);
        assert_eq!(B.fetch_and(r, 0x104, Ordering::AcqRel).unwrap(), 0x105);
        assert_eq!(B.load(r, Ordering::Relaxed).unwrap(), 0x104);
        assert_eq!(C.fetch_or(r, 1 << 40, Ordering::AcqRel).unwrap(), 0);
        assert_eq!(C.fetch_and(r, 0, Ordering::AcqRel).unwrap(), 1 << 40);
        assert_eq!(r.load_u8(13, Ordering::Relaxed).unwrap(), 0);
    }

    #[test]
    fn placement_saturates_and_accesses_stay_checked() {
        let region = HeapRegion::new(16);
        let r = &*region;
        assert!(B.of(usize::MAX).load(r, Ordering::Relaxed).is_err());
        assert!(B.index(usize::MAX, 4).load(r, Ordering::Relaxed).is_err());
        assert_eq!(B.index(2, 4).offset(), 12);
        assert_eq!(
            Le32::at(2).load(r, Ordering::Relaxed),
            Err(RegionError::Misaligned {
                offset: 2,
                align: 4
            })
        );
    }
}
