//! Zero-copy grants on a stream: bytes written or read in place in the ring,
//! like the message ring's [grants](crate::ring::grant) (and for the same reason
//! through checked accessors, never a reference into shared memory).
//!
//! A stream has no records, so a grant is a run of bytes in order:
//! [`StreamWriter::reserve`] lends `len` free bytes at the writer's position
//! (wrapping at the end of the data area, each access split at the wrap), and
//! [`commit`](StreamWriteGrant::commit) appends them (visible at the next
//! [`StreamWriter::publish`]). [`StreamReader::peek`] lends every byte that has
//! arrived; [`release`](StreamReadGrant::release) consumes the grant's bytes
//! (after an optional [`truncate`](StreamReadGrant::truncate)), their space going
//! back to the writer at the next [`StreamReader::release`]. A grant dropped
//! unused changes nothing.

use core::fmt;

use super::{PeerState, StreamLayoutError, StreamReader, StreamWriter};
use crate::region::Region;
use crate::ring::grant::Span;

/// Free bytes of a stream lent to the writer (see the [module docs](self)).
pub struct StreamWriteGrant<'g, 'r, R: Region + ?Sized> {
    writer: &'g mut StreamWriter<'r, R>,
    span: Span<'r, R>,
}

impl<R: Region + ?Sized> fmt::Debug for StreamWriteGrant<'_, '_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamWriteGrant")
            .field("len", &self.span.len())
            .finish()
    }
}

impl<R: Region + ?Sized> StreamWriteGrant<'_, '_, R> {
    /// Bytes lent (what [`commit`](Self::commit) appends).
    pub fn len(&self) -> usize {
        self.span.len()
    }

    /// Whether nothing is lent.
    pub fn is_empty(&self) -> bool {
        self.span.len() == 0
    }

    /// Copies `data` into the grant at `offset`; an error if it does not fit.
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), StreamLayoutError> {
        Ok(self.span.write(offset, data)?)
    }

    /// Sets `len` bytes from `offset` to `byte`.
    pub fn fill(&mut self, offset: usize, len: usize, byte: u8) -> Result<(), StreamLayoutError> {
        Ok(self.span.fill(offset, len, byte)?)
    }

    /// Writes `value` little-endian at `offset`.
    pub fn write_u32_le(&mut self, offset: usize, value: u32) -> Result<(), StreamLayoutError> {
        self.write(offset, &value.to_le_bytes())
    }

    /// Writes `value` little-endian at `offset`.
    pub fn write_u64_le(&mut self, offset: usize, value: u64) -> Result<(), StreamLayoutError> {
        self.write(offset, &value.to_le_bytes())
    }

    /// Shortens the grant to `len` bytes (no effect if shorter already).
    pub fn truncate(&mut self, len: usize) {
        self.span.truncate(len);
    }

    /// Appends the grant's bytes to the stream (visible at the next
    /// [`StreamWriter::publish`]).
    pub fn commit(self) {
        let writer = self.writer;
        writer.head = writer.head.wrapping_add(self.span.len() as u64);
    }
}

/// Bytes that have arrived on a stream, lent to the reader (see the [module
/// docs](self)).
pub struct StreamReadGrant<'g, 'r, R: Region + ?Sized> {
    reader: &'g mut StreamReader<'r, R>,
    span: Span<'r, R>,
}

impl<R: Region + ?Sized> fmt::Debug for StreamReadGrant<'_, '_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReadGrant")
            .field("len", &self.span.len())
            .finish()
    }
}

impl<R: Region + ?Sized> StreamReadGrant<'_, '_, R> {
    /// Bytes lent.
    pub fn len(&self) -> usize {
        self.span.len()
    }

    /// Whether nothing is lent.
    pub fn is_empty(&self) -> bool {
        self.span.len() == 0
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`; an error if they are
    /// not all inside the grant.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), StreamLayoutError> {
        Ok(self.span.read(offset, buf)?)
    }

    /// The byte at `offset`.
    pub fn read_u8(&self, offset: usize) -> Result<u8, StreamLayoutError> {
        Ok(self.read_array::<1>(offset)?[0])
    }

    /// The little-endian 16-bit value at `offset`.
    pub fn read_u16_le(&self, offset: usize) -> Result<u16, StreamLayoutError> {
        Ok(u16::from_le_bytes(self.read_array(offset)?))
    }

    /// The little-endian 32-bit value at `offset`.
    pub fn read_u32_le(&self, offset: usize) -> Result<u32, StreamLayoutError> {
        Ok(u32::from_le_bytes(self.read_array(offset)?))
    }

    /// The little-endian 64-bit value at `offset`.
    pub fn read_u64_le(&self, offset: usize) -> Result<u64, StreamLayoutError> {
        Ok(u64::from_le_bytes(self.read_array(offset)?))
    }

    fn read_array<const N: usize>(&self, offset: usize) -> Result<[u8; N], StreamLayoutError> {
        let mut bytes = [0u8; N];
        self.read(offset, &mut bytes)?;
        Ok(bytes)
    }

    /// Consumes only the first `len` bytes at [`release`](Self::release) (no
    /// effect if the grant is shorter already).
    pub fn truncate(&mut self, len: usize) {
        self.span.truncate(len);
    }

    /// Consumes the grant's bytes; their space returns to the writer at the
    /// next [`StreamReader::release`].
    pub fn release(self) {
        let reader = self.reader;
        reader.tail = reader.tail.wrapping_add(self.span.len() as u64);
    }
}

impl<'r, R: Region + ?Sized> StreamWriter<'r, R> {
    /// Lends `len` free bytes at the end of the stream, to be written in place:
    /// `None` while fewer are free. Refused like [`write`](Self::write) once this
    /// end closed or the other side is dead, and for more than the capacity.
    pub fn reserve(
        &mut self,
        len: usize,
    ) -> Result<Option<StreamWriteGrant<'_, 'r, R>>, StreamLayoutError> {
        self.healthy()?;
        if len > self.layout.capacity {
            return Err(StreamLayoutError::Invalid(
                "a grant larger than the stream's capacity",
            ));
        }
        if self.peer_state()? == PeerState::Dead {
            return Err(StreamLayoutError::PeerDead);
        }
        if self.free_cached() < len as u64 {
            self.refresh()?;
            if self.free_cached() < len as u64 {
                return Ok(None);
            }
        }
        let span = Span::new(self.area, self.head, len);
        Ok(Some(StreamWriteGrant { writer: self, span }))
    }
}

impl<'r, R: Region + ?Sized> StreamReader<'r, R> {
    /// Lends every byte that has arrived, to be read in place: `None` if none
    /// has (see [`at_eof`](Self::at_eof)).
    pub fn peek(&mut self) -> Result<Option<StreamReadGrant<'_, 'r, R>>, StreamLayoutError> {
        self.healthy()?;
        self.refresh()?;
        let available = self.cached() as usize;
        if available == 0 {
            return Ok(None);
        }
        let span = Span::new(self.area, self.tail, available);
        Ok(Some(StreamReadGrant { reader: self, span }))
    }
}

impl<'r, R: Region + ?Sized> super::StreamEnd<'r, R> {
    /// [`StreamWriter::reserve`] on this end's writer.
    pub fn reserve(
        &mut self,
        len: usize,
    ) -> Result<Option<StreamWriteGrant<'_, 'r, R>>, StreamLayoutError> {
        self.writer.reserve(len)
    }

    /// [`StreamReader::peek`] on this end's reader.
    pub fn peek(&mut self) -> Result<Option<StreamReadGrant<'_, 'r, R>>, StreamLayoutError> {
        self.reader.peek()
    }
}
