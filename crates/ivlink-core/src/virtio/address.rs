//! How descriptor addresses map to region offsets.
//!
//! A virtio driver writes addresses in its own address space into descriptors
//! (and, for virtio-mmio, into the queue registers). Every layout ivlink speaks
//! maps them linearly: `address = base + region offset`, with `base` 0 where the
//! peers agree to use region offsets (the native profiles, OpenAMP's Linux
//! machine) and the driver's mapping of the region where a foreign driver writes
//! its own absolute addresses (the Zephyr samples).
//!
//! The side that follows an address (the device) trusts none of them: an
//! [`AddressMap`] also names the *window* of region offsets buffers may lie in
//! (usually the buffer pool), and [`AddressMap::translate`] refuses anything that
//! does not lie wholly inside it, without overflowing on hostile values.

use core::fmt;

/// A descriptor's address and length that do not lie inside the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressError {
    /// The address as written.
    pub addr: u64,
    /// The length as written.
    pub len: u32,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a buffer of {} bytes at address {:#x} lies outside the shared buffers",
            self.len, self.addr
        )
    }
}

impl core::error::Error for AddressError {}

/// `address = base + region offset`, for offsets in `start..start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressMap {
    base: u64,
    start: usize,
    len: usize,
}

impl AddressMap {
    /// Addresses `base + offset` for buffers inside `start..start + len` of the
    /// region (a window that ends past `usize::MAX` is cut there).
    pub const fn new(base: u64, start: usize, len: usize) -> Self {
        let len = if len > usize::MAX - start {
            usize::MAX - start
        } else {
            len
        };
        AddressMap { base, start, len }
    }

    /// Region offsets as addresses (`base` 0) over the first `region_len` bytes.
    pub const fn offsets(region_len: usize) -> Self {
        AddressMap::new(0, 0, region_len)
    }

    /// The same base, with buffers accepted only in `start..start + len`.
    pub const fn with_window(self, start: usize, len: usize) -> Self {
        AddressMap::new(self.base, start, len)
    }

    /// The address of region offset 0.
    pub const fn base(&self) -> u64 {
        self.base
    }

    /// First region offset of the window.
    pub const fn window_start(&self) -> usize {
        self.start
    }

    /// Bytes in the window.
    pub const fn window_len(&self) -> usize {
        self.len
    }

    /// The region offset of the `len` bytes at `addr`, if they lie wholly inside
    /// the window.
    pub fn translate(&self, addr: u64, len: u32) -> Result<usize, AddressError> {
        let bad = AddressError { addr, len };
        let offset = addr
            .checked_sub(self.base)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(bad)?;
        let end = offset.checked_add(len as usize).ok_or(bad)?;
        if offset < self.start || end > self.start + self.len {
            return Err(bad);
        }
        Ok(offset)
    }

    /// The address a descriptor carries for region `offset` (not checked against
    /// the window: the driver knows where its own buffers are). It wraps like the
    /// driver's pointer arithmetic would; [`AddressMap::translate`] does not, so a
    /// base that puts the region across the top of the address space is refused
    /// there.
    pub const fn address_of(&self, offset: usize) -> u64 {
        self.base.wrapping_add(offset as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn translates_inside_the_window_only() {
        let map = AddressMap::new(0x8000_0000, 0x400, 0x100);
        assert_eq!(map.address_of(0x400), 0x8000_0400);
        assert_eq!(map.translate(0x8000_0400, 0x100), Ok(0x400));
        assert_eq!(map.translate(0x8000_0480, 0x80), Ok(0x480));
        assert_eq!(map.translate(0x8000_0500, 0), Ok(0x500));
        for (addr, len) in [
            (0x8000_03ff, 1),
            (0x8000_0480, 0x81),
            (0x8000_0501, 0),
            (0x400, 1),
            (u64::MAX, u32::MAX),
        ] {
            assert_eq!(map.translate(addr, len), Err(AddressError { addr, len }));
        }
        let offsets = AddressMap::offsets(4096);
        assert_eq!(offsets.translate(4000, 96), Ok(4000));
        assert!(offsets.translate(4000, 97).is_err());
        assert_eq!(offsets.with_window(16, 16).translate(16, 16), Ok(16));
        let cut = AddressMap::new(0, usize::MAX - 1, 10);
        assert_eq!(cut.window_len(), 1);
        assert!(cut.translate(u64::MAX, 1).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 4 } else { 256 }, failure_persistence: None, ..ProptestConfig::default() })]

        /// A translated buffer always lies inside the window, and every buffer
        /// inside it translates back to where its address came from.
        #[test]
        fn translation_stays_in_the_window(base in 0u64..u64::MAX / 2, start in 0usize..1 << 20, len in 0usize..1 << 20, addr: u64, blen: u32, at in 0usize..1 << 20) {
            let map = AddressMap::new(base, start, len);
            if let Ok(offset) = map.translate(addr, blen) {
                prop_assert!(offset >= start && offset + blen as usize <= start + len);
                prop_assert_eq!(map.address_of(offset), addr);
            }
            let inside = start + at % (len + 1);
            let room = (start + len - inside) as u32;
            prop_assert_eq!(map.translate(map.address_of(inside), room), Ok(inside));
        }
    }
}
