//! Control messages (virtio 1.2, 5.3.6.2): `{le32 id; le16 event; le16 value}`,
//! followed by `{le16 cols; le16 rows}` for `RESIZE` and by the UTF-8 name (no
//! NUL) for `PORT_NAME`.

use core::fmt;

use super::ConsoleError;

/// Bytes of a control message header.
pub const CONTROL_HEADER_SIZE: usize = 8;
/// Longest port name ivlink sends or accepts, in bytes.
pub const MAX_PORT_NAME: usize = 56;
/// Bytes of a control buffer: a header and the longest name.
pub const CONTROL_BUFFER_SIZE: usize = CONTROL_HEADER_SIZE + MAX_PORT_NAME;

/// Control events.
pub mod event {
    /// Driver: it is ready for `DEVICE_ADD` (value 1) or failed (0).
    pub const DEVICE_READY: u16 = 0;
    /// Device: port `id` exists.
    pub const DEVICE_ADD: u16 = 1;
    /// Device: port `id` is gone.
    pub const DEVICE_REMOVE: u16 = 2;
    /// Driver: port `id` is set up (value 1) or failed (0).
    pub const PORT_READY: u16 = 3;
    /// Device: port `id` is a console (value 1).
    pub const CONSOLE_PORT: u16 = 4;
    /// Device: port `id`'s console size, followed by `{le16 cols; le16 rows}`.
    pub const RESIZE: u16 = 5;
    /// Either side: its end of port `id` is open (value 1) or closed (0).
    pub const PORT_OPEN: u16 = 6;
    /// Device: port `id`'s name follows.
    pub const PORT_NAME: u16 = 7;
}

/// A control message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMessage {
    /// The port.
    pub id: u32,
    /// One of [`event`].
    pub event: u16,
    /// The event's value.
    pub value: u16,
}

impl ControlMessage {
    /// The header's bytes.
    pub fn to_bytes(&self) -> [u8; CONTROL_HEADER_SIZE] {
        let mut b = [0u8; CONTROL_HEADER_SIZE];
        b[0..4].copy_from_slice(&self.id.to_le_bytes());
        b[4..6].copy_from_slice(&self.event.to_le_bytes());
        b[6..8].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    /// The header read from its bytes.
    pub fn from_bytes(b: &[u8; CONTROL_HEADER_SIZE]) -> Self {
        ControlMessage {
            id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            event: u16::from_le_bytes([b[4], b[5]]),
            value: u16::from_le_bytes([b[6], b[7]]),
        }
    }
}

/// A message with its payload, as one buffer's bytes.
#[derive(Clone, Copy)]
pub(crate) struct Encoded {
    bytes: [u8; CONTROL_BUFFER_SIZE],
    len: usize,
}

impl Encoded {
    pub(crate) fn new(message: ControlMessage, payload: &[u8]) -> Self {
        let mut bytes = [0u8; CONTROL_BUFFER_SIZE];
        bytes[..CONTROL_HEADER_SIZE].copy_from_slice(&message.to_bytes());
        let len = CONTROL_HEADER_SIZE + payload.len().min(MAX_PORT_NAME);
        bytes[CONTROL_HEADER_SIZE..len].copy_from_slice(&payload[..len - CONTROL_HEADER_SIZE]);
        Encoded { bytes, len }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The `{le16 cols; le16 rows}` that follows `RESIZE` (the specification's
/// order; see the module docs of [`super`]).
pub(crate) fn resize_payload(cols: u16, rows: u16) -> [u8; 4] {
    let [c0, c1] = cols.to_le_bytes();
    let [r0, r1] = rows.to_le_bytes();
    [c0, c1, r0, r1]
}

/// `(cols, rows)` from a `RESIZE` payload.
pub(crate) fn parse_resize(payload: &[u8]) -> Result<(u16, u16), ConsoleError> {
    match payload {
        [c0, c1, r0, r1, ..] => Ok((
            u16::from_le_bytes([*c0, *c1]),
            u16::from_le_bytes([*r0, *r1]),
        )),
        _ => Err(ConsoleError::Corrupt("a RESIZE message without its size")),
    }
}

/// A port name: up to [`MAX_PORT_NAME`] bytes of UTF-8, held without allocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PortName {
    bytes: [u8; MAX_PORT_NAME],
    len: u8,
}

impl PortName {
    /// No name.
    pub const EMPTY: PortName = PortName {
        bytes: [0; MAX_PORT_NAME],
        len: 0,
    };

    /// `name`, if it fits.
    pub fn new(name: &str) -> Result<Self, ConsoleError> {
        Self::from_bytes(name.as_bytes())
            .ok_or(ConsoleError::Layout("port names are at most 56 bytes"))
    }

    /// The name in `bytes` (as a `PORT_NAME` payload), if it is UTF-8 and fits.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_PORT_NAME || core::str::from_utf8(bytes).is_err() {
            return None;
        }
        let mut name = PortName::EMPTY;
        name.bytes[..bytes.len()].copy_from_slice(bytes);
        name.len = bytes.len() as u8;
        Some(name)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Whether there is no name.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for PortName {
    fn default() -> Self {
        PortName::EMPTY
    }
}

impl fmt::Debug for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for PortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_payloads_follow_the_specification() {
        let m = ControlMessage {
            id: 2,
            event: event::PORT_OPEN,
            value: 1,
        };
        assert_eq!(m.to_bytes(), [2, 0, 0, 0, 6, 0, 1, 0]);
        assert_eq!(ControlMessage::from_bytes(&m.to_bytes()), m);
        assert_eq!(resize_payload(80, 25), [80, 0, 25, 0]);
        assert_eq!(parse_resize(&[80, 0, 25, 0]), Ok((80, 25)));
        assert!(parse_resize(&[80, 0, 25]).is_err());
        let named = Encoded::new(m, b"org.ivlink.0");
        assert_eq!(named.as_bytes().len(), 8 + 12);
        assert_eq!(&named.as_bytes()[8..], b"org.ivlink.0");
    }

    #[test]
    fn names_are_bounded_utf8() {
        assert_eq!(PortName::new("serial").unwrap().as_str(), "serial");
        assert!(PortName::new(&"x".repeat(MAX_PORT_NAME)).is_ok());
        assert!(PortName::new(&"x".repeat(MAX_PORT_NAME + 1)).is_err());
        assert!(PortName::from_bytes(&[0xff, 0xfe]).is_none());
        assert!(PortName::EMPTY.is_empty());
    }
}
