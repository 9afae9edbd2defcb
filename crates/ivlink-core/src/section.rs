//! What every protocol that lives in a named directory section has in common:
//! [`SectionProtocol`].
//!
//! The directory hands out sections by name and kind; the protocol decides how big
//! one must be, writes its header into a fresh one, validates an existing one, says
//! when another peer is still setting it up, and reads its header as-is for people
//! to look at. With that, one generic open-or-create (in the std crate) serves
//! every protocol, including taking over a section whose creator died half-way (the
//! [`crate::setup`] word), and one inspector per kind decodes it.

use crate::directory::SectionKind;
use crate::region::{Region, RegionError};
use crate::setup::{SetupState, SetupWord};

/// A protocol that lives in a named directory section. Implemented by the
/// protocol's layout type: the handle [`open`](Self::open) and
/// [`create`](Self::create) return, which locates everything in the section.
///
/// # Adding a protocol
///
/// 1. **A core module** (`ivlink_core::<name>`): the section's byte layout, its
///    layout type, a shape, a header snapshot, and an `impl SectionProtocol` for
///    the layout type (with a new [`SectionKind`] value if it needs one). Its
///    header has a [`SetupWord`]: the creator claims it, writes the rest, then
///    publishes.
/// 2. **One std endpoint** (`ivlink::<name>`): opens the section with
///    `ivlink::section::open_or_create::<Layout, Error>` (or `open_named`, if the
///    shape carries its doorbell vector), which creates it on first use, waits
///    while another peer sets it up and takes over a half-built one; the
///    endpoint's error implements `OpenFailure` (its setup-timeout message) and
///    the endpoint type waits on the doorbell.
/// 3. **One inspect module** (`ivlink/src/inspect/<name>.rs`): a serde report
///    built from the snapshot and the opened layout, its text lines, one
///    `Option` field in `SectionReport` and one line in inspect's table of kinds.
/// 4. **One CLI command module** (`ivlink-cli/src/commands/<name>.rs`): parses
///    arguments, calls the endpoint, prints.
pub trait SectionProtocol: Sized {
    /// The kind the section's directory entry records.
    const KIND: SectionKind;
    /// Where the header keeps its setup word, and its values.
    const SETUP: SetupWord;
    /// The parameters that fix a section's size and that its creator writes into
    /// the header.
    type Shape: Copy;
    /// The header as read, nothing validated, for showing to people: values may
    /// be hostile. Needs no allocation.
    type Snapshot: Copy;
    /// Why an operation failed.
    type Error: From<RegionError> + core::fmt::Debug + core::fmt::Display;

    /// Checks `shape` and gives the bytes of section it needs. Done before
    /// anything is created, so that a bad shape leaves nothing behind.
    fn section_size(shape: &Self::Shape) -> Result<usize, Self::Error>;

    /// Writes a fresh protocol with `shape` into the section at `offset` of `size`
    /// bytes (only the peer that added the section does this, once), claiming and
    /// publishing its setup word.
    fn create<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
        shape: &Self::Shape,
    ) -> Result<Self, Self::Error>;

    /// Validates the existing section at `offset` of `size` bytes and locates
    /// everything in it.
    fn open<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self, Self::Error>;

    /// Whether `error` (from [`open`](Self::open) or [`create`](Self::create))
    /// means another peer is still setting the section up, or gave up on it: worth
    /// waiting for, not a damaged section.
    fn is_initializing(error: &Self::Error) -> bool;

    /// The error for a section of the wanted name that holds another kind.
    fn wrong_kind() -> Self::Error;

    /// Reads the header of the section at `offset` of `size` bytes as-is. Fails
    /// only if the section lies outside the region or cannot hold a header.
    fn snapshot<R: Region + ?Sized>(
        region: &R,
        offset: usize,
        size: usize,
    ) -> Result<Self::Snapshot, Self::Error>;

    /// What the section's setup word says.
    fn setup_state<R: Region + ?Sized>(
        region: &R,
        offset: usize,
    ) -> Result<SetupState, RegionError> {
        Self::SETUP.state(region, offset)
    }
}

/// The meaning of a setup word's value for people: `empty` (0, not claimed),
/// `initializing`, `ready`, `abandoned`, or `None` for a value no peer writes.
pub fn setup_state_name(setup: &SetupWord, value: u32) -> Option<&'static str> {
    if value == setup.ready {
        Some("ready")
    } else if value == setup.abandoned {
        Some("abandoned")
    } else if value == setup.initializing {
        Some("initializing")
    } else if value == 0 {
        Some("empty")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeapRegion;
    use crate::channel::{ChannelLayout, ChannelShape};
    use crate::mailbox::{MailboxLayout, MailboxShape};
    use crate::rpmsg::{LinkLayout, NativeShape};
    use crate::stream::{StreamLayout, StreamShape};

    /// Creates `shape` at 4096 through the trait, opens it again, reads its
    /// snapshot; a fresh section is not ready, a created one is.
    fn round_trip<P: SectionProtocol + PartialEq + core::fmt::Debug>(
        shape: P::Shape,
    ) -> P::Snapshot {
        let region = HeapRegion::new(1 << 20);
        let size = P::section_size(&shape).unwrap();
        let err = P::open(&*region, 4096, size).unwrap_err();
        assert!(P::is_initializing(&err), "{err}");
        assert!(matches!(
            P::setup_state(&*region, 4096).unwrap(),
            SetupState::Pending(_)
        ));
        let created = P::create(&*region, 4096, size, &shape).unwrap();
        assert_eq!(P::open(&*region, 4096, size).unwrap(), created);
        assert_eq!(P::setup_state(&*region, 4096).unwrap(), SetupState::Ready);
        P::snapshot(&*region, 4096, size).unwrap()
    }

    #[test]
    fn every_protocol_creates_opens_and_reads_through_the_trait() {
        let channel = round_trip::<ChannelLayout>(ChannelShape {
            max_members: 3,
            ring_capacity: 256,
            vector: 2,
        });
        assert_eq!(&channel.magic, b"CHN1");
        assert_eq!((channel.max_members, channel.vector), (3, 2));
        let mailbox = round_trip::<MailboxLayout>(MailboxShape {
            max_members: 2,
            max_data: 8,
            id_count: 1,
            vector: 0,
            completion_vector: 0,
        });
        assert!(mailbox.has_magic());
        let stream = round_trip::<StreamLayout>(StreamShape {
            capacity: 128,
            peers: [1, 2],
        });
        assert_eq!(stream.peers, [1, 2]);
        let rpmsg = round_trip::<LinkLayout>(NativeShape::default());
        assert_eq!(
            (&rpmsg.magic, rpmsg.num, rpmsg.buf_size),
            (b"RPM1", 64, 512)
        );
        assert_eq!(rpmsg.attached_generation(), None);
    }

    #[test]
    fn a_bad_shape_is_refused_before_anything_is_written() {
        let bad = ChannelShape {
            max_members: 1,
            ring_capacity: 256,
            vector: 0,
        };
        assert!(<ChannelLayout as SectionProtocol>::section_size(&bad).is_err());
        assert!(
            <StreamLayout as SectionProtocol>::section_size(&StreamShape {
                capacity: 100,
                peers: [1, 2]
            })
            .is_err()
        );
        assert!(
            <LinkLayout as SectionProtocol>::section_size(&NativeShape {
                num: 3,
                buf_size: 512
            })
            .is_err()
        );
    }

    #[test]
    fn setup_values_are_named() {
        let word = SetupWord::numbered(0);
        assert_eq!(setup_state_name(&word, 0), Some("empty"));
        assert_eq!(setup_state_name(&word, 2), Some("ready"));
        assert_eq!(setup_state_name(&word, 3), Some("abandoned"));
        assert_eq!(setup_state_name(&word, 9), None);
        let native = crate::rpmsg::NATIVE_SETUP;
        assert_eq!(setup_state_name(&native, 0), Some("initializing"));
    }
}
