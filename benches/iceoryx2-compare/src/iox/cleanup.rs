//! What a run leaves of iceoryx2: its services and nodes (all named under the
//! run's prefix). Nodes of this tool's processes that died (of this run, or
//! of an earlier run that was killed) are cleaned up the iceoryx2 way, their
//! stale resources removed, before anything is counted.
//!
//! iceoryx2's domain-wide files (a node-counter segment, the service and node
//! directories) live in the run's own domain (see `domain`), which is removed
//! after these are counted.

use anyhow::Context;
use iceoryx2::node::NodeView;
use iceoryx2::prelude::*;

use super::names::ROOT;
use super::ports::{self, Ipc};

/// The run's services and nodes that still exist, by name.
pub fn leftovers(prefix: &str) -> anyhow::Result<Vec<String>> {
    let config = ports::config();
    let under = |prefix: &str, name: &str| {
        name.starts_with(prefix) && name[prefix.len()..].starts_with('/')
    };
    let ours = |name: &str| under(prefix, name);
    let mut dead = Vec::new();
    Node::<Ipc>::list(&config, |node| {
        if let NodeState::Dead(view) = &node
            && view
                .details()
                .as_ref()
                .is_some_and(|d| under(ROOT, d.name().as_str()))
        {
            dead.push(view.clone());
        }
        CallbackProgression::Continue
    })
    .context("listing the iceoryx2 nodes")?;
    for view in dead {
        // Best effort: what could not be removed is counted below.
        let _ = view.try_remove_stale_resources();
    }

    let mut found = Vec::new();
    Node::<Ipc>::list(&config, |node| {
        let details = match &node {
            NodeState::Alive(view) => view.details().clone(),
            NodeState::Dead(view) => view.details().clone(),
            NodeState::Inaccessible(_) | NodeState::Undefined(_) => None,
        };
        if let Some(name) = details.as_ref().map(|d| d.name().as_str())
            && ours(name)
        {
            found.push(format!("node {name}"));
        }
        CallbackProgression::Continue
    })
    .context("listing the iceoryx2 nodes")?;
    <Ipc as iceoryx2::service::Service>::list(&config, |service| {
        let name = service.static_details.name().as_str();
        if ours(name) {
            found.push(format!("service {name}"));
        }
        CallbackProgression::Continue
    })
    .context("listing the iceoryx2 services")?;
    Ok(found)
}
