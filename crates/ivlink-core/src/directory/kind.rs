//! What a section holds, and where an entry is in its life.

use core::fmt;

use super::layout::ent;

/// What protocol a section holds.
///
/// Stored as a `u32`; values this version does not know are kept as
/// [`Other`](SectionKind::Other). `Other(n)` with `n` a known value reads back as the
/// named variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionKind {
    /// A channel: message rings between its members (1).
    Channel,
    /// A mailbox (2).
    Mailbox,
    /// A byte stream (3).
    Stream,
    /// RPMsg virtqueues (4).
    Rpmsg,
    /// A virtio console (5).
    Console,
    /// An NTB-style device (6).
    Ntb,
    /// Any other value.
    Other(u32),
}

impl SectionKind {
    /// The kind stored as `value`.
    pub const fn from_u32(value: u32) -> Self {
        match value {
            1 => SectionKind::Channel,
            2 => SectionKind::Mailbox,
            3 => SectionKind::Stream,
            4 => SectionKind::Rpmsg,
            5 => SectionKind::Console,
            6 => SectionKind::Ntb,
            other => SectionKind::Other(other),
        }
    }

    /// The value stored for this kind.
    pub const fn as_u32(self) -> u32 {
        match self {
            SectionKind::Channel => 1,
            SectionKind::Mailbox => 2,
            SectionKind::Stream => 3,
            SectionKind::Rpmsg => 4,
            SectionKind::Console => 5,
            SectionKind::Ntb => 6,
            SectionKind::Other(other) => other,
        }
    }
}

impl From<u32> for SectionKind {
    fn from(value: u32) -> Self {
        SectionKind::from_u32(value)
    }
}

impl From<SectionKind> for u32 {
    fn from(kind: SectionKind) -> Self {
        kind.as_u32()
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SectionKind::Channel => f.write_str("channel"),
            SectionKind::Mailbox => f.write_str("mailbox"),
            SectionKind::Stream => f.write_str("stream"),
            SectionKind::Rpmsg => f.write_str("rpmsg"),
            SectionKind::Console => f.write_str("console"),
            SectionKind::Ntb => f.write_str("ntb"),
            SectionKind::Other(other) => write!(f, "kind {other}"),
        }
    }
}

/// The state of an entry, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryState {
    /// 0: unused. Below `section_count` it means a peer has claimed the index and not
    /// yet written the entry's name.
    Free,
    /// 1: claimed; the name is written, the section is being set up.
    Claimed,
    /// 2: the section is ready.
    Ready,
    /// 3: withdrawn (a duplicate of an earlier section, or an add that did not
    /// complete); its space is leaked.
    Withdrawn,
}

impl EntryState {
    /// The state stored as `value`, if it is a known one.
    pub const fn from_u32(value: u32) -> Option<Self> {
        match value {
            ent::FREE => Some(EntryState::Free),
            ent::CLAIMED => Some(EntryState::Claimed),
            ent::READY => Some(EntryState::Ready),
            ent::WITHDRAWN => Some(EntryState::Withdrawn),
            _ => None,
        }
    }

    /// The value stored for this state.
    pub const fn as_u32(self) -> u32 {
        match self {
            EntryState::Free => ent::FREE,
            EntryState::Claimed => ent::CLAIMED,
            EntryState::Ready => ent::READY,
            EntryState::Withdrawn => ent::WITHDRAWN,
        }
    }
}

impl fmt::Display for EntryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryState::Free => "free",
            EntryState::Claimed => "claimed",
            EntryState::Ready => "ready",
            EntryState::Withdrawn => "withdrawn",
        })
    }
}
