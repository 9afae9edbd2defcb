//! One side of a console from start to end: the virtio-mmio negotiation, the
//! console on the negotiated queues, and starting over when the other side
//! restarts. [`DriverSession`] and [`DeviceSession`] are what a runtime drives:
//! it calls `poll` until it returns no event, moves bytes with `read`/`write`,
//! calls `flush`, and rings the other side whenever one of them says so.
//!
//! # Restarts
//!
//! A driver always starts with a reset, so a device sees a driver's restart as
//! a reset request; a device that starts while a driver is there sets
//! `NEEDS_RESET` (see [`crate::virtio::mmio`]), so a driver sees a device's
//! restart as that bit or, in the native profile, as a new device generation.
//! Either way both sides drop their queues and negotiate again, and the
//! survivor reports the bytes it had sent that the other side never took
//! ([`SessionEvent::PeerRestarted`]): in the native profile each side records in
//! its header line how many bytes it took since the last reset, so the figure
//! is exact up to what the crashed process held between taking bytes and
//! recording them.
//!
//! # End of stream
//!
//! With `F_MULTIPORT` a side ends a port's output with `PORT_OPEN 0`. Without
//! it the native profile records ended ports in the side's header line, after
//! the data is published, so that the other side reads end of stream only once
//! it has drained everything before it. The Zephyr sample's profile has neither:
//! its ports never end.

use super::{
    ConsoleDevice, ConsoleDriver, ConsoleError, ConsoleLayout, DeviceEvent, DriverEvent,
    EMERG_WR_OFFSET, F_MULTIPORT, PortCounters, Side, SideKind, has,
};
use crate::region::{Le32, Region};
use crate::virtio::mmio::{MmioBlock, MmioError};

/// What happened on a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// Negotiation finished: the ports carry data.
    Up {
        /// The features both sides use.
        features: u64,
    },
    /// The other side started again; `lost` bytes this side had sent were never
    /// taken by it.
    PeerRestarted {
        /// Bytes sent and never taken.
        lost: u64,
    },
    /// A port event on the driver side.
    Driver(DriverEvent),
    /// A port event on the device side.
    Device(DeviceEvent),
    /// Device side: the driver wrote a byte through `emerg_wr`.
    Emergency(u8),
    /// Device side: the driver broke the negotiation's rules; the device asked
    /// for a reset and waits for it.
    DriverFailed(MmioError),
    /// The other side wrote something no correct peer writes into the queues:
    /// this side dropped them and negotiates again.
    PeerFault(ConsoleError),
}

/// What one call to `poll` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionPoll {
    /// Something happened (`None`: nothing more to do now).
    pub event: Option<SessionEvent>,
    /// Ring the other side.
    pub ring: bool,
}

impl SessionPoll {
    const IDLE: SessionPoll = SessionPoll {
        event: None,
        ring: false,
    };

    fn event(event: SessionEvent, ring: bool) -> Self {
        SessionPoll {
            event: Some(event),
            ring,
        }
    }
}

impl From<MmioError> for ConsoleError {
    fn from(e: MmioError) -> Self {
        ConsoleError::Mmio(e)
    }
}

/// Sums of every port's counters.
fn totals(counters: impl Iterator<Item = PortCounters>) -> PortCounters {
    counters.fold(PortCounters::default(), |sum, c| PortCounters {
        written: sum.written + c.written,
        buffered: sum.buffered + c.buffered,
        in_flight: sum.in_flight + c.in_flight,
        acknowledged: sum.acknowledged + c.acknowledged,
        received: sum.received + c.received,
    })
}

/// Bytes of `written` the other side did not take, by its own (untrusted) count.
fn not_taken(written: u64, taken_by_peer: u64) -> u64 {
    written - taken_by_peer.min(written)
}

/// The header lines of a native layout: this side's and the other's.
fn sides(layout: &ConsoleLayout, me: SideKind) -> Option<(Side, Side)> {
    Some((layout.side(me)?, layout.side(me.other())?))
}

/// The public calls of a session, each passing through `guard`: what the other
/// side got wrong resets the session instead of failing the call. Both sessions
/// have the same ones, over their own `*_inner` calls and `fault`.
macro_rules! guarded_io {
    () => {
        /// Advances negotiation, notices a restarted or misbehaving peer, and hands
        /// out one event.
        pub fn poll<R: Region + ?Sized>(
            &mut self,
            region: &R,
        ) -> Result<SessionPoll, ConsoleError> {
            if let Some(event) = self.pending.take() {
                return Ok(SessionPoll::event(event, true));
            }
            let polled = self.poll_inner(region);
            self.guard(region, polled)
        }

        /// Copies up to `buf.len()` bytes the other side sent on `port`; 0 if none
        /// now.
        pub fn read<R: Region + ?Sized>(
            &mut self,
            region: &R,
            port: u32,
            buf: &mut [u8],
        ) -> Result<usize, ConsoleError> {
            let n = self.read_inner(region, port, buf);
            self.guard(region, n)
        }

        /// Takes as much of `data` for `port` as the buffers hold (0 while the
        /// console is down or no buffer is free).
        pub fn write<R: Region + ?Sized>(
            &mut self,
            region: &R,
            port: u32,
            data: &[u8],
        ) -> Result<usize, ConsoleError> {
            let n = self.write_inner(region, port, data);
            self.guard(region, n)
        }

        /// Publishes what was written and read; returns whether to ring.
        pub fn flush<R: Region + ?Sized>(&mut self, region: &R) -> Result<bool, ConsoleError> {
            let ring = self.flush_inner(region);
            self.guard(region, ring)
        }

        /// Turns what the other side got wrong into a reset of the session (its
        /// event comes from the next `poll`); passes everything else on.
        fn guard<R: Region + ?Sized, T: Default>(
            &mut self,
            region: &R,
            result: Result<T, ConsoleError>,
        ) -> Result<T, ConsoleError> {
            match result {
                Err(e) if e.is_peer_fault() => {
                    self.pending = Some(self.fault(region, e)?);
                    Ok(T::default())
                }
                other => other,
            }
        }
    };
}

mod device;
mod driver;
#[cfg(test)]
mod tests;

pub use device::DeviceSession;
pub use driver::DriverSession;

/// Ends `port`'s output: `PORT_OPEN 0` with multiport, else the ended bit in
/// this side's header line.
fn end_output<R: Region + ?Sized, C: PortSide>(
    console: &mut C,
    me: Option<Side>,
    region: &R,
    port: u32,
) -> Result<(), ConsoleError> {
    if console.multiport() {
        return console.close(port);
    }
    let me = me.ok_or(ConsoleError::NotNegotiated(
        "ending a port's output needs the native profile or multiport",
    ))?;
    let ended = me.ended(region)?;
    me.set_ended(region, ended | 1 << port)
}

/// Refuses to end a port no profile can end.
fn check_can_end(layout: &ConsoleLayout, port: u32) -> Result<(), ConsoleError> {
    if port >= layout.ports {
        return Err(ConsoleError::NoSuchPort(port));
    }
    if layout.header.is_none() && !has(layout.device_features, F_MULTIPORT) {
        return Err(ConsoleError::NotNegotiated(
            "ending a port's output needs the native profile or multiport",
        ));
    }
    Ok(())
}

/// What the sessions need of either side's console.
trait PortSide {
    fn multiport(&self) -> bool;
    fn close(&mut self, port: u32) -> Result<(), ConsoleError>;
    /// Every port's counters, summed.
    fn totals(&self) -> PortCounters;
}

macro_rules! port_side {
    ($console:ty) => {
        impl PortSide for $console {
            fn multiport(&self) -> bool {
                has(self.features(), F_MULTIPORT)
            }
            fn close(&mut self, port: u32) -> Result<(), ConsoleError> {
                self.close_output(port)
            }
            fn totals(&self) -> PortCounters {
                totals((0..self.ports()).filter_map(|p| self.port(p).ok().map(|s| s.counters)))
            }
        }
    };
}

port_side!(ConsoleDriver);
port_side!(ConsoleDevice);

/// The console config's `emerg_wr` word.
fn emerg_wr(block: MmioBlock) -> Le32 {
    Le32::at(block.config(EMERG_WR_OFFSET))
}

/// The `VendorID` an ivlink device publishes ("IVLK").
pub const VENDOR_ID: u32 = u32::from_le_bytes(*b"IVLK");
