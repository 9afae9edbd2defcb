//! Adding and withdrawing sections: the add protocol of the module documentation.

use core::sync::atomic::Ordering;

use super::layout::*;
use super::{Directory, DirectoryError, GetOrAdd, SectionInfo, SectionName, SectionSpec};
use crate::region::Region;

impl<R: Region + ?Sized> Directory<'_, R> {
    /// Walks entries `0..limit` in order, withdrawing every entry that could still
    /// become ready as `name` (state 0, or 1 with this name), and returns the first
    /// entry that is ready with this name. Once this has passed an index, that entry
    /// can never newly become ready as `name`.
    pub(super) fn settle(
        &self,
        name: &[u8; NAME_LEN],
        limit: u32,
    ) -> Result<Option<u32>, DirectoryError> {
        for index in 0..limit {
            let mut state = self.entry_state(index)?;
            for _ in 0..SETTLE_ATTEMPTS {
                let kill_from = match state {
                    ent::READY if self.raw_name(index)? == *name => return Ok(Some(index)),
                    ent::CLAIMED if self.raw_name(index)? == *name => ent::CLAIMED,
                    ent::FREE => ent::FREE,
                    _ => break,
                };
                match self.entry_cas(index, kill_from, ent::WITHDRAWN)? {
                    Ok(_) => break,
                    Err(now) => state = now,
                }
            }
        }
        Ok(None)
    }

    /// Adds a section. Fails with [`Exists`](DirectoryError::Exists) if one with the
    /// same name is ready, including when a racing peer's add of that name wins.
    pub fn add(&self, spec: &SectionSpec<'_>) -> Result<SectionInfo, DirectoryError> {
        match self.get_or_add(spec)? {
            GetOrAdd::Added(info) => Ok(info),
            GetOrAdd::Existing(info) => Err(DirectoryError::Exists(info)),
        }
    }

    /// Returns the ready section called `spec.name`, adding it as `spec` describes if
    /// there is none. The result tells whether this call added it.
    pub fn get_or_add(&self, spec: &SectionSpec<'_>) -> Result<GetOrAdd, DirectoryError> {
        let name = SectionName::new(spec.name)?;
        if spec.size == 0 || u64::try_from(spec.size).is_err() {
            return Err(DirectoryError::InvalidSize(spec.size));
        }
        if !spec.align.is_power_of_two() {
            return Err(DirectoryError::InvalidAlign(spec.align));
        }
        let align = spec.align.max(MIN_SECTION_ALIGN);
        // Each attempt claims an entry, so Full ends the loop before the bound does.
        for _ in 0..=self.max_sections {
            if let Some(info) = self.find_name(&name)? {
                return Ok(GetOrAdd::Existing(info));
            }
            // Cheap checks first, so that a plain failure uses up nothing.
            if self.section_count()? >= self.max_sections {
                return Err(DirectoryError::Full {
                    max_sections: self.max_sections,
                });
            }
            self.placement(self.next_free()?, spec.size, align)?;
            let index = self.claim_index()?;
            if let Some(info) = self.fill_entry(index, &name, spec, align)? {
                match self.settle(&name.to_raw(), index)? {
                    None => return Ok(GetOrAdd::Added(info)),
                    Some(winner) => {
                        // A peer's entry of the same name became ready first: it wins.
                        let _ = self.entry_cas(index, ent::READY, ent::WITHDRAWN)?;
                        return Ok(GetOrAdd::Existing(self.read_ready(winner)?));
                    }
                }
            }
            // Our entry was withdrawn by a peer settling a race: start again.
        }
        Err(DirectoryError::Contended)
    }

    /// Claims the next entry index by compare-and-exchange on `section_count`.
    pub(super) fn claim_index(&self) -> Result<u32, DirectoryError> {
        let mut count = self.section_count()?;
        for _ in 0..CAS_ATTEMPTS {
            if count > self.max_sections {
                return Err(DirectoryError::BadSectionCount {
                    count,
                    max_sections: self.max_sections,
                });
            }
            if count == self.max_sections {
                return Err(DirectoryError::Full {
                    max_sections: self.max_sections,
                });
            }
            let next = count.checked_add(1).ok_or(DirectoryError::Full {
                max_sections: self.max_sections,
            })?;
            match hdr::SECTION_COUNT
                .of(self.base)
                .compare_exchange(self.region, count, next)?
            {
                Ok(_) => return Ok(count),
                Err(now) => count = now,
            }
        }
        Err(DirectoryError::Contended)
    }

    /// Where a section of `size` bytes aligned to `align` goes if allocated at
    /// `next_free`: its offset and the new cursor.
    pub(super) fn placement(
        &self,
        next_free: usize,
        size: usize,
        align: usize,
    ) -> Result<(usize, usize), DirectoryError> {
        let no_space = DirectoryError::NoSpace {
            requested: size,
            free: self.region_size.saturating_sub(next_free),
        };
        let offset = align_up(next_free, align).ok_or(no_space)?;
        match offset.checked_add(size) {
            Some(end) if end <= self.region_size => Ok((offset, end)),
            _ => Err(no_space),
        }
    }

    /// Allocates section space by compare-and-exchange on `next_free`.
    pub(super) fn allocate(&self, size: usize, align: usize) -> Result<usize, DirectoryError> {
        let mut next_free = self.next_free()?;
        for _ in 0..CAS_ATTEMPTS {
            let (offset, end) = self.placement(next_free, size, align)?;
            match hdr::NEXT_FREE.of(self.base).compare_exchange(
                self.region,
                to_u64(next_free),
                to_u64(end),
            )? {
                Ok(_) => return Ok(offset),
                Err(now) => match usize::try_from(now) {
                    Ok(n) if n >= self.space_start && n <= self.region_size => next_free = n,
                    _ => return Err(DirectoryError::BadNextFree { next_free: now }),
                },
            }
        }
        Err(DirectoryError::Contended)
    }

    /// Writes entry `index` (claimed by us) and publishes it. `Ok(None)` if a peer
    /// withdrew it under us.
    pub(super) fn fill_entry(
        &self,
        index: u32,
        name: &SectionName,
        spec: &SectionSpec<'_>,
        align: usize,
    ) -> Result<Option<SectionInfo>, DirectoryError> {
        let r = self.region;
        let rlx = Ordering::Relaxed;
        // Steps 2-4 of the add protocol (see the module documentation).
        self.word(index, ent::KIND)?
            .store(r, spec.kind.as_u32(), rlx)?;
        let [o0, o1] = spec.owner.to_le_bytes();
        let [v0, v1] = spec.vector.to_le_bytes();
        let owner_vector = u32::from_le_bytes([o0, o1, v0, v1]);
        self.word(index, ent::OWNER_VECTOR)?
            .store(r, owner_vector, rlx)?;
        self.word(index, ent::FLAGS)?.store(r, spec.flags, rlx)?;
        self.word(index, ent::OFFSET)?.store(r, 0, rlx)?;
        self.word(index, ent::SIZE)?.store(r, 0, rlx)?;
        self.write_name(index, name)?;
        if self.entry_cas(index, ent::FREE, ent::CLAIMED)?.is_err() {
            return Ok(None);
        }
        let offset = match self.allocate(spec.size, align) {
            Ok(offset) => offset,
            Err(e) => {
                // Leave no entry half-made: withdraw it (the entry is leaked).
                let _ = self.entry_cas(index, ent::CLAIMED, ent::WITHDRAWN)?;
                return Err(e);
            }
        };
        self.word(index, ent::OFFSET)?
            .store(r, to_u64(offset), rlx)?;
        self.word(index, ent::SIZE)?
            .store(r, to_u64(spec.size), rlx)?;
        if self.entry_cas(index, ent::CLAIMED, ent::READY)?.is_err() {
            return Ok(None);
        }
        Ok(Some(SectionInfo {
            index,
            name: *name,
            kind: spec.kind,
            owner: spec.owner,
            vector: spec.vector,
            flags: spec.flags,
            offset,
            size: spec.size,
        }))
    }

    /// Withdraws the ready entry `index` (compare-and-exchange of its state from
    /// ready to withdrawn), so that [`find`](Self::find) no longer returns it and
    /// the name can be added again. Only for a section whose protocol was never set
    /// up (its creator died or gave up: see [`crate::setup`]); a section in use is
    /// never withdrawn. `Ok(false)` if the entry was not ready (a racing peer
    /// withdrew it first).
    pub fn withdraw(&self, index: u32) -> Result<bool, DirectoryError> {
        Ok(self.entry_cas(index, ent::READY, ent::WITHDRAWN)?.is_ok())
    }
}
