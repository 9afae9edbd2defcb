//! A member's end of a channel: send to any member, receive from all, wait by
//! spinning then sleeping on the channel's doorbell vector.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ivlink_core::channel::{ChannelLayout, ChannelLayoutError};
use ivlink_core::directory::DirectoryError;

use crate::section::{NamedShape, OpenFailure};
use ivlink_core::ring::{Consumer, Producer, ReadGrant, RingError, WriteGrant};
use ivlink_core::{PeerId, RawRegion};
use thiserror::Error;

use crate::device::{Device, DeviceError};
use crate::wait::{SpinThenSleep, WaitError, Waitable};

mod membership;

/// The shape a channel is created with.
pub use ivlink_core::channel::ChannelShape;

/// Why a channel operation failed.
#[derive(Debug, Error)]
pub enum ChannelError {
    /// The channel itself is unusable.
    #[error(transparent)]
    Layout(#[from] ChannelLayoutError),
    /// The ring with `peer` is corrupted; that peer is cut off, the others work on.
    #[error("ring with peer {peer}: {error}")]
    Corrupt {
        /// The peer whose ring is damaged.
        peer: PeerId,
        /// What was wrong.
        error: RingError,
    },
    /// The peer is not a member.
    #[error("peer {0} is not a member of the channel")]
    NotMember(PeerId),
    /// The message can never fit.
    #[error(transparent)]
    Ring(RingError),
    /// Waiting on the doorbell failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Ringing a doorbell failed.
    #[error("notify peer {peer}: {error}")]
    Notify {
        /// The peer.
        peer: PeerId,
        /// Why.
        error: ivlink_core::NotifyError,
    },
    /// The peer's ring stayed full for the whole timeout.
    #[error("peer {0} did not make room in time")]
    Timeout(PeerId),
    /// The region's directory could not be opened or extended.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// Another peer was still setting the channel up when the timeout passed.
    #[error("channel '{0}' was still being set up by another peer")]
    SetupTimeout(String),
}

impl OpenFailure<ChannelLayout> for ChannelError {
    fn setup_timeout(name: &str) -> Self {
        ChannelError::SetupTimeout(name.to_owned())
    }
}

/// Sections a region's directory gets when a channel creates it.
pub const DEFAULT_MAX_SECTIONS: u32 = crate::section::DEFAULT_MAX_SECTIONS;

pub use crate::section::open_named;

impl NamedShape for ChannelShape {
    type Protocol = ChannelLayout;
    type Error = ChannelError;

    fn vector(&self) -> ivlink_core::Vector {
        self.vector
    }
}

/// One member's end of a channel.
pub struct Channel<'d> {
    device: &'d dyn Device,
    layout: ChannelLayout,
    slot: u32,
    policy: SpinThenSleep,
    outgoing: BTreeMap<u32, Producer<'d, RawRegion>>,
    incoming: BTreeMap<u32, Consumer<'d, RawRegion>>,
    members: BTreeMap<u32, PeerId>,
    unpublished: SlotSet,
    broken: BTreeSet<u32>,
    next: u32,
}

impl<'d> Channel<'d> {
    /// Joins the channel as `device`'s peer.
    pub fn join(
        device: &'d dyn Device,
        layout: ChannelLayout,
        policy: SpinThenSleep,
    ) -> Result<Self, ChannelError> {
        let slot = layout.join(device.region(), device.id())?;
        let mut endpoint = Channel {
            device,
            layout,
            slot,
            policy,
            outgoing: BTreeMap::new(),
            incoming: BTreeMap::new(),
            members: BTreeMap::new(),
            unpublished: SlotSet::default(),
            broken: BTreeSet::new(),
            next: 0,
        };
        endpoint.refresh_members()?;
        Ok(endpoint)
    }

    /// This member's slot.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The other members, by peer id.
    pub fn members(&mut self) -> Result<Vec<PeerId>, ChannelError> {
        self.refresh_members()?;
        Ok(self.members.values().copied().collect())
    }

    /// Queues `message` for `to` without waiting: `Ok(false)` if its ring is full.
    /// Messages become visible at the next [`flush`](Self::flush) (or `send`).
    pub fn try_send(&mut self, to: PeerId, message: &[u8]) -> Result<bool, ChannelError> {
        let slot = self.slot_of(to)?;
        let tx = self
            .outgoing
            .get_mut(&slot)
            .ok_or(ChannelError::NotMember(to))?;
        match tx.try_send(message) {
            Ok(sent) => {
                if sent {
                    self.unpublished.insert(slot);
                }
                Ok(sent)
            }
            Err(error @ (RingError::TooLarge { .. } | RingError::BufferTooSmall { .. })) => {
                Err(ChannelError::Ring(error))
            }
            Err(error) => Err(self
                .ring_failed(slot, to, error)
                .unwrap_or(ChannelError::NotMember(to))),
        }
    }

    /// Lends room for a message of `len` bytes to `to`, in place in its ring
    /// (zero-copy: write it through the grant's checked accessors, then
    /// [`commit`](WriteGrant::commit)); `Ok(None)` if the ring is full. Like a
    /// message from [`try_send`](Self::try_send), a committed one becomes
    /// visible at the next [`flush`](Self::flush); a grant dropped without a
    /// commit sends nothing. See [`ivlink_core::ring::grant`] for why grants
    /// have accessors rather than a `&mut [u8]`.
    pub fn try_reserve(
        &mut self,
        to: PeerId,
        len: usize,
    ) -> Result<Option<WriteGrant<'_, 'd, RawRegion>>, ChannelError> {
        let slot = self.slot_of(to)?;
        let tx = self
            .outgoing
            .get_mut(&slot)
            .ok_or(ChannelError::NotMember(to))?;
        // Asked twice: once to handle failures with `self` free, then for the
        // grant, which the first answer guarantees (nothing changed between).
        match tx.reserve(len).map(|grant| grant.is_some()) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(error @ RingError::TooLarge { .. }) => return Err(ChannelError::Ring(error)),
            Err(error) => {
                return Err(self
                    .ring_failed(slot, to, error)
                    .unwrap_or(ChannelError::NotMember(to)));
            }
        }
        self.unpublished.insert(slot);
        let tx = self
            .outgoing
            .get_mut(&slot)
            .ok_or(ChannelError::NotMember(to))?;
        tx.reserve(len).map_err(|error| ring_error(to, error))
    }

    /// Queues `message` for `to`, waiting up to `timeout` for room (publishing
    /// what is queued and sleeping on the doorbell if the ring stays full).
    pub fn send(
        &mut self,
        to: PeerId,
        message: &[u8],
        timeout: Option<Duration>,
    ) -> Result<(), ChannelError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.try_send(to, message)? {
                return Ok(());
            }
            self.flush()?;
            let slot = self.slot_of(to)?;
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(ChannelError::Timeout(to));
            }
            let tx = self
                .outgoing
                .get_mut(&slot)
                .ok_or(ChannelError::NotMember(to))?;
            let mut space = crate::wait::SpaceIn(tx, message.len());
            let ready = self
                .policy
                .wait(&mut space, self.device, self.layout.vector(), left)
                .map_err(|e| wait_error(to, e))?;
            if !ready {
                return Err(ChannelError::Timeout(to));
            }
        }
    }

    /// Publishes every queued message and rings the members that asked for it
    /// (one check per ring per batch). Allocates nothing.
    pub fn flush(&mut self) -> Result<(), ChannelError> {
        let mut pending = std::mem::take(&mut self.unpublished);
        while let Some(slot) = pending.pop_first() {
            if let Err(e) = self.publish(slot) {
                // The rest stay queued for the next flush.
                self.unpublished.extend(pending);
                return Err(e);
            }
        }
        Ok(())
    }

    fn publish(&mut self, slot: u32) -> Result<(), ChannelError> {
        let Some(&peer) = self.members.get(&slot) else {
            return Ok(());
        };
        let Some(tx) = self.outgoing.get_mut(&slot) else {
            return Ok(());
        };
        match tx.publish() {
            Ok(true) => self.ring(peer),
            Ok(false) => Ok(()),
            Err(error) => self.ring_failed(slot, peer, error).map_or(Ok(()), Err),
        }
    }

    /// Takes the next message from any member into `buf`: `(sender, length)`, or
    /// `None` if nothing is waiting. Members are served in turn. Allocates
    /// nothing once the members are known, so a caller reusing `buf` receives
    /// without touching the heap.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> Result<Option<(PeerId, usize)>, ChannelError> {
        if self.incoming.is_empty() {
            self.refresh_members()?;
        }
        let mut turn = Turn::starting_at(self.next);
        while let Some(slot) = turn.next_in(&self.incoming) {
            let peer = self.members[&slot];
            let rx = self.incoming.get_mut(&slot).expect("listed");
            match rx.try_recv(buf) {
                Ok(Some(len)) => {
                    self.next = slot + 1;
                    return Ok(Some((peer, len)));
                }
                Ok(None) => {
                    if rx.release().map_err(|e| ring_error(peer, e))? {
                        self.ring(peer)?;
                    }
                }
                Err(error @ RingError::BufferTooSmall { .. }) => {
                    return Err(ChannelError::Ring(error));
                }
                Err(error) => match self.ring_failed(slot, peer, error) {
                    Some(e) => return Err(e),
                    None => continue,
                },
            }
        }
        self.refresh_members()?;
        Ok(None)
    }

    /// Lends the next message from any member in place (zero-copy: read it
    /// through the grant's checked accessors, then
    /// [`release`](ReadGrant::release) it): `(sender, grant)`, or `None` if
    /// nothing is waiting. Members are served in turn, as by
    /// [`try_recv`](Self::try_recv). The record's length was validated against
    /// the sender's published data; a grant dropped unreleased leaves the
    /// message for the next call.
    pub fn try_peek(
        &mut self,
    ) -> Result<Option<(PeerId, ReadGrant<'_, 'd, RawRegion>)>, ChannelError> {
        if self.incoming.is_empty() {
            self.refresh_members()?;
        }
        let mut turn = Turn::starting_at(self.next);
        let mut found = None;
        while let Some(slot) = turn.next_in(&self.incoming) {
            let peer = self.members[&slot];
            let rx = self.incoming.get_mut(&slot).expect("listed");
            match rx.peek().map(|grant| grant.is_some()) {
                Ok(true) => {
                    found = Some((slot, peer));
                    break;
                }
                Ok(false) => {
                    if rx.release().map_err(|e| ring_error(peer, e))? {
                        self.ring(peer)?;
                    }
                }
                Err(error) => match self.ring_failed(slot, peer, error) {
                    Some(e) => return Err(e),
                    None => continue,
                },
            }
        }
        let Some((slot, peer)) = found else {
            self.refresh_members()?;
            return Ok(None);
        };
        self.next = slot + 1;
        // The record was validated just now and nothing consumed it since.
        let rx = self.incoming.get_mut(&slot).expect("listed");
        Ok(rx
            .peek()
            .map_err(|error| ring_error(peer, error))?
            .map(|grant| (peer, grant)))
    }

    /// Waits up to `timeout` (`None`: forever) for a message from any member.
    pub fn recv(
        &mut self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<Option<(PeerId, usize)>, ChannelError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(message) = self.try_recv(buf)? {
                return Ok(Some(message));
            }
            self.flush()?;
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(None);
            }
            // Wake for a new member too: re-scan slots at least every 100 ms.
            let slice = left.map_or(MEMBER_SCAN, |l| l.min(MEMBER_SCAN));
            let mut any = AnyIncoming(&mut self.incoming);
            self.policy
                .wait(&mut any, self.device, self.layout.vector(), Some(slice))
                .map_err(|e| match e {
                    WaitError::Protocol(error) => ChannelError::Ring(error),
                    WaitError::Device(e) => ChannelError::Device(e),
                })?;
            self.refresh_members()?;
        }
    }

    /// Forgets a member the server reported gone and frees its slot, so the
    /// others keep working and a newcomer can take the slot (with fresh rings).
    pub fn evict(&mut self, peer: PeerId) -> Result<bool, ChannelError> {
        let evicted = self.layout.evict(self.device.region(), peer)?;
        if let Some((&slot, _)) = self.members.iter().find(|(_, p)| **p == peer) {
            self.forget(slot);
            self.broken.remove(&slot);
        }
        Ok(evicted)
    }

    /// Peers whose rings were found corrupted and are cut off.
    pub fn broken(&self) -> Vec<PeerId> {
        self.broken
            .iter()
            .filter_map(|s| self.members.get(s).copied())
            .collect()
    }

    fn refresh_members(&mut self) -> Result<(), ChannelError> {
        let region = self.device.region();
        let own = self.slot;
        for slot in (0..self.layout.max_members()).filter(|&s| s != own) {
            let member = self.layout.member(region, slot).ok().flatten();
            match (member, self.members.get(&slot).copied()) {
                (Some(peer), Some(known)) if peer == known => continue,
                (None, None) => continue,
                (_, Some(_)) => self.forget(slot),
                (Some(_), None) => {}
            }
            let Some(peer) = member else { continue };
            if self.broken.contains(&slot) {
                continue;
            }
            let to = self.layout.ring(self.slot, slot)?;
            let from = self.layout.ring(slot, self.slot)?;
            match Producer::attach(region, to)
                .and_then(|tx| Ok((tx, Consumer::attach(region, from)?)))
            {
                Ok((tx, rx)) => {
                    self.outgoing.insert(slot, tx);
                    self.incoming.insert(slot, rx);
                    self.members.insert(slot, peer);
                }
                Err(error) => {
                    self.members.insert(slot, peer);
                    self.cut_off(slot);
                    return Err(ChannelError::Corrupt { peer, error });
                }
            }
        }
        Ok(())
    }

    fn slot_of(&mut self, peer: PeerId) -> Result<u32, ChannelError> {
        let find = |members: &BTreeMap<u32, PeerId>| {
            members.iter().find(|(_, p)| **p == peer).map(|(s, _)| *s)
        };
        if let Some(slot) = find(&self.members) {
            return Ok(slot);
        }
        self.refresh_members()?;
        find(&self.members).ok_or(ChannelError::NotMember(peer))
    }

    fn ring(&self, peer: PeerId) -> Result<(), ChannelError> {
        self.device
            .notify(peer, self.layout.vector())
            .map_err(|error| ChannelError::Notify { peer, error })
    }

    /// A ring with `peer` failed: if the peer has meanwhile left its slot (another
    /// member evicted it, or a newcomer reset the rings) it is simply forgotten;
    /// otherwise the ring is corrupt and the peer is cut off.
    fn ring_failed(&mut self, slot: u32, peer: PeerId, error: RingError) -> Option<ChannelError> {
        let current = self
            .layout
            .member(self.device.region(), slot)
            .ok()
            .flatten();
        if current != Some(peer) {
            self.forget(slot);
            return None;
        }
        self.cut_off(slot);
        Some(ChannelError::Corrupt { peer, error })
    }

    fn cut_off(&mut self, slot: u32) {
        self.broken.insert(slot);
        self.outgoing.remove(&slot);
        self.incoming.remove(&slot);
        self.unpublished.remove(slot);
    }

    fn forget(&mut self, slot: u32) {
        self.outgoing.remove(&slot);
        self.incoming.remove(&slot);
        self.unpublished.remove(slot);
        self.members.remove(&slot);
    }
}

/// Member slots as bits: a set that never allocates (slots are below
/// [`MAX_MEMBERS`](ivlink_core::channel::MAX_MEMBERS)).
#[derive(Debug, Clone, Copy, Default)]
struct SlotSet(u64);

const _: () = assert!(ivlink_core::channel::MAX_MEMBERS <= u64::BITS);

impl SlotSet {
    fn insert(&mut self, slot: u32) {
        debug_assert!(slot < u64::BITS, "slot {slot} out of range");
        self.0 |= 1u64.checked_shl(slot).unwrap_or(0);
    }

    fn remove(&mut self, slot: u32) {
        self.0 &= !1u64.checked_shl(slot).unwrap_or(0);
    }

    fn extend(&mut self, other: SlotSet) {
        self.0 |= other.0;
    }

    /// Takes the lowest slot out.
    fn pop_first(&mut self) -> Option<u32> {
        let slot = (self.0 != 0).then(|| self.0.trailing_zeros())?;
        self.0 &= self.0 - 1;
        Some(slot)
    }
}

/// Walks the keys of a slot map round-robin, starting at a slot and wrapping
/// once, without collecting them: the map may lose entries along the way.
struct Turn {
    start: u32,
    cursor: u32,
    wrapped: bool,
}

impl Turn {
    fn starting_at(start: u32) -> Self {
        Turn {
            start,
            cursor: start,
            wrapped: false,
        }
    }

    fn next_in<V>(&mut self, map: &BTreeMap<u32, V>) -> Option<u32> {
        loop {
            let found = map.range(self.cursor..).next().map(|(&slot, _)| slot);
            match found {
                Some(slot) if !self.wrapped || slot < self.start => {
                    match slot.checked_add(1) {
                        Some(cursor) => self.cursor = cursor,
                        None => (self.wrapped, self.cursor) = (true, 0),
                    }
                    return Some(slot);
                }
                None if !self.wrapped => {
                    self.wrapped = true;
                    self.cursor = 0;
                }
                _ => return None,
            }
        }
    }
}

/// How often a waiting receiver looks for new members.
const MEMBER_SCAN: Duration = Duration::from_millis(100);

fn ring_error(peer: PeerId, error: RingError) -> ChannelError {
    match error {
        RingError::TooLarge { .. }
        | RingError::BufferTooSmall { .. }
        | RingError::OutsideGrant { .. } => ChannelError::Ring(error),
        _ => ChannelError::Corrupt { peer, error },
    }
}

fn wait_error(peer: PeerId, e: WaitError<RingError>) -> ChannelError {
    match e {
        WaitError::Protocol(error) => ring_error(peer, error),
        WaitError::Device(e) => ChannelError::Device(e),
    }
}

/// Waiting for data on any incoming ring.
struct AnyIncoming<'a, 'd>(&'a mut BTreeMap<u32, Consumer<'d, RawRegion>>);

impl Waitable for AnyIncoming<'_, '_> {
    type Error = RingError;

    fn ready(&mut self) -> Result<bool, RingError> {
        for rx in self.0.values_mut() {
            if rx.has_data()? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn arm(&mut self) -> Result<bool, RingError> {
        for rx in self.0.values_mut() {
            if !rx.prepare_sleep()? {
                self.disarm()?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn disarm(&mut self) -> Result<(), RingError> {
        for rx in self.0.values_mut() {
            rx.finish_sleep()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(keys: &[u32], start: u32) -> Vec<u32> {
        let map: BTreeMap<u32, ()> = keys.iter().map(|&k| (k, ())).collect();
        let mut turn = Turn::starting_at(start);
        std::iter::from_fn(|| turn.next_in(&map)).collect()
    }

    #[test]
    fn turns_start_after_the_last_served_slot_and_wrap_once() {
        assert_eq!(walk(&[0, 2, 5], 0), [0, 2, 5]);
        assert_eq!(walk(&[0, 2, 5], 3), [5, 0, 2]);
        assert_eq!(walk(&[0, 2, 5], 6), [0, 2, 5]);
        assert_eq!(walk(&[], 1), [] as [u32; 0]);
        assert_eq!(walk(&[u32::MAX, 1], 2), [u32::MAX, 1]);
    }

    #[test]
    fn a_turn_skips_slots_dropped_along_the_way() {
        let mut map: BTreeMap<u32, ()> = [1, 3, 4].into_iter().map(|k| (k, ())).collect();
        let mut turn = Turn::starting_at(3);
        assert_eq!(turn.next_in(&map), Some(3));
        map.remove(&4);
        map.remove(&1);
        assert_eq!(turn.next_in(&map), None);
    }

    #[test]
    fn slot_sets_pop_in_slot_order() {
        let mut set = SlotSet::default();
        for slot in [63, 0, 7, 7] {
            set.insert(slot);
        }
        set.remove(7);
        let mut rest = SlotSet::default();
        rest.insert(9);
        set.extend(rest);
        let popped: Vec<u32> = std::iter::from_fn(|| set.pop_first()).collect();
        assert_eq!(popped, [0, 9, 63]);
    }
}
