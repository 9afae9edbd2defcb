//! Finding a protocol's named section through the region's directory, creating
//! the directory and the section on first use, so peers may start in any order.
//!
//! A section whose creator died half-way through its setup is not stuck: a peer
//! that finds it not ready, unchanged, for [`SETUP_STALE_AFTER`] gives up on it
//! (see [`ivlink_core::setup`]), withdraws its directory entry and sets the
//! protocol up again in a fresh section of the same name.

use std::time::{Duration, Instant};

use ivlink_core::directory::{Directory, DirectoryError, SectionInfo, SectionKind, SectionSpec};
use ivlink_core::setup::{Advice, SetupState, SetupWord, Watch};
use ivlink_core::{PeerId, RawRegion, Vector};

use crate::device::Device;

/// Sections a region's directory gets when a protocol creates it.
pub const DEFAULT_MAX_SECTIONS: u32 = 64;

/// How long a section may stay not ready, its setup word unchanged, before a peer
/// gives up on its creator. Setup takes microseconds; a creator that was only slow
/// fails its next step and finds the replacement.
pub const SETUP_STALE_AFTER: Duration = Duration::from_secs(2);

/// The section a protocol asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wanted<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its protocol.
    pub kind: SectionKind,
    /// Bytes it needs.
    pub size: usize,
    /// Its doorbell vector.
    pub vector: Vector,
    /// Its protocol's setup word.
    pub setup: SetupWord,
}

/// What a protocol does with the section once found: `added` says this peer
/// created it (and must write the protocol's header).
pub(crate) type Setup<'f, T, E> = &'f mut dyn FnMut(&SectionInfo, bool) -> Result<T, E>;

/// Finds or adds `wanted`, then runs `setup`; while another peer is still setting
/// up the directory, or the section (`busy` says so of a protocol error), retries
/// until `timeout`, then returns `timed_out()`. A section left half-built for
/// [`SETUP_STALE_AFTER`] is given up on and set up again. A section of another
/// kind under that name is `wrong_kind()`.
pub(crate) fn find_or_add<T, E: From<DirectoryError>>(
    device: &dyn Device,
    wanted: Wanted<'_>,
    timeout: Duration,
    setup: Setup<'_, T, E>,
    busy: impl Fn(&E) -> bool,
    wrong_kind: impl Fn() -> E,
    timed_out: impl FnOnce() -> E,
) -> Result<T, E> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut watch = Watch::new();
    loop {
        match attempt(
            device.region(),
            device.id(),
            wanted,
            &mut *setup,
            &wrong_kind,
        ) {
            Ok(found) => return Ok(found),
            Err(Attempt::Directory(DirectoryError::Initializing)) => {}
            Err(Attempt::Directory(e)) => return Err(e.into()),
            Err(Attempt::Protocol(e, info)) if busy(&e) => {
                let now = millis(start.elapsed());
                if reclaim(device.region(), wanted, &info, &mut watch, now)? {
                    continue;
                }
            }
            Err(Attempt::Protocol(e, _)) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(timed_out());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
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
/// every protocol) or the protocol's own setup on the section found.
enum Attempt<E> {
    Directory(DirectoryError),
    Protocol(E, SectionInfo),
}

impl<E> From<DirectoryError> for Attempt<E> {
    fn from(e: DirectoryError) -> Self {
        Attempt::Directory(e)
    }
}

fn attempt<T, E>(
    region: &RawRegion,
    owner: PeerId,
    wanted: Wanted<'_>,
    setup: Setup<'_, T, E>,
    wrong_kind: &impl Fn() -> E,
) -> Result<T, Attempt<E>> {
    let directory = Directory::open_or_create(region, DEFAULT_MAX_SECTIONS)?;
    let spec = SectionSpec::new(wanted.name, wanted.kind, wanted.size)
        .with_owner(owner)
        .with_vector(wanted.vector)
        .with_align(4096);
    let section = directory.get_or_add(&spec)?;
    let info = *section.info();
    if info.kind != wanted.kind {
        return Err(Attempt::Protocol(wrong_kind(), info));
    }
    setup(&info, section.is_added()).map_err(|e| {
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
    use ivlink_core::channel::{ChannelError, ChannelShape};
    use ivlink_core::directory::EntryState;

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
        let spec = SectionSpec::new("demo", SectionKind::Ring, SHAPE.check().unwrap())
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
    fn a_section_within_its_grace_time_is_waited_for_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("region");
        let creator = FilePeer::create(&path, 1 << 20, 7).unwrap();
        half_built(&creator, true);
        let a = FilePeer::create(&path, 1 << 20, 1).unwrap();
        let err =
            crate::channel::open_named(&a, "demo", SHAPE, Duration::from_millis(100)).unwrap_err();
        assert!(
            matches!(err, crate::channel::EndpointError::SetupTimeout(_)),
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
                crate::channel::EndpointError::Channel(ChannelError::Invalid(_))
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
