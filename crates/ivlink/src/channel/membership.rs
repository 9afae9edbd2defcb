//! Who is in a channel: waiting for a peer to join, and freeing the slots of
//! peers that left so the channel does not fill up with departed members.

use std::time::{Duration, Instant};

use ivlink_core::PeerId;

use super::{Channel, ChannelError};
use crate::device::{Event, WaitFor};

/// How often [`Channel::wait_for_member`] looks at the member slots again
/// (joining rings no doorbell).
const MEMBER_POLL: Duration = Duration::from_millis(5);

impl Channel<'_> {
    /// Waits up to `timeout` until `peer` is a member: `Ok(false)` if it did not
    /// join in time.
    pub fn wait_for_member(
        &mut self,
        peer: PeerId,
        timeout: Duration,
    ) -> Result<bool, ChannelError> {
        let deadline = Instant::now() + timeout;
        while !self.members()?.contains(&peer) {
            if Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(MEMBER_POLL);
        }
        Ok(true)
    }

    /// Evicts every peer the device has reported gone since the last call, without
    /// waiting; returns how many slots were freed. Call it once everything is
    /// drained: a departed peer's unread messages go with its slot. Transports
    /// that know no peer events report none.
    pub fn evict_departed(&mut self) -> Result<usize, ChannelError> {
        let mut evicted = 0;
        // A failing event source is not this channel's error: the next call retries.
        while let Ok(Some(event)) = self.device.wait(WaitFor::PEER_EVENTS, Some(Duration::ZERO)) {
            if let Event::PeerLeft { peer } = event
                && self.evict(peer)?
            {
                evicted += 1;
            }
        }
        Ok(evicted)
    }
}
