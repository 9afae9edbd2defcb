//! Where the two processes run: pinned to two different CPUs when the machine
//! has them, so "cross-CPU" figures mean what they say.

use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

use super::BenchError;

/// The CPUs chosen for the leader (this process) and the peer process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The leader's CPU, when pinned.
    pub leader_cpu: Option<usize>,
    /// The peer's CPU, when pinned.
    pub peer_cpu: Option<usize>,
    /// CPUs this process may run on.
    pub available: usize,
}

impl Placement {
    /// The first two CPUs this process may use, or no pinning when `pin` is
    /// false or there are fewer than two.
    pub fn choose(pin: bool) -> Result<Placement, BenchError> {
        let allowed = allowed_cpus()?;
        let (leader_cpu, peer_cpu) = match allowed.as_slice() {
            [a, b, ..] if pin => (Some(*a), Some(*b)),
            _ => (None, None),
        };
        Ok(Placement {
            leader_cpu,
            peer_cpu,
            available: allowed.len(),
        })
    }

    /// Whether both sides must share one CPU (spinning then yields the CPU).
    pub fn shared_cpu(&self) -> bool {
        self.available < 2
    }

    /// A sentence for the report.
    pub fn describe(&self) -> String {
        match (self.leader_cpu, self.peer_cpu) {
            (Some(a), Some(b)) => format!(
                "leader process pinned to CPU {a}, peer process to CPU {b} ({} CPUs available)",
                self.available
            ),
            _ if self.shared_cpu() => {
                "both processes share the only CPU (spinning yields the CPU)".into()
            }
            _ => format!("processes not pinned ({} CPUs available)", self.available),
        }
    }
}

/// The CPUs the calling thread may run on, lowest first.
pub fn allowed_cpus() -> Result<Vec<usize>, BenchError> {
    let set = sched_getaffinity(None).map_err(BenchError::io("reading the CPU affinity"))?;
    Ok((0..CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect())
}

/// Pins the calling thread to `cpu`; returns the mask it had, for [`restore`].
pub fn pin(cpu: usize) -> Result<CpuSet, BenchError> {
    let before = sched_getaffinity(None).map_err(BenchError::io("reading the CPU affinity"))?;
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).map_err(BenchError::io("pinning to a CPU"))?;
    Ok(before)
}

/// Gives the calling thread back a mask from [`pin`].
pub fn restore(mask: &CpuSet) -> Result<(), BenchError> {
    sched_setaffinity(None, mask).map_err(BenchError::io("restoring the CPU affinity"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_moves_the_thread_and_restoring_undoes_it() {
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        let last = *allowed.last().unwrap();
        std::thread::spawn(move || {
            let before = pin(last).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![last]);
            restore(&before).unwrap();
            assert_eq!(allowed_cpus().unwrap(), allowed);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn placement_uses_two_cpus_only_when_asked_and_available() {
        let p = Placement::choose(true).unwrap();
        if p.available >= 2 {
            assert!(p.leader_cpu.is_some() && p.peer_cpu.is_some());
            assert_ne!(p.leader_cpu, p.peer_cpu);
            assert!(p.describe().contains("pinned"));
        }
        let unpinned = Placement::choose(false).unwrap();
        assert_eq!((unpinned.leader_cpu, unpinned.peer_cpu), (None, None));
    }
}
