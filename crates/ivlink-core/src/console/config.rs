//! The console's config space (virtio 1.2, 5.3.4):
//! `{le16 cols; le16 rows; le32 max_nr_ports; le32 emerg_wr}`.

/// Bytes of config space.
pub const CONFIG_SIZE: usize = 12;
/// Offset of `emerg_wr` in the config space: the driver writes one byte there
/// (as a 32-bit word) with [`super::F_EMERG_WRITE`].
pub const EMERG_WR_OFFSET: usize = 8;

/// The config space as values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Columns of the console (valid with [`super::F_SIZE`]).
    pub cols: u16,
    /// Rows of the console (valid with [`super::F_SIZE`]).
    pub rows: u16,
    /// Ports the device may add (valid with [`super::F_MULTIPORT`]).
    pub max_nr_ports: u32,
    /// The last emergency write (driver to device).
    pub emerg_wr: u32,
}

impl ConsoleConfig {
    /// The config space bytes.
    pub fn to_bytes(&self) -> [u8; CONFIG_SIZE] {
        let mut b = [0u8; CONFIG_SIZE];
        b[0..2].copy_from_slice(&self.cols.to_le_bytes());
        b[2..4].copy_from_slice(&self.rows.to_le_bytes());
        b[4..8].copy_from_slice(&self.max_nr_ports.to_le_bytes());
        b[8..12].copy_from_slice(&self.emerg_wr.to_le_bytes());
        b
    }

    /// The config read from its bytes. Any bytes decode; what they mean is
    /// checked where they are used (a port count against the queues, say).
    pub fn from_bytes(b: &[u8; CONFIG_SIZE]) -> Self {
        ConsoleConfig {
            cols: u16::from_le_bytes([b[0], b[1]]),
            rows: u16::from_le_bytes([b[2], b[3]]),
            max_nr_ports: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            emerg_wr: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// The byte an emergency write of `word` carries, `None` if the word is not
/// one byte (Linux writes each byte of its output as one 32-bit word).
pub fn emergency_byte(word: u32) -> Option<u8> {
    u8::try_from(word).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_bytes_follow_the_specification() {
        let config = ConsoleConfig {
            cols: 80,
            rows: 25,
            max_nr_ports: 3,
            emerg_wr: u32::from(b'!'),
        };
        let bytes = config.to_bytes();
        assert_eq!(bytes, [80, 0, 25, 0, 3, 0, 0, 0, b'!', 0, 0, 0]);
        assert_eq!(ConsoleConfig::from_bytes(&bytes), config);
        assert_eq!(emergency_byte(u32::from(b'x')), Some(b'x'));
        assert_eq!(emergency_byte(0x100), None);
    }
}
