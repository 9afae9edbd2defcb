//! iceoryx2's side of a link: a node, publish-subscribe services of byte
//! slices on the `ipc` service type (shared memory between processes), and
//! the two ends, both busy-polling.

use std::mem::MaybeUninit;

use anyhow::{Context, bail, ensure};
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::{BackpressureAction, BackpressureInfo, LoanError};
use iceoryx2::prelude::*;
use iceoryx2::sample_mut::SampleMut;
use iceoryx2::sample_mut_uninit::SampleMutUninit;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

use ivlink_lab::bench::spin::Spinner;
use ivlink_lab::bench::{STREAM_BYTE, checked_ends};

/// The service type: shared memory between processes.
pub type Ipc = ipc::Service;

/// A publish-subscribe service of byte slices.
pub type Service = PortFactory<Ipc, [u8], ()>;

/// iceoryx2's default configuration, in this run's own domain.
pub fn config() -> Config {
    super::domain::get().config()
}

/// A node that leaves signals alone (Ctrl-C ends the run as usual).
pub fn node(name: &str) -> anyhow::Result<Node<Ipc>> {
    NodeBuilder::new()
        .name(&NodeName::new(name).with_context(|| format!("node name {name:?}"))?)
        .config(&config())
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Ipc>()
        .context("creating an iceoryx2 node")
}

fn service_name(name: &str) -> anyhow::Result<ServiceName> {
    ServiceName::new(name).with_context(|| format!("service name {name:?}"))
}

/// Creates a service for one publisher and one subscriber whose buffer holds
/// up to `depth` samples; a full buffer holds the publisher back (no
/// overwriting, no history).
pub fn create_service(node: &Node<Ipc>, name: &str, depth: usize) -> anyhow::Result<Service> {
    node.service_builder(&service_name(name)?)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .max_nodes(2)
        .history_size(0)
        .subscriber_max_buffer_size(depth)
        .subscriber_max_borrowed_samples(1)
        .enable_safe_overflow(false)
        .create()
        .with_context(|| format!("creating the iceoryx2 service {name:?}"))
}

/// Opens a service made by [`create_service`].
pub fn open_service(node: &Node<Ipc>, name: &str) -> anyhow::Result<Service> {
    node.service_builder(&service_name(name)?)
        .publish_subscribe::<[u8]>()
        .open()
        .with_context(|| format!("opening the iceoryx2 service {name:?}"))
}

/// The publishing end: each message is written into a loaned sample in shared
/// memory and sent (zero-copy: only the sample's offset crosses).
#[derive(Debug)]
pub struct Tx {
    publisher: Publisher<Ipc, [u8], ()>,
    spinner: Spinner,
}

impl Tx {
    /// A publisher of messages of at most `max_len` bytes. A full subscriber
    /// buffer holds it back (iceoryx2 retries, yielding, then sleeping), for
    /// at most the spinner's timeout: a subscriber that died must not hang it.
    pub fn new(service: &Service, max_len: usize, spinner: Spinner) -> anyhow::Result<Tx> {
        let timeout = spinner.timeout();
        let publisher = service
            .publisher_builder()
            .initial_max_slice_len(max_len.max(1))
            .max_loaned_samples(1)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .set_backpressure_handler(move |info: &BackpressureInfo| {
                if info.elapsed_time > timeout {
                    BackpressureAction::DiscardDataAndFail
                } else {
                    BackpressureAction::Retry
                }
            })
            .create()
            .context("creating an iceoryx2 publisher")?;
        Ok(Tx { publisher, spinner })
    }

    /// A sample of `len` bytes; waits while every sample is in flight.
    #[inline]
    fn loan(&mut self, len: usize) -> anyhow::Result<SampleMutUninit<Ipc, [MaybeUninit<u8>], ()>> {
        let sample = loop {
            match self.publisher.loan_slice_uninit(len) {
                Ok(sample) => break sample,
                // Every sample is in flight: wait for the subscriber to return one.
                Err(LoanError::OutOfMemory) => self.spinner.pause("a free iceoryx2 sample")?,
                Err(e) => return Err(e).context("loaning an iceoryx2 sample"),
            }
        };
        self.spinner.progress();
        Ok(sample)
    }

    /// Sends one message, copied into a loaned sample; waits (inside
    /// iceoryx2) while the subscriber's buffer is full. An empty message marks
    /// the end.
    #[inline]
    pub fn send(&mut self, message: &[u8]) -> anyhow::Result<()> {
        let sample = self.loan(message.len())?;
        deliver(sample.write_from_slice(message))
    }

    /// Sends one message of `len` bytes of [`STREAM_BYTE`], written in place
    /// into the loaned sample (zero-copy: no source buffer).
    #[inline]
    pub fn send_in_place(&mut self, len: usize) -> anyhow::Result<()> {
        let mut sample = self.loan(len)?;
        sample.payload_mut().fill(MaybeUninit::new(STREAM_BYTE));
        // SAFETY: the fill above initialised every byte of the payload.
        let sample = unsafe { sample.assume_init() };
        deliver(sample)
    }
}

/// Sends `sample`; an error if it reached no subscriber.
#[inline]
fn deliver(sample: SampleMut<Ipc, [u8], ()>) -> anyhow::Result<()> {
    let delivered = sample.send().context("sending an iceoryx2 sample")?;
    if delivered == 0 {
        bail!("the iceoryx2 sample reached no subscriber");
    }
    Ok(())
}

/// The subscribing end: receives a sample, copies the payload out, and
/// returns the sample at once.
#[derive(Debug)]
pub struct Rx {
    subscriber: Subscriber<Ipc, [u8], ()>,
    spinner: Spinner,
}

impl Rx {
    /// A subscriber whose buffer holds `depth` samples.
    pub fn new(service: &Service, depth: usize, spinner: Spinner) -> anyhow::Result<Rx> {
        let subscriber = service
            .subscriber_builder()
            .buffer_size(depth)
            .create()
            .context("creating an iceoryx2 subscriber")?;
        Ok(Rx {
            subscriber,
            spinner,
        })
    }

    /// Copies the next message into `buf` (cut to its length) and returns
    /// the message's length, or `None` if nothing has arrived.
    #[inline]
    pub fn try_recv(&mut self, buf: &mut [u8]) -> anyhow::Result<Option<usize>> {
        let Some(sample) = self
            .subscriber
            .receive()
            .context("receiving an iceoryx2 sample")?
        else {
            return Ok(None);
        };
        let payload = sample.payload();
        let copied = payload.len().min(buf.len());
        buf[..copied].copy_from_slice(&payload[..copied]);
        Ok(Some(payload.len()))
    }

    /// Checks the next message in place, without copying it out: its first
    /// and last 8 bytes must be [`STREAM_BYTE`] (as ivlink's zero-copy
    /// consumer checks them). Returns its length, or `None` if nothing has
    /// arrived.
    #[inline]
    pub fn try_check(&mut self) -> anyhow::Result<Option<usize>> {
        let Some(sample) = self
            .subscriber
            .receive()
            .context("receiving an iceoryx2 sample")?
        else {
            return Ok(None);
        };
        let payload = sample.payload();
        for (offset, n) in checked_ends(payload.len()) {
            ensure!(
                payload[offset..offset + n]
                    .iter()
                    .all(|&b| b == STREAM_BYTE),
                "a zero-copy payload was not as written"
            );
        }
        Ok(Some(payload.len()))
    }

    /// Busy-polls for the next message, checked in place (see
    /// [`try_check`](Self::try_check)).
    #[inline]
    pub fn recv_in_place(&mut self) -> anyhow::Result<usize> {
        loop {
            if let Some(len) = self.try_check()? {
                self.spinner.progress();
                return Ok(len);
            }
            self.spinner.pause("an iceoryx2 sample")?;
        }
    }

    /// Busy-polls for the next message (see [`try_recv`](Self::try_recv)).
    #[inline]
    pub fn recv(&mut self, buf: &mut [u8]) -> anyhow::Result<usize> {
        loop {
            if let Some(len) = self.try_recv(buf)? {
                self.spinner.progress();
                return Ok(len);
            }
            self.spinner.pause("an iceoryx2 sample")?;
        }
    }
}
