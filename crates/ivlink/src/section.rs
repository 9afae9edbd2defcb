//! Finding a protocol's named section through the region's directory, creating
//! the directory and the section on first use, so peers may start in any order.

use std::time::{Duration, Instant};

use ivlink_core::directory::{Directory, DirectoryError, SectionInfo, SectionKind, SectionSpec};
use ivlink_core::{PeerId, Vector};

use crate::device::Device;

/// Sections a region's directory gets when a protocol creates it.
pub const DEFAULT_MAX_SECTIONS: u32 = 64;

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
}

/// What a protocol does with the section once found: `added` says this peer
/// created it (and must write the protocol's header).
pub(crate) type Setup<'f, T, E> = &'f mut dyn FnMut(&SectionInfo, bool) -> Result<T, E>;

/// Finds or adds `wanted`, then runs `setup`; while another peer is still setting
/// up the directory, or the section (`busy` says so of a protocol error), retries
/// until `timeout`, then returns `timed_out()`. A section of another kind under that name is `wrong_kind()`.
pub(crate) fn find_or_add<T, E: From<DirectoryError>>(
    device: &dyn Device,
    wanted: Wanted<'_>,
    timeout: Duration,
    setup: Setup<'_, T, E>,
    busy: impl Fn(&E) -> bool,
    wrong_kind: impl Fn() -> E,
    timed_out: impl FnOnce() -> E,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
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
            Err(Attempt::Protocol(e)) if busy(&e) => {}
            Err(Attempt::Protocol(e)) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(timed_out());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Why one attempt failed: the directory (its `Initializing` is retried here for
/// every protocol) or the protocol's own setup.
enum Attempt<E> {
    Directory(DirectoryError),
    Protocol(E),
}

impl<E> From<DirectoryError> for Attempt<E> {
    fn from(e: DirectoryError) -> Self {
        Attempt::Directory(e)
    }
}

fn attempt<T, E>(
    region: &ivlink_core::RawRegion,
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
        return Err(Attempt::Protocol(wrong_kind()));
    }
    setup(&info, section.is_added()).map_err(Attempt::Protocol)
}
