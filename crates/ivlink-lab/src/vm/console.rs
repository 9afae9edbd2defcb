//! The harness's connection to a guest's serial console, the transcript of what
//! it has read, and finding lines and markers in console output.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// What the harness has read from the console: the bytes, and a signal when more
/// arrive.
#[derive(Debug, Default)]
pub(super) struct Transcript {
    bytes: Mutex<Vec<u8>>,
    pub(super) grew: Condvar,
}

impl Transcript {
    pub(super) fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The harness's connection to the console socket, with a thread that appends what
/// the guest prints to the transcript (promptly, so QEMU never waits for it).
#[derive(Debug)]
pub(super) struct Console {
    pub(super) stream: UnixStream,
    reader: Option<JoinHandle<()>>,
}

impl Console {
    pub(super) fn connect(path: &Path, transcript: Arc<Transcript>) -> io::Result<Console> {
        let stream = UnixStream::connect(path)?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = stream.try_clone()?;
        let reader = thread::Builder::new()
            .name("ivlink-vm-console".to_owned())
            .spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n @ 1..) = reader.read(&mut buf) {
                    transcript.lock().extend_from_slice(&buf[..n]);
                    transcript.grew.notify_all();
                }
            })?;
        Ok(Console {
            stream,
            reader: Some(reader),
        })
    }

    /// Hangs up (what is unread is dropped).
    pub(super) fn close(mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.join();
    }

    /// Waits for the reader to reach the end of the stream (QEMU has exited).
    pub(super) fn join(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The first complete line at or after `from` for which `pred` holds (tested on
/// the line without `\r`), as (start, end after its `\n`).
pub(super) fn find_line(
    text: &[u8],
    from: usize,
    pred: impl Fn(&str) -> bool,
) -> Option<(usize, usize)> {
    let mut start = from.min(text.len());
    while let Some(nl) = text[start..].iter().position(|&b| b == b'\n') {
        let end = start + nl + 1;
        let line = String::from_utf8_lossy(&text[start..end]);
        if pred(line.trim_end_matches(['\r', '\n'])) {
            return Some((start, end));
        }
        start = end;
    }
    None
}

pub(super) fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Console bytes as text: lossy UTF-8, no `\r`, no escape sequences, no other
/// control characters except tab and newline.
pub(super) fn clean_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ params final-byte; other escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The last `lines` lines of console output, cleaned.
pub(super) fn tail(bytes: &[u8], lines: usize) -> String {
    let text = clean_text(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_output_not_in_the_echo() {
        let log = b"~ # echo __IVLINK_B\"\"1__; ls; echo __IVLINK_E\"\"1__ $?\r\n\
                    __IVLINK_B1__\r\nbin  dev\r\n__IVLINK_E1__ 0\r\n~ # ";
        let (_, after) = find_line(log, 0, |l| l.contains("__IVLINK_B1__")).unwrap();
        assert_eq!(&log[after..after + 3], b"bin");
        let (start, _) = find_line(log, after, |l| l.contains("__IVLINK_E1__")).unwrap();
        assert_eq!(clean_text(&log[after..start]), "bin  dev\n");
        assert!(find_line(log, 0, |l| l.contains("__IVLINK_B2__")).is_none());
    }

    #[test]
    fn partial_lines_do_not_match() {
        assert!(find_line(b"abc", 0, |l| l.contains("abc")).is_none());
        assert_eq!(
            find_line(b"x\nabc\n", 1, |l| l.contains("abc")),
            Some((2, 6))
        );
    }

    #[test]
    fn escape_sequences_and_carriage_returns_are_removed() {
        assert_eq!(clean_text(b"a\x1b[6nb\r\nc\x1b7d\x07"), "ab\ncd");
        assert_eq!(tail(b"1\r\n2\r\n3\r\n", 2), "2\n3");
    }
}
