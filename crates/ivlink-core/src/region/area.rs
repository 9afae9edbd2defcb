//! A ring's data area: a power-of-two window of the region, checked once.
//!
//! A ring reaches its records at free-running positions that wrap at the area's
//! size. Going through [`Region`]'s offset accessors, every record would re-check
//! that its offset lies inside the region and is word-aligned, although the ring
//! has already shown that the record lies inside its area. An [`Area`] checks the
//! window against the region when it is made; afterwards a word position is
//! masked into the window (so it is inside and aligned by construction), and a
//! record's only check is that it ends before the window does, the same
//! comparison the ring makes to decide whether the record wraps. Once inlined,
//! the compiler folds the two into one.

use super::{Region, RegionError, check_bounds};

/// Bytes of a record of `len` payload bytes: an 8-byte header word, then the
/// payload padded to whole words (what [`Region::write_record`] writes).
#[inline]
pub const fn record_size(len: usize) -> usize {
    // Not `next_multiple_of`, whose inlined forms differ between call sites:
    // one form lets the compiler see that the ring's and the area's checks of a
    // record are the same comparison. `len` is a slice's length, far below
    // `usize::MAX - 15`.
    8 + ((len + 7) & !7)
}

/// A power-of-two window of a region, checked once against it (see the
/// [module docs](self)).
///
/// Record and word accessors take word positions: free-running byte positions
/// whose low three bits are ignored, wrapped at the area's size. The wrapping
/// copies take byte positions.
pub struct Area<'r, R: Region + ?Sized> {
    region: &'r R,
    offset: usize,
    size: usize,
}

// Not derived: the derives would ask `R: Clone` / `R: Debug` of the region.
impl<R: Region + ?Sized> Clone for Area<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: Region + ?Sized> Copy for Area<'_, R> {}

impl<R: Region + ?Sized> core::fmt::Debug for Area<'_, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Area")
            .field("offset", &self.offset)
            .field("size", &self.size)
            .finish()
    }
}

impl<'r, R: Region + ?Sized> Area<'r, R> {
    /// The `size` bytes at `offset`: `size` a power of two of at least 8, the
    /// window inside the region, and `offset` where the region takes word
    /// accesses.
    pub fn new(region: &'r R, offset: usize, size: usize) -> Result<Self, RegionError> {
        check_bounds(offset, size, region.len())?;
        if !size.is_power_of_two() || size < 8 {
            return Err(RegionError::OutOfBounds {
                offset,
                len: size,
                region_len: region.len(),
            });
        }
        // An empty word read checks the alignment the word accessors need.
        region.read_words(offset, &mut [])?;
        Ok(Area {
            region,
            offset,
            size,
        })
    }

    /// The region the area is part of.
    pub fn region(&self) -> &'r R {
        self.region
    }

    /// The area's offset in the region.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// The area's size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The area-relative offset of the word at `position`: inside the area with
    /// at least a word after it (the size is a power of two of at least 8), and
    /// a multiple of 8.
    #[inline]
    fn word_at(&self, position: u64) -> usize {
        position as usize & (self.size - 1) & !7
    }

    /// Bytes from the word at `position` to the end of the area.
    #[inline]
    pub fn room(&self, position: u64) -> usize {
        self.size - self.word_at(position)
    }

    /// Whether a record of `len` payload bytes at `position` ends before the
    /// area does (otherwise its payload would wrap).
    #[inline]
    pub fn fits_record(&self, position: u64, len: usize) -> bool {
        record_size(len) <= self.room(position)
    }

    fn beyond(&self, position: u64, len: usize) -> RegionError {
        RegionError::OutOfBounds {
            offset: self.offset + self.word_at(position),
            len,
            region_len: self.offset + self.size,
        }
    }

    /// The little-endian word at `position`.
    #[inline]
    pub fn load_word(&self, position: u64) -> Result<u64, RegionError> {
        let mut word = [0u8; 8];
        // SAFETY: the word lies inside the area (see `word_at`), which `new`
        // checked lies inside the region, at an offset that has the alignment
        // of `offset` (a multiple of 8 past it), which `new` checked the region
        // takes word accesses at: `read_words` would accept it.
        unsafe {
            self.region
                .read_words_unchecked(self.offset + self.word_at(position), &mut word)?
        };
        Ok(u64::from_le_bytes(word))
    }

    /// Writes a record at `position` ([`Region::write_record`]); an error if it
    /// does not end before the area does.
    #[inline]
    pub fn write_record(
        &self,
        position: u64,
        header: u64,
        payload: &[u8],
    ) -> Result<(), RegionError> {
        if !self.fits_record(position, payload.len()) {
            return Err(self.beyond(position, record_size(payload.len())));
        }
        // SAFETY: the record lies inside the area (checked above), and so inside
        // the region, at a word offset the region accepts (see `load_word`).
        unsafe {
            self.region.write_record_unchecked(
                self.offset + self.word_at(position),
                header,
                payload,
            )
        }
    }

    /// Copies the payload of the record at `position` into `buf`
    /// ([`Region::read_words`] past its header word); an error if a record of
    /// `buf.len()` bytes does not end before the area does.
    #[inline]
    pub fn read_record_payload(&self, position: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        if !self.fits_record(position, buf.len()) {
            return Err(self.beyond(position, record_size(buf.len())));
        }
        // SAFETY: the payload's words lie inside the record, which lies inside
        // the area (checked above), at a word offset (see `load_word`).
        unsafe {
            self.region
                .read_words_unchecked(self.offset + self.word_at(position) + 8, buf)
        }
    }

    /// [`Region::write_words`] at `position`; an error if the padded words do
    /// not end before the area does.
    #[inline]
    pub fn write_words(&self, position: u64, data: &[u8]) -> Result<(), RegionError> {
        let padded = data.len().next_multiple_of(8);
        if padded > self.room(position) {
            return Err(self.beyond(position, padded));
        }
        // SAFETY: the words lie inside the area (checked above), at a word
        // offset (see `load_word`).
        unsafe {
            self.region
                .write_words_unchecked(self.offset + self.word_at(position), data)
        }
    }

    /// [`Region::read_words`] at `position`; an error if the padded words do
    /// not end before the area does.
    #[inline]
    pub fn read_words(&self, position: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        let padded = buf.len().next_multiple_of(8);
        if padded > self.room(position) {
            return Err(self.beyond(position, padded));
        }
        // SAFETY: as in `write_words`.
        unsafe {
            self.region
                .read_words_unchecked(self.offset + self.word_at(position), buf)
        }
    }

    /// The area-relative start of `len` bytes at byte `position` and how many of
    /// them come before the end of the area; an error if `len` exceeds the area.
    #[inline]
    fn split(&self, position: u64, len: usize) -> Result<(usize, usize), RegionError> {
        if len > self.size {
            return Err(RegionError::OutOfBounds {
                offset: self.offset,
                len,
                region_len: self.offset + self.size,
            });
        }
        let start = position as usize & (self.size - 1);
        Ok((start, len.min(self.size - start)))
    }

    /// Copies `data` into the area at byte `position`, continuing at the area's
    /// start when it reaches the end.
    #[inline]
    pub fn write_wrapping(&self, position: u64, data: &[u8]) -> Result<(), RegionError> {
        let (start, first) = self.split(position, data.len())?;
        if first == data.len() {
            return self.region.write(self.offset + start, data);
        }
        let (head, rest) = data.split_at(first);
        self.region.write(self.offset + start, head)?;
        self.region.write(self.offset, rest)
    }

    /// Copies `buf.len()` bytes out of the area at byte `position`, wrapping.
    #[inline]
    pub fn read_wrapping(&self, position: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        let (start, first) = self.split(position, buf.len())?;
        if first == buf.len() {
            return self.region.read(self.offset + start, buf);
        }
        let (head, rest) = buf.split_at_mut(first);
        self.region.read(self.offset + start, head)?;
        self.region.read(self.offset, rest)
    }

    /// Sets `len` bytes of the area from byte `position` to `byte`, wrapping.
    #[inline]
    pub fn fill_wrapping(&self, position: u64, len: usize, byte: u8) -> Result<(), RegionError> {
        let (start, first) = self.split(position, len)?;
        self.region.fill(self.offset + start, first, byte)?;
        if first == len {
            return Ok(());
        }
        self.region.fill(self.offset, len - first, byte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeapRegion;

    #[test]
    fn the_window_is_checked_once_when_made() {
        let region = HeapRegion::new(1024);
        assert!(Area::new(&*region, 512, 512).is_ok());
        // Past the end, not a power of two, too small, misaligned.
        assert!(Area::new(&*region, 768, 512).is_err());
        assert!(Area::new(&*region, 0, 384).is_err());
        assert!(Area::new(&*region, 0, 4).is_err());
        assert!(Area::new(&*region, 4, 256).is_err());
        assert!(Area::new(&*region, usize::MAX - 7, 16).is_err());
    }

    #[test]
    fn word_positions_wrap_and_ignore_their_low_bits() {
        let region = HeapRegion::new(512);
        let area = Area::new(&*region, 256, 256).unwrap();
        area.write_words(256 + 16 + 5, &7u64.to_le_bytes()).unwrap();
        assert_eq!(
            region.load_u64(256 + 16, core::sync::atomic::Ordering::Relaxed),
            Ok(7)
        );
        assert_eq!(area.load_word(16), Ok(7));
        assert_eq!(area.load_word(u64::MAX - 255 + 16), Ok(7));
        assert_eq!(area.room(248), 8);
        assert!(area.fits_record(240, 8));
        assert!(!area.fits_record(240, 9));
    }

    #[test]
    fn records_that_would_run_past_the_end_are_refused() {
        let region = HeapRegion::new(1024);
        let area = Area::new(&*region, 256, 256).unwrap();
        area.write_record(232, 5, &[1; 16]).unwrap();
        let mut buf = [0u8; 16];
        area.read_record_payload(232, &mut buf).unwrap();
        assert_eq!(buf, [1; 16]);
        // One byte more and the record would reach past the area into bytes
        // the region has but the ring does not own.
        assert!(area.write_record(232, 5, &[1; 17]).is_err());
        assert!(area.read_record_payload(232, &mut [0; 17]).is_err());
        assert!(area.write_words(248, &[0; 9]).is_err());
        assert!(area.read_words(248, &mut [0; 9]).is_err());
        assert_eq!(
            region.load_u64(512, core::sync::atomic::Ordering::Relaxed),
            Ok(0)
        );
    }

    #[test]
    fn wrapping_copies_continue_at_the_start() {
        let region = HeapRegion::new(512);
        let area = Area::new(&*region, 256, 256).unwrap();
        let data: [u8; 12] = core::array::from_fn(|i| i as u8 + 1);
        area.write_wrapping(250, &data).unwrap();
        let mut buf = [0u8; 12];
        area.read_wrapping(250 + 256, &mut buf).unwrap();
        assert_eq!(buf, data);
        assert_eq!(
            region.load_u8(256, core::sync::atomic::Ordering::Relaxed),
            Ok(7)
        );
        area.fill_wrapping(254, 4, 9).unwrap();
        assert_eq!(
            region.load_u8(257, core::sync::atomic::Ordering::Relaxed),
            Ok(9)
        );
        assert!(area.write_wrapping(0, &[0; 257]).is_err());
    }
}
