//! The two sides of an echo session, as OpenAMP's `rpmsg_ivshmem` sample runs
//! them but without its start-order and restart limits: the remote side echoes
//! every message back ([`serve_echo`]); the host side waits for the remote to
//! bind its endpoint and times round trips ([`HostSession`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ivlink_core::rpmsg::LinkEvent;
use thiserror::Error;

use super::{RpmsgLink, RpmsgLinkError, RpmsgOptions};
use crate::device::{Device, Event, WaitFor};

/// How often a waiting side looks at a stop flag and its deadline.
const TICK: Duration = Duration::from_millis(100);
/// How long the echo side sleeps per look at its link before checking the stop
/// flag and whether the host left.
const ECHO_TICK: Duration = Duration::from_millis(200);
/// How long the echo side waits for a buffer to send an echo in.
const ECHO_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Waits this long or longer are "forever" (`--wait inf`).
const FOREVER: Duration = Duration::from_secs(1_000_000_000);

/// Why an echo session failed.
#[derive(Debug, Error)]
pub enum SessionError {
    /// The link or the transport.
    #[error(transparent)]
    Link(#[from] RpmsgLinkError),
    /// This side's endpoint could not be created.
    #[error("cannot create endpoint '{name}'")]
    CreateEndpoint {
        /// The endpoint's name.
        name: String,
        /// Why.
        #[source]
        source: RpmsgLinkError,
    },
    /// The stop flag was set while waiting for the remote side.
    #[error("interrupted while waiting for the remote side")]
    Interrupted,
    /// The remote side never brought the link up.
    #[error("the remote side did not come up within {:.1} s", .waited.as_secs_f64())]
    NotUp {
        /// How long this side waited.
        waited: Duration,
    },
    /// The link came up, but the remote side never announced our endpoint.
    #[error("the remote side did not announce endpoint '{name}' within {:.1} s", .waited.as_secs_f64())]
    NotAnnounced {
        /// The endpoint's name.
        name: String,
        /// How long this side waited.
        waited: Duration,
    },
    /// The echo side could not send a message back.
    #[error("cannot echo the message back")]
    Echo(#[source] RpmsgLinkError),
}

/// One deadline for everything a host waits on before the remote side is ready
/// (connecting, the link coming up, the endpoint being bound).
#[derive(Debug, Clone, Copy)]
pub struct WaitBudget {
    total: Duration,
    until: Option<Instant>,
}

impl WaitBudget {
    /// A budget of `total` from now; a billion seconds or more is forever.
    pub fn new(total: Duration) -> Self {
        let until = (total < FOREVER)
            .then(|| Instant::now().checked_add(total))
            .flatten();
        WaitBudget { total, until }
    }

    /// The whole budget, as given.
    pub fn total(&self) -> Duration {
        self.total
    }

    /// Whether the budget never runs out.
    pub fn is_forever(&self) -> bool {
        self.until.is_none()
    }

    /// What is left of the budget (`Duration::MAX` if forever).
    pub fn left(&self) -> Duration {
        self.until.map_or(Duration::MAX, |until| {
            until.saturating_duration_since(Instant::now())
        })
    }

    /// Whether the budget is spent.
    pub fn expired(&self) -> bool {
        self.left().is_zero()
    }
}

/// What became of one round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The same bytes came back.
    Echoed,
    /// Something else came back.
    Mismatch,
    /// The link was reset: the message is lost (wait for the endpoint again).
    Lost,
    /// Nothing came back in time.
    TimedOut,
}

/// The host side's endpoint on a link, once created.
pub struct HostSession<'d> {
    link: RpmsgLink<'d>,
    endpoint: u32,
    name: String,
}

impl<'d> HostSession<'d> {
    /// Opens the link and creates the endpoint `name` (announced once the link is
    /// up); then [`wait_bound`](Self::wait_bound) before sending.
    pub fn open(
        device: &'d dyn Device,
        options: &RpmsgOptions,
        name: &str,
    ) -> Result<Self, SessionError> {
        let mut link = RpmsgLink::open(device, options)?;
        let endpoint = link.create_endpoint(name, None, None).map_err(|source| {
            SessionError::CreateEndpoint {
                name: name.to_owned(),
                source,
            }
        })?;
        Ok(HostSession {
            link,
            endpoint,
            name: name.to_owned(),
        })
    }

    /// The link underneath.
    pub fn link(&self) -> &RpmsgLink<'d> {
        &self.link
    }

    /// Largest payload of one message.
    pub fn max_payload(&self) -> usize {
        self.link.max_payload()
    }

    /// Waits until the remote side has bound our endpoint (only then is the link
    /// ready to use) and returns the remote endpoint's address. Every other
    /// event on the way goes to `on_event`.
    pub fn wait_bound(
        &mut self,
        budget: &WaitBudget,
        stop: &AtomicBool,
        on_event: &mut dyn FnMut(&LinkEvent),
    ) -> Result<u32, SessionError> {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(SessionError::Interrupted);
            }
            if budget.expired() {
                return Err(self.not_bound(budget.total()));
            }
            match self.link.next_event(Some(budget.left().min(TICK)))? {
                Some(LinkEvent::Bound { local, remote }) if local == self.endpoint => {
                    return Ok(remote);
                }
                Some(other) => on_event(&other),
                None => {}
            }
        }
    }

    /// Why the remote side never bound, as far as this side can tell.
    fn not_bound(&self, waited: Duration) -> SessionError {
        if !self.link.link().is_up() {
            return SessionError::NotUp { waited };
        }
        SessionError::NotAnnounced {
            name: self.name.clone(),
            waited,
        }
    }

    /// Sends `data` and waits up to `timeout` for its echo. Every other event on
    /// the way (a reset included) goes to `on_event`.
    pub fn round_trip(
        &mut self,
        data: &[u8],
        timeout: Duration,
        on_event: &mut dyn FnMut(&LinkEvent),
    ) -> Result<Outcome, RpmsgLinkError> {
        self.link.send(self.endpoint, None, data, Some(timeout))?;
        let deadline = Instant::now() + timeout;
        // All of it is left on the first wait: no second clock read per message.
        let mut left = timeout;
        loop {
            match self.link.next_event(Some(left))? {
                None => return Ok(Outcome::TimedOut),
                Some(LinkEvent::Message { local, .. }) if local == self.endpoint => {
                    return Ok(if self.link.payload() == data {
                        Outcome::Echoed
                    } else {
                        Outcome::Mismatch
                    });
                }
                Some(reset @ LinkEvent::Reset { .. }) => {
                    on_event(&reset);
                    return Ok(Outcome::Lost);
                }
                Some(other) => on_event(&other),
            }
            left = deadline.saturating_duration_since(Instant::now());
        }
    }
}

/// What the echo side went through, for the caller to show.
#[derive(Debug)]
pub enum EchoStep<'a> {
    /// A message for our endpoint, about to be sent back.
    Message(&'a [u8]),
    /// Any other link event.
    Event(&'a LinkEvent),
    /// The host side left (with `stop_when_host_leaves`); the echo ends.
    HostLeft,
}

/// Echoes every message to `endpoint` back to its sender until `count` messages
/// are echoed, `stop` is set, or (with `stop_when_host_leaves`: OpenAMP's socket
/// takes one connection, like its rpmsg-echo) the host side left. Returns how
/// many messages were echoed.
pub fn serve_echo(
    link: &mut RpmsgLink<'_>,
    endpoint: u32,
    count: Option<u64>,
    stop_when_host_leaves: bool,
    stop: &AtomicBool,
    on_step: &mut dyn FnMut(EchoStep<'_>),
) -> Result<u64, SessionError> {
    let mut echoed = 0u64;
    let mut data = Vec::new();
    while count.is_none_or(|c| echoed < c) && !stop.load(Ordering::Relaxed) {
        let Some(event) = link.next_event(Some(ECHO_TICK))? else {
            if stop_when_host_leaves && host_left(link.device)? {
                on_step(EchoStep::HostLeft);
                break;
            }
            continue;
        };
        match event {
            LinkEvent::Message { local, src, .. } if local == endpoint => {
                on_step(EchoStep::Message(link.payload()));
                data.clear();
                data.extend_from_slice(link.payload());
                link.send(endpoint, Some(src), &data, Some(ECHO_SEND_TIMEOUT))
                    .map_err(SessionError::Echo)?;
                echoed += 1;
            }
            other => on_step(EchoStep::Event(&other)),
        }
    }
    Ok(echoed)
}

/// Whether the server (or OpenAMP's socket) reported a peer gone.
fn host_left(device: &dyn Device) -> Result<bool, RpmsgLinkError> {
    while let Some(event) = device.wait(WaitFor::PEER_EVENTS, Some(Duration::ZERO))? {
        if matches!(event, Event::PeerLeft { .. } | Event::ServerGone) {
            return Ok(true);
        }
    }
    Ok(false)
}
