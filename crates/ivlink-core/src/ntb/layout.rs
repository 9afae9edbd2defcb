//! The switch's geometry: its shape, the header, and where each port's
//! registers and windows lie.

use core::sync::atomic::Ordering;

use super::{
    MAX_MW_SIZE, MAX_PORTS, MAX_SPADS, MAX_WINDOWS, MSG_REGISTERS, MW_ALIGN, NtbLayoutError, SETUP,
    check_index,
};
use crate::notify::Vector;
use crate::region::{Le32, Le64, Region, check_bounds};
use crate::setup::{SetupState, SetupWord};

const MAGIC: u32 = u32::from_le_bytes(*b"NTB1");
const MAGIC_AT: Le32 = Le32::at(0);
const PORTS_AT: Le32 = Le32::at(4);
const SPADS_AT: Le32 = Le32::at(8);
const MSGS_AT: Le32 = Le32::at(12);
const WINDOWS_AT: Le32 = Le32::at(16);
const VECTOR_AT: Le32 = Le32::at(20);
const MW_SIZE_AT: Le64 = Le64::at(24);
const HEADER: usize = 64;
const LINE: usize = 64;

/// Where the scratchpads start in a port's block: after the control, event,
/// doorbell and message lines (see the module's table).
const SPADS_IN_BLOCK: usize = 256;

/// Bytes of one translation record.
pub(crate) const TRANSLATION_SIZE: usize = 32;

/// How a new switch is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtbShape {
    /// Ports (2..=[`MAX_PORTS`]).
    pub ports: u32,
    /// Scratchpads per port (0..=[`MAX_SPADS`]).
    pub spad_count: u32,
    /// Message registers per port (0..=[`MSG_REGISTERS`]).
    pub msg_count: u32,
    /// Memory windows per port (0..=[`MAX_WINDOWS`]).
    pub mw_count: u32,
    /// Bytes per window: a multiple of [`MW_ALIGN`], at most [`MAX_MW_SIZE`]
    /// (unused without windows).
    pub mw_size: u64,
    /// The doorbell vector every event rings.
    pub vector: Vector,
}

impl NtbShape {
    /// `ports` ports with the defaults: 16 scratchpads, 4 message registers, one
    /// 1 MiB window per peer, vector 0.
    pub const fn new(ports: u32) -> Self {
        NtbShape {
            ports,
            spad_count: 16,
            msg_count: MSG_REGISTERS,
            mw_count: ports.saturating_sub(1),
            mw_size: 1 << 20,
            vector: 0,
        }
    }

    /// Checks the shape, before anything is created.
    pub fn check(&self) -> Result<(), NtbLayoutError> {
        if !(2..=MAX_PORTS).contains(&self.ports) {
            return Err(NtbLayoutError::Invalid("port count out of range (2..=16)"));
        }
        if self.spad_count > MAX_SPADS {
            return Err(NtbLayoutError::Invalid("more than 64 scratchpads"));
        }
        if self.msg_count > MSG_REGISTERS {
            return Err(NtbLayoutError::Invalid("more than 4 message registers"));
        }
        if self.mw_count > MAX_WINDOWS {
            return Err(NtbLayoutError::Invalid("more than 16 memory windows"));
        }
        if self.mw_count > 0
            && (self.mw_size == 0 || self.mw_size % MW_ALIGN != 0 || self.mw_size > MAX_MW_SIZE)
        {
            return Err(NtbLayoutError::Invalid(
                "window size not a multiple of 4 KiB up to 1 GiB",
            ));
        }
        Ok(())
    }

    /// Bytes of one port's register block.
    fn block_size(&self) -> usize {
        let translations = 2 * self.mw_count as usize * TRANSLATION_SIZE;
        (SPADS_IN_BLOCK + 4 * self.spad_count as usize).next_multiple_of(LINE) + translations
    }

    /// Bytes of section this shape needs wherever it is placed (the windows start
    /// at a 4 KiB boundary of the region), or `None` if out of range.
    pub fn section_size(&self) -> Option<usize> {
        self.check().ok()?;
        let blocks = HEADER + self.ports as usize * self.block_size();
        let windows = (self.ports as usize * self.mw_count as usize)
            .checked_mul(usize::try_from(self.mw_size).ok()?)?;
        if windows == 0 {
            return Some(blocks);
        }
        blocks.checked_add(MW_ALIGN as usize)?.checked_add(windows)
    }
}

/// A switch header as read, nothing validated, for showing to people (`ivlink
/// inspect`). Values may be hostile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtbHeader {
    /// The magic bytes (`NTB1` in a switch).
    pub magic: [u8; 4],
    /// The setup word.
    pub state: u32,
    /// Ports.
    pub ports: u32,
    /// Scratchpads per port.
    pub spad_count: u32,
    /// Message registers per port.
    pub msg_count: u32,
    /// Memory windows per port.
    pub mw_count: u32,
    /// Bytes per window.
    pub mw_size: u64,
    /// The doorbell vector (the word as read).
    pub vector: u32,
}

impl NtbHeader {
    /// Reads the header of the section at `offset` of `size` bytes. Fails only if
    /// the section lies outside the region or cannot hold a header.
    pub fn read<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, NtbLayoutError> {
        check_bounds(offset, size, region.len())?;
        if size < HEADER {
            return Err(NtbLayoutError::Invalid("section too small"));
        }
        let mut magic = [0u8; 4];
        region.read(offset, &mut magic)?;
        let load = |field: Le32| field.of(offset).load(region, Ordering::Relaxed);
        Ok(NtbHeader {
            magic,
            state: SETUP.word(offset).load(region, Ordering::Acquire)?,
            ports: load(PORTS_AT)?,
            spad_count: load(SPADS_AT)?,
            msg_count: load(MSGS_AT)?,
            mw_count: load(WINDOWS_AT)?,
            mw_size: MW_SIZE_AT.of(offset).load(region, Ordering::Relaxed)?,
            vector: load(VECTOR_AT)?,
        })
    }

    /// Whether the magic is `NTB1`.
    pub fn has_magic(&self) -> bool {
        u32::from_le_bytes(self.magic) == MAGIC
    }
}

/// A switch's geometry, read from its header and checked against its section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtbLayout {
    base: usize,
    shape: NtbShape,
    block_size: usize,
    windows: usize,
}

impl NtbLayout {
    fn locate(base: usize, size: usize, shape: NtbShape) -> Result<Self, NtbLayoutError> {
        let needed = shape
            .section_size()
            .ok_or(NtbLayoutError::Invalid("shape out of range"))?;
        if needed > size {
            return Err(NtbLayoutError::Invalid(
                "the switch does not fit the section",
            ));
        }
        let block_size = shape.block_size();
        let blocks_end = base + HEADER + shape.ports as usize * block_size;
        Ok(NtbLayout {
            base,
            shape,
            block_size,
            windows: blocks_end.next_multiple_of(MW_ALIGN as usize),
        })
    }

    /// Writes a new switch with every port free into the section at `offset` of
    /// `size` bytes. Only the peer that added the section does this, once.
    pub fn create<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        shape: NtbShape,
    ) -> Result<Self, NtbLayoutError> {
        shape.check()?;
        check_bounds(offset, size, region.len())?;
        if offset % LINE != 0 {
            return Err(NtbLayoutError::Invalid("section not 64-byte aligned"));
        }
        let layout = Self::locate(offset, size, shape)?;
        SETUP.claim(region, offset)?;
        // Leftovers of an earlier use of the region must not read as registers.
        // The setup word is ours to move by compare-and-exchange only.
        region.fill(offset, SETUP.at, 0)?;
        let registers_end = HEADER + shape.ports as usize * layout.block_size;
        region.fill(offset + SETUP.at + 4, registers_end - SETUP.at - 4, 0)?;
        let store =
            |field: Le32, value: u32| field.of(offset).store(region, value, Ordering::Relaxed);
        store(PORTS_AT, shape.ports)?;
        store(SPADS_AT, shape.spad_count)?;
        store(MSGS_AT, shape.msg_count)?;
        store(WINDOWS_AT, shape.mw_count)?;
        store(VECTOR_AT, u32::from(shape.vector))?;
        MW_SIZE_AT
            .of(offset)
            .store(region, shape.mw_size, Ordering::Relaxed)?;
        store(MAGIC_AT, MAGIC)?;
        SETUP.publish(region, offset)?;
        Ok(layout)
    }

    /// Opens the switch in the section at `offset` of `size` bytes, validating
    /// every header field against the section.
    pub fn open<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, NtbLayoutError> {
        check_bounds(offset, size, region.len())?;
        if offset % LINE != 0 {
            return Err(NtbLayoutError::Invalid("section not 64-byte aligned"));
        }
        match SETUP.state(region, offset)? {
            SetupState::Ready => {}
            SetupState::Pending(0 | 1) | SetupState::Abandoned => {
                return Err(NtbLayoutError::Initializing);
            }
            SetupState::Pending(_) => return Err(NtbLayoutError::Invalid("unknown state")),
        }
        let header = NtbHeader::read(region, offset, size)?;
        if !header.has_magic() {
            return Err(NtbLayoutError::Invalid("bad magic"));
        }
        let vector = Vector::try_from(header.vector)
            .map_err(|_| NtbLayoutError::Invalid("vector out of range"))?;
        let shape = NtbShape {
            ports: header.ports,
            spad_count: header.spad_count,
            msg_count: header.msg_count,
            mw_count: header.mw_count,
            mw_size: header.mw_size,
            vector,
        };
        shape.check()?;
        Self::locate(offset, size, shape)
    }

    /// The shape as created.
    pub fn shape(&self) -> NtbShape {
        self.shape
    }

    /// Where the section starts in the region.
    pub fn base(&self) -> usize {
        self.base
    }

    /// The region offset of `port`'s register block.
    pub fn port_block(&self, port: u32) -> Result<usize, NtbLayoutError> {
        check_index("port", port.into(), self.shape.ports.into())?;
        Ok(self.base + HEADER + port as usize * self.block_size)
    }

    /// Where the translation records start in a port's block.
    pub(crate) fn translations_in_block(&self) -> usize {
        (SPADS_IN_BLOCK + 4 * self.shape.spad_count as usize).next_multiple_of(LINE)
    }

    /// Bytes of one port's register block.
    pub(crate) fn block_len(&self) -> usize {
        self.block_size
    }

    /// The region offset of `port`'s inbound window `widx`.
    pub fn window_offset(&self, port: u32, widx: u32) -> Result<usize, NtbLayoutError> {
        check_index("port", port.into(), self.shape.ports.into())?;
        check_index("window", widx.into(), self.shape.mw_count.into())?;
        let index = port as usize * self.shape.mw_count as usize + widx as usize;
        Ok(self.windows + index * self.shape.mw_size as usize)
    }

    /// The port that peer index `pidx` of `port` names.
    pub fn peer_port(&self, port: u32, pidx: u32) -> Result<u32, NtbLayoutError> {
        check_index("port", port.into(), self.shape.ports.into())?;
        check_index("peer", pidx.into(), u64::from(self.shape.ports - 1))?;
        Ok(if pidx < port { pidx } else { pidx + 1 })
    }

    /// The peer index by which `port` names `peer`.
    pub fn peer_index(&self, port: u32, peer: u32) -> Result<u32, NtbLayoutError> {
        check_index("port", port.into(), self.shape.ports.into())?;
        check_index("port", peer.into(), self.shape.ports.into())?;
        if peer == port {
            return Err(NtbLayoutError::NoSuch {
                what: "peer port",
                index: peer.into(),
                count: self.shape.ports.into(),
            });
        }
        Ok(if peer < port { peer } else { peer - 1 })
    }
}

impl crate::section::SectionProtocol for NtbLayout {
    const KIND: crate::directory::SectionKind = crate::directory::SectionKind::Ntb;
    const SETUP: SetupWord = SETUP;
    type Shape = NtbShape;
    type Snapshot = NtbHeader;
    type Error = NtbLayoutError;

    fn section_size(shape: &NtbShape) -> Result<usize, NtbLayoutError> {
        shape.check()?;
        shape
            .section_size()
            .ok_or(NtbLayoutError::Invalid("shape out of range"))
    }

    fn create<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        shape: &NtbShape,
    ) -> Result<Self, NtbLayoutError> {
        NtbLayout::create(region, offset, size, *shape)
    }

    fn open<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, NtbLayoutError> {
        NtbLayout::open(region, offset, size)
    }

    fn is_initializing(error: &NtbLayoutError) -> bool {
        matches!(error, NtbLayoutError::Initializing)
    }

    fn wrong_kind() -> NtbLayoutError {
        NtbLayoutError::Invalid("the section has another kind")
    }

    fn snapshot<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<NtbHeader, NtbLayoutError> {
        NtbHeader::read(region, offset, size)
    }
}
