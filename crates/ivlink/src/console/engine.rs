//! One side's session with the std parts around it: whom to ring, what to
//! report, whether the other side is there.

use std::time::{Duration, Instant};

use ivlink_core::console::{
    ConsoleError, DeviceSession, DriverEvent, DriverSession, SessionEvent, SessionPoll, SideKind,
};
use ivlink_core::{PeerId, RawRegion};

use super::notice::{Notice, RegisterDump};
use super::{ConsoleFailure, ConsoleOptions, Profile};
use crate::device::Device;

/// Events handled per serve: a bound on the work of one call.
const MAX_EVENTS: usize = 64;
/// How often the peer list is looked at while the other side seems away.
const PRESENCE_CHECK: Duration = Duration::from_millis(50);

enum Side {
    Driver(Box<DriverSession>),
    Device(Box<DeviceSession>),
}

/// Dispatches one call to whichever session this side runs.
macro_rules! either {
    ($side:expr, $s:ident => $body:expr) => {
        match $side {
            Side::Driver($s) => $body,
            Side::Device($s) => $body,
        }
    };
}

/// A session and what the std layer keeps around it.
pub(super) struct Engine {
    side: Side,
    options: ConsoleOptions,
    /// A half sleeps on the doorbell; the other waits on the condvar.
    pub(super) sleeper: bool,
    /// Bumped each time the sleeper wakes.
    pub(super) epoch: u64,
    ring_pending: bool,
    lost: u64,
    /// Since when the other side has not been there (not up, or not connected).
    away_since: Option<Instant>,
    last_presence_check: Option<Instant>,
    present: bool,
}

impl Engine {
    pub(super) fn driver(session: DriverSession, options: &ConsoleOptions) -> Self {
        Self::new(Side::Driver(Box::new(session)), options)
    }

    pub(super) fn device(session: DeviceSession, options: &ConsoleOptions) -> Self {
        Self::new(Side::Device(Box::new(session)), options)
    }

    fn new(side: Side, options: &ConsoleOptions) -> Self {
        Engine {
            side,
            options: options.clone(),
            sleeper: false,
            epoch: 0,
            ring_pending: false,
            lost: 0,
            away_since: None,
            last_presence_check: None,
            present: true,
        }
    }

    /// Rings the other side at the next serve.
    pub(super) fn ring_later(&mut self, ring: bool) {
        self.ring_pending |= ring;
    }

    pub(super) fn is_up(&self) -> bool {
        either!(&self.side, s => s.is_up())
    }

    pub(super) fn lost(&self) -> u64 {
        self.lost
    }

    fn poll(&mut self, region: &RawRegion) -> Result<SessionPoll, ConsoleError> {
        either!(&mut self.side, s => s.poll(region))
    }

    fn flush(&mut self, region: &RawRegion) -> Result<bool, ConsoleError> {
        either!(&mut self.side, s => s.flush(region))
    }

    /// Polls the session until it has nothing more; returns what to tell.
    pub(super) fn serve(&mut self, device: &dyn Device) -> Result<Vec<Notice>, ConsoleFailure> {
        let region = device.region();
        let mut notices = Vec::new();
        let mut ring = std::mem::take(&mut self.ring_pending);
        for _ in 0..MAX_EVENTS {
            let polled = self.poll(region)?;
            ring |= polled.ring;
            let Some(event) = polled.event else { break };
            if let Some(notice) = self.handle(region, event)? {
                notices.push(notice);
            }
        }
        ring |= self.flush(region)?;
        if ring {
            self.ring(device);
        }
        Ok(notices)
    }

    fn handle(
        &mut self,
        region: &RawRegion,
        event: SessionEvent,
    ) -> Result<Option<Notice>, ConsoleError> {
        Ok(match event {
            SessionEvent::Up { features } => {
                // Busy sides do not ring each other: a sleeper asks first.
                either!(&mut self.side, s => s.set_wakeups(region, false))?;
                let dump = match &self.side {
                    Side::Device(s) => {
                        let layout = s.layout();
                        Some(RegisterDump::of(
                            s.mmio(),
                            layout.map.address_of(layout.block),
                            layout.version,
                            layout.queues().len(),
                        ))
                    }
                    Side::Driver(_) => None,
                };
                Some(Notice::Up { features, dump })
            }
            SessionEvent::PeerRestarted { lost } => {
                self.lost += lost;
                Some(Notice::PeerRestarted { lost })
            }
            SessionEvent::DriverFailed(e) => Some(Notice::DriverFailed(e.to_string())),
            SessionEvent::PeerFault(e) => Some(Notice::PeerFault(e.to_string())),
            SessionEvent::Emergency(byte) => Some(Notice::Emergency(byte)),
            SessionEvent::Driver(DriverEvent::Resized { cols, rows, .. }) => {
                Some(Notice::Resized { cols, rows })
            }
            SessionEvent::Driver(_) | SessionEvent::Device(_) => None,
        })
    }

    /// The peer to ring: as asked, else the other side's header line, else the
    /// profile's rule.
    fn target(&self, device: &dyn Device) -> Option<PeerId> {
        if self.options.peer.is_some() {
            return self.options.peer;
        }
        let (layout, other) = match &self.side {
            Side::Driver(s) => (s.layout(), SideKind::Device),
            Side::Device(s) => (s.layout(), SideKind::Driver),
        };
        match layout.profile {
            Profile::Native => layout.side(other)?.peer(device.region()).ok().flatten(),
            Profile::HvlZephyr => match self.side {
                Side::Device(_) => device.id().checked_add(1),
                Side::Driver(_) => device.id().checked_sub(1),
            },
        }
    }

    /// Rings the other side. A side that is not there yet finds everything when
    /// it starts, so a refused ring is no error.
    fn ring(&self, device: &dyn Device) {
        if let Some(peer) = self.target(device) {
            let _ = device.notify(peer, self.options.vector);
        }
    }

    pub(super) fn read(
        &mut self,
        device: &dyn Device,
        port: u32,
        buf: &mut [u8],
    ) -> Result<usize, ConsoleFailure> {
        let region = device.region();
        // The caller asks again only once it has put out what it got before.
        either!(&self.side, s => s.commit_taken(region))?;
        let n = either!(&mut self.side, s => s.read(region, port, buf))?;
        if n > 0 && self.flush(region)? {
            self.ring(device);
        }
        Ok(n)
    }

    pub(super) fn write(
        &mut self,
        device: &dyn Device,
        port: u32,
        data: &[u8],
    ) -> Result<usize, ConsoleFailure> {
        let region = device.region();
        let n = either!(&mut self.side, s => s.write(region, port, data))?;
        if n > 0 && self.flush(region)? {
            self.ring(device);
        }
        Ok(n)
    }

    /// Driver: the port the device named `name`; `None` while its names may
    /// still come, and an error once they all came without it.
    pub(super) fn port_named(&self, name: &str) -> Result<Option<u32>, ConsoleFailure> {
        let Side::Driver(s) = &self.side else {
            return Ok(None);
        };
        if let Some(port) = s.port_named(name) {
            return Ok(Some(port));
        }
        let Some(console) = s.console().filter(|_| s.names_known()) else {
            return Ok(None);
        };
        let names = (0..console.ports())
            .filter_map(|p| console.port(p).ok())
            .map(|p| match p.name.as_str() {
                "" => "-".to_owned(),
                name => name.to_owned(),
            })
            .collect();
        Err(ConsoleFailure::NoPortNamed {
            name: name.to_owned(),
            names,
        })
    }

    /// Driver: writes `byte` through `emerg_wr` and rings; `Some(false)` while
    /// the device has not taken the previous one, `None` on the device side.
    pub(super) fn emergency_write(
        &mut self,
        device: &dyn Device,
        byte: u8,
    ) -> Result<Option<bool>, ConsoleFailure> {
        let Side::Driver(s) = &self.side else {
            return Ok(None);
        };
        let written = s.emergency_write(device.region(), byte)?;
        if written {
            self.ring(device);
        }
        Ok(Some(written))
    }

    pub(super) fn peer_ended(&self, region: &RawRegion, port: u32) -> Result<bool, ConsoleFailure> {
        Ok(either!(&self.side, s => s.peer_ended(region, port))?)
    }

    pub(super) fn all_taken(&self, region: &RawRegion) -> Result<bool, ConsoleFailure> {
        Ok(either!(&self.side, s => s.all_taken(region))?)
    }

    /// Ends this side's output of `port` and rings: the other side may sleep
    /// waiting for data that will never come.
    pub(super) fn close(&mut self, device: &dyn Device, port: u32) -> Result<(), ConsoleFailure> {
        let region = device.region();
        self.flush(region)?;
        either!(&mut self.side, s => s.close_output(region, port))?;
        self.flush(region)?;
        self.ring(device);
        Ok(())
    }

    /// Asks to be rung before sleeping; true if something arrived meanwhile.
    pub(super) fn arm(&mut self, region: &RawRegion) -> Result<bool, ConsoleFailure> {
        Ok(either!(&mut self.side, s => s.set_wakeups(region, true))?)
    }

    pub(super) fn disarm(&mut self, region: &RawRegion) -> Result<(), ConsoleFailure> {
        either!(&mut self.side, s => s.set_wakeups(region, false))?;
        Ok(())
    }

    /// Fails once the other side has been away (not up, or not connected)
    /// longer than the absence timeout.
    pub(super) fn check_present(&mut self, device: &dyn Device) -> Result<(), ConsoleFailure> {
        let options = &self.options;
        let now = Instant::now();
        if self
            .last_presence_check
            .is_none_or(|at| now.duration_since(at) >= PRESENCE_CHECK)
        {
            self.last_presence_check = Some(now);
            self.present = self.is_up()
                && (!device.knows_peers()
                    || self
                        .target(device)
                        .is_some_and(|peer| device.peers().iter().any(|p| p.id == peer)));
        }
        if self.present {
            self.away_since = None;
            return Ok(());
        }
        let since = *self.away_since.get_or_insert(now);
        match options.absence_timeout {
            Some(limit) if now.duration_since(since) >= limit => Err(ConsoleFailure::Absent {
                role: options.role.other().name(),
                waited: limit,
            }),
            _ => Ok(()),
        }
    }
}
