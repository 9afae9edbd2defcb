//! The endpoint table: local addresses, names and the remote address each one
//! talks to, with OpenAMP's binding rules.

use super::wire::{ADDR_ANY, FIRST_DYNAMIC_ADDR, NS_ADDR, Name};

/// Endpoints one link can have.
pub const MAX_ENDPOINTS: usize = 16;
/// Dynamic addresses handed out: `0x400..0x400 + DYNAMIC_ADDRS` (OpenAMP's bitmap).
pub const DYNAMIC_ADDRS: u32 = 128;

/// One local endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Its name (empty: never announced).
    pub name: Name,
    /// Its address on this side.
    pub local: u32,
    /// The address it sends to ([`ADDR_ANY`] until bound).
    pub remote: u32,
    /// Announced through the name service when the link comes up.
    pub announce: bool,
    /// An announcement is still to be sent.
    pub(crate) announce_pending: bool,
}

/// Why an endpoint could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointError {
    /// The address is already in use (or reserved for the name service).
    AddressInUse(u32),
    /// All [`MAX_ENDPOINTS`] slots, or all dynamic addresses, are taken.
    TooMany,
}

/// A fixed-capacity endpoint table (no allocation: it runs on an RTOS too).
#[derive(Debug, Clone)]
pub struct Endpoints {
    slots: [Option<Endpoint>; MAX_ENDPOINTS],
}

impl Default for Endpoints {
    fn default() -> Self {
        Self::new()
    }
}

impl Endpoints {
    /// An empty table.
    pub const fn new() -> Self {
        Endpoints {
            slots: [None; MAX_ENDPOINTS],
        }
    }

    /// Creates an endpoint: `local == ADDR_ANY` allocates the lowest free dynamic
    /// address; `remote == ADDR_ANY` leaves it unbound, and such a named endpoint is
    /// announced (OpenAMP's rule).
    pub fn create(&mut self, name: Name, local: u32, remote: u32) -> Result<u32, EndpointError> {
        let local = if local == ADDR_ANY {
            (FIRST_DYNAMIC_ADDR..FIRST_DYNAMIC_ADDR + DYNAMIC_ADDRS)
                .find(|&a| self.get(a).is_none())
                .ok_or(EndpointError::TooMany)?
        } else if local == NS_ADDR || self.get(local).is_some() {
            return Err(EndpointError::AddressInUse(local));
        } else {
            local
        };
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.is_none())
            .ok_or(EndpointError::TooMany)?;
        let announce = !name.is_empty() && remote == ADDR_ANY;
        *slot = Some(Endpoint {
            name,
            local,
            remote,
            announce,
            announce_pending: announce,
        });
        Ok(local)
    }

    /// Removes the endpoint at `local`, returning it.
    pub fn destroy(&mut self, local: u32) -> Option<Endpoint> {
        self.slots
            .iter_mut()
            .find(|s| s.is_some_and(|e| e.local == local))
            .and_then(Option::take)
    }

    /// The endpoint at `local`.
    pub fn get(&self, local: u32) -> Option<&Endpoint> {
        self.iter().find(|e| e.local == local)
    }

    pub(crate) fn get_mut(&mut self, local: u32) -> Option<&mut Endpoint> {
        self.slots.iter_mut().flatten().find(|e| e.local == local)
    }

    /// Every endpoint.
    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.slots.iter().flatten()
    }

    /// A name-service CREATE: the endpoint named `name` that is bound to `addr` or
    /// unbound now talks to `addr`; returns its local address (None: nobody
    /// matched, the application decides, like OpenAMP's `ns_bind_cb`).
    pub fn bind_announced(&mut self, name: &Name, addr: u32) -> Option<u32> {
        let matching = |e: &Endpoint| e.name == *name && e.remote == addr;
        let unbound = |e: &Endpoint| e.name == *name && e.remote == ADDR_ANY;
        let ep = match self.slots.iter().flatten().any(matching) {
            true => self.slots.iter_mut().flatten().find(|e| matching(e)),
            false => self.slots.iter_mut().flatten().find(|e| unbound(e)),
        }?;
        ep.remote = addr;
        Some(ep.local)
    }

    /// A name-service DESTROY: the endpoint named `name` bound to `addr` becomes
    /// unbound; returns its local address.
    pub fn unbind_announced(&mut self, name: &Name, addr: u32) -> Option<u32> {
        let ep = self
            .slots
            .iter_mut()
            .flatten()
            .find(|e| e.name == *name && e.remote == addr)?;
        ep.remote = ADDR_ANY;
        Some(ep.local)
    }

    /// The link restarted: endpoints that were bound by announcement or by a first
    /// message forget their peer, and announced ones are announced again.
    pub(crate) fn link_restarted(&mut self) {
        for ep in self.slots.iter_mut().flatten() {
            if ep.announce {
                ep.remote = ADDR_ANY;
                ep.announce_pending = true;
            }
        }
    }

    /// The next endpoint whose announcement is still to be sent.
    pub(crate) fn pending_announcement(&self) -> Option<Endpoint> {
        self.iter().find(|e| e.announce_pending).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn dynamic_addresses_start_at_0x400_and_are_reused() {
        let mut eps = Endpoints::new();
        assert_eq!(eps.create(name("a"), ADDR_ANY, ADDR_ANY), Ok(0x400));
        assert_eq!(eps.create(name("b"), ADDR_ANY, 7), Ok(0x401));
        assert_eq!(
            eps.create(name("c"), 0x400, ADDR_ANY),
            Err(EndpointError::AddressInUse(0x400))
        );
        assert_eq!(
            eps.create(name("c"), NS_ADDR, ADDR_ANY),
            Err(EndpointError::AddressInUse(NS_ADDR))
        );
        assert!(eps.get(0x400).unwrap().announce);
        assert!(
            !eps.get(0x401).unwrap().announce,
            "bound endpoints stay quiet"
        );
        assert_eq!(eps.destroy(0x400).unwrap().local, 0x400);
        assert_eq!(eps.create(Name::EMPTY, ADDR_ANY, ADDR_ANY), Ok(0x400));
        assert!(
            !eps.get(0x400).unwrap().announce,
            "nameless endpoints stay quiet"
        );
        for _ in 2..MAX_ENDPOINTS {
            eps.create(Name::EMPTY, ADDR_ANY, ADDR_ANY).unwrap();
        }
        assert_eq!(
            eps.create(Name::EMPTY, ADDR_ANY, ADDR_ANY),
            Err(EndpointError::TooMany)
        );
    }

    #[test]
    fn announcements_bind_matching_names_first() {
        let mut eps = Endpoints::new();
        let unbound = eps.create(name("k"), ADDR_ANY, ADDR_ANY).unwrap();
        let bound = eps.create(name("k"), ADDR_ANY, 0x500).unwrap();
        assert_eq!(eps.bind_announced(&name("k"), 0x500), Some(bound));
        assert_eq!(eps.bind_announced(&name("k"), 0x600), Some(unbound));
        assert_eq!(eps.get(unbound).unwrap().remote, 0x600);
        assert_eq!(eps.bind_announced(&name("other"), 0x600), None);
        assert_eq!(eps.unbind_announced(&name("k"), 0x600), Some(unbound));
        assert_eq!(eps.get(unbound).unwrap().remote, ADDR_ANY);
        eps.get_mut(unbound).unwrap().announce_pending = false;
        eps.link_restarted();
        assert_eq!(eps.pending_announcement().unwrap().local, unbound);
        assert_eq!(eps.get(bound).unwrap().remote, 0x500);
    }
}
