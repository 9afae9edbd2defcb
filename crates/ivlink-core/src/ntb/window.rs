//! Memory windows: each port's inbound windows are region memory it translates
//! for one peer at a time; a peer points one of its outbound windows at that
//! range and reaches it as a region offset and length, zero copy.
//!
//! A translation record is 32 bytes in the owner's block: the port it is for
//! (+ 1, 0 = none) at 0, the offset inside the window at 8, the size at 16. The
//! owner clears the port first and writes it last, so a reader sees a complete
//! record or none; whatever it reads is checked against the window before use.

use core::sync::atomic::Ordering;

use super::layout::TRANSLATION_SIZE;
use super::{MW_ALIGN, NtbLayout, NtbLayoutError, check_index};
use crate::region::{Le32, Le64, Region};

const FOR_PORT: Le32 = Le32::at(0);
const OFFSET: Le64 = Le64::at(8);
const SIZE: Le64 = Le64::at(16);

/// A range of the region: where a window (or the part of it translated) lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Region offset of the first byte.
    pub offset: usize,
    /// Bytes.
    pub len: usize,
}

/// A window's alignment rules (Linux's `ntb_mw_get_align`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MwAlign {
    /// A translation's base must be a multiple of this.
    pub addr_align: u64,
    /// A translation's size must be a multiple of this.
    pub size_align: u64,
    /// The largest translation.
    pub size_max: u64,
}

/// A translation as recorded, validated against its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The port the range is for (inbound: the peer allowed in; outbound: the
    /// peer whose window it reaches).
    pub port: u32,
    /// The range, in region offsets.
    pub window: Window,
}

/// Which of a port's two translation tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Inbound,
    Outbound,
}

impl NtbLayout {
    /// The alignment rules of every window.
    pub fn mw_align(&self) -> MwAlign {
        MwAlign {
            addr_align: MW_ALIGN,
            size_align: MW_ALIGN,
            size_max: self.shape().mw_size,
        }
    }

    /// All of `port`'s inbound window `widx`.
    pub fn mw_buffer(&self, port: u32, widx: u32) -> Result<Window, NtbLayoutError> {
        Ok(Window {
            offset: self.window_offset(port, widx)?,
            len: self.shape().mw_size as usize,
        })
    }

    fn record(&self, port: u32, table: Table, widx: u32) -> Result<usize, NtbLayoutError> {
        check_index("window", widx.into(), self.shape().mw_count.into())?;
        let first = match table {
            Table::Inbound => widx,
            Table::Outbound => self.shape().mw_count + widx,
        };
        Ok(self.port_block(port)?
            + self.translations_in_block()
            + first as usize * TRANSLATION_SIZE)
    }

    fn store_record<R: Region + ?Sized>(
        &self,
        region: &R,
        at: usize,
        record: Option<(u32, u64, u64)>,
    ) -> Result<(), NtbLayoutError> {
        FOR_PORT.of(at).store(region, 0, Ordering::SeqCst)?;
        if let Some((port, offset, size)) = record {
            OFFSET.of(at).store(region, offset, Ordering::Relaxed)?;
            SIZE.of(at).store(region, size, Ordering::Relaxed)?;
            FOR_PORT.of(at).store(region, port + 1, Ordering::Release)?;
        }
        Ok(())
    }

    /// Reads a record: the port it names (validated), its offset and size as
    /// read.
    fn load_raw<R: Region + ?Sized>(
        &self,
        region: &R,
        at: usize,
    ) -> Result<Option<(u32, u64, u64)>, NtbLayoutError> {
        let port = match FOR_PORT.of(at).load(region, Ordering::Acquire)? {
            0 => return Ok(None),
            plus_one if plus_one <= self.shape().ports => plus_one - 1,
            _ => return Err(NtbLayoutError::Damaged("translation for no port")),
        };
        let offset = OFFSET.of(at).load(region, Ordering::Relaxed)?;
        let size = SIZE.of(at).load(region, Ordering::Relaxed)?;
        Ok(Some((port, offset, size)))
    }

    /// Reads an inbound record, whose offset and size must fit its window.
    fn load_record<R: Region + ?Sized>(
        &self,
        region: &R,
        at: usize,
    ) -> Result<Option<(u32, u64, u64)>, NtbLayoutError> {
        let record = self.load_raw(region, at)?;
        if let Some((_, offset, size)) = record
            && !self.fits(offset, size)
        {
            return Err(NtbLayoutError::Damaged("translation outside its window"));
        }
        Ok(record)
    }

    fn fits(&self, offset: u64, size: u64) -> bool {
        offset % MW_ALIGN == 0
            && size % MW_ALIGN == 0
            && size > 0
            && offset
                .checked_add(size)
                .is_some_and(|end| end <= self.shape().mw_size)
    }

    /// `port` lets `peer` into its inbound window `widx` at region offset
    /// `addr` for `size` bytes (inside the window, 4 KiB aligned): Linux's
    /// `mw_set_trans`.
    pub fn mw_set_trans<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        peer: u32,
        widx: u32,
        addr: u64,
        size: u64,
    ) -> Result<(), NtbLayoutError> {
        self.peer_index(port, peer)?;
        let base = self.window_offset(port, widx)? as u64;
        let offset = addr
            .checked_sub(base)
            .ok_or(NtbLayoutError::BadTranslation)?;
        if !self.fits(offset, size) {
            return Err(NtbLayoutError::BadTranslation);
        }
        let at = self.record(port, Table::Inbound, widx)?;
        self.store_record(region, at, Some((peer, offset, size)))
    }

    /// `port` closes its inbound window `widx`.
    pub fn mw_clear_trans<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        widx: u32,
    ) -> Result<(), NtbLayoutError> {
        let at = self.record(port, Table::Inbound, widx)?;
        self.store_record(region, at, None)
    }

    /// The translation of `port`'s inbound window `widx`, if set.
    pub fn mw_trans<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        widx: u32,
    ) -> Result<Option<Translation>, NtbLayoutError> {
        let base = self.window_offset(port, widx)?;
        let at = self.record(port, Table::Inbound, widx)?;
        Ok(self
            .load_record(region, at)?
            .map(|(peer, offset, size)| Translation {
                port: peer,
                window: Window {
                    offset: base + offset as usize,
                    len: size as usize,
                },
            }))
    }

    /// Points `port`'s outbound window `widx` at `size` bytes from region offset
    /// `addr` of `peer`'s memory: Linux's `peer_mw_set_trans`. Refused unless one
    /// of `peer`'s inbound windows grants `port` that range.
    pub fn peer_mw_set_trans<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        peer: u32,
        widx: u32,
        addr: u64,
        size: u64,
    ) -> Result<(), NtbLayoutError> {
        self.peer_index(port, peer)?;
        let at = self.record(port, Table::Outbound, widx)?;
        self.granted(region, port, peer, addr, size)?;
        self.store_record(region, at, Some((peer, addr, size)))
    }

    /// Closes `port`'s outbound window `widx`.
    pub fn peer_mw_clear_trans<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        widx: u32,
    ) -> Result<(), NtbLayoutError> {
        let at = self.record(port, Table::Outbound, widx)?;
        self.store_record(region, at, None)
    }

    /// Where `port`'s outbound window `widx` reaches now: checked on every call
    /// against the peer's inbound translation, so a peer that closed or moved
    /// its window is never written to. `Ok(None)` if the window is not set.
    pub fn peer_mw_get_addr<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        widx: u32,
    ) -> Result<Option<Translation>, NtbLayoutError> {
        let at = self.record(port, Table::Outbound, widx)?;
        // An outbound record holds a region offset, checked against the peer's
        // grant rather than against a window of its own.
        let Some((peer, addr, size)) = self.load_raw(region, at)? else {
            return Ok(None);
        };
        let window = self.granted(region, port, peer, addr, size)?;
        Ok(Some(Translation { port: peer, window }))
    }

    /// The range `addr..addr + size` if an inbound window of `peer` grants it to
    /// `port`.
    fn granted<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        peer: u32,
        addr: u64,
        size: u64,
    ) -> Result<Window, NtbLayoutError> {
        let end = addr.checked_add(size).ok_or(NtbLayoutError::NotGranted)?;
        for widx in 0..self.shape().mw_count {
            let Ok(Some(grant)) = self.mw_trans(region, peer, widx) else {
                continue;
            };
            let (start, stop) = (
                grant.window.offset as u64,
                (grant.window.offset + grant.window.len) as u64,
            );
            if grant.port == port && size > 0 && addr >= start && end <= stop {
                return Ok(Window {
                    offset: addr as usize,
                    len: size as usize,
                });
            }
        }
        Err(NtbLayoutError::NotGranted)
    }
}
