//! Stress messages: a header with sequence number, send time and checksum, and a
//! payload every byte of which the receiver can predict.

/// `b"STRS"`: marks a stress message.
const MAGIC: u32 = u32::from_le_bytes(*b"STRS");
/// Bytes before the payload.
pub const HEADER_LEN: usize = 32;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Traffic.
    Data,
    /// The sender's last word: `seq` is how many data messages it sent.
    End,
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Data or end.
    pub kind: Kind,
    /// Sequence number per (sender, receiver) pair, from 0.
    pub seq: u64,
    /// Sender's monotonic clock at send time, in nanoseconds.
    pub sent_ns: u64,
}

/// What a received message turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Intact.
    Intact(Header),
    /// Damaged: wrong magic, length, checksum or payload.
    Corrupted,
}

/// Fills `out` with the message `seq` from `from` to `to` of `len` bytes in total
/// (at least [`HEADER_LEN`]).
pub fn encode(
    out: &mut Vec<u8>,
    kind: Kind,
    from: u16,
    to: u16,
    seq: u64,
    sent_ns: u64,
    len: usize,
) {
    let len = len.max(HEADER_LEN);
    out.clear();
    out.resize(len, 0);
    fill_payload(&mut out[HEADER_LEN..], from, to, seq);
    out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    out[4] = match kind {
        Kind::Data => 0,
        Kind::End => 1,
    };
    out[8..16].copy_from_slice(&seq.to_le_bytes());
    out[16..24].copy_from_slice(&sent_ns.to_le_bytes());
    out[24..28].copy_from_slice(&(len as u32).to_le_bytes());
    let sum = checksum(out);
    out[28..32].copy_from_slice(&sum.to_le_bytes());
}

/// Checks a message received from `from` by `to`.
pub fn verify(message: &[u8], from: u16, to: u16) -> Verdict {
    if message.len() < HEADER_LEN {
        return Verdict::Corrupted;
    }
    let word = |at: usize| u32::from_le_bytes(message[at..at + 4].try_into().expect("4 bytes"));
    let long = |at: usize| u64::from_le_bytes(message[at..at + 8].try_into().expect("8 bytes"));
    let kind = match message[4] {
        0 => Kind::Data,
        1 => Kind::End,
        _ => return Verdict::Corrupted,
    };
    if word(0) != MAGIC || word(24) as usize != message.len() || word(28) != checksum(message) {
        return Verdict::Corrupted;
    }
    let seq = long(8);
    let mut expected = [0u8; 64];
    for (chunk_index, chunk) in message[HEADER_LEN..].chunks(64).enumerate() {
        let start = chunk_index * 64;
        fill_payload_at(&mut expected[..chunk.len()], from, to, seq, start);
        if chunk != &expected[..chunk.len()] {
            return Verdict::Corrupted;
        }
    }
    Verdict::Intact(Header {
        kind,
        seq,
        sent_ns: long(16),
    })
}

fn fill_payload(out: &mut [u8], from: u16, to: u16, seq: u64) {
    fill_payload_at(out, from, to, seq, 0);
}

/// Payload byte `i` is a function of sender, receiver, sequence and position.
fn fill_payload_at(out: &mut [u8], from: u16, to: u16, seq: u64, start: usize) {
    let seed =
        (u64::from(from) << 48) ^ (u64::from(to) << 32) ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for (i, byte) in out.iter_mut().enumerate() {
        let x = seed
            .wrapping_add((start + i) as u64)
            .wrapping_mul(0xff51_afd7_ed55_8ccd);
        *byte = (x >> 56) as u8;
    }
}

/// FNV-1a over the message with the checksum field taken as zero.
fn checksum(message: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for (i, &byte) in message.iter().enumerate() {
        let byte = if (28..32).contains(&i) { 0 } else { byte };
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_any_flipped_bit() {
        let mut m = Vec::new();
        encode(&mut m, Kind::Data, 3, 5, 42, 1234, 100);
        assert_eq!(
            verify(&m, 3, 5),
            Verdict::Intact(Header {
                kind: Kind::Data,
                seq: 42,
                sent_ns: 1234
            })
        );
        for bit in 0..m.len() * 8 {
            let mut bad = m.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(verify(&bad, 3, 5), Verdict::Corrupted, "bit {bit}");
        }
        assert_eq!(verify(&m, 4, 5), Verdict::Corrupted, "wrong sender");
        assert_eq!(verify(&m[..40], 3, 5), Verdict::Corrupted, "truncated");
    }

    #[test]
    fn short_lengths_grow_to_the_header() {
        let mut m = Vec::new();
        encode(&mut m, Kind::End, 1, 2, 7, 0, 3);
        assert_eq!(m.len(), HEADER_LEN);
        assert!(matches!(
            verify(&m, 1, 2),
            Verdict::Intact(Header {
                kind: Kind::End,
                seq: 7,
                ..
            })
        ));
    }
}
