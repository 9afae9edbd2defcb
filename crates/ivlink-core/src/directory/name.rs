//! Section names: 1 to 32 bytes of UTF-8, NUL-padded in an entry.

use core::fmt;

use super::NAME_LEN;

/// Why a section name is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`NAME_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name contains a NUL byte (NUL is the padding).
    ContainsNul,
    /// The stored bytes are not UTF-8.
    NotUtf8,
    /// The stored bytes have non-NUL bytes after the first NUL.
    BadPadding,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NameError::Empty => f.write_str("section name is empty"),
            NameError::TooLong { len } => {
                write!(f, "section name is {len} bytes, longer than {NAME_LEN}")
            }
            NameError::ContainsNul => f.write_str("section name contains a NUL byte"),
            NameError::NotUtf8 => f.write_str("section name is not UTF-8"),
            NameError::BadPadding => {
                f.write_str("section name has bytes after its terminating NUL")
            }
        }
    }
}

impl core::error::Error for NameError {}

/// A section name: 1 to 32 bytes of UTF-8 without NUL, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SectionName {
    // NUL-padded; `len` bytes of UTF-8 then zeros.
    bytes: [u8; NAME_LEN],
    len: u8,
}

impl SectionName {
    /// Checks `name` and stores it.
    pub fn new(name: &str) -> Result<Self, NameError> {
        let src = name.as_bytes();
        if src.is_empty() {
            return Err(NameError::Empty);
        }
        if src.len() > NAME_LEN {
            return Err(NameError::TooLong { len: src.len() });
        }
        if src.contains(&0) {
            return Err(NameError::ContainsNul);
        }
        let mut bytes = [0u8; NAME_LEN];
        for (dst, &b) in bytes.iter_mut().zip(src) {
            *dst = b;
        }
        // src.len() <= NAME_LEN = 32, so it fits in a u8.
        let len = u8::try_from(src.len()).map_err(|_| NameError::TooLong { len: src.len() })?;
        Ok(SectionName { bytes, len })
    }

    /// Checks the 32 stored bytes of an entry's `name` field: UTF-8, not empty, and
    /// nothing but NULs after the first NUL.
    pub fn from_raw(raw: [u8; NAME_LEN]) -> Result<Self, NameError> {
        let len = raw.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        let (text, padding) = raw.split_at(len);
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        if padding.iter().any(|&b| b != 0) {
            return Err(NameError::BadPadding);
        }
        if core::str::from_utf8(text).is_err() {
            return Err(NameError::NotUtf8);
        }
        let len = u8::try_from(len).map_err(|_| NameError::TooLong { len })?;
        Ok(SectionName { bytes: raw, len })
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The name's bytes, without padding.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// The 32 bytes as stored in an entry (NUL-padded).
    pub fn to_raw(&self) -> [u8; NAME_LEN] {
        self.bytes
    }

    /// Length in bytes (1 to 32).
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always false: a section name has at least one byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for SectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SectionName({:?})", self.as_str())
    }
}

impl fmt::Display for SectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for SectionName {
    type Error = NameError;

    fn try_from(name: &str) -> Result<Self, NameError> {
        SectionName::new(name)
    }
}
