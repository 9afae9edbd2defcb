//! An NTB (non-transparent bridge) switch on the region: the register model of
//! Linux's NTB API (`include/linux/ntb.h`) kept in shared memory, so that the
//! kernel's NTB test clients (ntb_tool, ntb_pingpong, ntb_perf) have faithful
//! counterparts between peers of one region.
//!
//! One section (directory kind [`SectionKind::Ntb`](crate::SectionKind)) holds a
//! switch of `ports` ports (2..=[`MAX_PORTS`]), like the partitions of an IDT
//! switch. A process takes a port (`claim`); every other port is one
//! of its peers, by a dense peer index (`pidx`) in port order without itself.
//! Every register lives in the region and changes only by atomic operations: a
//! doorbell ring is a `fetch_or`, a clear a `fetch_and`, a message a
//! compare-and-exchange of one word, so three writers never corrupt each other.
//!
//! # Layout (little-endian)
//!
//! Header, 64 bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | `magic` = `b"NTB1"` |
//! | 4 | 4 | `ports`: 2..=[`MAX_PORTS`] |
//! | 8 | 4 | `spad_count`: scratchpads per port, 0..=[`MAX_SPADS`] |
//! | 12 | 4 | `msg_count`: message registers per port, 0..=[`MSG_REGISTERS`] |
//! | 16 | 4 | `mw_count`: memory windows per port, 0..=[`MAX_WINDOWS`] |
//! | 20 | 4 | `vector`: the doorbell vector every event rings |
//! | 24 | 8 | `mw_size`: bytes per window, a multiple of [`MW_ALIGN`] |
//! | 32 | 4 | `state`: setup word ([`SETUP`]) |
//!
//! Then one block per port at `64 + port · block_size`, its parts on their own
//! cache lines so that writers of different registers do not share a line:
//!
//! | offset | size | written by | field |
//! |---|---|---|---|
//! | 0 | 4 | claimer | `owner`: peer id + 1, `JOINING` bit while it resets the port, 0 free |
//! | 4 | 4 | owner | `session`: the owning process's nonce |
//! | 8 | 4 | owner | `generation`: +1 on every claim (peers see a restart) |
//! | 12 | 4 | owner | `link`: 1 enabled, anything else disabled |
//! | 16 | 8 | owner, peers | `db_mask`: masked doorbell bits raise no event |
//! | 24 | 4 | owner | `msg_mask`: masked message status bits raise no event |
//! | 28 | 4 | owner | `msg_out_sts`: outbound status, bit m = the last write to register m was refused |
//! | 64 | 4 | anyone | `events`: pending event bits ([`Events`]), taken by the owner |
//! | 68 | 4 | owner, anyone | `want`: 1 = the owner sleeps; the next raiser clears it and rings |
//! | 128 | 8 | peers, owner | `db`: the inbound doorbell register |
//! | 192 | 8 · msg_count | peers, owner | inbound message registers (data, source port + 1, full bit) |
//! | spads | 4 · spad_count | peers, owner | scratchpads |
//! | inbound | 32 · mw_count | owner | inbound window translations (peer port + 1, offset, size) |
//! | outbound | 32 · mw_count | owner | outbound window translations |
//!
//! The windows follow, at the first 4 KiB boundary of the region after the
//! blocks: window `w` of port `p` is `mw_size` bytes at
//! `windows + (p · mw_count + w) · mw_size`. A window is plain region memory:
//! a peer writes into it with the region's checked copies, zero copy, no trap.
//!
//! # Rules
//!
//! - **Events.** A port's event is raised when an unmasked doorbell bit goes from
//!   0 to 1, a message arrives in an unmasked register (or a write of its own is
//!   refused), or a link changes; and **unmasking a bit that is already set raises
//!   it** (the NTB rule). Raising sets a bit in the port's `events` word; the
//!   doorbell rings only when the owner asked for it by setting `want` before it
//!   sleeps (vchan's notify-requested rule), so a busy port gets no interrupts.
//! - **Doorbells.** `peer_db_set` is `fetch_or`, `db_clear` is `fetch_and(!bits)`:
//!   bits set by several peers at once are all kept.
//! - **Messages.** An inbound register is one 64-bit word: data, source port and a
//!   full bit, written by one compare-and-exchange from empty. A write into a full
//!   register fails and sets the writer's outbound status bit. The owner clears
//!   the full bit (`msg_clear_sts`) to free the register.
//! - **Links.** Port `p` sees the link to `q` up when both are owned, both enabled
//!   their link and (checked by the std layer) both owners are connected.
//! - **Windows.** The owner of an inbound window translates it for one peer (an
//!   offset and size inside the window); the peer points an outbound window at it
//!   and gets a region offset and length back only while the owner's translation
//!   grants it that range.
//!
//! Every value read from the region is validated before use: the header against
//! the section on open, an owner word, a message's source port or a translation on
//! each use. A hostile peer can lie about its own registers; it cannot make
//! another port panic, wait forever, or reach outside the section.

use core::fmt;

use crate::setup::{SetupError, SetupWord};

mod doorbell;
mod layout;
mod message;
mod port;
#[cfg(test)]
mod tests;
mod window;

pub use doorbell::Ring;
pub use layout::{NtbHeader, NtbLayout, NtbShape};
pub use message::{Message, MsgWrite};
pub use port::{Claim, Owner, Rings};
pub use window::{MwAlign, Translation, Window};

/// Most ports a switch can have.
pub const MAX_PORTS: u32 = 16;
/// Most scratchpads per port.
pub const MAX_SPADS: u32 = 64;
/// Message registers per port (inbound and outbound each), as on the IDT switch.
pub const MSG_REGISTERS: u32 = 4;
/// Most memory windows per port (inbound and outbound each).
pub const MAX_WINDOWS: u32 = 16;
/// Alignment of a window's base and size, and of a translation inside it.
pub const MW_ALIGN: u64 = 4096;
/// Largest window (1 GiB).
pub const MAX_MW_SIZE: u64 = 1 << 30;
/// Inbound message status bits: bit `16 + m` = a message waits in register `m`
/// (the IDT's layout, so `msg_sts` reads as on that hardware).
pub const MSG_INBITS_SHIFT: u32 = 16;

/// A switch's setup word (see [`crate::setup`]).
pub const SETUP: SetupWord = SetupWord::numbered(32);

/// Event bits of a port's `events` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Events(pub u32);

impl Events {
    /// An unmasked doorbell bit was set (doorbell vector 0).
    pub const DB: Events = Events(1);
    /// A message arrived, or a message of this port was refused.
    pub const MSG: Events = Events(2);
    /// A link changed (a peer enabled or disabled it, left, or came back).
    pub const LINK: Events = Events(4);
    /// Every bit with a meaning.
    pub const ALL: Events = Events(7);

    /// No event.
    pub const fn is_empty(self) -> bool {
        self.0 & Self::ALL.0 == 0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Events) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets.
    pub const fn union(self, other: Events) -> Events {
        Events((self.0 | other.0) & Self::ALL.0)
    }
}

/// Why an NTB operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NtbLayoutError {
    /// The section does not hold a switch (or holds a damaged one).
    Invalid(&'static str),
    /// Another peer is still setting the switch up; try again shortly.
    Initializing,
    /// Every port is taken (or the one asked for is).
    PortTaken {
        /// The port asked for, or `None` for any.
        port: Option<u32>,
    },
    /// The port was taken over by another process.
    PortLost {
        /// The port.
        port: u32,
    },
    /// A port, peer, register or window index out of range (the kernel's `-EINVAL`).
    NoSuch {
        /// What was addressed: "port", "peer", "scratchpad", "message register", "window".
        what: &'static str,
        /// The index.
        index: u64,
        /// How many there are.
        count: u64,
    },
    /// A translation that is misaligned or does not fit the window.
    BadTranslation,
    /// The peer's inbound window does not grant this port the range asked for.
    NotGranted,
    /// A register holds a value no honest peer writes (a message from no port).
    Damaged(&'static str),
    /// The region refused an access.
    Region(crate::RegionError),
}

impl fmt::Display for NtbLayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NtbLayoutError::Invalid(what) => write!(f, "not a valid NTB switch: {what}"),
            NtbLayoutError::Initializing => {
                f.write_str("the NTB switch is being set up by another peer")
            }
            NtbLayoutError::PortTaken { port: Some(port) } => {
                write!(f, "NTB port {port} is taken by a live peer")
            }
            NtbLayoutError::PortTaken { port: None } => {
                f.write_str("every NTB port is taken by a live peer")
            }
            NtbLayoutError::PortLost { port } => {
                write!(f, "NTB port {port} was taken over by another process")
            }
            NtbLayoutError::NoSuch { what, index, count } => {
                write!(f, "no {what} {index} (there are {count})")
            }
            NtbLayoutError::BadTranslation => f.write_str(
                "the translation is misaligned or does not fit the window (4096-byte units)",
            ),
            NtbLayoutError::NotGranted => {
                f.write_str("the peer's inbound window does not grant this port that range")
            }
            NtbLayoutError::Damaged(what) => write!(f, "damaged NTB register: {what}"),
            NtbLayoutError::Region(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for NtbLayoutError {}

impl From<crate::RegionError> for NtbLayoutError {
    fn from(e: crate::RegionError) -> Self {
        NtbLayoutError::Region(e)
    }
}

impl From<SetupError> for NtbLayoutError {
    fn from(e: SetupError) -> Self {
        match e {
            SetupError::Abandoned => NtbLayoutError::Initializing,
            SetupError::Region(e) => NtbLayoutError::Region(e),
        }
    }
}

/// `Err(NoSuch)` unless `index < count`.
pub(crate) fn check_index(
    what: &'static str,
    index: u64,
    count: u64,
) -> Result<(), NtbLayoutError> {
    if index < count {
        Ok(())
    } else {
        Err(NtbLayoutError::NoSuch { what, index, count })
    }
}
