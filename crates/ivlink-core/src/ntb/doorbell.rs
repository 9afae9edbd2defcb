//! Doorbell registers and events: ringing with `fetch_or`, clearing with
//! `fetch_and`, the mask, the unmask rule, and the notify-requested handshake
//! that decides when a doorbell vector rings.

use core::sync::atomic::Ordering;

use super::{Events, NtbLayout, NtbLayoutError};
use crate::region::{Le32, Le64, Region};

const DB_MASK: Le64 = Le64::at(16);
const EVENTS: Le32 = Le32::at(64);
const WANT: Le32 = Le32::at(68);
const DB: Le64 = Le64::at(128);

/// Whether the port's owner must be rung: it asked for a doorbell before it
/// went to sleep, and this raise took that request.
#[must_use = "ring the port's owner on the switch's vector when this is true"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ring(pub bool);

impl NtbLayout {
    /// Raises `events` on `port`; rings if its owner sleeps on them.
    pub fn raise<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        events: Events,
    ) -> Result<Ring, NtbLayoutError> {
        let at = self.port_block(port)?;
        EVENTS.of(at).fetch_or(region, events.0, Ordering::SeqCst)?;
        let taken = WANT.of(at).compare_exchange(region, 1, 0)?.is_ok();
        Ok(Ring(taken))
    }

    /// Takes the events raised on `port` since the last call (the owner only).
    pub fn take_events<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
    ) -> Result<Events, NtbLayoutError> {
        let at = self.port_block(port)?;
        let word = EVENTS.of(at).fetch_and(region, 0, Ordering::SeqCst)?;
        Ok(Events(word & Events::ALL.0))
    }

    /// Asks to be rung on the next event before sleeping, then looks again:
    /// `false` if an event is already pending (the request is withdrawn and the
    /// caller must not sleep).
    pub fn arm<R: Region + ?Sized>(&self, region: &R, port: u32) -> Result<bool, NtbLayoutError> {
        let at = self.port_block(port)?;
        WANT.of(at).store(region, 1, Ordering::SeqCst)?;
        if Events(EVENTS.of(at).load(region, Ordering::SeqCst)?).is_empty() {
            return Ok(true);
        }
        WANT.of(at).store(region, 0, Ordering::SeqCst)?;
        Ok(false)
    }

    /// Withdraws a request to be rung, after waking.
    pub fn disarm<R: Region + ?Sized>(&self, region: &R, port: u32) -> Result<(), NtbLayoutError> {
        let at = self.port_block(port)?;
        WANT.of(at).store(region, 0, Ordering::SeqCst)?;
        Ok(())
    }

    /// `port`'s inbound doorbell register.
    pub fn db_read<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
    ) -> Result<u64, NtbLayoutError> {
        Ok(DB
            .of(self.port_block(port)?)
            .load(region, Ordering::Acquire)?)
    }

    /// `port`'s doorbell mask.
    pub fn db_read_mask<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
    ) -> Result<u64, NtbLayoutError> {
        Ok(DB_MASK
            .of(self.port_block(port)?)
            .load(region, Ordering::Acquire)?)
    }

    /// Sets `bits` in `port`'s doorbell (a peer's `peer_db_set`, or the owner's
    /// `db_set`): a doorbell event if an unmasked bit went from 0 to 1.
    pub fn db_set<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        bits: u64,
    ) -> Result<Ring, NtbLayoutError> {
        let at = self.port_block(port)?;
        let before = DB.of(at).fetch_or(region, bits, Ordering::SeqCst)?;
        let mask = DB_MASK.of(at).load(region, Ordering::SeqCst)?;
        self.raise_if(region, port, bits & !before & !mask != 0, Events::DB)
    }

    /// Clears `bits` of `port`'s doorbell (write 1 to clear).
    pub fn db_clear<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        bits: u64,
    ) -> Result<(), NtbLayoutError> {
        DB.of(self.port_block(port)?)
            .fetch_and(region, !bits, Ordering::SeqCst)?;
        Ok(())
    }

    /// Masks `bits` of `port`'s doorbell: setting them raises no event.
    pub fn db_set_mask<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        bits: u64,
    ) -> Result<(), NtbLayoutError> {
        DB_MASK
            .of(self.port_block(port)?)
            .fetch_or(region, bits, Ordering::SeqCst)?;
        Ok(())
    }

    /// Unmasks `bits` of `port`'s doorbell. A bit that was masked and is already
    /// set raises the doorbell event now (the NTB rule): a ring that came while
    /// it was masked is not lost.
    pub fn db_clear_mask<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        bits: u64,
    ) -> Result<Ring, NtbLayoutError> {
        let at = self.port_block(port)?;
        let before = DB_MASK.of(at).fetch_and(region, !bits, Ordering::SeqCst)?;
        let db = DB.of(at).load(region, Ordering::SeqCst)?;
        self.raise_if(region, port, db & bits & before != 0, Events::DB)
    }

    fn raise_if<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        condition: bool,
        events: Events,
    ) -> Result<Ring, NtbLayoutError> {
        if condition {
            self.raise(region, port, events)
        } else {
            Ok(Ring(false))
        }
    }
}
