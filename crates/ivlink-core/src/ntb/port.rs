//! Who owns a port, and its link: claiming a port (and taking over one whose
//! owner is gone), enabling and disabling the link, and which peers' links are up.

use core::sync::atomic::Ordering;

use super::{Events, NtbLayout, NtbLayoutError, Ring};
use crate::members::SlotState;
use crate::notify::PeerId;
use crate::region::{Le32, Region};

const OWNER: Le32 = Le32::at(0);
const SESSION: Le32 = Le32::at(4);
const GENERATION: Le32 = Le32::at(8);
const LINK: Le32 = Le32::at(12);
/// Marks an owner word while its new owner resets the port.
const JOINING: u32 = 1 << 31;
/// Where the claimer starts resetting a port's block: everything after the
/// owner word, translations included.
const RESET_FROM: usize = 4;

/// A port's owner as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The owning peer.
    pub peer: PeerId,
    /// The owning process's nonce.
    pub session: u32,
    /// How many times the port was claimed.
    pub generation: u32,
}

/// How a port is to be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The claiming peer.
    pub peer: PeerId,
    /// A nonce for the claiming process, so a takeover is noticed.
    pub session: u32,
    /// The port wanted, or `None` for the first free one.
    pub port: Option<u32>,
}

impl NtbLayout {
    /// The owner of `port`, validated: `None` while free or being reset; a word
    /// that names no peer is [`NtbLayoutError::Damaged`].
    pub fn owner<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
    ) -> Result<Option<Owner>, NtbLayoutError> {
        let at = self.port_block(port)?;
        let peer = match SlotState::decode(OWNER.of(at).load(region, Ordering::Acquire)?) {
            SlotState::Free | SlotState::Joining(_) => return Ok(None),
            SlotState::Member(peer) => peer,
            SlotState::Damaged(_) => return Err(NtbLayoutError::Damaged("port owner")),
        };
        Ok(Some(Owner {
            peer,
            session: SESSION.of(at).load(region, Ordering::Acquire)?,
            generation: GENERATION.of(at).load(region, Ordering::Acquire)?,
        }))
    }

    /// Takes a port for `claim.peer`: the one asked for, else the first free one.
    /// A port whose owner `gone` says has left (or is damaged) is taken over, and
    /// so is one the same peer holds when it asks for that port by number (a
    /// restarted process). The port's registers are reset before it is
    /// published; every other port then gets a link event. Returns the port and
    /// the peers to ring.
    pub fn claim<R: Region + ?Sized>(
        &self,
        region: &R,
        claim: Claim,
        gone: impl Fn(PeerId) -> bool,
    ) -> Result<(u32, Rings), NtbLayoutError> {
        let ports = self.shape().ports;
        let candidates = match claim.port {
            Some(port) => port..port + 1,
            None => 0..ports,
        };
        for port in candidates {
            let at = self.port_block(port)?;
            let word = OWNER.of(at).load(region, Ordering::Acquire)?;
            let free = match SlotState::decode(word) {
                SlotState::Free | SlotState::Damaged(_) => true,
                SlotState::Joining(peer) | SlotState::Member(peer) => {
                    gone(peer) || (claim.port.is_some() && peer == claim.peer)
                }
            };
            let joining = (u32::from(claim.peer) + 1) | JOINING;
            if !free
                || OWNER
                    .of(at)
                    .compare_exchange(region, word, joining)?
                    .is_err()
            {
                continue;
            }
            let generation = GENERATION.of(at).load(region, Ordering::Relaxed)?;
            region.fill(at + RESET_FROM, self.block_len() - RESET_FROM, 0)?;
            SESSION
                .of(at)
                .store(region, claim.session, Ordering::Relaxed)?;
            GENERATION
                .of(at)
                .store(region, generation.wrapping_add(1), Ordering::Relaxed)?;
            OWNER
                .of(at)
                .store(region, u32::from(claim.peer) + 1, Ordering::Release)?;
            return Ok((port, self.raise_on_others(region, port)?));
        }
        Err(NtbLayoutError::PortTaken { port: claim.port })
    }

    /// Whether `port` is still held by the process of `session`.
    pub fn holds<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        peer: PeerId,
        session: u32,
    ) -> Result<bool, NtbLayoutError> {
        Ok(self
            .owner(region, port)?
            .is_some_and(|o| o.peer == peer && o.session == session))
    }

    /// Gives `port` up (its process ends): the link goes down for every peer.
    pub fn release<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        peer: PeerId,
        session: u32,
    ) -> Result<Rings, NtbLayoutError> {
        if !self.holds(region, port, peer, session)? {
            return Err(NtbLayoutError::PortLost { port });
        }
        let at = self.port_block(port)?;
        LINK.of(at).store(region, 0, Ordering::SeqCst)?;
        let _ = OWNER
            .of(at)
            .compare_exchange(region, u32::from(peer) + 1, 0)?;
        self.raise_on_others(region, port)
    }

    /// Frees every port `peer` owns (the server reported it gone). Returns the
    /// ports freed.
    pub fn evict<R: Region + ?Sized>(
        &self,
        region: &R,
        peer: PeerId,
    ) -> Result<u32, NtbLayoutError> {
        let mut freed = 0;
        for port in 0..self.shape().ports {
            let at = self.port_block(port)?;
            if OWNER
                .of(at)
                .compare_exchange(region, u32::from(peer) + 1, 0)?
                .is_ok()
            {
                freed |= 1 << port;
            }
        }
        Ok(freed)
    }

    /// Enables (`true`) or disables `port`'s link; every other port gets a link
    /// event.
    pub fn set_link<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        enabled: bool,
    ) -> Result<Rings, NtbLayoutError> {
        LINK.of(self.port_block(port)?)
            .store(region, u32::from(enabled), Ordering::SeqCst)?;
        self.raise_on_others(region, port)
    }

    /// Whether `port` is owned and enabled its link (any value but 1 is off).
    pub fn link_enabled<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
    ) -> Result<bool, NtbLayoutError> {
        self.live_and_enabled(region, port, |_| false)
    }

    /// The peers of `port` whose link is up, as a bitmask of peer indices: both
    /// ends owned, enabled, and their owners not `gone`.
    pub fn link_is_up<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        gone: impl Fn(PeerId) -> bool,
    ) -> Result<u64, NtbLayoutError> {
        if !self.live_and_enabled(region, port, &gone)? {
            return Ok(0);
        }
        let mut up = 0;
        for pidx in 0..self.shape().ports - 1 {
            if self.live_and_enabled(region, self.peer_port(port, pidx)?, &gone)? {
                up |= 1 << pidx;
            }
        }
        Ok(up)
    }

    fn live_and_enabled<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        gone: impl Fn(PeerId) -> bool,
    ) -> Result<bool, NtbLayoutError> {
        let on = LINK
            .of(self.port_block(port)?)
            .load(region, Ordering::SeqCst)?
            == 1;
        Ok(on && matches!(self.owner(region, port), Ok(Some(o)) if !gone(o.peer)))
    }

    /// Raises a link event on every owned port but `port`.
    fn raise_on_others<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
    ) -> Result<Rings, NtbLayoutError> {
        let mut rings = Rings::default();
        for other in (0..self.shape().ports).filter(|&p| p != port) {
            if let Ok(Some(owner)) = self.owner(region, other)
                && self.raise(region, other, Events::LINK)? == Ring(true)
            {
                rings.add(owner.peer);
            }
        }
        Ok(rings)
    }
}

/// Peers to ring after a change that raised events on several ports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rings {
    peers: [PeerId; super::MAX_PORTS as usize],
    len: usize,
}

impl Rings {
    fn add(&mut self, peer: PeerId) {
        if !self.peers[..self.len].contains(&peer) && self.len < self.peers.len() {
            self.peers[self.len] = peer;
            self.len += 1;
        }
    }

    /// The peers, each once.
    pub fn peers(&self) -> &[PeerId] {
        &self.peers[..self.len]
    }
}
