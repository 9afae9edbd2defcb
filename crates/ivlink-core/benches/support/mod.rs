//! Code the benches and examples share.

pub mod plain_ring;
