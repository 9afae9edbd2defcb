//! The RPMsg message header and the name-service message, byte for byte as
//! OpenAMP, Linux and RPMsg-Lite put them in a buffer (little-endian, packed).

/// Bytes of the header before every payload.
pub const HEADER_SIZE: usize = 16;
/// Bytes of a name-service message's payload.
pub const NS_MESSAGE_SIZE: usize = 40;
/// Bytes of an endpoint name, including its NUL.
pub const NAME_SIZE: usize = 32;
/// The name service's address.
pub const NS_ADDR: u32 = 0x35;
/// First dynamically allocated endpoint address.
pub const FIRST_DYNAMIC_ADDR: u32 = 0x400;
/// "Any address": unbound destination, or "allocate one" as a source.
pub const ADDR_ANY: u32 = u32::MAX;
/// Name-service flag: an endpoint appeared.
pub const NS_CREATE: u32 = 0;
/// Name-service flag: an endpoint went away.
pub const NS_DESTROY: u32 = 1;
/// Feature bit: the device supports the name service.
pub const VIRTIO_RPMSG_F_NS: u32 = 0;

/// The 16-byte header in front of every RPMsg payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Sender's endpoint address.
    pub src: u32,
    /// Receiver's endpoint address.
    pub dst: u32,
    /// Zero on the wire (RPMsg-Lite keeps `{rfu, idx}` here).
    pub reserved: u32,
    /// Payload bytes.
    pub len: u16,
    /// Zero on the wire.
    pub flags: u16,
}

impl Header {
    /// A header for `len` bytes from `src` to `dst`.
    pub fn new(src: u32, dst: u32, len: u16) -> Self {
        Header {
            src,
            dst,
            reserved: 0,
            len,
            flags: 0,
        }
    }

    /// The header as it goes into a buffer.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&self.src.to_le_bytes());
        b[4..8].copy_from_slice(&self.dst.to_le_bytes());
        b[8..12].copy_from_slice(&self.reserved.to_le_bytes());
        b[12..14].copy_from_slice(&self.len.to_le_bytes());
        b[14..16].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// The header read from a buffer (any bytes decode; validate `len` yourself).
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Self {
        let word = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        Header {
            src: word(0),
            dst: word(4),
            reserved: word(8),
            len: u16::from_le_bytes([b[12], b[13]]),
            flags: u16::from_le_bytes([b[14], b[15]]),
        }
    }
}

/// An endpoint name: up to 31 bytes, compared up to the first NUL.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name {
    bytes: [u8; NAME_SIZE],
    len: u8,
}

impl Name {
    /// The empty name (an endpoint that is never announced).
    pub const EMPTY: Name = Name {
        bytes: [0; NAME_SIZE],
        len: 0,
    };

    /// `name` if it fits (at most 31 bytes, no NUL inside).
    pub fn new(name: &str) -> Option<Self> {
        let raw = name.as_bytes();
        if raw.len() >= NAME_SIZE || raw.contains(&0) {
            return None;
        }
        let mut bytes = [0u8; NAME_SIZE];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(Name {
            bytes,
            len: raw.len() as u8,
        })
    }

    /// The name in a name-service message: up to the first NUL, at most 31 bytes
    /// (Linux terminates at byte 31); bytes after the NUL are ignored.
    pub fn from_wire(field: &[u8; NAME_SIZE]) -> Self {
        let len = field[..NAME_SIZE - 1]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(NAME_SIZE - 1);
        let mut bytes = [0u8; NAME_SIZE];
        bytes[..len].copy_from_slice(&field[..len]);
        Name {
            bytes,
            len: len as u8,
        }
    }

    /// The name's bytes (without NUL).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The name as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        core::str::from_utf8(self.as_bytes()).ok()
    }

    /// Whether the name is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::fmt::Debug for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "\"{}\"", self.as_bytes().escape_ascii())
    }
}

impl core::fmt::Display for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.as_bytes().escape_ascii())
    }
}

/// A name-service announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsMessage {
    /// The endpoint's name.
    pub name: Name,
    /// The endpoint's address.
    pub addr: u32,
    /// [`NS_CREATE`] or [`NS_DESTROY`] (other values are kept as read).
    pub flags: u32,
}

impl NsMessage {
    /// The payload, with zero padding after the name (pitfall: OpenAMP leaves
    /// garbage there; ivlink never does).
    pub fn to_bytes(&self) -> [u8; NS_MESSAGE_SIZE] {
        let mut b = [0u8; NS_MESSAGE_SIZE];
        b[..usize::from(self.name.len)].copy_from_slice(self.name.as_bytes());
        b[32..36].copy_from_slice(&self.addr.to_le_bytes());
        b[36..40].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// Decodes a payload; `None` unless it is exactly 40 bytes (OpenAMP ignores
    /// others silently, and so does ivlink).
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let b: &[u8; NS_MESSAGE_SIZE] = payload.try_into().ok()?;
        let mut name = [0u8; NAME_SIZE];
        name.copy_from_slice(&b[..NAME_SIZE]);
        Some(NsMessage {
            name: Name::from_wire(&name),
            addr: u32::from_le_bytes([b[32], b[33], b[34], b[35]]),
            flags: u32::from_le_bytes([b[36], b[37], b[38], b[39]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn header_round_trips_in_little_endian() {
        let h = Header::new(0x400, 0x35, 40);
        let b = h.to_bytes();
        assert_eq!(&b[..8], &[0, 4, 0, 0, 0x35, 0, 0, 0]);
        assert_eq!(&b[12..], &[40, 0, 0, 0]);
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn names_compare_up_to_the_nul() {
        let mut field = [0xAAu8; NAME_SIZE];
        field[..2].copy_from_slice(b"k\0");
        assert_eq!(Name::from_wire(&field), Name::new("k").unwrap());
        let long = [b'x'; NAME_SIZE];
        assert_eq!(Name::from_wire(&long).as_bytes().len(), 31);
        assert!(Name::new(&"y".repeat(32)).is_none());
        assert!(Name::new("a\0b").is_none());
        assert_eq!(format!("{:?}", Name::new("echo").unwrap()), "\"echo\"");
    }

    #[test]
    fn ns_messages_are_exactly_forty_bytes_with_zero_padding() {
        let ns = NsMessage {
            name: Name::new("rpmsg-openamp-demo-channel").unwrap(),
            addr: 0x400,
            flags: NS_DESTROY,
        };
        let b = ns.to_bytes();
        assert!(b[26..32].iter().all(|&x| x == 0));
        assert_eq!(NsMessage::parse(&b), Some(ns));
        assert_eq!(NsMessage::parse(&b[..39]), None);
        let mut longer = [0u8; 41];
        longer[..40].copy_from_slice(&b);
        assert_eq!(NsMessage::parse(&longer), None);
    }
}
