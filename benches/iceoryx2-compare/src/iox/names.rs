//! Service and node names private to one run: the process id and the start
//! time, so that parallel runs (and stale files of a killed run) never meet.

use std::time::{SystemTime, UNIX_EPOCH};

/// Every service name of a run starts with this.
pub const ROOT: &str = "ivlink-compare";

/// Hands out the names of one run's services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunNames {
    prefix: String,
    next: u32,
}

/// The names of one measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// Leader to peer (pings, stream messages).
    pub data: String,
    /// Peer to leader (ready, pongs, report).
    pub back: String,
    /// The peer process's node.
    pub peer: String,
}

impl RunNames {
    /// Names for this process's run.
    pub fn new() -> RunNames {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        RunNames {
            prefix: format!("{ROOT}/{}-{nanos:x}", std::process::id()),
            next: 0,
        }
    }

    /// What every service name of this run starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Fresh names for the next measurement.
    pub fn next_pair(&mut self) -> Pair {
        self.next += 1;
        let base = format!("{}/{}", self.prefix, self.next);
        Pair {
            data: format!("{base}/data"),
            back: format!("{base}/back"),
            peer: format!("{base}/peer"),
        }
    }

    /// The leader's node.
    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_measurement_gets_names_of_its_own_under_the_run_prefix() {
        let mut names = RunNames::new();
        let a = names.next_pair();
        let b = names.next_pair();
        assert_ne!(a, b);
        assert_ne!(a.data, a.back);
        assert_ne!(a.peer, b.peer);
        for name in [&a.data, &a.back, &a.peer, &b.data, &names.leader()] {
            assert!(name.starts_with(names.prefix()), "{name}");
        }
        assert!(names.prefix().contains(&std::process::id().to_string()));
        assert_ne!(RunNames::new().prefix(), "", "never empty");
    }
}
