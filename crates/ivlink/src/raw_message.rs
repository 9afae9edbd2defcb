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

/// One send of the doorbell sample: the message (if any) written at `offset`,
/// then `peer` rung on `vector`.
#[derive(Debug, Clone, Copy)]
pub struct RawSend<'a> {
    /// The peer to ring.
    pub peer: PeerId,
    /// Its vector.
    pub vector: Vector,
    /// The message, written before ringing.
    pub message: Option<&'a [u8]>,
    /// Where the message goes ([`OFFSET`] in the sample).
    pub offset: usize,
    /// Write even over the ivlink directory or its sections.
    pub force: bool,
}

/// How a [`RawSend`] went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Written (if there was a message) and rung.
    Notified,
    /// Written; the device has no doorbell, so peers see it by polling.
    WrittenOnly,
}

/// Why a [`RawSend`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RawSendError {
    /// The message would overwrite the directory or a section (without `force`).
    #[error("not writing the message at offset {offset}: {clash}")]
    Clash {
        /// Where it would go.
        offset: usize,
        /// What it would overwrite.
        clash: Clash,
    },
    /// The message could not be written.
    #[error("cannot write the message")]
    Write(#[source] RawMessageError),
    /// The peer could not be rung.
    #[error("cannot notify peer {peer} on vector {vector}")]
    Notify {
        /// The peer.
        peer: PeerId,
        /// The vector.
        vector: Vector,
        /// Why.
        #[source]
        source: NotifyError,
    },
}

/// Writes the message (refusing to overwrite ivlink's sections unless `force`)
/// and rings the peer. A message over a device without a doorbell is still a
/// success: pollers see it change.
pub fn write_and_notify(device: &dyn Device, send: &RawSend<'_>) -> Result<Sent, RawSendError> {
    if let Some(message) = send.message {
        if !send.force
            && let Some(clash) = clash(device.region(), send.offset, message.len())
        {
            return Err(RawSendError::Clash {
                offset: send.offset,
                clash,
            });
        }
        write(device.region(), send.offset, message).map_err(RawSendError::Write)?;
    }
    match device.notify(send.peer, send.vector) {
        Ok(()) => Ok(Sent::Notified),
        Err(NotifyError::Unsupported) if send.message.is_some() => Ok(Sent::WrittenOnly),
        Err(source) => Err(RawSendError::Notify {
            peer: send.peer,
            vector: send.vector,
            source,
        }),
    }
}
