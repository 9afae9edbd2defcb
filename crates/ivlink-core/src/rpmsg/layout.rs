//! Where a link's status, vrings and buffers live: one [`LinkLayout`] per profile.
//!
//! | profile | status | vrings | buffers | `desc.addr` |
//! |---|---|---|---|---|
//! | `native` | ivlink header in a directory section (generation + status) | after the header, 64-aligned | after the vrings | region offset |
//! | `openamp-linux` | OpenAMP resource table at 0, status byte at 0x2C | 0x4000 and 0x8000, 256 entries, align 0x1000 | 0x10000..0x50000 | region offset |
//! | `zephyr-ivshmem` | status byte at 0 | end − 0x800 and end − 0x400, 16 entries, align 4 | 0x400.. | host VM address of BAR2 + offset |

use core::sync::atomic::Ordering;

use super::RpmsgError;
use crate::PeerId;
use crate::region::{Le8, Le32, Region, check_bounds};
use crate::setup::{SetupState, SetupWord};
use crate::virtio::virtq::{Vring, VringLayout};
use crate::virtio::{AddressMap, status};

/// Which side of the link this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The virtio driver: owns the buffers (OpenAMP `RPMSG_HOST`, Linux).
    Host,
    /// The virtio device: uses the host's buffers (OpenAMP `RPMSG_REMOTE`).
    Remote,
}

/// The layouts ivlink speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// ivlink's own, found through the region directory; either side may start
    /// first or restart.
    Native,
    /// OpenAMP's Linux generic machine (`openamp.shm`, resource table at 0).
    OpenampLinux,
    /// openamp-system-reference `dual_qemu_ivshmem` (Zephyr on ivshmem-doorbell).
    ZephyrIvshmem,
}

/// The status as one value: ivlink's native header adds a generation that the
/// host bumps on every (re)start; foreign layouts have only the byte (generation 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlWord {
    /// Host start count (24 bits; 0 in foreign layouts).
    pub generation: u32,
    /// Virtio status byte.
    pub status: u8,
}

impl ControlWord {
    fn to_u32(self) -> u32 {
        (self.generation << 8) | u32::from(self.status)
    }

    fn from_u32(word: u32) -> Self {
        ControlWord {
            generation: word >> 8,
            status: word as u8,
        }
    }

    /// The host has finished setting up and nobody asked for a reset.
    pub fn ready(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && self.status & status::NEEDS_RESET == 0
    }
}

/// Where the status lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// ivlink's header at this region offset.
    Native {
        /// Region offset of the header.
        header: usize,
    },
    /// An OpenAMP `fw_rsc_vdev` at this region offset.
    ResourceTable {
        /// Region offset of the vdev resource.
        vdev: usize,
    },
    /// A bare status byte at this region offset.
    StatusByte {
        /// Region offset of the byte.
        at: usize,
    },
}

const NATIVE_MAGIC: u32 = u32::from_le_bytes(*b"RPM1");
/// The magic word of a native link whose setup another peer gave up on.
const NATIVE_ABANDONED: u32 = u32::from_le_bytes(*b"RPMX");
const N_MAGIC: usize = 0;

/// A native link's setup word: its magic (0 while the creator writes the header,
/// see [`crate::setup`]).
pub const NATIVE_SETUP: SetupWord = SetupWord {
    at: N_MAGIC,
    initializing: 0,
    ready: NATIVE_MAGIC,
    abandoned: NATIVE_ABANDONED,
};
const N_CONTROL: Le32 = Le32::at(8);
const N_ATTACHED: Le32 = Le32::at(12);
const N_NUM: Le32 = Le32::at(16);
const N_BUF_SIZE: Le32 = Le32::at(20);
const N_HOST_PEER: Le32 = Le32::at(24);
const N_REMOTE_PEER: Le32 = Le32::at(28);
const NATIVE_HEADER: usize = 64;
const NATIVE_ALIGN: usize = 64;
/// `attached` before any remote attached.
const NEVER_ATTACHED: u32 = u32::MAX;

const VDEV_DFEATURES: Le32 = Le32::at(12);
const VDEV_GFEATURES: Le32 = Le32::at(16);
const VDEV_STATUS: Le8 = Le8::at(24);

impl Control {
    /// Reads the status.
    pub fn load<R: Region + ?Sized>(&self, region: &R) -> Result<ControlWord, RpmsgError> {
        Ok(match *self {
            Control::Native { header } => {
                ControlWord::from_u32(N_CONTROL.of(header).load(region, Ordering::Acquire)?)
            }
            Control::ResourceTable { vdev } => ControlWord {
                generation: 0,
                status: VDEV_STATUS.of(vdev).load(region, Ordering::Acquire)?,
            },
            Control::StatusByte { at } => ControlWord {
                generation: 0,
                status: Le8::at(at).load(region, Ordering::Acquire)?,
            },
        })
    }

    /// Writes the status (the generation only where the layout has one).
    pub fn store<R: Region + ?Sized>(
        &self,
        region: &R,
        word: ControlWord,
    ) -> Result<(), RpmsgError> {
        match *self {
            Control::Native { header } => {
                N_CONTROL
                    .of(header)
                    .store(region, word.to_u32(), Ordering::Release)?
            }
            Control::ResourceTable { vdev } => {
                VDEV_STATUS
                    .of(vdev)
                    .store(region, word.status, Ordering::Release)?
            }
            Control::StatusByte { at } => {
                Le8::at(at).store(region, word.status, Ordering::Release)?
            }
        }
        Ok(())
    }

    /// Sets `NEEDS_RESET` if the status is still `seen`; false if it changed.
    pub(crate) fn request_reset<R: Region + ?Sized>(
        &self,
        region: &R,
        seen: ControlWord,
    ) -> Result<bool, RpmsgError> {
        let wanted = ControlWord {
            status: seen.status | status::NEEDS_RESET,
            ..seen
        };
        match *self {
            Control::Native { header } => Ok(N_CONTROL
                .of(header)
                .compare_exchange(region, seen.to_u32(), wanted.to_u32())?
                .is_ok()),
            _ => {
                self.store(region, wanted)?;
                Ok(true)
            }
        }
    }

    fn native_word<R: Region + ?Sized>(
        &self,
        region: &R,
        field: Le32,
    ) -> Result<Option<u32>, RpmsgError> {
        match *self {
            Control::Native { header } => {
                Ok(Some(field.of(header).load(region, Ordering::Acquire)?))
            }
            _ => Ok(None),
        }
    }

    fn set_native_word<R: Region + ?Sized>(
        &self,
        region: &R,
        field: Le32,
        value: u32,
    ) -> Result<(), RpmsgError> {
        if let Control::Native { header } = *self {
            field.of(header).store(region, value, Ordering::Release)?;
        }
        Ok(())
    }

    /// The generation the remote attached to (native only).
    pub fn attached<R: Region + ?Sized>(&self, region: &R) -> Result<Option<u32>, RpmsgError> {
        Ok(self
            .native_word(region, N_ATTACHED)?
            .filter(|&g| g != NEVER_ATTACHED))
    }

    pub(crate) fn set_attached<R: Region + ?Sized>(
        &self,
        region: &R,
        generation: u32,
    ) -> Result<(), RpmsgError> {
        self.set_native_word(region, N_ATTACHED, generation)
    }

    /// The peer id a side wrote into the native header (`None` if unset or foreign).
    pub fn peer_of<R: Region + ?Sized>(
        &self,
        region: &R,
        role: Role,
    ) -> Result<Option<PeerId>, RpmsgError> {
        let field = match role {
            Role::Host => N_HOST_PEER,
            Role::Remote => N_REMOTE_PEER,
        };
        Ok(self
            .native_word(region, field)?
            .and_then(|plus_one| plus_one.checked_sub(1))
            .and_then(|id| PeerId::try_from(id).ok()))
    }

    pub(crate) fn set_peer<R: Region + ?Sized>(
        &self,
        region: &R,
        role: Role,
        id: PeerId,
    ) -> Result<(), RpmsgError> {
        let field = match role {
            Role::Host => N_HOST_PEER,
            Role::Remote => N_REMOTE_PEER,
        };
        self.set_native_word(region, field, u32::from(id) + 1)
    }

    /// The host accepts the name-service feature (OpenAMP resource table only).
    pub(crate) fn accept_features<R: Region + ?Sized>(&self, region: &R) -> Result<(), RpmsgError> {
        if let Control::ResourceTable { vdev } = *self {
            let offered = VDEV_DFEATURES.of(vdev).load(region, Ordering::Acquire)?;
            let accepted = offered & (1 << super::wire::VIRTIO_RPMSG_F_NS);
            VDEV_GFEATURES
                .of(vdev)
                .store(region, accepted, Ordering::Release)?;
        }
        Ok(())
    }
}

/// Where everything of one link lives, and how descriptor addresses map to region
/// offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLayout {
    /// The profile this layout follows.
    pub profile: Profile,
    /// Where the status is.
    pub control: Control,
    /// Vring 0 (remote to host) and vring 1 (host to remote).
    pub vrings: [Vring; 2],
    /// Region offset of the buffer pool: `2 × num` buffers, RX first.
    pub pool: usize,
    /// Bytes of region a remote accepts buffers in.
    pub pool_len: usize,
    /// Bytes per buffer, header included.
    pub buf_size: u32,
    /// `desc.addr = address_base + region offset`.
    pub address_base: u64,
}

/// Shape of a native link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeShape {
    /// Entries per vring (a power of two, at most 1024).
    pub num: u16,
    /// Bytes per buffer, header included (at least 32; 512 by default).
    pub buf_size: u32,
}

impl Default for NativeShape {
    fn default() -> Self {
        NativeShape {
            num: 64,
            buf_size: 512,
        }
    }
}

impl NativeShape {
    fn check(&self) -> Result<VringLayout, RpmsgError> {
        if !(32..=65_536).contains(&self.buf_size) || self.buf_size % 8 != 0 {
            return Err(RpmsgError::Layout(
                "buffer size must be a multiple of 8 from 32 to 65536",
            ));
        }
        Ok(VringLayout::new(self.num, NATIVE_ALIGN)?)
    }

    /// Bytes of section this shape needs.
    pub fn section_size(&self) -> Result<usize, RpmsgError> {
        let ring = self.check()?;
        let rings = 2 * ring.size().next_multiple_of(NATIVE_ALIGN);
        Ok(NATIVE_HEADER + rings + 2 * usize::from(self.num) * self.buf_size as usize)
    }
}

impl LinkLayout {
    /// The buffer behind descriptor `id` of vring `ring` (host side).
    pub(crate) fn buffer(&self, ring: usize, id: u16) -> usize {
        let index = ring * usize::from(self.vrings[ring].layout().num()) + usize::from(id);
        self.pool + index * self.buf_size as usize
    }

    /// How descriptor addresses map to region offsets: `address_base + offset`,
    /// buffers accepted inside the pool only.
    pub fn address_map(&self) -> AddressMap {
        AddressMap::new(self.address_base, self.pool, self.pool_len)
    }

    /// Maps a descriptor's address and length to a region offset inside the pool.
    pub(crate) fn translate(&self, addr: u64, len: u32) -> Result<usize, RpmsgError> {
        self.address_map()
            .translate(addr, len)
            .map_err(|_| RpmsgError::Corrupt("a descriptor points outside the buffer pool"))
    }

    /// The address a descriptor carries for the buffer at region `offset`.
    pub(crate) fn address(&self, offset: usize) -> u64 {
        self.address_map().address_of(offset)
    }

    /// Writes a fresh native link into the section at `offset` of `size` bytes
    /// (only the peer that allocated the section does this).
    pub fn create_native<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        shape: NativeShape,
    ) -> Result<Self, RpmsgError> {
        let needed = shape.section_size()?;
        if needed > size || offset % NATIVE_ALIGN != 0 {
            return Err(RpmsgError::Layout("section too small or misaligned"));
        }
        check_bounds(offset, needed, region.len())?;
        NATIVE_SETUP.claim(region, offset)?;
        // The setup word (the magic) is ours to move by compare-and-exchange only.
        region.fill(offset + N_MAGIC + 4, needed - N_MAGIC - 4, 0)?;
        let put = |field: Le32, v: u32| field.of(offset).store(region, v, Ordering::Relaxed);
        put(N_NUM, u32::from(shape.num))?;
        put(N_BUF_SIZE, shape.buf_size)?;
        put(N_ATTACHED, NEVER_ATTACHED)?;
        // The magic last: a peer that sees it sees a complete header.
        NATIVE_SETUP.publish(region, offset)?;
        Self::open_native(region, offset, size)
    }

    /// Reads a native link's header from the section at `offset` and checks it
    /// against the section. `Err(Initializing)` while the creator is writing it.
    pub fn open_native<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, RpmsgError> {
        check_bounds(offset, size, region.len())?;
        if offset % NATIVE_ALIGN != 0 || size < NATIVE_HEADER {
            return Err(RpmsgError::Layout("section too small or misaligned"));
        }
        let get = |field: Le32, order| -> Result<u32, RpmsgError> {
            Ok(field.of(offset).load(region, order)?)
        };
        match NATIVE_SETUP.state(region, offset)? {
            SetupState::Ready => {}
            SetupState::Pending(0) | SetupState::Abandoned => return Err(RpmsgError::Initializing),
            SetupState::Pending(_) => {
                return Err(RpmsgError::Layout(
                    "the section does not hold an RPMsg link",
                ));
            }
        }
        let num = u16::try_from(get(N_NUM, Ordering::Relaxed)?)
            .map_err(|_| RpmsgError::Layout("bad queue size in the header"))?;
        let shape = NativeShape {
            num,
            buf_size: get(N_BUF_SIZE, Ordering::Relaxed)?,
        };
        if shape.section_size()? > size {
            return Err(RpmsgError::Layout(
                "the header describes more than the section",
            ));
        }
        let ring = shape.check()?;
        let ring_span = ring.size().next_multiple_of(NATIVE_ALIGN);
        let first = offset + NATIVE_HEADER;
        let pool = first + 2 * ring_span;
        Ok(LinkLayout {
            profile: Profile::Native,
            control: Control::Native { header: offset },
            vrings: [
                Vring::new(first, ring, region.len())?,
                Vring::new(first + ring_span, ring, region.len())?,
            ],
            pool,
            pool_len: 2 * usize::from(num) * shape.buf_size as usize,
            buf_size: shape.buf_size,
            address_base: 0,
        })
    }

    /// OpenAMP's Linux generic machine layout in a region of `region_len` bytes
    /// (0x80000 in the sample).
    pub fn openamp_linux(region_len: usize) -> Result<Self, RpmsgError> {
        let ring = VringLayout::new(256, 0x1000)?;
        if region_len < 0x50000 {
            return Err(RpmsgError::Layout(
                "the openamp-linux layout needs at least 0x50000 bytes",
            ));
        }
        Ok(LinkLayout {
            profile: Profile::OpenampLinux,
            control: Control::ResourceTable {
                vdev: resource_table::VDEV,
            },
            vrings: [
                Vring::new(0x4000, ring, region_len)?,
                Vring::new(0x8000, ring, region_len)?,
            ],
            pool: 0x10000,
            pool_len: 0x40000,
            buf_size: 512,
            address_base: 0,
        })
    }

    /// The `dual_qemu_ivshmem` layout in a region of `region_len` bytes, with
    /// descriptor addresses based at `address_base` (the Zephyr VMs' virtual mapping
    /// of BAR2, not its physical address; a remote learns it from the first RX
    /// descriptor, a host must be told: the remote never writes an address).
    pub fn zephyr_ivshmem(region_len: usize, address_base: u64) -> Result<Self, RpmsgError> {
        let ring = VringLayout::new(16, 4)?;
        if region_len < 0x4400 + 0x800 {
            return Err(RpmsgError::Layout(
                "the zephyr-ivshmem layout needs at least 0x4c00 bytes",
            ));
        }
        let end = region_len - region_len % 4;
        Ok(LinkLayout {
            profile: Profile::ZephyrIvshmem,
            control: Control::StatusByte { at: 0 },
            vrings: [
                Vring::new(end - 0x800, ring, region_len)?,
                Vring::new(end - 0x400, ring, region_len)?,
            ],
            pool: ZEPHYR_POOL,
            pool_len: end - 0x800 - ZEPHYR_POOL,
            buf_size: 512,
            address_base,
        })
    }
}

/// Start of the buffer pool in the `dual_qemu_ivshmem` layout.
pub const ZEPHYR_POOL: usize = 0x400;

/// OpenAMP's resource table as the Linux generic machine's remote writes it.
pub mod resource_table {
    use core::sync::atomic::Ordering;

    use super::RpmsgError;
    use crate::region::{Le8, Le32, Region};

    /// Region offset of the vdev resource (after the 20-byte table header).
    pub const VDEV: usize = 0x14;
    /// The vdev's `num_of_vrings` byte.
    const NUM_OF_VRINGS: Le8 = Le8::at(VDEV + 25);
    const RSC_VDEV: u32 = 3;
    const VRINGS: [(u32, u32); 2] = [(0x4000, 1), (0x8000, 2)];

    fn words() -> [(usize, u32); 17] {
        let mut w = [(0usize, 0u32); 17];
        let fields = [
            (0x00, 1),           // version
            (0x04, 1),           // one entry
            (0x10, VDEV as u32), // offset[0]
            (VDEV, RSC_VDEV),
            (VDEV + 4, crate::virtio::id::RPMSG),
            (VDEV + 8, 0),  // notifyid
            (VDEV + 12, 1), // dfeatures: name service
            (VDEV + 16, 0), // gfeatures
            (VDEV + 20, 0), // config_len
        ];
        w[..fields.len()].copy_from_slice(&fields);
        let mut i = fields.len();
        for (n, (da, notifyid)) in VRINGS.into_iter().enumerate() {
            let at = VDEV + 28 + 20 * n;
            for (k, v) in [da, 0x1000, 256, notifyid].into_iter().enumerate() {
                w[i] = (at + 4 * k, v);
                i += 1;
            }
        }
        w
    }

    /// Writes the table (the remote does this before anything else).
    pub fn write<R: Region + ?Sized>(region: &R) -> Result<(), RpmsgError> {
        region.fill(0, 0x100, 0)?;
        for (at, v) in words() {
            Le32::at(at).store(region, v, Ordering::Relaxed)?;
        }
        NUM_OF_VRINGS.store(region, 2, Ordering::Relaxed)?;
        region.fence(Ordering::Release);
        Ok(())
    }

    /// Whether the table is there and describes the layout ivlink expects.
    pub fn check<R: Region + ?Sized>(region: &R) -> Result<bool, RpmsgError> {
        for (at, v) in words() {
            // Fields the host writes may differ from the remote's initial values.
            if at == VDEV + 16 {
                continue;
            }
            if Le32::at(at).load(region, Ordering::Acquire)? != v {
                return Ok(false);
            }
        }
        Ok(NUM_OF_VRINGS.load(region, Ordering::Acquire)? == 2)
    }
}

/// Reads the native header's raw words for inspection: `(control, attached,
/// num, buf_size, host peer + 1, remote peer + 1)`.
pub fn native_header_words<R: Region + ?Sized>(
    region: &R,
    header: usize,
) -> Result<[u32; 6], RpmsgError> {
    let mut out = [0u32; 6];
    for (slot, field) in out.iter_mut().zip([
        N_CONTROL,
        N_ATTACHED,
        N_NUM,
        N_BUF_SIZE,
        N_HOST_PEER,
        N_REMOTE_PEER,
    ]) {
        *slot = field.of(header).load(region, Ordering::Acquire)?;
    }
    Ok(out)
}

/// A native link's header as read, nothing validated, for showing to people
/// (`ivlink inspect`). Values may be hostile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeHeader {
    /// The magic bytes: `RPM1` once set up, zero while being written, `RPMX` once
    /// given up on ([`NATIVE_SETUP`]).
    pub magic: [u8; 4],
    /// The setup word as a number.
    pub setup: u32,
    /// Generation and virtio status.
    pub control: ControlWord,
    /// The generation the remote attached to, as read (`u32::MAX`: never).
    pub attached: u32,
    /// Entries per vring.
    pub num: u32,
    /// Bytes per buffer, header included.
    pub buf_size: u32,
    /// The host's peer id + 1 (0: unset).
    pub host_peer: u32,
    /// The remote's peer id + 1 (0: unset).
    pub remote_peer: u32,
}

impl NativeHeader {
    /// Bytes of section the header needs (the vrings start there).
    pub const SIZE: usize = NATIVE_HEADER;

    /// Reads the header of the section at `offset` of `size` bytes. Fails only if
    /// the section lies outside the region, is smaller than [`Self::SIZE`] or
    /// misaligned.
    pub fn read<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, RpmsgError> {
        check_bounds(offset, size, region.len())?;
        if size < NATIVE_HEADER || offset % 4 != 0 {
            return Err(RpmsgError::Layout("section too small or misaligned"));
        }
        let setup = Le32::at(offset + N_MAGIC).load(region, Ordering::Acquire)?;
        let [control, attached, num, buf_size, host_peer, remote_peer] =
            native_header_words(region, offset)?;
        Ok(NativeHeader {
            magic: setup.to_le_bytes(),
            setup,
            control: ControlWord::from_u32(control),
            attached,
            num,
            buf_size,
            host_peer,
            remote_peer,
        })
    }

    /// The generation the remote attached to, `None` if it never did.
    pub fn attached_generation(&self) -> Option<u32> {
        Some(self.attached).filter(|&g| g != NEVER_ATTACHED)
    }

    /// The peer id a side wrote, `None` if unset or out of range.
    pub fn peer(&self, role: Role) -> Option<PeerId> {
        let plus_one = match role {
            Role::Host => self.host_peer,
            Role::Remote => self.remote_peer,
        };
        plus_one
            .checked_sub(1)
            .and_then(|id| PeerId::try_from(id).ok())
    }
}

/// A native link's section; the foreign layouts live outside the directory.
impl crate::section::SectionProtocol for LinkLayout {
    const KIND: crate::directory::SectionKind = crate::directory::SectionKind::Rpmsg;
    const SETUP: SetupWord = NATIVE_SETUP;
    type Shape = NativeShape;
    type Snapshot = NativeHeader;
    type Error = RpmsgError;

    fn section_size(shape: &NativeShape) -> Result<usize, RpmsgError> {
        shape.section_size()
    }

    fn create<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        shape: &NativeShape,
    ) -> Result<Self, RpmsgError> {
        LinkLayout::create_native(region, offset, size, *shape)
    }

    fn open<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, RpmsgError> {
        LinkLayout::open_native(region, offset, size)
    }

    fn is_initializing(error: &RpmsgError) -> bool {
        matches!(error, RpmsgError::Initializing)
    }

    fn wrong_kind() -> RpmsgError {
        RpmsgError::Layout("the section has another kind")
    }

    fn snapshot<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<NativeHeader, RpmsgError> {
        NativeHeader::read(region, offset, size)
    }
}
