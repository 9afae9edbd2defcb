//! The peer's end-of-run report: the messages and payload bytes it received,
//! as 16 bytes (two little-endian u64) on the back service.

use anyhow::bail;

/// Length of an encoded report.
pub const LEN: usize = 16;

/// What the peer received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerReport {
    /// Messages received (not counting the end marker).
    pub messages: u64,
    /// Payload bytes received.
    pub bytes: u64,
}

impl PeerReport {
    /// The report as sent.
    pub fn encode(&self) -> [u8; LEN] {
        let mut out = [0; LEN];
        out[..8].copy_from_slice(&self.messages.to_le_bytes());
        out[8..].copy_from_slice(&self.bytes.to_le_bytes());
        out
    }

    /// Reads a report of `len` bytes from `buf`.
    pub fn decode(buf: &[u8], len: usize) -> anyhow::Result<PeerReport> {
        if len != LEN || buf.len() < LEN {
            bail!("the iceoryx2 peer sent a {len}-byte report, {LEN} expected");
        }
        let word = |at: usize| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        Ok(PeerReport {
            messages: word(0),
            bytes: word(8),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_bad_lengths_are_refused() {
        let report = PeerReport {
            messages: 7,
            bytes: 1 << 40,
        };
        let bytes = report.encode();
        assert_eq!(PeerReport::decode(&bytes, LEN).unwrap(), report);
        assert!(PeerReport::decode(&bytes, 8).is_err());
        assert!(PeerReport::decode(&bytes[..8], LEN).is_err());
    }
}
