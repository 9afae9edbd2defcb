//! The raw layout of Zephyr's ivshmem doorbell sample: one NUL-terminated string at
//! a fixed offset (0), written before ringing the doorbell.
//!
//! It has no framing and no locking: two writers overwrite each other (the seeds'
//! "third instance" corruption). ivlink keeps it for compatibility (`--raw`); its own
//! channels use rings placed through the region directory.

use crate::region::{Region, RegionError};

/// Offset of the message in Zephyr's doorbell sample.
pub const OFFSET: usize = 0;

/// Why a raw message could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawMessageError {
    /// The message and its NUL do not fit between `offset` and the end of the region.
    TooLong {
        /// Bytes of message.
        len: usize,
        /// Bytes available, including the NUL.
        room: usize,
    },
    /// The message contains a NUL, which would cut it short for the reader.
    ContainsNul,
    /// The region refused the access.
    Region(RegionError),
}

impl core::fmt::Display for RawMessageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RawMessageError::TooLong { len, room } => write!(
                f,
                "message of {len} bytes does not fit in {room} bytes (with its NUL)"
            ),
            RawMessageError::ContainsNul => f.write_str("message contains a NUL byte"),
            RawMessageError::Region(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for RawMessageError {}

impl From<RegionError> for RawMessageError {
    fn from(e: RegionError) -> Self {
        RawMessageError::Region(e)
    }
}

/// Writes `message` and a terminating NUL at `offset`.
pub fn write<R: Region + ?Sized>(
    region: &R,
    offset: usize,
    message: &[u8],
) -> Result<(), RawMessageError> {
    if message.contains(&0) {
        return Err(RawMessageError::ContainsNul);
    }
    let room = region.len().saturating_sub(offset);
    if message.len() >= room {
        return Err(RawMessageError::TooLong {
            len: message.len(),
            room,
        });
    }
    region.write(offset, message)?;
    region.write(offset + message.len(), &[0])?;
    Ok(())
}

/// Reads the string at `offset` into `buf` (at most `buf.len()` bytes, stopping at a
/// NUL or the region's end) and returns its length. Any bytes are accepted: the
/// writer is not trusted, and the caller decides how to display them.
pub fn read<R: Region + ?Sized>(
    region: &R,
    offset: usize,
    buf: &mut [u8],
) -> Result<usize, RegionError> {
    region.read_c_str(offset, buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeapRegion;

    #[test]
    fn round_trips_a_message() {
        let region = HeapRegion::new(64);
        write(&*region, OFFSET, b"hello world").unwrap();
        let mut buf = [0u8; 64];
        let n = read(&*region, OFFSET, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello world");
        // A shorter message ends at its own NUL, not the old one.
        write(&*region, OFFSET, b"hi").unwrap();
        let n = read(&*region, OFFSET, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
    }

    #[test]
    fn refuses_messages_that_do_not_fit_or_hold_a_nul() {
        let region = HeapRegion::new(8);
        assert_eq!(
            write(&*region, 0, b"12345678"),
            Err(RawMessageError::TooLong { len: 8, room: 8 })
        );
        assert!(write(&*region, 0, b"1234567").is_ok());
        assert_eq!(
            write(&*region, 0, b"a\0b"),
            Err(RawMessageError::ContainsNul)
        );
        assert!(write(&*region, 9, b"").is_err());
    }

    #[test]
    fn an_unterminated_hostile_string_stops_at_the_buffer_or_region_end() {
        let region = HeapRegion::new(16);
        region.fill(0, 16, b'x').unwrap();
        let mut small = [0u8; 4];
        assert_eq!(read(&*region, 0, &mut small).unwrap(), 4);
        let mut big = [0u8; 64];
        assert_eq!(read(&*region, 10, &mut big).unwrap(), 6);
    }
}
