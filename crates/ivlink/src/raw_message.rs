//! Zephyr's doorbell-sample layout on a device: one NUL-terminated string at a
//! fixed offset, written before ringing a peer, read by whoever is rung (or, with
//! no doorbell, by whoever sees it change). The layout itself is the core's
//! [`ivlink_core::raw_message`], re-exported here.

use std::time::Duration;

pub use ivlink_core::raw_message::*;
use ivlink_core::{NotifyError, PeerId, Vector};

use crate::device::{Device, DeviceError, Event, WaitFor};

/// Longest message a [`Listener`] reads.
pub const MAX_SHOWN: usize = 4096;
/// How long a [`Listener`] on a doorbell sleeps per call at most.
const DOORBELL_TICK: Duration = Duration::from_millis(100);

/// Checks that `peer` is connected and has `vector` (this peer always is), where
/// the device knows its peers.
pub fn check_reachable(
    device: &dyn Device,
    peer: PeerId,
    vector: Vector,
) -> Result<(), NotifyError> {
    let available = if peer == device.id() {
        device.vectors()
    } else {
        device
            .peers()
            .iter()
            .find(|p| p.id == peer)
            .ok_or(NotifyError::UnknownPeer(peer))?
            .vectors
    };
    if usize::from(vector) >= available {
        return Err(NotifyError::NoSuchVector {
            peer,
            vector,
            available,
        });
    }
    Ok(())
}

/// What a [`Listener`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A vector rang (`count` rings coalesced).
    Notified {
        /// The vector.
        vector: Vector,
        /// Rings since the last wake-up.
        count: u64,
    },
    /// No doorbell, but the message changed: it stands for a notification.
    Changed,
    /// A peer event (joined, left).
    Peer(Event),
    /// The server went away: nothing more will come.
    ServerGone,
}

/// The receiving side of the doorbell sample: doorbells where the device has
/// them, else a message that changes.
pub struct Listener<'d> {
    device: &'d dyn Device,
    tick: Duration,
    last_message: Vec<u8>,
}

impl<'d> Listener<'d> {
    /// Starts listening; without a doorbell the region is looked at every
    /// `poll_interval`. The message now in the region counts as seen.
    pub fn new(device: &'d dyn Device, poll_interval: Duration) -> Self {
        let tick = if device.has_doorbell() {
            DOORBELL_TICK
        } else {
            poll_interval.max(Duration::from_millis(1))
        };
        let mut listener = Listener {
            device,
            tick,
            last_message: Vec::new(),
        };
        listener.last_message = listener.message();
        listener
    }

    /// The message in the region now (at most [`MAX_SHOWN`] bytes; empty if
    /// unreadable).
    pub fn message(&self) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_SHOWN];
        let len = read(self.device.region(), OFFSET, &mut buf).unwrap_or(0);
        buf.truncate(len);
        buf
    }

    /// Waits one tick (at most 100 ms, or the poll interval) for something.
    pub fn listen(&mut self) -> Result<Option<Heard>, DeviceError> {
        Ok(
            match self.device.wait(WaitFor::ANYTHING, Some(self.tick))? {
                Some(Event::Notified { vector, count }) => Some(Heard::Notified { vector, count }),
                Some(Event::ServerGone) => Some(Heard::ServerGone),
                Some(other) => Some(Heard::Peer(other)),
                None if !self.device.has_doorbell() => {
                    let message = self.message();
                    if message != self.last_message {
                        self.last_message = message;
                        Some(Heard::Changed)
                    } else {
                        None
                    }
                }
                None => None,
            },
        )
    }
}
