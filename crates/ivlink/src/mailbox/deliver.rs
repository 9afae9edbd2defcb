//! One IPM-style send as Zephyr users expect it: a message with an id and data to
//! a member of the mailbox, or, to a peer that never joins one (Zephyr's IPM
//! driver is notify-only), a bare doorbell on vector 0 like `ivshmem_ipm_send`.

use std::time::Duration;

use ivlink_core::mailbox::MailboxShape;
use ivlink_core::{NotifyError, PeerId};
use thiserror::Error;

use super::{Mailbox, MailboxError, open_named};
use crate::device::Device;
use crate::wait::SpinThenSleep;

/// The vector Zephyr's `ivshmem_ipm_send` rings: its IPM is a bare doorbell.
pub const ZEPHYR_IPM_VECTOR: u16 = 0;

/// One message to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The receiving peer.
    pub peer: PeerId,
    /// The message id.
    pub id: u32,
    /// The data (empty: a bare doorbell to a peer outside the mailbox).
    pub data: &'a [u8],
    /// Wait until the peer has taken the message (IPM's `wait`).
    pub wait: bool,
    /// How long to wait for the mailbox to be set up, for room, for the peer to
    /// join (where the transport cannot tell who is connected), and with `wait`
    /// for completion.
    pub timeout: Duration,
}

/// How the message went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Into the peer's box in the mailbox (taken, with `wait`).
    Message,
    /// As a bare doorbell on [`ZEPHYR_IPM_VECTOR`]: the peer is no member.
    BareDoorbell,
}

/// Why an IPM send failed.
#[derive(Debug, Error)]
pub enum DeliveryError {
    /// The server knows of no such peer.
    #[error("cannot send the IPM message to peer {0}: peer {0} is not connected")]
    NotConnected(PeerId),
    /// The data can never fit.
    #[error("data of {len} bytes is larger than mailbox '{mailbox}' allows ({max} bytes max)")]
    TooLarge {
        /// Bytes of data.
        len: usize,
        /// The mailbox.
        mailbox: String,
        /// Its largest data.
        max: usize,
    },
    /// The id is outside the mailbox's ids.
    #[error("id {id} is out of range for mailbox '{mailbox}' (ids 0..={max})")]
    BadId {
        /// The id asked for.
        id: u32,
        /// The mailbox.
        mailbox: String,
        /// Its largest id.
        max: u32,
    },
    /// A connected peer outside the mailbox can take only a bare doorbell.
    #[error(
        "peer {peer} is a notify-only IPM peer (no member of ivlink mailbox '{mailbox}'): it can \
         take only a bare doorbell; send it no data{}",
        if *wait { " and without --wait" } else { "" }
    )]
    NotifyOnly {
        /// The peer.
        peer: PeerId,
        /// The mailbox.
        mailbox: String,
        /// Whether waiting for completion was asked for.
        wait: bool,
    },
    /// The peer did not join the mailbox within the timeout.
    #[error("peer {peer} did not join mailbox '{mailbox}' in time")]
    NotJoined {
        /// The peer.
        peer: PeerId,
        /// The mailbox.
        mailbox: String,
    },
    /// Ringing the bare doorbell failed.
    #[error("cannot ring peer {peer}")]
    Ring {
        /// The peer.
        peer: PeerId,
        /// Why.
        #[source]
        source: NotifyError,
    },
    /// Sending the message failed.
    #[error("cannot send the IPM message to peer {peer}")]
    Send {
        /// The peer.
        peer: PeerId,
        /// Why.
        #[source]
        source: MailboxError,
    },
    /// Opening or joining the mailbox failed.
    #[error(transparent)]
    Mailbox(#[from] MailboxError),
}

/// Sends `message` through the mailbox `name` (created with `shape` if missing):
/// refuses what can never be sent before waiting for anyone, rings a bare
/// doorbell for a peer outside the mailbox given no data, else joins, waits for
/// the peer to be a member, and sends.
pub fn deliver(
    device: &dyn Device,
    name: &str,
    shape: MailboxShape,
    policy: SpinThenSleep,
    message: &Outgoing<'_>,
) -> Result<Delivery, DeliveryError> {
    let Outgoing {
        peer,
        id,
        data,
        wait,
        timeout,
    } = *message;
    // Like `notify`: a peer the server does not know of is not worth waiting for.
    let knows_peers = device.knows_peers();
    if knows_peers && peer != device.id() && !device.peers().iter().any(|p| p.id == peer) {
        return Err(DeliveryError::NotConnected(peer));
    }
    let layout = open_named(device, name, shape, timeout)?;
    if data.len() > layout.max_data_size() {
        return Err(DeliveryError::TooLarge {
            len: data.len(),
            mailbox: name.to_owned(),
            max: layout.max_data_size(),
        });
    }
    if id > layout.max_id() {
        return Err(DeliveryError::BadId {
            id,
            mailbox: name.to_owned(),
            max: layout.max_id(),
        });
    }
    let is_member = layout.members(device.region()).any(|(_, p)| p == peer);
    if !is_member && data.is_empty() && !wait {
        // The id, data and wait of Zephyr's IPM call go nowhere either.
        device
            .notify(peer, ZEPHYR_IPM_VECTOR)
            .map_err(|source| DeliveryError::Ring { peer, source })?;
        return Ok(Delivery::BareDoorbell);
    }
    if !is_member && knows_peers {
        // Connected, yet no member: Zephyr's IPM driver never joins a mailbox.
        return Err(DeliveryError::NotifyOnly {
            peer,
            mailbox: name.to_owned(),
            wait,
        });
    }
    let mut mailbox = Mailbox::join(device, layout, policy)?.with_busy_timeout(timeout);
    if !mailbox.wait_for_member(peer, timeout) {
        return Err(DeliveryError::NotJoined {
            peer,
            mailbox: name.to_owned(),
        });
    }
    let result = mailbox
        .send(peer, id, data, wait.then_some(timeout))
        .map_err(|source| DeliveryError::Send { peer, source });
    // Without `wait` the message stays for the receiver after we leave; with it
    // (and done) nothing of ours is left: free the slot.
    if wait && result.is_ok() {
        let _ = mailbox.evict(device.id());
    }
    result.map(|()| Delivery::Message)
}
