//! A member's end of a mailbox (Zephyr-IPM-like): send an id and a few bytes to a
//! peer, optionally waiting until it has taken them; receive from every member,
//! sleeping on the mailbox's doorbell vector.
//!
//! A doorbell on the mailbox vector that brings no message (Zephyr's ivshmem IPM
//! driver only rings, it writes nothing) is delivered as an empty [`Message`]: id
//! 0, no data, sender unknown. To tell such bare doorbells from the ones that go
//! with messages, the receiver counts doorbells against taken messages that say a
//! doorbell goes with them (see `ivlink_core::mailbox`); rings coalesce, so bare
//! doorbells that arrive together may come out as fewer empty messages, never as
//! more.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ivlink_core::directory::DirectoryError;

use crate::section::{NamedShape, OpenFailure};
use ivlink_core::mailbox::MailboxLayoutError;
use ivlink_core::{NotifyError, PeerId};
use thiserror::Error;

use crate::device::{Device, DeviceError, Event, WaitFor};
use crate::wait::{SpinThenSleep, WaitError, Waitable};

mod deliver;
mod membership;

pub use deliver::{Delivery, DeliveryError, Outgoing, ZEPHYR_IPM_VECTOR, deliver};

/// The shape a mailbox is created with.
pub use ivlink_core::mailbox::MailboxShape;

/// A mailbox section as opened: its geometry, members and boxes.
pub use ivlink_core::mailbox::MailboxLayout;

/// Why a mailbox operation failed.
#[derive(Debug, Error)]
pub enum MailboxError {
    /// The mailbox refused (busy, too large, bad id, damaged section, ...).
    #[error(transparent)]
    Layout(#[from] MailboxLayoutError),
    /// The region's directory could not be opened or extended.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// Another peer was still setting the mailbox up when the timeout passed.
    #[error("mailbox '{0}' was still being set up by another peer")]
    SetupTimeout(String),
    /// The peer is not a member of the mailbox.
    #[error("peer {0} is not a member of the mailbox")]
    NotMember(PeerId),
    /// The receiver did not take the message within the wait (it stays in the
    /// mailbox, which is busy until the receiver takes it).
    #[error("peer {peer} did not take the message within {waited:?}")]
    NoCompletion {
        /// The receiver.
        peer: PeerId,
        /// How long the sender waited.
        waited: Duration,
    },
    /// Ringing a doorbell failed.
    #[error("notify peer {peer}: {error}")]
    Notify {
        /// The peer.
        peer: PeerId,
        /// Why.
        error: NotifyError,
    },
    /// Waiting on the doorbell failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

impl OpenFailure<MailboxLayout> for MailboxError {
    fn setup_timeout(name: &str) -> Self {
        MailboxError::SetupTimeout(name.to_owned())
    }
}

impl From<WaitError<MailboxLayoutError>> for MailboxError {
    fn from(e: WaitError<MailboxLayoutError>) -> Self {
        match e {
            WaitError::Protocol(e) => MailboxError::Layout(e),
            WaitError::Device(e) => MailboxError::Device(e),
        }
    }
}

pub use crate::section::open_named;

impl NamedShape for MailboxShape {
    type Protocol = MailboxLayout;
    type Error = MailboxError;

    fn vector(&self) -> ivlink_core::Vector {
        self.vector
    }
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender, if known: `None` for a bare doorbell, or when the sender has
    /// already left its slot.
    pub from: Option<PeerId>,
    /// The message id (0 for a bare doorbell).
    pub id: u32,
    /// The data (empty for a bare doorbell).
    pub data: Vec<u8>,
}

impl Message {
    /// Whether this is a bare doorbell (no message in the mailbox came with it).
    pub fn is_bare(&self) -> bool {
        self.from.is_none() && self.id == 0 && self.data.is_empty()
    }
}

/// One member's end of a mailbox.
pub struct Mailbox<'d> {
    device: &'d dyn Device,
    layout: MailboxLayout,
    slot: u32,
    policy: SpinThenSleep,
    busy_timeout: Duration,
    next: u32,
    /// Doorbells seen on the vector that no taken message accounts for yet.
    unmatched_rings: u64,
    /// Taken messages that said a doorbell goes with them, not yet seen ringing.
    unmatched_messages: u64,
    pending: VecDeque<Message>,
    buf: Vec<u8>,
}

impl<'d> Mailbox<'d> {
    /// Joins the mailbox as `device`'s peer.
    pub fn join(
        device: &'d dyn Device,
        layout: MailboxLayout,
        policy: SpinThenSleep,
    ) -> Result<Self, MailboxError> {
        let slot = layout.join(device.region(), device.id())?;
        Ok(Mailbox {
            device,
            layout,
            slot,
            policy,
            busy_timeout: Duration::ZERO,
            next: 0,
            unmatched_rings: 0,
            unmatched_messages: 0,
            pending: VecDeque::new(),
            buf: vec![0; layout.max_data_size()],
        })
    }

    /// How long [`send`](Self::send) waits for the receiver to take a previous
    /// message before giving up with [`MailboxLayoutError::Busy`] (default: not at all,
    /// like Zephyr's `-EBUSY`).
    pub fn with_busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The mailbox's geometry.
    pub fn layout(&self) -> MailboxLayout {
        self.layout
    }

    /// This member's slot.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// Largest message data, in bytes.
    pub fn max_data_size(&self) -> usize {
        self.layout.max_data_size()
    }

    /// Largest message id.
    pub fn max_id(&self) -> u32 {
        self.layout.max_id()
    }

    /// The other members, by peer id.
    pub fn members(&self) -> Vec<PeerId> {
        self.layout
            .members(self.device.region())
            .filter(|&(slot, _)| slot != self.slot)
            .map(|(_, peer)| peer)
            .collect()
    }

    /// Sends `id` and `data` to `to` and rings its doorbell. With `wait`, waits up
    /// to that long until `to` has taken the message (the completion); without,
    /// returns once the message is in the mailbox.
    pub fn send(
        &mut self,
        to: PeerId,
        id: u32,
        data: &[u8],
        wait: Option<Duration>,
    ) -> Result<(), MailboxError> {
        let region = self.device.region();
        let to_slot = self
            .layout
            .slot_of(region, to)
            .filter(|&s| s != self.slot)
            .ok_or(MailboxError::NotMember(to))?;
        let rung = self.device.has_doorbell();
        let busy_deadline = Instant::now() + self.busy_timeout;
        loop {
            match self.layout.send(region, self.slot, to_slot, id, data, rung) {
                Err(MailboxLayoutError::Busy) => {
                    let left = busy_deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(MailboxLayoutError::Busy.into());
                    }
                    self.wait_complete(to_slot, left)?;
                }
                other => break other?,
            }
        }
        if rung {
            self.device
                .notify(to, self.layout.vector())
                .map_err(|error| MailboxError::Notify { peer: to, error })?;
        }
        if let Some(waited) = wait
            && !self.wait_complete(to_slot, waited)?
        {
            return Err(MailboxError::NoCompletion { peer: to, waited });
        }
        Ok(())
    }

    fn wait_complete(&self, to_slot: u32, timeout: Duration) -> Result<bool, MailboxError> {
        let mut completion = Completion {
            layout: self.layout,
            region: self.device.region(),
            from: self.slot,
            to: to_slot,
        };
        Ok(self.policy.wait(
            &mut completion,
            self.device,
            self.layout.completion_vector(),
            Some(timeout),
        )?)
    }

    /// The next message without waiting, or `None`. Bad messages from hostile
    /// peers are logged and skipped.
    pub fn try_recv(&mut self) -> Result<Option<Message>, MailboxError> {
        if let Some(message) = self.pending.pop_front() {
            return Ok(Some(message));
        }
        self.take_one()
    }

    /// Waits up to `timeout` (`None`: forever) for the next message, or for a
    /// bare doorbell (delivered as an empty message).
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Option<Message>, MailboxError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let spin_until = Instant::now() + self.policy.spin;
        loop {
            if let Some(message) = self.try_recv()? {
                return Ok(Some(message));
            }
            let now = Instant::now();
            let left = deadline.map(|d| d.saturating_duration_since(now));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(None);
            }
            if now < spin_until {
                std::hint::spin_loop();
                continue;
            }
            if !self.device.has_doorbell() {
                // Not a plain sleep: a vanished server still ends the wait.
                self.device.wait(
                    WaitFor::NOTHING,
                    Some(left.unwrap_or(POLL_TICK).min(POLL_TICK)),
                )?;
                continue;
            }
            // Senders always ring: sleep on the vector and account for every ring.
            if let Some(Event::Notified { count, .. }) = self
                .device
                .wait(WaitFor::vector(self.layout.vector()), left)?
            {
                self.rings(count)?;
            }
        }
    }

    /// `count` doorbells rang: match them against taken messages, take whatever
    /// waits now, and queue an empty message for each ring left over.
    fn rings(&mut self, count: u64) -> Result<(), MailboxError> {
        let matched = count.min(self.unmatched_messages);
        self.unmatched_messages -= matched;
        self.unmatched_rings = self.unmatched_rings.saturating_add(count - matched);
        // A ring is sent after its message is in the mailbox: once everything
        // waiting is taken, rings still unmatched brought no message.
        while let Some(message) = self.take_one()? {
            self.pending.push_back(message);
        }
        let bare = std::mem::take(&mut self.unmatched_rings);
        for _ in 0..bare.min(MAX_BARE_PER_WAKE) {
            self.pending.push_back(Message {
                from: None,
                id: 0,
                data: Vec::new(),
            });
        }
        Ok(())
    }

    fn take_one(&mut self) -> Result<Option<Message>, MailboxError> {
        let region = self.device.region();
        loop {
            match self
                .layout
                .take(region, self.slot, self.next, &mut self.buf)
            {
                Ok(Some(taken)) => {
                    self.next = taken.from_slot + 1;
                    if taken.rung {
                        if self.unmatched_rings > 0 {
                            self.unmatched_rings -= 1;
                        } else {
                            self.unmatched_messages = self.unmatched_messages.saturating_add(1);
                        }
                    }
                    let from = self.layout.member(region, taken.from_slot).ok().flatten();
                    if taken.wants_completion
                        && let Some(peer) = from
                        && let Err(error) =
                            self.device.notify(peer, self.layout.completion_vector())
                    {
                        tracing::debug!(peer, %error, "cannot ring the completion doorbell");
                    }
                    return Ok(Some(Message {
                        from,
                        id: taken.id,
                        data: self.buf[..taken.len].to_vec(),
                    }));
                }
                Ok(None) => return Ok(None),
                Err(error @ MailboxLayoutError::BadMessage { from_slot, .. }) => {
                    tracing::warn!(%error, "mailbox: skipping a bad message");
                    self.next = from_slot + 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Frees the slot of a peer the server reported gone. Take its last message
    /// first (drain with [`try_recv`](Self::try_recv)): a newcomer in the slot
    /// empties its boxes.
    pub fn evict(&mut self, peer: PeerId) -> Result<bool, MailboxError> {
        Ok(self.layout.evict(self.device.region(), peer)?)
    }
}

/// How often a transport without a doorbell looks again.
const POLL_TICK: Duration = Duration::from_micros(200);
/// Most empty messages one wake-up makes (a hostile peer may ring a lot).
const MAX_BARE_PER_WAKE: u64 = 1024;

/// Waiting until the receiver has taken our message.
struct Completion<'r> {
    layout: MailboxLayout,
    region: &'r ivlink_core::RawRegion,
    from: u32,
    to: u32,
}

impl Waitable for Completion<'_> {
    type Error = MailboxLayoutError;

    fn ready(&mut self) -> Result<bool, MailboxLayoutError> {
        self.layout.poll_complete(self.region, self.from, self.to)
    }

    fn arm(&mut self) -> Result<bool, MailboxLayoutError> {
        self.layout.arm_completion(self.region, self.from, self.to)
    }

    fn disarm(&mut self) -> Result<(), MailboxLayoutError> {
        // The request stays until the receiver takes the message: at worst one
        // completion doorbell more, which a later wait re-checks and ignores.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FilePeer;

    const SHAPE: MailboxShape = MailboxShape {
        max_members: 4,
        max_data: 64,
        id_count: 8,
        vector: 0,
        completion_vector: 1,
    };

    #[test]
    fn peers_on_a_file_exchange_messages_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("region");
        let a = FilePeer::create(&path, 1 << 20, 1).unwrap();
        let b = FilePeer::create(&path, 1 << 20, 2).unwrap();
        let layout_a = open_named(&a, "ipm", SHAPE, Duration::from_secs(1)).unwrap();
        let layout_b = open_named(&b, "ipm", SHAPE, Duration::from_secs(1)).unwrap();
        assert_eq!(layout_a, layout_b);
        let mut tx = Mailbox::join(&a, layout_a, SpinThenSleep::default()).unwrap();
        let mut rx = Mailbox::join(&b, layout_b, SpinThenSleep::default()).unwrap();
        assert_eq!(tx.members(), vec![2]);
        assert_eq!((tx.max_data_size(), tx.max_id()), (64, 7));
        tx.send(2, 3, b"hello", None).unwrap();
        assert!(matches!(
            tx.send(2, 3, b"again", None),
            Err(MailboxError::Layout(MailboxLayoutError::Busy))
        ));
        let got = rx.recv(Some(Duration::from_secs(1))).unwrap().unwrap();
        assert_eq!(
            got,
            Message {
                from: Some(1),
                id: 3,
                data: b"hello".to_vec()
            }
        );
        assert!(matches!(
            tx.send(2, 0, &[0; 65], None),
            Err(MailboxError::Layout(MailboxLayoutError::TooLarge { .. }))
        ));
        assert!(matches!(
            tx.send(9, 0, b"", None),
            Err(MailboxError::NotMember(9))
        ));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let got = rx.recv(Some(Duration::from_secs(5))).unwrap().unwrap();
                assert_eq!(got.data, b"waited");
            });
            tx.send(2, 1, b"waited", Some(Duration::from_secs(5)))
                .unwrap();
        });
        assert_eq!(rx.recv(Some(Duration::from_millis(10))).unwrap(), None);
    }
}
