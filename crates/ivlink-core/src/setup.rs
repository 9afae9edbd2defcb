//! The setup word of a protocol in a named section: how the peer that added a
//! section marks it "being set up" and "ready", and how another peer takes over a
//! section whose creator died half-way, so that no section stays half-built forever.
//!
//! Every protocol header has one 32-bit little-endian setup word ([`SetupWord`]
//! says where, and its protocol's values). Its states:
//!
//! | value | meaning |
//! |---|---|
//! | `initializing` | the creator claimed the section and is writing its header |
//! | `ready` | set up: peers may use it |
//! | `abandoned` | a peer gave up on the creator: the section is never used; its directory entry is withdrawn and the name added again elsewhere |
//! | anything else | not claimed yet (0 in a fresh section, or bytes left from before a format) |
//!
//! Every step is a compare-and-exchange, so that a creator that is only slow (not
//! dead) cannot clobber its replacement:
//! 1. the creator claims: it reads the word and moves it from that value to
//!    `initializing`;
//! 2. it writes the rest of the header, never the setup word;
//! 3. it publishes: `initializing` → `ready`.
//!
//! A peer that finds the section not ready keeps watching it with its own clock
//! (this crate has none: callers pass time in, see [`Watch`]). Once it has seen
//! the same value for longer than its timeout, it moves the word from that value to
//! `abandoned`. If the creator was alive after all, its next compare-and-exchange
//! fails ([`SetupError::Abandoned`]) and it starts again, finding the replacement;
//! its late writes land in bytes nobody uses any more. `abandoned` is final: any peer
//! that sees it may withdraw the directory entry right away.

use core::sync::atomic::Ordering;

use crate::region::{Le32, Region, RegionError};

/// Where a protocol keeps its setup word, and the values it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupWord {
    /// Offset of the word from the section's start (4-byte aligned).
    pub at: usize,
    /// Claimed by the creator, being written.
    pub initializing: u32,
    /// Set up.
    pub ready: u32,
    /// Given up on; never used.
    pub abandoned: u32,
}

/// What a section's setup word says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupState {
    /// Set up.
    Ready,
    /// Given up on: withdraw its entry.
    Abandoned,
    /// Not ready yet: the raw value (`initializing`, or not claimed).
    Pending(u32),
}

/// Why a creator's step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupError {
    /// Another peer gave up on this section: start again with a fresh one.
    Abandoned,
    /// The region refused an access.
    Region(RegionError),
}

impl core::fmt::Display for SetupError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SetupError::Abandoned => {
                f.write_str("another peer gave up on this section's setup and replaced it")
            }
            SetupError::Region(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for SetupError {}

impl From<RegionError> for SetupError {
    fn from(e: RegionError) -> Self {
        SetupError::Region(e)
    }
}

impl SetupWord {
    /// The usual values: 1 initializing, 2 ready, 3 abandoned (0 in a fresh section).
    pub const fn numbered(at: usize) -> Self {
        SetupWord {
            at,
            initializing: 1,
            ready: 2,
            abandoned: 3,
        }
    }

    /// The setup word of the section that starts at `section`.
    pub const fn word(&self, section: usize) -> Le32 {
        Le32::at(self.at).of(section)
    }

    fn load<R: Region + ?Sized>(&self, region: &R, section: usize) -> Result<u32, RegionError> {
        self.word(section).load(region, Ordering::Acquire)
    }

    fn cas<R: Region + ?Sized>(
        &self,
        region: &R,
        section: usize,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, RegionError> {
        self.word(section).compare_exchange(region, current, new)
    }

    /// The state of the section at `section`.
    pub fn state<R: Region + ?Sized>(
        &self,
        region: &R,
        section: usize,
    ) -> Result<SetupState, RegionError> {
        Ok(self.classify(self.load(region, section)?))
    }

    fn classify(&self, value: u32) -> SetupState {
        if value == self.ready {
            SetupState::Ready
        } else if value == self.abandoned {
            SetupState::Abandoned
        } else {
            SetupState::Pending(value)
        }
    }

    /// The creator's first step: moves the word from whatever it holds to
    /// `initializing`. Fails with [`SetupError::Abandoned`] if a peer gave up on the
    /// section first.
    pub fn claim<R: Region + ?Sized>(&self, region: &R, section: usize) -> Result<(), SetupError> {
        let seen = self.load(region, section)?;
        if seen == self.abandoned {
            return Err(SetupError::Abandoned);
        }
        self.cas(region, section, seen, self.initializing)?
            .map(drop)
            .map_err(|_| SetupError::Abandoned)
    }

    /// The creator's last step: `initializing` → `ready` (release, so that a peer
    /// that sees `ready` sees the whole header). Fails with
    /// [`SetupError::Abandoned`] if a peer gave up on the section meanwhile.
    pub fn publish<R: Region + ?Sized>(
        &self,
        region: &R,
        section: usize,
    ) -> Result<(), SetupError> {
        self.cas(region, section, self.initializing, self.ready)?
            .map(drop)
            .map_err(|_| SetupError::Abandoned)
    }

    /// Gives up on a section whose word still holds `seen` (a value the caller saw
    /// not ready for longer than its timeout): moves it to `abandoned`. `Ok(true)`
    /// if the section is now abandoned (by us or by another peer); `Ok(false)` if
    /// the word moved on (the creator made progress, or published).
    pub fn abandon<R: Region + ?Sized>(
        &self,
        region: &R,
        section: usize,
        seen: u32,
    ) -> Result<bool, RegionError> {
        if seen == self.ready || seen == self.abandoned {
            return Ok(seen == self.abandoned);
        }
        Ok(match self.cas(region, section, seen, self.abandoned)? {
            Ok(_) => true,
            Err(now) => now == self.abandoned,
        })
    }
}

/// What [`Watch::observe`] advises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advice {
    /// Keep waiting.
    Wait,
    /// The value has not changed for longer than the timeout: [`SetupWord::abandon`]
    /// it (with this value).
    GiveUp(u32),
}

/// One peer's watch on a section that is not ready: it remembers which section
/// and value it saw first and when, by the caller's clock (any monotonic unit, e.g.
/// milliseconds), and says when the creator has had long enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watch {
    seen: Option<(usize, u32, u64)>,
}

impl Watch {
    /// A watch that has seen nothing.
    pub const fn new() -> Self {
        Watch { seen: None }
    }

    /// Records that the section at `section` holds the not-ready `value` at time
    /// `now`; advises giving up once the same section has held the same value for
    /// at least `timeout` (a change of section or value starts the clock again).
    pub fn observe(&mut self, section: usize, value: u32, now: u64, timeout: u64) -> Advice {
        match self.seen {
            Some((s, v, since)) if s == section && v == value => {
                if now.saturating_sub(since) >= timeout {
                    Advice::GiveUp(value)
                } else {
                    Advice::Wait
                }
            }
            _ => {
                self.seen = Some((section, value, now));
                Advice::Wait
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::HeapRegion;

    const WORD: SetupWord = SetupWord {
        at: 20,
        initializing: 1,
        ready: 2,
        abandoned: 3,
    };
    const AT: usize = 64;

    fn set(region: &crate::RawRegion, value: u32) {
        region
            .store_u32(AT + WORD.at, value.to_le(), Ordering::Relaxed)
            .unwrap();
    }

    #[test]
    fn a_creator_claims_and_publishes() {
        let region = HeapRegion::new(256);
        assert_eq!(WORD.state(&*region, AT).unwrap(), SetupState::Pending(0));
        WORD.claim(&*region, AT).unwrap();
        assert_eq!(WORD.state(&*region, AT).unwrap(), SetupState::Pending(1));
        WORD.publish(&*region, AT).unwrap();
        assert_eq!(WORD.state(&*region, AT).unwrap(), SetupState::Ready);
        assert!(
            !WORD.abandon(&*region, AT, 2).unwrap(),
            "a ready section stays"
        );
        assert!(
            !WORD.abandon(&*region, AT, 1).unwrap(),
            "nor for a stale value"
        );
        assert_eq!(WORD.state(&*region, AT).unwrap(), SetupState::Ready);
    }

    #[test]
    fn leftover_bytes_are_claimed_over() {
        let region = HeapRegion::new(256);
        set(&region, 0xdead_beef);
        WORD.claim(&*region, AT).unwrap();
        WORD.publish(&*region, AT).unwrap();
        // A leftover "ready" from before a format is claimed over too.
        WORD.claim(&*region, AT).unwrap();
        assert_eq!(WORD.state(&*region, AT).unwrap(), SetupState::Pending(1));
    }

    #[test]
    fn a_slow_creator_that_was_given_up_on_cannot_publish() {
        let region = HeapRegion::new(256);
        WORD.claim(&*region, AT).unwrap();
        assert!(WORD.abandon(&*region, AT, 1).unwrap());
        assert_eq!(WORD.publish(&*region, AT), Err(SetupError::Abandoned));
        assert_eq!(WORD.state(&*region, AT).unwrap(), SetupState::Abandoned);
        // A second peer giving up agrees, and nothing brings it back.
        assert!(WORD.abandon(&*region, AT, 1).unwrap());
        assert_eq!(WORD.claim(&*region, AT), Err(SetupError::Abandoned));
    }

    #[test]
    fn a_creator_that_had_not_claimed_yet_cannot_claim_after_a_give_up() {
        let region = HeapRegion::new(256);
        assert!(WORD.abandon(&*region, AT, 0).unwrap());
        assert_eq!(WORD.claim(&*region, AT), Err(SetupError::Abandoned));
        assert_eq!(WORD.publish(&*region, AT), Err(SetupError::Abandoned));
    }

    #[test]
    fn giving_up_on_an_old_value_fails_once_the_creator_moved_on() {
        let region = HeapRegion::new(256);
        // Seen unclaimed, then the creator claims before the give-up lands.
        WORD.claim(&*region, AT).unwrap();
        assert!(!WORD.abandon(&*region, AT, 0).unwrap());
        WORD.publish(&*region, AT).unwrap();
        assert_eq!(WORD.state(&*region, AT).unwrap(), SetupState::Ready);
    }

    #[test]
    fn a_watch_gives_up_only_on_an_unchanged_value_after_the_timeout() {
        let mut watch = Watch::new();
        assert_eq!(watch.observe(AT, 1, 100, 50), Advice::Wait);
        assert_eq!(watch.observe(AT, 1, 149, 50), Advice::Wait);
        assert_eq!(watch.observe(AT, 1, 150, 50), Advice::GiveUp(1));
        // A new value (progress) or another section starts the clock again.
        assert_eq!(watch.observe(AT, 0, 151, 50), Advice::Wait);
        assert_eq!(watch.observe(AT, 0, 200, 50), Advice::Wait);
        assert_eq!(watch.observe(AT + 4096, 0, 201, 50), Advice::Wait);
        assert_eq!(watch.observe(AT + 4096, 0, 251, 50), Advice::GiveUp(0));
    }

    #[test]
    fn an_offset_past_the_region_is_an_error_not_a_panic() {
        let region = HeapRegion::new(64);
        assert!(WORD.state(&*region, usize::MAX).is_err());
        assert!(WORD.claim(&*region, 60).is_err());
    }
}
