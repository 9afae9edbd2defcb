//! Where a console's register block, queues and buffers live: one
//! [`ConsoleLayout`] per profile.
//!
//! | profile | register block | vrings | driver buffers | `desc.addr` |
//! |---|---|---|---|---|
//! | `native` | after ivlink's header in a directory section, Version 2 | after the block, 64-aligned, `num` entries | after the vrings | region offset |
//! | `hvl-zephyr` | 0x000, 0x200 bytes, Version 1 | in the vring heap 0x100800..0x180800, 4 entries, align 4096 | pool 0x800..0x80800 (the driver's bounce heap 0x80800..0x100800 too) | driver VM address of BAR2 + offset |
//!
//! The native header (0x100 bytes, little-endian):
//!
//! | offset | field |
//! |---|---|
//! | 0x00 | setup word: `VCN1` once set up ([`crate::setup`]) |
//! | 0x04 | ports (1 = port 0 only; more = `F_MULTIPORT`) |
//! | 0x08 | entries per vring |
//! | 0x0c | bytes per driver buffer |
//! | 0x40 | the driver's words ([`Side`]): generation, peer id + 1, request sequence, output-ended bits, bytes taken |
//! | 0x80 | the device's words: generation, peer id + 1, acknowledged sequence, output-ended bits, bytes taken |
//!
//! Each side writes only its own cache line. The generation counts a side's
//! starts, so the other side sees a restart even when it missed the gap; "bytes
//! taken" counts what a side took out of the other side's direction since the
//! last reset, so that a survivor can report what a crash lost.

use core::sync::atomic::Ordering;

use super::{
    CONTROL_BUFFER_SIZE, CONTROL_BUFFERS, ConsoleError, DriverPool, F_EMERG_WRITE, F_MULTIPORT,
    F_SIZE, MAX_BUFFERS, MAX_PORTS, queue_count,
};
use crate::PeerId;
use crate::region::{Le32, Le64, Region, check_bounds};
use crate::setup::{SetupState, SetupWord};
use crate::virtio::AddressMap;
use crate::virtio::features;
use crate::virtio::mmio::Handshake;
use crate::virtio::mmio::registers::BLOCK_SIZE;
use crate::virtio::virtq::{Vring, VringLayout};

/// Most queues a console uses: port 0, the control queues, ports 1.. .
pub const MAX_QUEUES: usize = queue_count(true, MAX_PORTS as u32);

/// The layouts a console speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// ivlink's own, in a directory section: any start order, either side may
    /// restart.
    Native,
    /// The Zephyr hypervisor-less virtio-mmio serial sample (seed 002): OpenAMP's
    /// legacy driver, fixed offsets, absolute addresses.
    HvlZephyr,
}

/// Where everything of one console lives, and how descriptor addresses map to
/// region offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLayout {
    /// The profile this layout follows.
    pub profile: Profile,
    /// Region offset of the native header (`None` in foreign layouts).
    pub header: Option<usize>,
    /// Region offset of the virtio-mmio register block.
    pub block: usize,
    /// The register set: 2 (modern) or 1 (legacy).
    pub version: u32,
    /// How register requests are acknowledged.
    pub handshake: Handshake,
    /// Feature bits the device offers.
    pub device_features: u64,
    /// Ports the device offers (`max_nr_ports`).
    pub ports: u32,
    /// Where the driver places its vrings, in queue order (`queue_count` used).
    pub(crate) queues: [Vring; MAX_QUEUES],
    queue_count: usize,
    /// Where the driver's vrings may be, for a device checking the driver's
    /// addresses: region offset and length.
    pub vring_area: (usize, usize),
    /// The buffers an ivlink driver uses.
    pub pool: DriverPool,
    /// Descriptor addresses and the window a device accepts buffers in.
    pub map: AddressMap,
    /// Longest buffer a device accepts.
    pub max_buffer_len: u32,
}

impl ConsoleLayout {
    /// The vrings the driver uses, in queue order.
    pub fn queues(&self) -> &[Vring] {
        &self.queues[..self.queue_count]
    }

    /// The native header's words of `side` (native only).
    pub fn side(&self, side: SideKind) -> Option<Side> {
        self.header.map(|header| Side {
            base: header + side.line(),
        })
    }

    /// The layout of the Zephyr hypervisor-less serial sample in a region of
    /// `region_len` bytes, whose driver addresses the region at `address_base`
    /// (its BAR2 mapping; the sample prints it as "Device Base address").
    pub fn hvl_zephyr(region_len: usize, address_base: u64) -> Result<Self, ConsoleError> {
        check_bounds(0, hvl::END, region_len).map_err(|_| {
            ConsoleError::Layout("the region is smaller than the sample's 0x180800 bytes")
        })?;
        let ring = VringLayout::new(hvl::QUEUE_SIZE, hvl::ALIGN)?;
        let mut queues = [Vring::new(hvl::VRINGS[0], ring, region_len)?; MAX_QUEUES];
        queues[1] = Vring::new(hvl::VRINGS[1], ring, region_len)?;
        Ok(ConsoleLayout {
            profile: Profile::HvlZephyr,
            header: None,
            block: 0,
            version: 1,
            handshake: Handshake::OpenampHvl,
            // OpenAMP's serial driver negotiates no feature at all.
            device_features: 0,
            ports: 1,
            queues,
            queue_count: 2,
            vring_area: (hvl::VRING_HEAP, hvl::HEAP_LEN),
            pool: DriverPool {
                offset: hvl::POOL,
                buf_size: hvl::BUF_SIZE,
                count: hvl::HEAP_LEN / hvl::BUF_SIZE as usize,
            },
            // The sample's driver bounces every buffer through the heap after the
            // pool: a device takes buffers from both.
            map: AddressMap::new(address_base, hvl::POOL, 2 * hvl::HEAP_LEN),
            max_buffer_len: hvl::BUF_SIZE,
        })
    }
}

/// The Zephyr sample's fixed offsets inside BAR2.
pub mod hvl {
    /// The shared memory pool.
    pub const POOL: usize = 0x800;
    /// The bounce-buffer heap.
    pub const BOUNCE_HEAP: usize = 0x80800;
    /// The vring heap.
    pub const VRING_HEAP: usize = 0x100800;
    /// Bytes of each of the three heaps.
    pub const HEAP_LEN: usize = 0x80000;
    /// End of the last heap: the smallest region the sample fits in.
    pub const END: usize = VRING_HEAP + HEAP_LEN;
    /// Entries per vring.
    pub const QUEUE_SIZE: u16 = 4;
    /// Vring alignment (QueueAlign, and the page size of QueuePFN).
    pub const ALIGN: usize = 4096;
    /// Where the sample's driver allocates its two vrings: the first 4096-aligned
    /// places in the vring heap (its console prints them).
    pub const VRINGS: [usize; 2] = [0x101000, 0x103000];
    /// Bytes per buffer an ivlink driver uses from the pool.
    pub const BUF_SIZE: u32 = 4096;
    /// SHMLen the device publishes: the register block.
    pub const SHM_LEN: u32 = 0x200;
}

/// Which side's words of the native header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SideKind {
    /// The driver's line.
    Driver,
    /// The device's line.
    Device,
}

impl SideKind {
    const fn line(self) -> usize {
        match self {
            SideKind::Driver => 0x40,
            SideKind::Device => 0x80,
        }
    }

    /// The other side.
    pub const fn other(self) -> Self {
        match self {
            SideKind::Driver => SideKind::Device,
            SideKind::Device => SideKind::Driver,
        }
    }
}

const S_GENERATION: Le32 = Le32::at(0);
const S_PEER: Le32 = Le32::at(4);
const S_SEQUENCE: Le32 = Le32::at(8);
const S_ENDED: Le32 = Le32::at(12);
const S_TAKEN: Le64 = Le64::at(16);

/// One side's words in the native header (written by that side only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    base: usize,
}

impl Side {
    /// How many times this side started (0: never).
    pub fn generation<R: Region + ?Sized>(&self, region: &R) -> Result<u32, ConsoleError> {
        Ok(S_GENERATION.of(self.base).load(region, Ordering::Acquire)?)
    }

    /// Marks a new start of this side as peer `id`; returns its generation.
    pub fn attach<R: Region + ?Sized>(&self, region: &R, id: PeerId) -> Result<u32, ConsoleError> {
        let generation = self.generation(region)?.wrapping_add(1).max(1);
        S_PEER
            .of(self.base)
            .store(region, u32::from(id) + 1, Ordering::Relaxed)?;
        S_GENERATION
            .of(self.base)
            .store(region, generation, Ordering::Release)?;
        Ok(generation)
    }

    /// The peer id this side last attached as.
    pub fn peer<R: Region + ?Sized>(&self, region: &R) -> Result<Option<PeerId>, ConsoleError> {
        let plus_one = S_PEER.of(self.base).load(region, Ordering::Acquire)?;
        Ok(plus_one
            .checked_sub(1)
            .and_then(|id| PeerId::try_from(id).ok()))
    }

    /// Region offset of the sequence word (the driver's request, the device's
    /// acknowledgement).
    pub fn sequence_at(&self) -> usize {
        S_SEQUENCE.of(self.base).offset()
    }

    /// Ports whose output this side ended, one bit each.
    pub fn ended<R: Region + ?Sized>(&self, region: &R) -> Result<u32, ConsoleError> {
        Ok(S_ENDED.of(self.base).load(region, Ordering::Acquire)?)
    }

    /// Records that this side's output of the ports in `ports` ended (bits), or
    /// starts over with none (`0`).
    pub fn set_ended<R: Region + ?Sized>(
        &self,
        region: &R,
        ports: u32,
    ) -> Result<(), ConsoleError> {
        Ok(S_ENDED
            .of(self.base)
            .store(region, ports, Ordering::Release)?)
    }

    /// Bytes this side took from the other side's direction since the last reset.
    pub fn taken<R: Region + ?Sized>(&self, region: &R) -> Result<u64, ConsoleError> {
        Ok(S_TAKEN.of(self.base).load(region, Ordering::Acquire)?)
    }

    /// Records the bytes taken since the last reset.
    pub fn set_taken<R: Region + ?Sized>(
        &self,
        region: &R,
        bytes: u64,
    ) -> Result<(), ConsoleError> {
        Ok(S_TAKEN
            .of(self.base)
            .store(region, bytes, Ordering::Release)?)
    }
}

const NATIVE_MAGIC: u32 = u32::from_le_bytes(*b"VCN1");
const NATIVE_ABANDONED: u32 = u32::from_le_bytes(*b"VCNX");

/// A native console's setup word (see [`crate::setup`]).
pub const NATIVE_SETUP: SetupWord = SetupWord {
    at: 0,
    initializing: 0,
    ready: NATIVE_MAGIC,
    abandoned: NATIVE_ABANDONED,
};
const N_PORTS: Le32 = Le32::at(4);
const N_NUM: Le32 = Le32::at(8);
const N_BUF_SIZE: Le32 = Le32::at(12);
/// Bytes of the native header.
pub const NATIVE_HEADER: usize = 0x100;
const NATIVE_ALIGN: usize = 64;

/// Shape of a native console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeShape {
    /// Ports (1 to 8; more than 1 negotiates `F_MULTIPORT`).
    pub ports: u32,
    /// Entries per vring (a power of two, at most 64).
    pub num: u16,
    /// Bytes per driver buffer (a multiple of 64, from 64 to 65536).
    pub buf_size: u32,
}

impl Default for NativeShape {
    fn default() -> Self {
        NativeShape {
            ports: 1,
            num: 32,
            buf_size: 4096,
        }
    }
}

/// The section's parts, at offsets from its start.
struct NativeParts {
    ring: VringLayout,
    ring_span: usize,
    queues: usize,
    pool: usize,
    buffers: usize,
    size: usize,
}

impl NativeShape {
    fn parts(&self) -> Result<NativeParts, ConsoleError> {
        if !(1..=MAX_PORTS as u32).contains(&self.ports) {
            return Err(ConsoleError::Layout("a console has 1 to 8 ports"));
        }
        if usize::from(self.num) > MAX_BUFFERS {
            return Err(ConsoleError::Layout("at most 64 entries per queue"));
        }
        if !(64..=65_536).contains(&self.buf_size) || self.buf_size % 64 != 0 {
            return Err(ConsoleError::Layout(
                "buffer size must be a multiple of 64 from 64 to 65536",
            ));
        }
        let ring = VringLayout::new(self.num, NATIVE_ALIGN)?;
        let ring_span = ring.size().next_multiple_of(NATIVE_ALIGN);
        let multiport = self.ports > 1;
        let queues = queue_count(multiport, self.ports);
        let control = if multiport {
            let per_queue = usize::from(self.num.min(CONTROL_BUFFERS));
            (2 * per_queue * CONTROL_BUFFER_SIZE).div_ceil(self.buf_size as usize)
        } else {
            0
        };
        let buffers = control + 2 * self.ports as usize * usize::from(self.num);
        let pool = NATIVE_HEADER + BLOCK_SIZE + queues * ring_span;
        Ok(NativeParts {
            ring,
            ring_span,
            queues,
            pool,
            buffers,
            size: pool + buffers * self.buf_size as usize,
        })
    }

    /// Bytes of section this shape needs.
    pub fn section_size(&self) -> Result<usize, ConsoleError> {
        Ok(self.parts()?.size)
    }

    /// Feature bits a native device with this shape offers.
    pub fn device_features(&self) -> u64 {
        let mut bits = features::bit(features::VERSION_1)
            | features::bit(F_SIZE)
            | features::bit(F_EMERG_WRITE);
        if self.ports > 1 {
            bits |= features::bit(F_MULTIPORT);
        }
        bits
    }
}

impl ConsoleLayout {
    /// Writes a fresh native console into the section at `offset` of `size`
    /// bytes (only the peer that added the section does this).
    pub fn create_native<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        shape: NativeShape,
    ) -> Result<Self, ConsoleError> {
        let parts = shape.parts()?;
        if parts.size > size || offset % NATIVE_ALIGN != 0 {
            return Err(ConsoleError::Layout("section too small or misaligned"));
        }
        check_bounds(offset, parts.size, region.len())?;
        NATIVE_SETUP.claim(region, offset)?;
        // Everything but the setup word starts at zero: no generation, no request.
        region.fill(offset + 4, parts.size - 4, 0)?;
        let put = |field: Le32, v: u32| field.of(offset).store(region, v, Ordering::Relaxed);
        put(N_PORTS, shape.ports)?;
        put(N_NUM, u32::from(shape.num))?;
        put(N_BUF_SIZE, shape.buf_size)?;
        NATIVE_SETUP.publish(region, offset)?;
        Self::open_native(region, offset, size)
    }

    /// Reads a native console's header from the section at `offset` of `size`
    /// bytes and checks it against the section. `Err(Initializing)` while its
    /// creator writes it.
    pub fn open_native<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, ConsoleError> {
        check_bounds(offset, size, region.len())?;
        if offset % NATIVE_ALIGN != 0 || size < NATIVE_HEADER {
            return Err(ConsoleError::Layout("section too small or misaligned"));
        }
        match NATIVE_SETUP.state(region, offset)? {
            SetupState::Ready => {}
            SetupState::Pending(0) | SetupState::Abandoned => {
                return Err(ConsoleError::Initializing);
            }
            SetupState::Pending(_) => {
                return Err(ConsoleError::Layout("the section does not hold a console"));
            }
        }
        let get = |field: Le32| field.of(offset).load(region, Ordering::Relaxed);
        let shape = NativeShape {
            ports: get(N_PORTS)?,
            num: u16::try_from(get(N_NUM)?)
                .map_err(|_| ConsoleError::Layout("bad queue size in the header"))?,
            buf_size: get(N_BUF_SIZE)?,
        };
        let parts = shape.parts()?;
        if parts.size > size {
            return Err(ConsoleError::Layout(
                "the header describes more than the section",
            ));
        }
        let first = offset + NATIVE_HEADER + BLOCK_SIZE;
        let mut queues = [Vring::new(first, parts.ring, region.len())?; MAX_QUEUES];
        for (q, slot) in queues.iter_mut().enumerate().take(parts.queues) {
            *slot = Vring::new(first + q * parts.ring_span, parts.ring, region.len())?;
        }
        let pool = offset + parts.pool;
        let pool_len = parts.buffers * shape.buf_size as usize;
        Ok(ConsoleLayout {
            profile: Profile::Native,
            header: Some(offset),
            block: offset + NATIVE_HEADER,
            version: 2,
            handshake: Handshake::Sequenced {
                request: offset + SideKind::Driver.line() + S_SEQUENCE.offset(),
                ack: offset + SideKind::Device.line() + S_SEQUENCE.offset(),
            },
            device_features: shape.device_features(),
            ports: shape.ports,
            queues,
            queue_count: parts.queues,
            vring_area: (first, parts.queues * parts.ring_span),
            pool: DriverPool {
                offset: pool,
                buf_size: shape.buf_size,
                count: parts.buffers,
            },
            map: AddressMap::new(0, pool, pool_len),
            max_buffer_len: shape.buf_size,
        })
    }
}

/// A native header as read, nothing validated (for inspection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeHeader {
    /// The setup word.
    pub setup: u32,
    /// Shape words as read.
    pub shape: NativeShape,
    /// The driver's and the device's words as read.
    pub sides: [SideSnapshot; 2],
}

/// One side's words as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SideSnapshot {
    /// Starts of this side.
    pub generation: u32,
    /// Peer id + 1 (0: none).
    pub peer_plus_one: u32,
    /// Request (driver) or acknowledged (device) sequence.
    pub sequence: u32,
    /// Ports whose output ended.
    pub ended: u32,
    /// Bytes taken since the last reset.
    pub taken: u64,
}

impl NativeHeader {
    /// Bytes it spans.
    pub const SIZE: usize = NATIVE_HEADER;

    /// Reads the header of the section at `offset` (at least [`Self::SIZE`] bytes).
    pub fn read<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, ConsoleError> {
        if size < NATIVE_HEADER {
            return Err(ConsoleError::Layout(
                "section too small for a console header",
            ));
        }
        check_bounds(offset, NATIVE_HEADER, region.len())?;
        let get = |field: Le32| field.of(offset).load(region, Ordering::Relaxed);
        let side = |kind: SideKind| -> Result<SideSnapshot, ConsoleError> {
            let base = offset + kind.line();
            let get = |field: Le32| field.of(base).load(region, Ordering::Relaxed);
            Ok(SideSnapshot {
                generation: get(S_GENERATION)?,
                peer_plus_one: get(S_PEER)?,
                sequence: get(S_SEQUENCE)?,
                ended: get(S_ENDED)?,
                taken: S_TAKEN.of(base).load(region, Ordering::Relaxed)?,
            })
        };
        Ok(NativeHeader {
            setup: get(Le32::at(NATIVE_SETUP.at))?,
            shape: NativeShape {
                ports: get(N_PORTS)?,
                num: get(N_NUM)? as u16,
                buf_size: get(N_BUF_SIZE)?,
            },
            sides: [side(SideKind::Driver)?, side(SideKind::Device)?],
        })
    }
}

impl crate::section::SectionProtocol for ConsoleLayout {
    const KIND: crate::directory::SectionKind = crate::directory::SectionKind::Console;
    const SETUP: SetupWord = NATIVE_SETUP;
    type Shape = NativeShape;
    type Snapshot = NativeHeader;
    type Error = ConsoleError;

    fn section_size(shape: &NativeShape) -> Result<usize, ConsoleError> {
        shape.section_size()
    }

    fn create<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        shape: &NativeShape,
    ) -> Result<Self, ConsoleError> {
        ConsoleLayout::create_native(region, offset, size, *shape)
    }

    fn open<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, ConsoleError> {
        ConsoleLayout::open_native(region, offset, size)
    }

    fn is_initializing(error: &ConsoleError) -> bool {
        matches!(error, ConsoleError::Initializing)
    }

    fn wrong_kind() -> ConsoleError {
        ConsoleError::Layout("the section has another kind")
    }

    fn snapshot<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<NativeHeader, ConsoleError> {
        NativeHeader::read(region, offset, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeapRegion;

    #[test]
    fn the_zephyr_samples_layout_matches_its_tables() {
        let layout = ConsoleLayout::hvl_zephyr(0x200000, 0xafa0_0000).unwrap();
        assert_eq!((layout.block, layout.version), (0, 1));
        assert_eq!(layout.handshake, Handshake::OpenampHvl);
        let [rx, tx] = [layout.queues()[0], layout.queues()[1]];
        // The addresses the sample's device prints for the driver's vrings.
        let address = |offset: usize| layout.map.address_of(offset);
        assert_eq!(address(rx.base()), 0xafb0_1000);
        assert_eq!(address(rx.base() + rx.layout().avail_offset()), 0xafb0_1040);
        assert_eq!(address(rx.base() + rx.layout().used_offset()), 0xafb0_2000);
        assert_eq!(address(tx.base()), 0xafb0_3000);
        assert_eq!(address(tx.base() + tx.layout().avail_offset()), 0xafb0_3040);
        assert_eq!(address(tx.base() + tx.layout().used_offset()), 0xafb0_4000);
        assert_eq!(rx.layout().num(), 4);
        // Both rings inside the vring heap, buffers from the pool and bounce heap.
        let (start, len) = layout.vring_area;
        assert!(start <= rx.base() && tx.base() + tx.layout().size() <= start + len);
        assert_eq!(layout.map.translate(0xafa0_0800, 1).unwrap(), 0x800);
        assert_eq!(layout.map.translate(0xafb0_07ff, 1).unwrap(), 0x1007ff);
        assert!(layout.map.translate(0xafb0_0800, 1).is_err(), "vring heap");
        assert!(
            layout.map.translate(0xafa0_07ff, 1).is_err(),
            "register block"
        );
        assert!(ConsoleLayout::hvl_zephyr(0x100000, 0).is_err());
    }

    #[test]
    fn a_native_section_opens_as_it_was_created() {
        let region = HeapRegion::new(1 << 20);
        let shape = NativeShape {
            ports: 3,
            num: 4,
            buf_size: 256,
        };
        let size = shape.section_size().unwrap();
        let created = ConsoleLayout::create_native(&*region, 4096, size, shape).unwrap();
        let opened = ConsoleLayout::open_native(&*region, 4096, size).unwrap();
        assert_eq!(created, opened);
        assert_eq!(opened.queues().len(), 8);
        assert_eq!(opened.block, 4096 + NATIVE_HEADER);
        assert!(opened.device_features & features::bit(F_MULTIPORT) != 0);
        // Control buffers (8 of 64 bytes) take two pool buffers; then 4 per data queue.
        assert_eq!(opened.pool.count, 2 + 6 * 4);
        assert_eq!(opened.pool.offset + opened.pool.count * 256, 4096 + size);
        let last = opened.queues()[7];
        assert!(last.base() + last.layout().size() <= opened.pool.offset);
        let header = NativeHeader::read(&*region, 4096, size).unwrap();
        assert_eq!((header.setup, header.shape), (NATIVE_MAGIC, shape));
    }

    /// A shape small enough for Miri, which interprets every byte of the setup.
    const SMALL: NativeShape = NativeShape {
        ports: 1,
        num: 4,
        buf_size: 256,
    };

    #[test]
    fn native_headers_that_lie_are_refused() {
        let region = HeapRegion::new(1 << 20);
        let shape = SMALL;
        let size = shape.section_size().unwrap();
        ConsoleLayout::create_native(&*region, 0, size, shape).unwrap();
        for (field, value) in [
            (N_PORTS, 0),
            (N_PORTS, 9),
            (N_NUM, 3),
            (N_NUM, 128),
            (N_BUF_SIZE, 100),
        ] {
            let fresh = HeapRegion::new(1 << 20);
            ConsoleLayout::create_native(&*fresh, 0, size, shape).unwrap();
            field
                .of(0)
                .store(&*fresh, value, Ordering::Relaxed)
                .unwrap();
            assert!(ConsoleLayout::open_native(&*fresh, 0, size).is_err());
        }
        // A header describing more than its section.
        N_NUM.of(0).store(&*region, 64, Ordering::Relaxed).unwrap();
        assert!(ConsoleLayout::open_native(&*region, 0, size).is_err());
        let empty = HeapRegion::new(1 << 20);
        assert_eq!(
            ConsoleLayout::open_native(&*empty, 0, size),
            Err(ConsoleError::Initializing)
        );
    }

    #[test]
    fn each_side_keeps_its_own_words() {
        let region = HeapRegion::new(1 << 20);
        let shape = SMALL;
        let size = shape.section_size().unwrap();
        let layout = ConsoleLayout::create_native(&*region, 0, size, shape).unwrap();
        let driver = layout.side(SideKind::Driver).unwrap();
        let device = layout.side(SideKind::Device).unwrap();
        assert_eq!(driver.peer(&*region).unwrap(), None);
        assert_eq!(driver.attach(&*region, 3).unwrap(), 1);
        assert_eq!(driver.attach(&*region, 5).unwrap(), 2);
        assert_eq!(driver.peer(&*region).unwrap(), Some(5));
        assert_eq!(device.generation(&*region).unwrap(), 0);
        device.set_taken(&*region, 1 << 40).unwrap();
        device.set_ended(&*region, 1).unwrap();
        assert_eq!(driver.taken(&*region).unwrap(), 0);
        assert_eq!(
            layout.handshake,
            Handshake::Sequenced {
                request: driver.sequence_at(),
                ack: device.sequence_at()
            }
        );
        let header = NativeHeader::read(&*region, 0, size).unwrap();
        assert_eq!(header.sides[1].taken, 1 << 40);
        assert_eq!(header.sides[1].ended, 1);
        assert_eq!(header.sides[0].generation, 2);
    }
}
