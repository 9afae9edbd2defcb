//! Zero-copy grants: a record's payload written or read in place in the ring,
//! like iceoryx2's loans.
//!
//! [`Producer::reserve`] claims room for a record of `len` payload bytes and
//! returns a [`WriteGrant`] over them; the caller writes the message where it will
//! be read, then [`commit`](WriteGrant::commit)s it (visible at the next
//! [`Producer::publish`], like [`Producer::try_send`]). A grant dropped without a
//! commit leaves nothing visible: the record's header is written only at commit.
//! [`Consumer::peek`] returns a [`ReadGrant`] over the next record's payload,
//! validated like [`Consumer::try_recv`] validates it; [`release`](ReadGrant::release)
//! consumes the record (its space returns to the producer at the next
//! [`Consumer::release`]), and a grant dropped without it leaves the record in
//! the ring.
//!
//! # Why no `&[u8]` / `&mut [u8]` into the ring
//!
//! The other peer is not trusted and shares the bytes: it may write them at any
//! moment, even a record it has handed over. A Rust reference promises that
//! nothing else changes the memory while it lives (`&[u8]`) or that nothing else
//! even reads it (`&mut [u8]`); a concurrent write through the mapping would make
//! that promise false, which is undefined behaviour, however the bytes are used.
//! So grants expose accessors instead: each one is a bounds-checked volatile copy
//! through the [`Region`], checked against the grant's length, which was itself
//! checked against the ring once (at reserve time against the free space, at peek
//! time against the published data). A peer that rewrites the record's length or
//! the indices while a grant is open changes nothing the grant relies on; the
//! consumer notices a bad index or length at its next re-read and poisons.
//!
//! # Records that wrap
//!
//! Records start at multiples of 8, so a header never wraps, but a payload may
//! run past the end of the data area and continue at its start. Grants keep the
//! ring's format (no padding record, no wasted space) and split each access at
//! the wrap point, so a wrapped record costs at most one extra copy per access.

use core::fmt;

use super::{Consumer, Producer, RECORD_HEADER, RingError, record_size_u64};
use crate::region::{Area, Region};

/// `len` bytes of a ring's data area starting at the free-running `position`,
/// wrapping at the end: the place a grant lends out.
#[derive(Debug)]
pub(crate) struct Span<'r, R: Region + ?Sized> {
    area: Area<'r, R>,
    position: u64,
    len: usize,
}

impl<'r, R: Region + ?Sized> Span<'r, R> {
    pub(crate) fn new(area: Area<'r, R>, position: u64, len: usize) -> Self {
        Span {
            area,
            position,
            len,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Checks that `offset..offset + len` lies inside the span.
    fn check(&self, offset: usize, len: usize) -> Result<u64, RingError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(self.position.wrapping_add(offset as u64)),
            _ => Err(RingError::OutsideGrant {
                offset,
                len,
                grant: self.len,
            }),
        }
    }

    pub(crate) fn write(&self, offset: usize, data: &[u8]) -> Result<(), RingError> {
        let at = self.check(offset, data.len())?;
        Ok(self.area.write_wrapping(at, data)?)
    }

    pub(crate) fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), RingError> {
        let at = self.check(offset, len)?;
        Ok(self.area.fill_wrapping(at, len, byte)?)
    }

    pub(crate) fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), RingError> {
        let at = self.check(offset, buf.len())?;
        Ok(self.area.read_wrapping(at, buf)?)
    }
}

/// A record's payload lent to the producer, written in place (see the [module
/// docs](self)). Holds the producer until committed or dropped.
pub struct WriteGrant<'g, 'r, R: Region + ?Sized> {
    producer: &'g mut Producer<'r, R>,
    span: Span<'r, R>,
}

impl<R: Region + ?Sized> fmt::Debug for WriteGrant<'_, '_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteGrant")
            .field("head", &self.producer.head)
            .field("len", &self.span.len)
            .finish()
    }
}

impl<R: Region + ?Sized> WriteGrant<'_, '_, R> {
    /// The payload's length (what [`commit`](Self::commit) sends).
    pub fn len(&self) -> usize {
        self.span.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.span.len() == 0
    }

    /// Copies `data` into the payload at `offset`; an error if it does not fit
    /// the grant.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), RingError> {
        self.span.write(offset, data)
    }

    /// Sets `len` payload bytes from `offset` to `byte`.
    pub fn fill(&mut self, offset: usize, len: usize, byte: u8) -> Result<(), RingError> {
        self.span.fill(offset, len, byte)
    }

    /// Writes `value` little-endian at `offset` (any alignment).
    pub fn write_u32_le(&mut self, offset: usize, value: u32) -> Result<(), RingError> {
        self.write(offset, &value.to_le_bytes())
    }

    /// Writes `value` little-endian at `offset` (any alignment).
    pub fn write_u64_le(&mut self, offset: usize, value: u64) -> Result<(), RingError> {
        self.write(offset, &value.to_le_bytes())
    }

    /// Shortens the payload to `len` bytes (no effect if it is shorter already);
    /// the room beyond returns to the ring at commit.
    pub fn truncate(&mut self, len: usize) {
        self.span.truncate(len);
    }

    /// Appends the record: writes its header and padding, then moves the
    /// producer's index past it. Visible to the consumer at the next
    /// [`Producer::publish`], like a message from [`Producer::try_send`].
    pub fn commit(self) -> Result<(), RingError> {
        let producer = self.producer;
        let len = self.span.len();
        let size = record_size_u64(len);
        // The padding, so a record reads the same as one `try_send` wrote.
        let payload_end = producer.head.wrapping_add((RECORD_HEADER + len) as u64);
        let pad = (size as usize) - RECORD_HEADER - len;
        if pad > 0 {
            producer
                .area
                .write_wrapping(payload_end, &[0u8; 8][..pad])?;
        }
        producer
            .area
            .write_words(producer.head, &(len as u64).to_le_bytes())?;
        producer.head = producer.head.wrapping_add(size);
        Ok(())
    }
}

/// The next record's payload lent to the consumer, read in place (see the
/// [module docs](self)). Holds the consumer until released or dropped.
pub struct ReadGrant<'g, 'r, R: Region + ?Sized> {
    consumer: &'g mut Consumer<'r, R>,
    span: Span<'r, R>,
    size: u64,
}

impl<R: Region + ?Sized> fmt::Debug for ReadGrant<'_, '_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadGrant")
            .field("tail", &self.consumer.tail)
            .field("len", &self.span.len)
            .finish()
    }
}

impl<R: Region + ?Sized> ReadGrant<'_, '_, R> {
    /// The payload's length, as validated at [`Consumer::peek`].
    pub fn len(&self) -> usize {
        self.span.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.span.len() == 0
    }

    /// Copies `buf.len()` payload bytes from `offset` into `buf`; an error if
    /// they are not all inside the record.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), RingError> {
        self.span.read(offset, buf)
    }

    /// The byte at `offset`.
    pub fn read_u8(&self, offset: usize) -> Result<u8, RingError> {
        Ok(self.read_array::<1>(offset)?[0])
    }

    /// The little-endian 16-bit value at `offset` (any alignment).
    pub fn read_u16_le(&self, offset: usize) -> Result<u16, RingError> {
        Ok(u16::from_le_bytes(self.read_array(offset)?))
    }

    /// The little-endian 32-bit value at `offset` (any alignment).
    pub fn read_u32_le(&self, offset: usize) -> Result<u32, RingError> {
        Ok(u32::from_le_bytes(self.read_array(offset)?))
    }

    /// The little-endian 64-bit value at `offset` (any alignment).
    pub fn read_u64_le(&self, offset: usize) -> Result<u64, RingError> {
        Ok(u64::from_le_bytes(self.read_array(offset)?))
    }

    fn read_array<const N: usize>(&self, offset: usize) -> Result<[u8; N], RingError> {
        let mut bytes = [0u8; N];
        self.read(offset, &mut bytes)?;
        Ok(bytes)
    }

    /// Consumes the record, as [`Consumer::try_recv`] would have; its space
    /// returns to the producer at the next [`Consumer::release`].
    pub fn release(self) {
        self.consumer.tail = self.consumer.tail.wrapping_add(self.size);
    }
}

impl<'r, R: Region + ?Sized> Producer<'r, R> {
    /// Claims room for a record of `len` payload bytes and lends the payload in
    /// place: `None` if the ring has no room for it yet. Nothing is visible
    /// until the grant is [committed](WriteGrant::commit) and published.
    pub fn reserve(&mut self, len: usize) -> Result<Option<WriteGrant<'_, 'r, R>>, RingError> {
        if self.free_cached() < record_size_u64(len) && !self.make_room(len)? {
            return Ok(None);
        }
        let span = Span::new(self.area, self.head.wrapping_add(RECORD_HEADER as u64), len);
        Ok(Some(WriteGrant {
            producer: self,
            span,
        }))
    }
}

impl<'r, R: Region + ?Sized> Consumer<'r, R> {
    /// Lends the next record's payload in place, its length validated against
    /// the published data: `None` if the ring is empty. A corrupt record
    /// poisons the ring, as in [`try_recv`](Self::try_recv).
    pub fn peek(&mut self) -> Result<Option<ReadGrant<'_, 'r, R>>, RingError> {
        let Some((len, size)) = self.next_record()? else {
            return Ok(None);
        };
        let span = Span::new(self.area, self.tail.wrapping_add(RECORD_HEADER as u64), len);
        Ok(Some(ReadGrant {
            consumer: self,
            span,
            size,
        }))
    }
}
