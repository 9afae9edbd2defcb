//! The raw layout of Zephyr's ivshmem doorbell sample: one NUL-terminated string at
//! a fixed offset (0), written before ringing the doorbell.
//!
//! It has no framing and no locking: two writers overwrite each other (the seeds'
//! "third instance" corruption). ivlink keeps it for compatibility (`--raw`); its own
//! channels use rings placed through the region directory, which starts after the
//! message area ([`directory::MESSAGE_AREA_LEN`]) so that the two never share bytes.
//! [`clash`] tells a writer what a message would overwrite.

use core::fmt;
use core::ops::Range;

use crate::directory::{self, Directory, DirectoryError};
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

/// What a raw message would overwrite (see [`clash`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clash {
    /// The region's directory and its sections, at `bytes`. `first_layout` says
    /// the directory is the first releases' one at offset 0.
    Directory {
        /// The bytes the directory and its sections use.
        bytes: Range<usize>,
        /// Whether it is a directory of the first layout, at offset 0.
        first_layout: bool,
    },
    /// The message would run past the message area into the place where a
    /// directory goes (none is there yet).
    PastMessageArea {
        /// Where the message and its NUL would end.
        end: usize,
    },
}

impl fmt::Display for Clash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clash::Directory {
                bytes,
                first_layout: true,
            } => write!(
                f,
                "the region holds an ivlink directory at offset 0 (older layout) and its sections ({:#x}..{:#x})",
                bytes.start, bytes.end
            ),
            Clash::Directory { bytes, .. } => write!(
                f,
                "the region's ivlink directory and its sections are there ({:#x}..{:#x})",
                bytes.start, bytes.end
            ),
            Clash::PastMessageArea { end } => write!(
                f,
                "the message would end at {end:#x}, past the {}-byte message area where the ivlink directory goes",
                directory::MESSAGE_AREA_LEN
            ),
        }
    }
}

/// What writing `len` bytes of message and its NUL at `offset` would overwrite:
/// the region's directory or its sections (the first layout's directory is at
/// offset 0), or, in a region without a directory, the place past the message area
/// where one goes. `None` if the bytes are free for a message. A directory that
/// cannot be read (being created, damaged) counts as reaching to the region's end.
pub fn clash<R: Region + ?Sized>(region: &R, offset: usize, len: usize) -> Option<Clash> {
    let end = offset.saturating_add(len).saturating_add(1);
    let overlaps = |bytes: &Range<usize>| offset < bytes.end && bytes.start < end;
    let used = match Directory::open(region) {
        Ok(dir) => dir.offset()..dir.next_free().unwrap_or(region.len()),
        Err(DirectoryError::NotCreated | DirectoryError::Foreign { .. }) => {
            return (offset < directory::MESSAGE_AREA_LEN && end > directory::MESSAGE_AREA_LEN)
                .then_some(Clash::PastMessageArea { end });
        }
        Err(DirectoryError::RegionTooSmall { .. }) => return None,
        Err(_) => directory::locate(region).unwrap_or(directory::DIRECTORY_OFFSET)..region.len(),
    };
    if !overlaps(&used) {
        return None;
    }
    Some(Clash::Directory {
        first_layout: used.start == directory::LEGACY_DIRECTORY_OFFSET,
        bytes: used,
    })
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
    fn a_message_never_lands_on_a_directory_or_its_sections() {
        use crate::directory::{
            DIRECTORY_OFFSET, MESSAGE_AREA_LEN, SectionKind, SectionSpec, format,
        };
        let region = HeapRegion::new(64 * 1024);
        // No directory yet: the message area is free, past it is where one goes.
        assert_eq!(clash(&*region, OFFSET, MESSAGE_AREA_LEN - 1), None);
        assert_eq!(
            clash(&*region, OFFSET, MESSAGE_AREA_LEN),
            Some(Clash::PastMessageArea {
                end: MESSAGE_AREA_LEN + 1
            })
        );
        assert_eq!(clash(&*region, 20_000, 100), None);
        // A directory with a section: the message area stays free, the rest is used.
        let dir = format(&*region, 4).unwrap();
        let section = dir
            .add(&SectionSpec::new("demo", SectionKind::Channel, 1000))
            .unwrap();
        assert_eq!(clash(&*region, OFFSET, 11), None);
        let used = DIRECTORY_OFFSET..section.offset + 1000;
        for offset in [MESSAGE_AREA_LEN - 2, DIRECTORY_OFFSET, section.offset + 999] {
            assert_eq!(
                clash(&*region, offset, 5),
                Some(Clash::Directory {
                    bytes: used.clone(),
                    first_layout: false
                }),
                "offset {offset}"
            );
        }
        assert_eq!(clash(&*region, section.offset + 1000, 5), None);
        // A directory of the first layout at offset 0 takes offset 0.
        region
            .store_u64(
                0,
                directory::MAGIC.to_le(),
                core::sync::atomic::Ordering::Relaxed,
            )
            .unwrap();
        assert!(matches!(
            clash(&*region, OFFSET, 5),
            Some(Clash::Directory {
                first_layout: true,
                ..
            })
        ));
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
