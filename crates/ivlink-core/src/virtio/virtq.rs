//! Split virtqueues in the legacy contiguous layout, as OpenAMP, RPMsg-Lite and
//! Linux's rpmsg bus place them in shared memory.
//!
//! ```text
//! desc  [num]  { le64 addr; le32 len; le16 flags; le16 next; }   at +0
//! avail        { le16 flags; le16 idx; le16 ring[num]; le16 used_event; }   at +16·num
//! used         { le16 flags; le16 idx; { le32 id; le32 len; } ring[num]; le16 avail_event; }
//!                                                  at align_up(end of avail, align)
//! ```
//!
//! [`DriverQueue`] is the side that owns the buffers and posts them (the rpmsg
//! host); [`DeviceQueue`] is the side that takes posted buffers and returns them
//! used (the rpmsg remote). Both keep their own positions and the set of
//! descriptors the other side holds in private memory; the ring is never trusted.
//! An index that moves by more than it can, a descriptor id that is out of range or
//! not outstanding, a chained or indirect descriptor: each is a
//! [`VirtqError::Corrupt`], never a panic or an access outside the ring.
//!
//! Notification suppression follows virtio: the flags (`NO_NOTIFY`,
//! `NO_INTERRUPT`) by default, or the event indices when both sides negotiated
//! `VIRTIO_RING_F_EVENT_IDX`. `publish` returns whether the other side asked to be
//! notified; the caller rings the doorbell only then. `publish` is `expose` (the
//! index store that makes buffers visible) followed by `notify_due` (the fence and
//! the look at the other side's wish); a caller may split them to decide about
//! several exposures with one fence, as long as it decides before it waits.
//!
//! The driver writes a descriptor only when the table does not hold it already:
//! a buffer posted again with the same address, length and flags leaves the
//! descriptor's cache line shared with the device, which reads (and checks) it
//! without a miss.
//!
//! `prefetch_next` asks for the ring's lines the next take and return touch
//! before they are needed: an RPMsg link that just received a message (a reply
//! is likely) fetches them while it reads the message, instead of waiting for one
//! line after another, each last written by the other side, inside the send.
//!
//! The per-message operations are `#[inline(always)]`: an RPMsg link runs a
//! handful of them per message, and inlined, their `Result`s and positions stay
//! in registers instead of going through memory at every call.

use core::fmt;
use core::sync::atomic::Ordering;

use crate::region::field::Word;
use crate::region::{Intent, Le16, Le32, LeField, Region, RegionError};

/// Descriptor flag: the buffer continues in `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer (otherwise it reads it).
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors.
pub const DESC_F_INDIRECT: u16 = 4;
/// `avail.flags`: the driver does not want an interrupt for used buffers.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `used.flags`: the device does not want a notification for new buffers.
pub const USED_F_NO_NOTIFY: u16 = 1;
/// Feature bit: `used_event`/`avail_event` replace the flags.
pub const VIRTIO_RING_F_EVENT_IDX: u32 = super::features::RING_F_EVENT_IDX;

/// Largest queue size ivlink accepts (OpenAMP's Linux layout uses 256).
pub const MAX_QUEUE_SIZE: u16 = 1024;

const DESC_SIZE: usize = 16;
const USED_ELEM_SIZE: usize = 8;
/// `avail.flags` and `used.flags`, relative to their ring.
const RING_FLAGS: Le16 = Le16::at(0);
/// `avail.idx` and `used.idx`, relative to their ring.
const RING_IDX: Le16 = Le16::at(2);
/// `avail.ring[0]`, relative to the avail ring.
const AVAIL_RING: Le16 = Le16::at(4);
/// `used_elem.id`, relative to the element.
const USED_ELEM_ID: Le32 = Le32::at(0);
/// `used_elem.len`, relative to the element.
const USED_ELEM_LEN: Le32 = Le32::at(4);
const BITMAP_WORDS: usize = MAX_QUEUE_SIZE as usize / 64;

/// What went wrong with a virtqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtqError {
    /// The layout asked for cannot exist (size not a power of two, bad alignment,
    /// outside the region).
    Layout(&'static str),
    /// The other side wrote something no correct peer writes.
    Corrupt(&'static str),
    /// The descriptor is already outstanding (a local programming error).
    Busy(u16),
    /// The descriptor is not held by this side.
    NotHeld(u16),
    /// The region refused an access.
    Region(RegionError),
}

impl fmt::Display for VirtqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VirtqError::Layout(what) => write!(f, "invalid virtqueue layout: {what}"),
            VirtqError::Corrupt(what) => write!(f, "virtqueue corrupted by the peer: {what}"),
            VirtqError::Busy(id) => write!(f, "descriptor {id} is already outstanding"),
            VirtqError::NotHeld(id) => write!(f, "descriptor {id} is not held here"),
            VirtqError::Region(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for VirtqError {}

impl From<RegionError> for VirtqError {
    fn from(e: RegionError) -> Self {
        VirtqError::Region(e)
    }
}

/// The shape of one vring: entries and the alignment of its used ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringLayout {
    num: u16,
    align: usize,
}

impl VringLayout {
    /// A vring of `num` entries (a power of two up to [`MAX_QUEUE_SIZE`]) whose used
    /// ring is aligned to `align` (a power of two, at least 4).
    pub const fn new(num: u16, align: usize) -> Result<Self, VirtqError> {
        if num == 0 || !num.is_power_of_two() || num > MAX_QUEUE_SIZE {
            return Err(VirtqError::Layout(
                "queue size must be a power of two up to 1024",
            ));
        }
        if align < 4 || !align.is_power_of_two() {
            return Err(VirtqError::Layout(
                "alignment must be a power of two of at least 4",
            ));
        }
        Ok(VringLayout { num, align })
    }

    /// Entries in the ring.
    pub const fn num(&self) -> u16 {
        self.num
    }

    /// Alignment of the used ring (and of the vring's base).
    pub const fn align(&self) -> usize {
        self.align
    }

    /// Offset of the available ring from the vring's base.
    pub const fn avail_offset(&self) -> usize {
        DESC_SIZE * self.num as usize
    }

    /// Offset of the used ring from the vring's base.
    pub const fn used_offset(&self) -> usize {
        // `align` is a power of two (checked in `new`): a mask, not a division,
        // on every access to the used ring.
        let end_of_avail = self.avail_offset() + 6 + 2 * self.num as usize;
        (end_of_avail + self.align - 1) & !(self.align - 1)
    }

    /// Bytes the vring occupies (`vring_size(num, align)`).
    pub const fn size(&self) -> usize {
        self.used_offset() + 6 + USED_ELEM_SIZE * self.num as usize
    }
}

/// One descriptor as read from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Buffer address in the driver's address space (translation is the caller's).
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// `DESC_F_*` flags.
    pub flags: u16,
    /// Next descriptor of a chain.
    pub next: u16,
}

impl Descriptor {
    fn to_bytes(self) -> [u8; DESC_SIZE] {
        let mut b = [0u8; DESC_SIZE];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        b
    }

    fn from_bytes(b: [u8; DESC_SIZE]) -> Self {
        Descriptor {
            addr: u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
            len: u32::from_le_bytes(b[8..12].try_into().unwrap_or_default()),
            flags: u16::from_le_bytes([b[12], b[13]]),
            next: u16::from_le_bytes([b[14], b[15]]),
        }
    }
}

/// A vring placed in a region: offsets of its parts, with accessors that check
/// every index against `num` before touching the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vring {
    base: usize,
    layout: VringLayout,
    /// Region offsets of the avail and used rings, derived once in `new` (where
    /// the whole vring was checked to fit) instead of on every access.
    avail: usize,
    used: usize,
    /// `num - 1`: the slot of an index.
    mask: u16,
}

impl Vring {
    /// The vring at region offset `base`, which must be aligned to the layout's
    /// alignment and lie inside a region of `region_len` bytes.
    ///
    /// Alignment is checked on the offset: the region's own base is page-aligned
    /// wherever ivlink maps it, so peers agree on where `used` starts.
    pub fn new(base: usize, layout: VringLayout, region_len: usize) -> Result<Self, VirtqError> {
        if base % layout.align != 0 {
            return Err(VirtqError::Layout("vring base is not aligned"));
        }
        crate::region::check_bounds(base, layout.size(), region_len)
            .map_err(|_| VirtqError::Layout("vring does not fit in the region"))?;
        Ok(Vring {
            base,
            layout,
            avail: base + layout.avail_offset(),
            used: base + layout.used_offset(),
            mask: layout.num - 1,
        })
    }

    /// The vring's shape.
    pub fn layout(&self) -> VringLayout {
        self.layout
    }

    /// Region offset of the vring.
    pub fn base(&self) -> usize {
        self.base
    }

    fn num(&self) -> u16 {
        self.layout.num
    }

    fn slot(&self, idx: u16) -> usize {
        usize::from(idx & self.mask)
    }

    fn avail(&self) -> usize {
        self.avail
    }

    fn used(&self) -> usize {
        self.used
    }

    /// Zeroes the whole vring (the driver does this before first use).
    pub fn clear<R: Region + ?Sized>(&self, region: &R) -> Result<(), VirtqError> {
        region.fill(self.base, self.layout.size(), 0)?;
        Ok(())
    }

    /// Reads descriptor `id` (checked against `num`).
    #[inline(always)]
    pub fn descriptor<R: Region + ?Sized>(
        &self,
        region: &R,
        id: u16,
    ) -> Result<Descriptor, VirtqError> {
        if id >= self.num() {
            return Err(VirtqError::Corrupt("descriptor id out of range"));
        }
        let mut b = [0u8; DESC_SIZE];
        read_small(region, self.base + DESC_SIZE * usize::from(id), &mut b)?;
        Ok(Descriptor::from_bytes(b))
    }

    #[inline(always)]
    fn write_descriptor<R: Region + ?Sized>(
        &self,
        region: &R,
        id: u16,
        desc: Descriptor,
    ) -> Result<(), VirtqError> {
        write_small(
            region,
            self.base + DESC_SIZE * usize::from(id),
            &desc.to_bytes(),
        )?;
        Ok(())
    }

    /// `avail.flags` as written by the driver.
    pub fn avail_flags<R: Region + ?Sized>(&self, region: &R) -> Result<u16, VirtqError> {
        Ok(in_ring(RING_FLAGS, self.avail()).load(region, Ordering::Relaxed)?)
    }

    /// `avail.idx` as published by the driver.
    #[inline(always)]
    pub fn avail_idx<R: Region + ?Sized>(&self, region: &R) -> Result<u16, VirtqError> {
        Ok(in_ring(RING_IDX, self.avail()).load(region, Ordering::Acquire)?)
    }

    /// `used.flags` as written by the device.
    pub fn used_flags<R: Region + ?Sized>(&self, region: &R) -> Result<u16, VirtqError> {
        Ok(in_ring(RING_FLAGS, self.used()).load(region, Ordering::Relaxed)?)
    }

    /// `used.idx` as published by the device.
    #[inline(always)]
    pub fn used_idx<R: Region + ?Sized>(&self, region: &R) -> Result<u16, VirtqError> {
        Ok(in_ring(RING_IDX, self.used()).load(region, Ordering::Acquire)?)
    }

    #[inline(always)]
    fn avail_entry<R: Region + ?Sized>(&self, region: &R, idx: u16) -> Result<u16, VirtqError> {
        Ok(self.avail_slot(idx).load(region, Ordering::Relaxed)?)
    }

    /// `avail.ring[idx % num]`.
    fn avail_slot(&self, idx: u16) -> Le16 {
        in_ring(AVAIL_RING, self.avail() + 2 * self.slot(idx))
    }

    fn used_event_at(&self) -> Le16 {
        in_ring(AVAIL_RING, self.avail() + 2 * usize::from(self.num()))
    }

    fn avail_event_at(&self) -> Le16 {
        Le16::at(self.used() + 4 + USED_ELEM_SIZE * usize::from(self.num()))
    }

    /// Reads the used element for index `idx`: `(id, len)` as written.
    #[inline(always)]
    pub fn used_elem<R: Region + ?Sized>(
        &self,
        region: &R,
        idx: u16,
    ) -> Result<(u32, u32), VirtqError> {
        let at = self.used_elem_at(idx);
        let id = in_ring(USED_ELEM_ID, at).load(region, Ordering::Relaxed)?;
        let len = in_ring(USED_ELEM_LEN, at).load(region, Ordering::Relaxed)?;
        Ok((id, len))
    }

    /// Region offset of the used element for index `idx`.
    #[inline(always)]
    fn used_elem_at(&self, idx: u16) -> usize {
        self.used() + 4 + USED_ELEM_SIZE * self.slot(idx)
    }

    /// Prefetches the used element for index `idx`: both its ends, as a ring
    /// aligned to less than a line can put an element across two.
    #[inline(always)]
    fn prefetch_used_elem<R: Region + ?Sized>(&self, region: &R, idx: u16, intent: Intent) {
        let at = self.used_elem_at(idx);
        region.prefetch(at, intent);
        region.prefetch(at + USED_ELEM_SIZE - 1, intent);
    }

    /// Says whether the other side asked to hear of this side's index moving
    /// `old -> new` (already stored): through its event index at `event_at`, or
    /// through `suppress` not being set in its flags at `flags_at`. Fences first
    /// unless the caller did (`fenced`) after the store.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn wants_notice<R: Region + ?Sized>(
        region: &R,
        (old, new): (u16, u16),
        event_idx: bool,
        event_at: Le16,
        flags_at: Le16,
        suppress: u16,
        fenced: bool,
    ) -> Result<bool, VirtqError> {
        if old == new {
            return Ok(false);
        }
        // Publishing our index and reading the other side's wish must not be
        // reordered.
        if !fenced {
            region.fence(Ordering::SeqCst);
        }
        if event_idx {
            let event = event_at.load(region, Ordering::Relaxed)?;
            Ok(need_event(event, new, old))
        } else {
            Ok(flags_at.load(region, Ordering::Relaxed)? & suppress == 0)
        }
    }

    /// Tells the other side whether this side wants to hear of its progress: its
    /// event index at `event_at` (set to `position`) or `suppress` in its flags.
    #[allow(clippy::too_many_arguments)]
    fn request_wakeups<R: Region + ?Sized>(
        &self,
        region: &R,
        enabled: bool,
        event_idx: bool,
        event_at: Le16,
        position: u16,
        flags_at: Le16,
        suppress: u16,
    ) -> Result<(), VirtqError> {
        if event_idx {
            if enabled {
                event_at.store(region, position, Ordering::Relaxed)?;
            }
        } else {
            let flags = if enabled { 0 } else { suppress };
            flags_at.store(region, flags, Ordering::Relaxed)?;
        }
        if enabled {
            // The request must be visible before the caller looks for progress
            // made without a notification.
            region.fence(Ordering::SeqCst);
        }
        Ok(())
    }

    /// Reads the avail entry for index `idx` (the head descriptor id, unchecked).
    pub fn avail_head<R: Region + ?Sized>(&self, region: &R, idx: u16) -> Result<u16, VirtqError> {
        self.avail_entry(region, idx)
    }
}

/// `field` of the ring part at `base`: a plain sum, as every part of a vring
/// was checked to lie inside the region when the [`Vring`] was made (so it
/// cannot overflow; the region still checks the access).
#[inline(always)]
fn in_ring<T: Word>(field: LeField<T>, base: usize) -> LeField<T> {
    LeField::at(base + field.offset())
}

/// Copies `buf.len()` bytes (a multiple of 8) at `offset` out of the region: as
/// whole words where the offset allows (two moves for a descriptor, not a
/// byte-by-byte head and tail), else byte-exact.
#[inline(always)]
fn read_small<R: Region + ?Sized>(
    region: &R,
    offset: usize,
    buf: &mut [u8],
) -> Result<(), VirtqError> {
    if offset % 8 == 0 && region.read_words(offset, buf).is_ok() {
        return Ok(());
    }
    Ok(region.read(offset, buf)?)
}

/// The writing counterpart of [`read_small`].
#[inline(always)]
fn write_small<R: Region + ?Sized>(
    region: &R,
    offset: usize,
    data: &[u8],
) -> Result<(), VirtqError> {
    if offset % 8 == 0 && region.write_words(offset, data).is_ok() {
        return Ok(());
    }
    Ok(region.write(offset, data)?)
}

/// Whether index moves from `old` to `new` crossed `event` (virtio's
/// `vring_need_event`).
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// The descriptors one side knows the other side holds: private memory, so a peer
/// cannot make us double-count or accept an id we never handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outstanding {
    bits: [u64; BITMAP_WORDS],
    count: u16,
}

impl Outstanding {
    const fn new() -> Self {
        Outstanding {
            bits: [0; BITMAP_WORDS],
            count: 0,
        }
    }

    /// The word holding `id`'s bit, and the bit: callers look the word up with
    /// `get`, one range check for both the test and the update.
    #[inline(always)]
    fn bit(id: u16) -> (usize, u64) {
        (usize::from(id) / 64, 1 << (id % 64))
    }

    #[inline(always)]
    fn contains(&self, id: u16) -> bool {
        let (word, bit) = Self::bit(id);
        self.bits.get(word).is_some_and(|w| w & bit != 0)
    }

    /// Marks `id` (below `MAX_QUEUE_SIZE`); false if it already was.
    #[inline(always)]
    fn insert(&mut self, id: u16) -> bool {
        let (word, bit) = Self::bit(id);
        match self.bits.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                self.count += 1;
                true
            }
            _ => false,
        }
    }

    #[inline(always)]
    fn remove(&mut self, id: u16) -> bool {
        let (word, bit) = Self::bit(id);
        match self.bits.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                self.count -= 1;
                true
            }
            _ => false,
        }
    }
}

/// The driver's half of a vring: posts buffers, takes them back used.
#[derive(Debug, Clone)]
pub struct DriverQueue {
    ring: Vring,
    event_idx: bool,
    /// Next avail index to fill (private shadow; the ring's copy is never read back).
    avail_idx: u16,
    /// `avail_idx` as last published.
    published: u16,
    /// `published` as of the last notification decision.
    decided: u16,
    last_used: u16,
    /// `used.idx` as last read and validated (as `DeviceQueue::avail_seen`): used
    /// elements up to it are taken without reading the index again.
    used_seen: u16,
    with_device: Outstanding,
}

/// A buffer the device returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedBuffer {
    /// Its descriptor (validated: one the driver had posted).
    pub id: u16,
    /// Bytes the device says it wrote (unvalidated beyond being a `u32`).
    pub len: u32,
}

impl DriverQueue {
    /// The driver side of `ring`. Call [`DriverQueue::reset`] before first use.
    pub fn new(ring: Vring, event_idx: bool) -> Self {
        DriverQueue {
            ring,
            event_idx,
            avail_idx: 0,
            published: 0,
            decided: 0,
            last_used: 0,
            used_seen: 0,
            with_device: Outstanding::new(),
        }
    }

    /// The vring.
    pub fn ring(&self) -> &Vring {
        &self.ring
    }

    /// Zeroes the ring and forgets every posted buffer (the driver's (re)start).
    pub fn reset<R: Region + ?Sized>(&mut self, region: &R) -> Result<(), VirtqError> {
        self.ring.clear(region)?;
        *self = DriverQueue::new(self.ring, self.event_idx);
        Ok(())
    }

    /// Descriptors the device holds.
    pub fn outstanding(&self) -> u16 {
        self.with_device.count
    }

    /// Whether descriptor `id` is with the device.
    pub fn is_outstanding(&self, id: u16) -> bool {
        self.with_device.contains(id)
    }

    /// Writes descriptor `id` for one buffer and queues it on the available ring;
    /// the device sees it after [`DriverQueue::publish`].
    #[inline(always)]
    pub fn post<R: Region + ?Sized>(
        &mut self,
        region: &R,
        id: u16,
        addr: u64,
        len: u32,
        device_writes: bool,
    ) -> Result<(), VirtqError> {
        if id >= self.ring.num() {
            return Err(VirtqError::Layout("descriptor id out of range"));
        }
        if self.with_device.contains(id) {
            return Err(VirtqError::Busy(id));
        }
        let flags = if device_writes { DESC_F_WRITE } else { 0 };
        let desc = Descriptor {
            addr,
            len,
            flags,
            next: 0,
        };
        // A buffer posted again usually finds its descriptor as it left it: then
        // the line stays shared with the device. The bytes read are only compared.
        if self.ring.descriptor(region, id)? != desc {
            self.ring.write_descriptor(region, id, desc)?;
        }
        let slot = self.ring.avail_slot(self.avail_idx);
        slot.store(region, id, Ordering::Relaxed)?;
        self.with_device.insert(id);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        Ok(())
    }

    /// Publishes everything posted since the last call; returns whether the device
    /// asked to be notified (ring its doorbell then). [`expose`](Self::expose)
    /// then [`notify_due`](Self::notify_due).
    pub fn publish<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, VirtqError> {
        self.expose(region)?;
        self.notify_due(region)
    }

    /// Makes everything posted since the last call visible to the device, without
    /// deciding about its doorbell: call [`notify_due`](Self::notify_due) before
    /// waiting. Returns whether anything was new.
    #[inline(always)]
    pub fn expose<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, VirtqError> {
        if self.published == self.avail_idx {
            return Ok(false);
        }
        in_ring(RING_IDX, self.ring.avail()).store(region, self.avail_idx, Ordering::Release)?;
        self.published = self.avail_idx;
        Ok(true)
    }

    /// Whether the device asked to be notified of what was exposed since the last
    /// decision: one fence and one look at its flags (or event index) for all of it;
    /// false without a look when nothing was exposed.
    pub fn notify_due<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, VirtqError> {
        self.decide(region, false)
    }

    /// Whether something was exposed since the last notification decision.
    #[inline(always)]
    pub fn undecided(&self) -> bool {
        self.decided != self.published
    }

    /// [`notify_due`](Self::notify_due) for a caller that fenced
    /// (`region.fence(SeqCst)`) after its last exposure: several queues are
    /// decided about with one fence.
    #[inline(always)]
    pub fn notify_due_fenced<R: Region + ?Sized>(
        &mut self,
        region: &R,
    ) -> Result<bool, VirtqError> {
        self.decide(region, true)
    }

    #[inline(always)]
    fn decide<R: Region + ?Sized>(&mut self, region: &R, fenced: bool) -> Result<bool, VirtqError> {
        let ring = &self.ring;
        let moved = (self.decided, self.published);
        self.decided = self.published;
        Vring::wants_notice(
            region,
            moved,
            self.event_idx,
            ring.avail_event_at(),
            in_ring(RING_FLAGS, ring.used()),
            USED_F_NO_NOTIFY,
            fenced,
        )
    }

    /// Prefetches the lines the next [`take_used`](Self::take_used),
    /// [`post`](Self::post) and [`expose`](Self::expose) touch in the ring (the
    /// used index and element; the avail slot and index, owned), so a caller
    /// that knows a post is coming soon does not wait for them one after another.
    #[inline(always)]
    pub fn prefetch_next<R: Region + ?Sized>(&self, region: &R) {
        let ring = &self.ring;
        if self.used_seen == self.last_used {
            region.prefetch(ring.used() + RING_IDX.offset(), Intent::Read);
        }
        ring.prefetch_used_elem(region, self.last_used, Intent::Read);
        region.prefetch(ring.avail_slot(self.avail_idx).offset(), Intent::Write);
        region.prefetch(ring.avail() + RING_IDX.offset(), Intent::Write);
    }

    /// Takes the next used buffer, if any.
    #[inline(always)]
    pub fn take_used<R: Region + ?Sized>(
        &mut self,
        region: &R,
    ) -> Result<Option<UsedBuffer>, VirtqError> {
        self.take(region, true)
    }

    /// [`take_used`](Self::take_used) for a buffer the device only read: its
    /// length as the device reports it is not read (and is 0 here).
    #[inline(always)]
    pub fn take_used_unwritten<R: Region + ?Sized>(
        &mut self,
        region: &R,
    ) -> Result<Option<UsedBuffer>, VirtqError> {
        self.take(region, false)
    }

    #[inline(always)]
    fn take<R: Region + ?Sized>(
        &mut self,
        region: &R,
        with_len: bool,
    ) -> Result<Option<UsedBuffer>, VirtqError> {
        if self.used_seen == self.last_used {
            let used_idx = self.ring.used_idx(region)?;
            let pending = used_idx.wrapping_sub(self.last_used);
            if pending == 0 {
                return Ok(None);
            }
            if pending > self.with_device.count {
                return Err(VirtqError::Corrupt(
                    "used index moved past the buffers posted",
                ));
            }
            self.used_seen = used_idx;
        }
        // Elements up to `used_seen` fitted the buffers posted then; each one
        // taken since returned one of them, so the rest still fit.
        let at = self.ring.used_elem_at(self.last_used);
        let id = in_ring(USED_ELEM_ID, at).load(region, Ordering::Relaxed)?;
        let len = if with_len {
            in_ring(USED_ELEM_LEN, at).load(region, Ordering::Relaxed)?
        } else {
            0
        };
        let id = u16::try_from(id)
            .ok()
            .filter(|&id| id < self.ring.num())
            .ok_or(VirtqError::Corrupt("used element names no descriptor"))?;
        if !self.with_device.remove(id) {
            return Err(VirtqError::Corrupt(
                "used element returns a buffer the device does not hold",
            ));
        }
        self.last_used = self.last_used.wrapping_add(1);
        if self.event_idx {
            self.ring
                .used_event_at()
                .store(region, self.last_used, Ordering::Relaxed)?;
        }
        Ok(Some(UsedBuffer { id, len }))
    }

    /// Whether the device has returned buffers not taken yet.
    pub fn has_used<R: Region + ?Sized>(&self, region: &R) -> Result<bool, VirtqError> {
        Ok(self.used_seen != self.last_used || self.ring.used_idx(region)? != self.last_used)
    }

    /// Asks the device to interrupt (or not) when it returns buffers. Enabling
    /// returns whether buffers arrived meanwhile: then do not sleep.
    pub fn set_interrupts<R: Region + ?Sized>(
        &mut self,
        region: &R,
        enabled: bool,
    ) -> Result<bool, VirtqError> {
        let ring = self.ring;
        ring.request_wakeups(
            region,
            enabled,
            self.event_idx,
            ring.used_event_at(),
            self.last_used,
            in_ring(RING_FLAGS, ring.avail()),
            AVAIL_F_NO_INTERRUPT,
        )?;
        Ok(enabled && self.has_used(region)?)
    }
}

/// A buffer the driver posted, taken by the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvailBuffer {
    /// Its head descriptor (validated: in range and not already held).
    pub id: u16,
    /// Address as written by the driver (translate and bounds-check before use).
    pub addr: u64,
    /// Length as written by the driver.
    pub len: u32,
    /// Whether the device may write it (`DESC_F_WRITE`).
    pub device_writes: bool,
}

/// The device's half of a vring: takes posted buffers, returns them used.
#[derive(Debug, Clone)]
pub struct DeviceQueue {
    ring: Vring,
    event_idx: bool,
    last_avail: u16,
    /// `avail.idx` as last read and validated: entries up to it are taken without
    /// reading the index (and its cache line) again. A driver never takes back
    /// what it published, so the value can only be behind, never wrong.
    avail_seen: u16,
    used_idx: u16,
    published: u16,
    /// `published` as of the last notification decision.
    decided: u16,
    held: Outstanding,
}

impl DeviceQueue {
    /// The device side of `ring`, starting from a freshly reset ring.
    pub fn new(ring: Vring, event_idx: bool) -> Self {
        DeviceQueue {
            ring,
            event_idx,
            last_avail: 0,
            avail_seen: 0,
            used_idx: 0,
            published: 0,
            decided: 0,
            held: Outstanding::new(),
        }
    }

    /// The vring.
    pub fn ring(&self) -> &Vring {
        &self.ring
    }

    /// Buffers taken and not returned yet.
    pub fn held(&self) -> u16 {
        self.held.count
    }

    /// Whether the driver has posted buffers not taken yet.
    pub fn has_avail<R: Region + ?Sized>(&self, region: &R) -> Result<bool, VirtqError> {
        Ok(self.avail_seen != self.last_avail || self.ring.avail_idx(region)? != self.last_avail)
    }

    /// Takes the next posted buffer, if any.
    #[inline(always)]
    pub fn take_avail<R: Region + ?Sized>(
        &mut self,
        region: &R,
    ) -> Result<Option<AvailBuffer>, VirtqError> {
        if self.avail_seen == self.last_avail {
            let avail_idx = self.ring.avail_idx(region)?;
            let pending = avail_idx.wrapping_sub(self.last_avail);
            if pending == 0 {
                return Ok(None);
            }
            if pending > self.ring.num() - self.held.count {
                return Err(VirtqError::Corrupt(
                    "available index moved past the ring's free entries",
                ));
            }
            self.avail_seen = avail_idx;
        }
        // Entries up to `avail_seen` were validated as fitting the free entries
        // then; each one taken since holds one more buffer, so they still fit.
        let id = self.ring.avail_entry(region, self.last_avail)?;
        if id >= self.ring.num() {
            return Err(VirtqError::Corrupt("available entry names no descriptor"));
        }
        if self.held.contains(id) {
            return Err(VirtqError::Corrupt(
                "available entry repeats a buffer already taken",
            ));
        }
        let desc = self.ring.descriptor(region, id)?;
        if desc.flags & (DESC_F_NEXT | DESC_F_INDIRECT) != 0 {
            return Err(VirtqError::Corrupt(
                "chained or indirect descriptors are not used here",
            ));
        }
        self.held.insert(id);
        self.last_avail = self.last_avail.wrapping_add(1);
        if self.event_idx {
            self.ring
                .avail_event_at()
                .store(region, self.last_avail, Ordering::Relaxed)?;
        }
        Ok(Some(AvailBuffer {
            id,
            addr: desc.addr,
            len: desc.len,
            device_writes: desc.flags & DESC_F_WRITE != 0,
        }))
    }

    /// Prefetches the lines the next [`take_avail`](Self::take_avail),
    /// [`put_used`](Self::put_used) and [`expose`](Self::expose) touch in the
    /// ring (the avail index and entry; the used element and index, owned), so a
    /// caller that knows a buffer is needed soon does not wait for them one after
    /// another.
    #[inline(always)]
    pub fn prefetch_next<R: Region + ?Sized>(&self, region: &R) {
        let ring = &self.ring;
        if self.avail_seen == self.last_avail {
            region.prefetch(ring.avail() + RING_IDX.offset(), Intent::Read);
        }
        region.prefetch(ring.avail_slot(self.last_avail).offset(), Intent::Read);
        ring.prefetch_used_elem(region, self.used_idx, Intent::Write);
        region.prefetch(ring.used() + RING_IDX.offset(), Intent::Write);
    }

    /// Returns buffer `id` with `len` bytes written; the driver sees it after
    /// [`DeviceQueue::publish`].
    #[inline(always)]
    pub fn put_used<R: Region + ?Sized>(
        &mut self,
        region: &R,
        id: u16,
        len: u32,
    ) -> Result<(), VirtqError> {
        if !self.held.contains(id) {
            return Err(VirtqError::NotHeld(id));
        }
        let at = self.ring.used_elem_at(self.used_idx);
        in_ring(USED_ELEM_ID, at).store(region, u32::from(id), Ordering::Relaxed)?;
        in_ring(USED_ELEM_LEN, at).store(region, len, Ordering::Relaxed)?;
        self.held.remove(id);
        self.used_idx = self.used_idx.wrapping_add(1);
        Ok(())
    }

    /// Publishes everything returned since the last call; returns whether the
    /// driver asked for an interrupt. [`expose`](Self::expose) then
    /// [`notify_due`](Self::notify_due).
    pub fn publish<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, VirtqError> {
        self.expose(region)?;
        self.notify_due(region)
    }

    /// Makes everything returned since the last call visible to the driver,
    /// without deciding about its interrupt: call [`notify_due`](Self::notify_due)
    /// before waiting. Returns whether anything was new.
    #[inline(always)]
    pub fn expose<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, VirtqError> {
        if self.published == self.used_idx {
            return Ok(false);
        }
        in_ring(RING_IDX, self.ring.used()).store(region, self.used_idx, Ordering::Release)?;
        self.published = self.used_idx;
        Ok(true)
    }

    /// Whether the driver asked for an interrupt for what was exposed since the
    /// last decision: one fence and one look at its flags (or event index) for all
    /// of it; false without a look when nothing was exposed.
    pub fn notify_due<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, VirtqError> {
        self.decide(region, false)
    }

    /// Whether something was exposed since the last notification decision.
    #[inline(always)]
    pub fn undecided(&self) -> bool {
        self.decided != self.published
    }

    /// [`notify_due`](Self::notify_due) for a caller that fenced
    /// (`region.fence(SeqCst)`) after its last exposure: several queues are
    /// decided about with one fence.
    #[inline(always)]
    pub fn notify_due_fenced<R: Region + ?Sized>(
        &mut self,
        region: &R,
    ) -> Result<bool, VirtqError> {
        self.decide(region, true)
    }

    #[inline(always)]
    fn decide<R: Region + ?Sized>(&mut self, region: &R, fenced: bool) -> Result<bool, VirtqError> {
        let ring = &self.ring;
        let moved = (self.decided, self.published);
        self.decided = self.published;
        Vring::wants_notice(
            region,
            moved,
            self.event_idx,
            ring.used_event_at(),
            in_ring(RING_FLAGS, ring.avail()),
            AVAIL_F_NO_INTERRUPT,
            fenced,
        )
    }

    /// Asks the driver to notify (or not) when it posts buffers. Enabling returns
    /// whether buffers arrived meanwhile: then do not sleep.
    pub fn set_notifications<R: Region + ?Sized>(
        &mut self,
        region: &R,
        enabled: bool,
    ) -> Result<bool, VirtqError> {
        let ring = self.ring;
        ring.request_wakeups(
            region,
            enabled,
            self.event_idx,
            ring.avail_event_at(),
            self.last_avail,
            in_ring(RING_FLAGS, ring.used()),
            USED_F_NO_NOTIFY,
        )?;
        Ok(enabled && self.has_avail(region)?)
    }
}

#[cfg(test)]
mod tests;
