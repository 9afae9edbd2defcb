//! One comparison run: rounds in which each side is measured once, taking
//! turns at going first, so that a change of the machine's speed during the
//! run (a noisy neighbour, a moved virtual CPU) weighs on both alike.

use std::time::Instant;

use ivlink_lab::bench::Placement;

use crate::compare::{Comparison, Round};
use crate::iox;
use crate::ivlink_side;
use crate::settings::Settings;

/// Measures `settings.rounds` rounds and compares their medians.
/// `progress` hears one line per measurement.
pub fn run(
    settings: &Settings,
    placement: &Placement,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Comparison> {
    let started = Instant::now();
    let once = Settings {
        rounds: 1,
        ..settings.clone()
    };
    let mut rounds = Vec::with_capacity(settings.rounds);
    for round in 0..settings.rounds {
        let mut say = |line: &str| progress(&format!("round {}: {line}", round + 1));
        let (ivlink, iceoryx2) = if round % 2 == 0 {
            let ivlink = ivlink_side::measure(&once, &mut say)?;
            (ivlink, iox::measure(&once, placement, &mut say)?)
        } else {
            let iceoryx2 = iox::measure(&once, placement, &mut say)?;
            (ivlink_side::measure(&once, &mut say)?, iceoryx2)
        };
        rounds.push(Round { ivlink, iceoryx2 });
    }
    Ok(Comparison::new(
        settings.clone(),
        *placement,
        rounds,
        started.elapsed().as_secs_f64(),
    ))
}
