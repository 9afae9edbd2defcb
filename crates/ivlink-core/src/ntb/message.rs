//! Message registers and scratchpads.
//!
//! An inbound message register is one 64-bit word: the data in bits 0..32, the
//! source port + 1 in bits 32..40, and [`FULL`] in bit 63. A writer fills it by
//! one compare-and-exchange from a word without `FULL`, so two writers racing for
//! one register cannot mix their data and source: one wins, the other is refused.

use core::sync::atomic::Ordering;

use super::{Events, MSG_INBITS_SHIFT, NtbLayout, NtbLayoutError, Ring, check_index};
use crate::region::{Le32, Le64, Region};

const MSG_MASK: Le32 = Le32::at(24);
const MSG_OUT_STS: Le32 = Le32::at(28);
const MESSAGES: Le64 = Le64::at(192);
const SPADS: Le32 = Le32::at(256);
/// A message waits in the register.
const FULL: u64 = 1 << 63;
/// Compare-and-exchange attempts on a register a hostile peer keeps flipping.
const CAS_ATTEMPTS: usize = 8;

/// What became of a message written to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgWrite {
    /// It is in the peer's inbound register.
    Delivered(Ring),
    /// The peer's register still held a message: the writer's outbound status
    /// bit is set (the IDT reports this in a status bit, not as a failed write).
    Refused(Ring),
}

/// A message as read from an inbound register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The data.
    pub data: u32,
    /// The port that wrote it (`None`: never written since the port was reset).
    pub from: Option<u32>,
    /// The inbound status bit: not yet cleared by the owner.
    pub full: bool,
}

impl NtbLayout {
    fn message_at(&self, port: u32, midx: u32) -> Result<Le64, NtbLayoutError> {
        check_index(
            "message register",
            midx.into(),
            self.shape().msg_count.into(),
        )?;
        Ok(MESSAGES.of(self.port_block(port)?).index(midx as usize, 8))
    }

    fn spad_at(&self, port: u32, sidx: u32) -> Result<Le32, NtbLayoutError> {
        check_index("scratchpad", sidx.into(), self.shape().spad_count.into())?;
        Ok(SPADS.of(self.port_block(port)?).index(sidx as usize, 4))
    }

    /// Scratchpad `sidx` of `port`.
    pub fn spad_read<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        sidx: u32,
    ) -> Result<u32, NtbLayoutError> {
        Ok(self.spad_at(port, sidx)?.load(region, Ordering::Acquire)?)
    }

    /// Writes scratchpad `sidx` of `port`.
    pub fn spad_write<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        sidx: u32,
        value: u32,
    ) -> Result<(), NtbLayoutError> {
        Ok(self
            .spad_at(port, sidx)?
            .store(region, value, Ordering::Release)?)
    }

    /// The inbound status bits (`16 + m`: register `m` holds a message) of `port`.
    pub fn msg_inbits(&self) -> u32 {
        ((1u32 << self.shape().msg_count) - 1) << MSG_INBITS_SHIFT
    }

    /// The outbound status bits (`m`: the last write to register `m` was refused).
    pub fn msg_outbits(&self) -> u32 {
        (1u32 << self.shape().msg_count) - 1
    }

    /// `port`'s message status: outbound bits and inbound bits.
    pub fn msg_read_sts<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
    ) -> Result<u32, NtbLayoutError> {
        let at = self.port_block(port)?;
        let mut sts = MSG_OUT_STS.of(at).load(region, Ordering::Acquire)? & self.msg_outbits();
        for midx in 0..self.shape().msg_count {
            if self
                .message_at(port, midx)?
                .load(region, Ordering::Acquire)?
                & FULL
                != 0
            {
                sts |= 1 << (MSG_INBITS_SHIFT + midx);
            }
        }
        Ok(sts)
    }

    /// Clears status `bits` of `port`: an inbound bit frees its register for the
    /// next message.
    pub fn msg_clear_sts<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        bits: u32,
    ) -> Result<(), NtbLayoutError> {
        let at = self.port_block(port)?;
        MSG_OUT_STS
            .of(at)
            .fetch_and(region, !(bits & self.msg_outbits()), Ordering::SeqCst)?;
        for midx in 0..self.shape().msg_count {
            if bits & (1 << (MSG_INBITS_SHIFT + midx)) != 0 {
                self.message_at(port, midx)?
                    .fetch_and(region, !FULL, Ordering::SeqCst)?;
            }
        }
        Ok(())
    }

    /// `port`'s message status mask.
    pub fn msg_read_mask<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
    ) -> Result<u32, NtbLayoutError> {
        Ok(MSG_MASK
            .of(self.port_block(port)?)
            .load(region, Ordering::Acquire)?)
    }

    /// Masks status `bits` of `port`: they raise no message event.
    pub fn msg_set_mask<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        bits: u32,
    ) -> Result<(), NtbLayoutError> {
        MSG_MASK
            .of(self.port_block(port)?)
            .fetch_or(region, bits, Ordering::SeqCst)?;
        Ok(())
    }

    /// Unmasks status `bits` of `port`; a status bit already set among them
    /// raises the message event now.
    pub fn msg_clear_mask<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        bits: u32,
    ) -> Result<Ring, NtbLayoutError> {
        let before =
            MSG_MASK
                .of(self.port_block(port)?)
                .fetch_and(region, !bits, Ordering::SeqCst)?;
        let sts = self.msg_read_sts(region, port)?;
        if sts & bits & before != 0 {
            self.raise(region, port, Events::MSG)
        } else {
            Ok(Ring(false))
        }
    }

    /// Inbound message register `midx` of `port`, validated: a source that names
    /// no port is [`NtbLayoutError::Damaged`].
    pub fn msg_read<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        midx: u32,
    ) -> Result<Message, NtbLayoutError> {
        let word = self
            .message_at(port, midx)?
            .load(region, Ordering::Acquire)?;
        let from = match (word >> 32) as u8 {
            0 => None,
            plus_one if u32::from(plus_one) <= self.shape().ports => Some(u32::from(plus_one) - 1),
            _ => return Err(NtbLayoutError::Damaged("message from no port")),
        };
        if word & !(FULL | 0xff_ffff_ffff) != 0 {
            return Err(NtbLayoutError::Damaged("message register has unknown bits"));
        }
        Ok(Message {
            data: word as u32,
            from,
            full: word & FULL != 0,
        })
    }

    /// Writes `data` from port `from` into inbound register `midx` of port `to`.
    /// Refused while the register still holds a message: `from`'s outbound status
    /// bit is set then, and raises a message event on `from` unless masked.
    pub fn peer_msg_write<R: Region + ?Sized>(
        &self,
        region: &R,
        from: u32,
        to: u32,
        midx: u32,
        data: u32,
    ) -> Result<MsgWrite, NtbLayoutError> {
        self.peer_index(from, to)?;
        let register = self.message_at(to, midx)?;
        let word = FULL | (u64::from(from) + 1) << 32 | u64::from(data);
        let mut current = register.load(region, Ordering::Acquire)?;
        for _ in 0..CAS_ATTEMPTS {
            if current & FULL != 0 {
                break;
            }
            match register.compare_exchange(region, current, word)? {
                Ok(_) => {
                    let ring = self.raise_unmasked(region, to, 1 << (MSG_INBITS_SHIFT + midx))?;
                    return Ok(MsgWrite::Delivered(ring));
                }
                Err(now) => current = now,
            }
        }
        MSG_OUT_STS
            .of(self.port_block(from)?)
            .fetch_or(region, 1 << midx, Ordering::SeqCst)?;
        Ok(MsgWrite::Refused(self.raise_unmasked(
            region,
            from,
            1 << midx,
        )?))
    }

    fn raise_unmasked<R: Region + ?Sized>(
        &self,
        region: &R,
        port: u32,
        status_bit: u32,
    ) -> Result<Ring, NtbLayoutError> {
        if self.msg_read_mask(region, port)? & status_bit != 0 {
            return Ok(Ring(false));
        }
        self.raise(region, port, Events::MSG)
    }
}
