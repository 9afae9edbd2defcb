//! Who is in a mailbox: waiting for a peer to join, and freeing the slots of
//! peers that left so the mailbox does not fill up with departed senders.

use std::time::{Duration, Instant};

use ivlink_core::PeerId;

use super::{Mailbox, MailboxError, Message};
use crate::device::{Event, WaitFor};

/// How often [`Mailbox::wait_for_member`] looks at the member slots again
/// (joining rings no doorbell).
const MEMBER_POLL: Duration = Duration::from_millis(5);

impl Mailbox<'_> {
    /// Waits up to `timeout` until `peer` is a member: `false` if it did not join
    /// in time.
    pub fn wait_for_member(&self, peer: PeerId, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.members().contains(&peer) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(MEMBER_POLL);
        }
        true
    }

    /// Evicts every peer the device has reported gone since the last call, without
    /// waiting. Before each eviction it takes what is waiting in this member's
    /// boxes (a newcomer in the departed peer's slot would empty them), at most
    /// `limit` messages in all, and returns those messages in order.
    pub fn evict_departed(&mut self, limit: Option<u64>) -> Result<Vec<Message>, MailboxError> {
        let mut taken = Vec::new();
        // A failing event source is not this mailbox's error: the next call retries.
        while let Ok(Some(event)) = self.device.wait(WaitFor::PEER_EVENTS, Some(Duration::ZERO)) {
            if let Event::PeerLeft { peer } = event {
                while limit.is_none_or(|l| (taken.len() as u64) < l)
                    && let Some(message) = self.try_recv()?
                {
                    taken.push(message);
                }
                self.evict(peer)?;
            }
        }
        Ok(taken)
    }
}
