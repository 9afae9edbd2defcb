//! Finding a protocol's named section through the region's directory, creating
//! the directory and the section on first use, so peers may start in any order.
//!
//! A section whose creator died half-way through its setup is not stuck: a peer
//! that finds it not ready, unchanged, for [`SETUP_STALE_AFTER`] gives up on it
//! (see [`ivlink_core::setup`]), withdraws its directory entry and sets the
//! protocol up again in a fresh section of the same name.

use std::time::{Duration, Instant};

use ivlink_core::directory::{Directory, DirectoryError, SectionInfo, SectionKind, SectionSpec};
use ivlink_core::section::SectionProtocol;
use ivlink_core::setup::{Advice, SetupState, SetupWord, Watch};
use ivlink_core::{PeerId, RawRegion, Vector};

use crate::device::Device;

/// Sections a region's directory gets when a protocol creates it.
pub const DEFAULT_MAX_SECTIONS: u32 = 64;

/// How long a section may stay not ready, its setup word unchanged, before a peer
/// gives up on its creator. Setup takes microseconds; a creator that was only slow
/// fails its next step and finds the replacement.
pub const SETUP_STALE_AFTER: Duration = Duration::from_secs(2);

/// What an endpoint's error says when [`open_or_create`] fails for reasons of
/// its own: another peer still setting the section up when the timeout passed, or
/// a section of that name holding another kind.
pub trait OpenFailure<P: SectionProtocol>: From<P::Error> + From<DirectoryError> {
    /// Another peer was still setting up the section `name` when the timeout
    /// passed.
    fn setup_timeout(name: &str) -> Self;

    /// The section `name` holds another kind (default: the protocol's own error).
    fn wrong_kind(name: &str) -> Self {
        let _ = name;
        P::wrong_kind().into()
    }
}

/// A shape that records its section's doorbell vector itself (channels,
/// mailboxes): it names its protocol and that protocol's endpoint error, so that
/// [`open_named`] needs nothing else.
pub trait NamedShape: Copy {
    /// The protocol it shapes.
    type Protocol: SectionProtocol<Shape = Self>;
    /// The endpoint's error.
    type Error: OpenFailure<Self::Protocol>;
    /// The doorbell vector the section's directory entry records.
    fn vector(&self) -> Vector;
}

/// Finds the section `name` through the region's directory, creating the
/// directory and the section (with `shape`) if they do not exist yet: peers may
/// start in any order. Waits up to `timeout` while another peer sets them up.
/// [`open_or_create`] for shapes that carry their vector, returning the layout.
pub fn open_named<S: NamedShape>(
    device: &dyn Device,
    name: &str,
    shape: S,
    timeout: Duration,
) -> Result<S::Protocol, S::Error> {
    open_or_create(device, name, &shape, shape.vector(), timeout).map(|(layout, _)| layout)
}

/// Finds the section `name` of protocol `P` through the region's directory,
/// creating the directory and the section (with `shape`, ringing `vector`) if
/// they do not exist yet: peers may start in any order. Returns the opened
/// layout and the section's directory entry.
///
/// While another peer is still setting up the directory or the section, retries
/// until `timeout`, then fails with [`OpenFailure::setup_timeout`]. A section left
/// half-built for [`SETUP_STALE_AFTER`] is given up on and set up again. A bad
/// shape is refused before anything is created.
pub fn open_or_create<P: SectionProtocol, E: OpenFailure<P>>(
    device: &dyn Device,
    name: &str,
    shape: &P::Shape,
    vector: Vector,
    timeout: Duration,
) -> Result<(P, SectionInfo), E> {
    let wanted = Wanted {
        name,
        kind: P::KIND,
        size: P::section_size(shape)?,
        vector,
        setup: P::SETUP,
    };
    let start = Instant::now();
    let deadline = start + timeout;
    let mut watch = Watch::new();
    loop {
        match attempt::<P>(device.region(), device.id(), wanted, shape) {
            Ok(found) => return Ok(found),
            Err(Attempt::Directory(DirectoryError::Initializing)) => {}
            Err(Attempt::Directory(e)) => return Err(e.into()),
            Err(Attempt::WrongKind) => return Err(E::wrong_kind(name)),
            Err(Attempt::Protocol(e, info)) if P::is_initializing(&e) => {
                let now = millis(start.elapsed());
                if reclaim(device.region(), wanted, &info, &mut watch, now)? {
                    continue;
                }
            }
            Err(Attempt::Protocol(e, _)) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            return Err(E::setup_timeout(name));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The section a protocol asks for.
#[derive(Debug, Clone, Copy)]
struct Wanted<'a> {
    name: &'a str,
    kind: SectionKind,
    size: usize,
    vector: Vector,
    setup: SetupWord,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Looks at a section that is not ready: gives up on it once its setup word has
/// stayed the same for [`SETUP_STALE_AFTER`] (or another peer gave up already),
/// then withdraws its entry. `Ok(true)` if the entry is gone and the caller should
/// look again at once.
fn reclaim(
    region: &RawRegion,
    wanted: Wanted<'_>,
    info: &SectionInfo,
    watch: &mut Watch,
    now_ms: u64,
) -> Result<bool, DirectoryError> {
    match wanted.setup.state(region, info.offset)? {
        SetupState::Ready => return Ok(false),
        SetupState::Abandoned => {}
        SetupState::Pending(value) => {
            let stale = millis(SETUP_STALE_AFTER);
            let Advice::GiveUp(value) = watch.observe(info.offset, value, now_ms, stale) else {
                return Ok(false);
            };
            if !wanted.setup.abandon(region, info.offset, value)? {
                return Ok(false);
            }
            tracing::warn!(
                section = wanted.name,
                creator = info.owner,
                "section was left half-built by its creator; setting it up again"
            );
        }
    }
    withdraw(region, info)?;
    Ok(true)
}

/// Withdraws `info`'s directory entry if it still describes that section.
fn withdraw(region: &RawRegion, info: &SectionInfo) -> Result<(), DirectoryError> {
    let directory = Directory::open(region)?;
    if directory.entry(info.index).is_ok_and(|now| now == *info) {
        directory.withdraw(info.index)?;
    }
    Ok(())
}

/// Why one attempt failed: the directory (its `Initializing` is retried here for
/// every protocol), a section of another kind under the name, or the protocol's
/// own setup on the section found.
enum Attempt<E> {
    Directory(DirectoryError),
    WrongKind,
    Protocol(E, SectionInfo),
}

impl<E> From<DirectoryError> for Attempt<E> {
    fn from(e: DirectoryError) -> Self {
        Attempt::Directory(e)
    }
}

fn attempt<P: SectionProtocol>(
    region: &RawRegion,
    owner: PeerId,
    wanted: Wanted<'_>,
    shape: &P::Shape,
) -> Result<(P, SectionInfo), Attempt<P::Error>> {
    let directory = Directory::open_or_create(region, DEFAULT_MAX_SECTIONS)?;
    let spec = SectionSpec::new(wanted.name, wanted.kind, wanted.size)
        .with_owner(owner)
        .with_vector(wanted.vector)
        .with_align(4096);
    let section = directory.get_or_add(&spec)?;
    let info = *section.info();
    if info.kind != wanted.kind {
        return Err(Attempt::WrongKind);
    }
    let opened = if section.is_added() {
        P::create(region, info.offset, info.size, shape)
    } else {
        P::open(region, info.offset, info.size)
    };
    opened.map(|layout| (layout, info)).map_err(|e| {
        if section.is_added() {
            // Our own setup failed: leave no half-built section for others to
            // wait on.
            give_up_own(region, wanted.setup, &info);
        }
        Attempt::Protocol(e, info)
    })
}

/// Gives up on a section this peer added but could not set up, and withdraws it.
fn give_up_own(region: &RawRegion, setup: SetupWord, info: &SectionInfo) {
    let abandoned = match setup.state(region, info.offset) {
        Ok(SetupState::Pending(value)) => setup.abandon(region, info.offset, value),
        Ok(SetupState::Abandoned) => Ok(true),
        Ok(SetupState::Ready) | Err(_) => Ok(false),
    };
    if abandoned.unwrap_or(false) {
        let _ = withdraw(region, info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FilePeer;
    use ivlink_core::channel::{ChannelLayoutError, ChannelShape};
    use ivlink_core::directory::EntryState;
    use ivlink_core::section::SectionProtocol;

    const SHAPE: ChannelShape = ChannelShape {
        max_members: 4,
        ring_capacity: 4096,
        vector: 0,
    };

    /// Adds "demo" as a creator that dies right after adding it (`claim`: after
    /// claiming its setup word too).
    fn half_built(device: &dyn Device, claim: bool) -> SectionInfo {
        let region = device.region();
        let directory = Directory::open_or_create(region, DEFAULT_MAX_SECTIONS).unwrap();
        let spec = SectionSpec::new("demo", SectionKind::Channel, SHAPE.check().unwrap())
            .with_owner(7)
            .with_align(4096);
        let info = directory.add(&spec).unwrap();
        if claim {
            ivlink_core::channel::SETUP
                .claim(region, info.offset)
                .unwrap();
        }
        info
    }

    #[test]
    fn a_section_whose_creator_died_mid_setup_is_set_up_again() {
        for claim in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("region");
            let dead = FilePeer::create(&path, 1 << 20, 7).unwrap();
            let stuck = half_built(&dead, claim);
            drop(dead);

            let a = FilePeer::create(&path, 1 << 20, 1).unwrap();
            let layout = crate::channel::open_named(&a, "demo", SHAPE, Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("claim {claim}: {e}"));
            let b = FilePeer::create(&path, 1 << 20, 2).unwrap();
            assert_eq!(
                crate::channel::open_named(&b, "demo", SHAPE, Duration::from_secs(1)).unwrap(),
                layout
            );
            let directory = Directory::open(a.region()).unwrap();
            assert!(matches!(
                directory.entry(stuck.index),
                Err(DirectoryError::NotReady {
                    state: EntryState::Withdrawn,
                    ..
                })
            ));
            let now = directory.find("demo").unwrap().unwrap();
            assert_ne!(now.offset, stuck.offset, "set up in fresh bytes");
            assert_eq!(now.owner, 1);
        }
    }

    #[test]
    fn a_half_built_mailbox_is_set_up_again_too() {
        use ivlink_core::mailbox::MailboxShape;
        let shape = MailboxShape {
            max_members: 2,
            max_data: 8,
            id_count: 1,
            vector: 0,
            completion_vector: 0,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("region");
        let dead = FilePeer::create(&path, 1 << 20, 7).unwrap();
        let spec = SectionSpec::new("ipm", SectionKind::Mailbox, shape.section_size().unwrap())
            .with_align(4096);
        let stuck = Directory::open_or_create(dead.region(), DEFAULT_MAX_SECTIONS)
            .unwrap()
            .add(&spec)
            .unwrap();
        ivlink_core::mailbox::SETUP
            .claim(dead.region(), stuck.offset)
            .unwrap();
        drop(dead);
        let a = FilePeer::create(&path, 1 << 20, 1).unwrap();
        crate::mailbox::open_named(&a, "ipm", shape, Duration::from_secs(20)).unwrap();
        let now = Directory::open(a.region())
            .unwrap()
            .find("ipm")
            .unwrap()
            .unwrap();
        assert_ne!(now.offset, stuck.offset);
    }

    #[test]
    fn a_half_built_stream_is_set_up_again_too() {
        use ivlink_core::stream::StreamLayout;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("region");
        let dead = FilePeer::create(&path, 1 << 20, 7).unwrap();
        let directory = Directory::open_or_create(dead.region(), DEFAULT_MAX_SECTIONS).unwrap();
        let spec = SectionSpec::new("pipe", StreamLayout::KIND, 4096).with_align(4096);
        let stuck = directory.add(&spec).unwrap();
        drop(dead);
        let a = FilePeer::create(&path, 1 << 20, 1).unwrap();
        crate::stream::Stream::open(&a, "pipe", 2, 128, 0, Duration::from_secs(20)).unwrap();
        let directory = Directory::open(a.region()).unwrap();
        let now = directory.find("pipe").unwrap().unwrap();
        assert_ne!(now.offset, stuck.offset, "set up in fresh bytes");
    }

    #[test]
    fn a_section_of_another_kind_is_refused_with_each_protocols_message() {
        let dir = tempfile::tempdir().unwrap();
        let a = FilePeer::create(&dir.path().join("region"), 1 << 20, 1).unwrap();
        crate::channel::open_named(&a, "demo", SHAPE, Duration::from_secs(1)).unwrap();
        let stream = crate::stream::Stream::open(&a, "demo", 2, 128, 0, Duration::from_secs(1));
        assert_eq!(
            stream.err().unwrap().to_string(),
            "section 'demo' is not a stream"
        );
        let shape = ivlink_core::mailbox::MailboxShape {
            max_members: 2,
            max_data: 8,
            id_count: 1,
            vector: 0,
            completion_vector: 0,
        };
        let mailbox = crate::mailbox::open_named(&a, "demo", shape, Duration::from_secs(1));
        assert!(
            mailbox
                .unwrap_err()
                .to_string()
                .contains("the section has another kind"),
        );
    }

    #[test]
    fn a_section_within_its_grace_time_is_waited_for_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("region");
        let creator = FilePeer::create(&path, 1 << 20, 7).unwrap();
        half_built(&creator, true);
        let a = FilePeer::create(&path, 1 << 20, 1).unwrap();
        let err =
            crate::channel::open_named(&a, "demo", SHAPE, Duration::from_millis(100)).unwrap_err();
        assert!(
            matches!(err, crate::channel::ChannelError::SetupTimeout(_)),
            "{err}"
        );
        assert_eq!(
            Directory::open(a.region())
                .unwrap()
                .find("demo")
                .unwrap()
                .unwrap()
                .owner,
            7
        );
    }

    #[test]
    fn a_bad_shape_creates_neither_directory_nor_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("region");
        let a = FilePeer::create(&path, 1 << 20, 1).unwrap();
        let bad = ChannelShape {
            ring_capacity: 1000,
            ..SHAPE
        };
        let err = crate::channel::open_named(&a, "demo", bad, Duration::from_secs(10)).unwrap_err();
        assert!(
            matches!(
                err,
                crate::channel::ChannelError::Layout(ChannelLayoutError::Invalid(_))
            ),
            "{err}"
        );
        assert_eq!(
            Directory::open(a.region()).unwrap_err(),
            DirectoryError::NotCreated
        );
        crate::channel::open_named(&a, "demo", SHAPE, Duration::from_secs(1)).unwrap();
    }
}
