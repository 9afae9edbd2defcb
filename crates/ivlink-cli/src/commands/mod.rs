//! The peer-side `ivlink` commands.

pub mod bench;
pub mod channel;
pub mod completions;
pub mod console;
pub mod console_bench;
pub mod dump;
pub mod format;
pub mod inspect;
pub mod listen;
pub mod mailbox;
pub mod notify;
pub mod ntb;
pub mod rpmsg;
pub mod stream_cmd;
pub mod stress;
pub mod testbed;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// A flag set by SIGINT or SIGTERM, for loops that stop cleanly.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, flag.clone())?;
    }
    Ok(flag)
}

/// Shows bytes from the region as text: printable as is, the rest escaped.
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_bytes_from_hostile_peers() {
        assert_eq!(printable(b"hello"), "hello");
        assert_eq!(printable(b"a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable(b"\n"), "\\n");
    }
}
