//! A writer of `newc` cpio archives, the format the Linux kernel unpacks as an
//! initramfs. Everything is owned by root with mtime 0, so the same inputs give the
//! same bytes.

use std::collections::BTreeSet;
use std::io::{self, Write};

/// File type bits of `st_mode`.
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// What one archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
    /// A character device node (major, minor).
    CharDev(u32, u32),
}

/// An archive being assembled in memory. Parent directories are added on the way.
#[derive(Debug, Default)]
pub struct Archive {
    entries: Vec<(String, u32, Kind)>,
    paths: BTreeSet<String>,
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Adds a directory (and its parents) with mode 0755.
    pub fn dir(&mut self, path: &str) {
        self.add(path, 0o755, Kind::Dir);
    }

    /// Adds a regular file with `perm` (e.g. 0o755) and these contents.
    pub fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) {
        self.add(path, perm, Kind::File(data));
    }

    /// Adds a symbolic link `path` -> `target`.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.add(path, 0o777, Kind::Symlink(target.to_owned()));
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) {
        self.add(path, perm, Kind::CharDev(major, minor));
    }

    /// Whether `path` is in the archive already.
    pub fn contains(&self, path: &str) -> bool {
        self.paths.contains(path.trim_matches('/'))
    }

    /// How many entries the archive has.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn add(&mut self, path: &str, perm: u32, kind: Kind) {
        let path = path.trim_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/')
            && !self.paths.contains(parent)
        {
            self.dir(parent);
        }
        if self.paths.insert(path.to_owned()) {
            self.entries.push((path.to_owned(), perm, kind));
        } else if kind != Kind::Dir {
            // A later file replaces an earlier one of the same name.
            if let Some(entry) = self.entries.iter_mut().find(|e| e.0 == path) {
                *entry = (path.to_owned(), perm, kind);
            }
        }
    }

    /// Writes the archive, trailer included.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        for (index, (path, perm, kind)) in self.entries.iter().enumerate() {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match kind {
                Kind::Dir => (S_IFDIR | perm, &[], (0, 0)),
                Kind::File(data) => (S_IFREG | perm, data, (0, 0)),
                Kind::Symlink(target) => (S_IFLNK | perm, target.as_bytes(), (0, 0)),
                Kind::CharDev(major, minor) => (S_IFCHR | perm, &[], (*major, *minor)),
            };
            let nlink = if *kind == Kind::Dir { 2 } else { 1 };
            let ino = u32::try_from(index + 1).unwrap_or(u32::MAX);
            write_entry(out, path, ino, mode, nlink, data, rdev)?;
        }
        write_entry(out, "TRAILER!!!", 0, 0, 1, &[], (0, 0))
    }
}

/// One header, name and data, each padded to 4 bytes.
#[allow(clippy::too_many_arguments)]
fn write_entry(
    out: &mut impl Write,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    data: &[u8],
    (rdev_major, rdev_minor): (u32, u32),
) -> io::Result<()> {
    let size = u32::try_from(data.len())
        .map_err(|_| io::Error::other(format!("{name}: too large for a cpio archive")))?;
    let name_size = u32::try_from(name.len() + 1)
        .map_err(|_| io::Error::other("name too long for a cpio archive"))?;
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize, check
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}\
         {rdev_major:08x}{rdev_minor:08x}{name_size:08x}{:08x}",
        0, 0, 0, 0, 0, 0
    );
    // Every entry starts 4-byte aligned, so the padding follows from the lengths.
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    out.write_all(&[0; 3][..padding(header.len() as u64 + u64::from(name_size))])?;
    out.write_all(data)?;
    out.write_all(&[0; 3][..padding(u64::from(size))])?;
    Ok(())
}

/// Zero bytes that bring `offset` to a multiple of 4.
fn padding(offset: u64) -> usize {
    ((4 - offset % 4) % 4) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_parents_come_first() {
        let mut archive = Archive::new();
        archive.file("bin/x", 0o755, b"hello".to_vec());
        archive.symlink("sbin/y", "/bin/x");
        archive.char_dev("dev/console", 0o600, 5, 1);
        let mut bytes = Vec::new();
        archive.write_to(&mut bytes).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert!(bytes.starts_with(b"070701"));
        // bin, bin/x, sbin, sbin/y, dev, dev/console, trailer.
        assert_eq!(archive.len(), 6);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.find("bin\0").unwrap() < text.find("bin/x\0").unwrap());
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
    }

    #[test]
    fn header_fields_are_hex_and_sizes_match() {
        let mut archive = Archive::new();
        archive.file("a", 0o644, vec![1, 2, 3]);
        let mut bytes = Vec::new();
        archive.write_to(&mut bytes).unwrap();
        let header = std::str::from_utf8(&bytes[..110]).unwrap();
        let field = |i: usize| u32::from_str_radix(&header[6 + i * 8..14 + i * 8], 16).unwrap();
        assert_eq!(field(1), S_IFREG | 0o644);
        assert_eq!(field(6), 3);
        assert_eq!(field(11), 2);
        // header + "a\0" = 112 bytes, aligned; data at 112.
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..115], &[1, 2, 3]);
    }
}
