//! ntb_tool's debugfs files as values: their names, which exist for a switch
//! of a given shape, and the kernel's text formats and write parsers
//! (`lib/vsprintf.c`'s `sscanf`, `lib/kstrtox.c`'s `kstrto*`), byte for byte.

use rustix::io::Errno;

/// What the file tree depends on: the counts of the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Peers of this port (`peerN/` directories).
    pub peers: u32,
    /// Scratchpads (`spadN`, `peerN/spadM`).
    pub spads: u32,
    /// Message registers (`msgN`, `peerN/msgM`, the `msg_*` files).
    pub msgs: u32,
    /// Memory windows (`peerN/mw_transM`, `peerN/peer_mw_transM`).
    pub mws: u32,
}

/// A file of the top directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum File {
    /// `port`: this port's number.
    Port,
    /// `link`: write `Y`/`N` to enable or disable the link.
    Link,
    /// `db`: the inbound doorbell.
    Db,
    /// `db_valid_mask`.
    DbValidMask,
    /// `db_mask`.
    DbMask,
    /// `db_event`: a write blocks until `db` equals the value.
    DbEvent,
    /// `peer_db`: the peers' doorbells.
    PeerDb,
    /// `peer_db_mask`.
    PeerDbMask,
    /// `spadN`: a local scratchpad.
    Spad(u32),
    /// `msgN`: an inbound message register.
    Msg(u32),
    /// `msg_sts`.
    MsgSts,
    /// `msg_inbits`.
    MsgInbits,
    /// `msg_outbits`.
    MsgOutbits,
    /// `msg_mask` (write only).
    MsgMask,
    /// `msg_event`: a write blocks until `msg_sts` equals the value.
    MsgEvent,
    /// A file of `peerN/`.
    Peer(u32, PeerFile),
}

/// A file of a `peerN/` directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerFile {
    /// `port`: the peer's port number.
    Port,
    /// `link`: `Y` or `N`.
    Link,
    /// `link_event`: a write of `Y`/`N` blocks until the link is so.
    LinkEvent,
    /// `spadM`: the peer's scratchpad.
    Spad(u32),
    /// `msgM`: a message to the peer (write only).
    Msg(u32),
    /// `mw_transM`: inbound window M for this peer.
    MwTrans(u32),
    /// `mwM`: the bytes of inbound window M (while translated for this peer).
    Mw(u32),
    /// `peer_mw_transM`: outbound window M.
    PeerMwTrans(u32),
    /// `peer_mwM`: the bytes outbound window M reaches (while set for this peer).
    PeerMw(u32),
}

/// A directory of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// The top directory.
    Top,
    /// `peerN/`.
    Peer(u32),
}

/// `name` with a decimal index after `prefix` (`spad3` -> 3); no sign, no
/// leading zeros, as the kernel's `%d` names them.
fn indexed(name: &str, prefix: &str, count: u32) -> Option<u32> {
    let digits = name.strip_prefix(prefix)?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok().filter(|&i| i < count)
}

impl Dir {
    /// The directory at `path` (`""` or `peerN`).
    pub fn parse(path: &str, counts: &Counts) -> Option<Dir> {
        if path.is_empty() {
            return Some(Dir::Top);
        }
        indexed(path, "peer", counts.peers).map(Dir::Peer)
    }

    /// The directory's name in its parent (`""` for the top).
    pub fn name(self) -> String {
        match self {
            Dir::Top => String::new(),
            Dir::Peer(pidx) => format!("peer{pidx}"),
        }
    }

    /// Every file of this directory that can exist, in ntb_tool's order.
    /// `mwM` and `peer_mwM` appear only while their window is set up: the
    /// caller asks [`File::needs_window`] and checks.
    pub fn files(self, counts: &Counts) -> Vec<File> {
        match self {
            Dir::Top => {
                let mut files = vec![
                    File::Port,
                    File::Link,
                    File::Db,
                    File::DbValidMask,
                    File::DbMask,
                    File::DbEvent,
                    File::PeerDb,
                    File::PeerDbMask,
                ];
                files.extend((0..counts.spads).map(File::Spad));
                if counts.msgs > 0 {
                    files.extend((0..counts.msgs).map(File::Msg));
                    files.extend([
                        File::MsgSts,
                        File::MsgInbits,
                        File::MsgOutbits,
                        File::MsgMask,
                        File::MsgEvent,
                    ]);
                }
                files
            }
            Dir::Peer(pidx) => {
                let mut files = vec![PeerFile::Port, PeerFile::Link, PeerFile::LinkEvent];
                for widx in 0..counts.mws {
                    files.extend([
                        PeerFile::MwTrans(widx),
                        PeerFile::Mw(widx),
                        PeerFile::PeerMwTrans(widx),
                        PeerFile::PeerMw(widx),
                    ]);
                }
                files.extend((0..counts.spads).map(PeerFile::Spad));
                files.extend((0..counts.msgs).map(PeerFile::Msg));
                files.into_iter().map(|f| File::Peer(pidx, f)).collect()
            }
        }
    }

    /// The subdirectories (the top has `peerN/`, a peer directory none).
    pub fn dirs(self, counts: &Counts) -> Vec<Dir> {
        match self {
            Dir::Top => (0..counts.peers).map(Dir::Peer).collect(),
            Dir::Peer(_) => Vec::new(),
        }
    }
}

impl File {
    /// The file at `path` (`db`, `peer0/spad3`), if a switch with `counts` has
    /// one (a window's bytes file only while it is set up: see
    /// [`needs_window`](Self::needs_window)).
    pub fn parse(path: &str, counts: &Counts) -> Option<File> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((dir, name)) => (Dir::parse(dir, counts)?, name),
            None => (Dir::Top, path),
        };
        dir.files(counts).into_iter().find(|f| f.name() == name)
    }

    /// The file's name in its directory.
    pub fn name(&self) -> String {
        match self {
            File::Port => "port".into(),
            File::Link => "link".into(),
            File::Db => "db".into(),
            File::DbValidMask => "db_valid_mask".into(),
            File::DbMask => "db_mask".into(),
            File::DbEvent => "db_event".into(),
            File::PeerDb => "peer_db".into(),
            File::PeerDbMask => "peer_db_mask".into(),
            File::Spad(i) => format!("spad{i}"),
            File::Msg(i) => format!("msg{i}"),
            File::MsgSts => "msg_sts".into(),
            File::MsgInbits => "msg_inbits".into(),
            File::MsgOutbits => "msg_outbits".into(),
            File::MsgMask => "msg_mask".into(),
            File::MsgEvent => "msg_event".into(),
            File::Peer(_, f) => match f {
                PeerFile::Port => "port".into(),
                PeerFile::Link => "link".into(),
                PeerFile::LinkEvent => "link_event".into(),
                PeerFile::Spad(i) => format!("spad{i}"),
                PeerFile::Msg(i) => format!("msg{i}"),
                PeerFile::MwTrans(i) => format!("mw_trans{i}"),
                PeerFile::Mw(i) => format!("mw{i}"),
                PeerFile::PeerMwTrans(i) => format!("peer_mw_trans{i}"),
                PeerFile::PeerMw(i) => format!("peer_mw{i}"),
            },
        }
    }

    /// The directory the file is in.
    pub fn dir(&self) -> Dir {
        match self {
            File::Peer(pidx, _) => Dir::Peer(*pidx),
            _ => Dir::Top,
        }
    }

    /// The path from the top (`peer0/spad3`).
    pub fn path(&self) -> String {
        match self.dir() {
            Dir::Top => self.name(),
            dir => format!("{}/{}", dir.name(), self.name()),
        }
    }

    /// For `peerN/mwM` and `peerN/peer_mwM`: the peer and window that must be
    /// set up for the file to exist (inbound for `mwM`, outbound for
    /// `peer_mwM`).
    pub fn needs_window(&self) -> Option<(u32, WindowKind, u32)> {
        match *self {
            File::Peer(pidx, PeerFile::Mw(widx)) => Some((pidx, WindowKind::Inbound, widx)),
            File::Peer(pidx, PeerFile::PeerMw(widx)) => Some((pidx, WindowKind::Outbound, widx)),
            _ => None,
        }
    }

    /// Whether a write waits for a condition (`db_event`, `msg_event`,
    /// `peerN/link_event`).
    pub fn blocks(&self) -> bool {
        matches!(
            self,
            File::DbEvent | File::MsgEvent | File::Peer(_, PeerFile::LinkEvent)
        )
    }

    /// Whether reads and writes go to bytes at the file offset (a window)
    /// rather than a value.
    pub fn is_window(&self) -> bool {
        self.needs_window().is_some()
    }

    /// Whether the file takes `s`/`c` commands, which ntb_tool runs only for a
    /// write at offset 0.
    pub fn takes_bits(&self) -> bool {
        matches!(
            self,
            File::Db
                | File::DbMask
                | File::PeerDb
                | File::PeerDbMask
                | File::MsgSts
                | File::MsgMask
        )
    }

    /// The file mode debugfs gives it.
    pub fn mode(&self) -> u16 {
        match self {
            File::Peer(_, PeerFile::Link | PeerFile::LinkEvent) => 0o200,
            _ => 0o600,
        }
    }
}

/// Which side of a memory window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowKind {
    /// This port's memory, translated for a peer (`mw_transM`, `mwM`).
    Inbound,
    /// A peer's memory reached from here (`peer_mw_transM`, `peer_mwM`).
    Outbound,
}

// ---- read formats ----

/// `%#llx\n` as the kernel prints it: `0x0` for zero too.
pub fn hex_line(value: u64) -> String {
    format!("{value:#x}\n")
}

/// `%d\n`.
pub fn decimal_line(value: i64) -> String {
    format!("{value}\n")
}

/// `Y\n` or `N\n`.
pub fn bool_line(value: bool) -> String {
    if value { "Y\n" } else { "N\n" }.into()
}

/// `msgN`'s `0x%08x<-%d\n`: the data and the source peer index (`-1` for a
/// register never written since the port was taken, ntb_tool's initial pidx).
pub fn message_line(data: u32, from: Option<u32>) -> String {
    let from = from.map_or(-1, i64::from);
    format!("0x{data:08x}<-{from}\n")
}

/// The kernel's `%pad`/`%pap`: `0x` and 16 hex digits.
fn address(value: u64) -> String {
    format!("0x{value:016x}")
}

/// What `peerN/mw_transM` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundInfo {
    /// The window index.
    pub widx: u32,
    /// The peer's port number.
    pub peer_port: u32,
    /// The peer index.
    pub pidx: u32,
    /// The translated buffer's region offset (0 while unset).
    pub addr: u64,
    /// The translated size (0 while unset).
    pub size: u64,
    /// `ntb_mw_get_align`'s address alignment.
    pub addr_align: u64,
    /// Its size alignment.
    pub size_align: u64,
    /// Its largest size.
    pub size_max: u64,
}

/// `peerN/mw_transM`'s text, in ntb_tool's layout; the buffer's address (the
/// kernel's `Window Address` and `DMA Address`) is its region offset.
pub fn inbound_info(info: &InboundInfo) -> String {
    format!(
        "Inbound MW     \t{}\n\
         Port           \t{} ({})\n\
         Window Address \t{}\n\
         DMA Address    \t{}\n\
         Window Size    \t{}\n\
         Alignment      \t{}\n\
         Size Alignment \t{}\n\
         Size Max       \t{}\n",
        info.widx,
        info.peer_port,
        info.pidx,
        address(info.addr),
        address(info.addr),
        address(info.size),
        address(info.addr_align),
        address(info.size_align),
        address(info.size_max),
    )
}

/// What `peerN/peer_mw_transM` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundInfo {
    /// The window index.
    pub widx: u32,
    /// The peer the window is set for: its port number and index.
    pub attached: Option<(u32, u32)>,
    /// The region offset the window reaches (0 while unset).
    pub addr: u64,
    /// The window's aperture (`ntb_peer_mw_get_addr`'s size).
    pub aperture: u64,
    /// The translated size (0 while unset).
    pub size: u64,
}

/// `peerN/peer_mw_transM`'s text, in ntb_tool's layout. Addresses are region
/// offsets, so the virtual, physical and translation addresses coincide.
pub fn outbound_info(info: &OutboundInfo) -> String {
    let attached = match info.attached {
        Some((port, pidx)) => format!("{port} ({pidx})"),
        None => "-1 (-1)".into(),
    };
    format!(
        "Outbound MW:        \t{}\n\
         Port attached       \t{attached}\n\
         Virtual address     \t{}\n\
         Phys Address        \t{}\n\
         Mapping Size        \t{}\n\
         Translation Address \t0x{:016x}\n\
         Window Size         \t{}\n",
        info.widx,
        address(info.addr),
        address(info.addr),
        address(info.aperture),
        info.addr,
        address(info.size),
    )
}

// ---- write parsers ----

/// An `s`/`c` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitsCommand {
    /// `s <bits>`: the set op.
    Set(u64),
    /// `c <bits>`: the clear op.
    Clear(u64),
}

/// The kernel's `simple_strtoull` after a base-0 radix fixup: the value
/// (wrapping on overflow, as the kernel's does) and the bytes taken; `None`
/// without a digit.
fn scan_unsigned(s: &[u8]) -> Option<(u64, usize)> {
    let (base, skip) = match s {
        [b'0', x, d, ..] if x.eq_ignore_ascii_case(&b'x') && d.is_ascii_hexdigit() => (16, 2),
        [b'0', ..] => (8, 0),
        _ => (10, 0),
    };
    let mut value: u64 = 0;
    let mut taken = 0;
    for &b in &s[skip..] {
        let Some(digit) = (b as char).to_digit(base) else {
            break;
        };
        value = value
            .wrapping_mul(u64::from(base))
            .wrapping_add(u64::from(digit));
        taken += 1;
    }
    (taken > 0).then_some((value, skip + taken))
}

/// `sscanf`'s `%lli` (and `%zi`): white space skipped, an optional `-`, then
/// hex (`0x`), octal (`0`) or decimal; no `+` (the kernel's `vsscanf` takes
/// none). The value as its 64 bits, and the rest of the input.
fn scan_signed(s: &[u8]) -> Option<(u64, &[u8])> {
    let s = skip_spaces(s);
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    if !digits.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let (value, taken) = scan_unsigned(digits)?;
    let value = if negative {
        value.wrapping_neg()
    } else {
        value
    };
    Some((value, &digits[taken..]))
}

fn skip_spaces(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !is_kernel_space(*b))
        .unwrap_or(s.len());
    &s[start..]
}

/// The kernel's `isspace`: also `\v` and `\f`.
fn is_kernel_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// ntb_tool's `sscanf(buf, "%c %lli", &cmd, &bits)`: `s <bits>` or `c <bits>`;
/// anything else is `EINVAL`.
pub fn parse_bits(input: &[u8]) -> Result<BitsCommand, Errno> {
    let (&cmd, rest) = input.split_first().ok_or(Errno::INVAL)?;
    let (bits, _) = scan_signed(rest).ok_or(Errno::INVAL)?;
    match cmd {
        b's' => Ok(BitsCommand::Set(bits)),
        b'c' => Ok(BitsCommand::Clear(bits)),
        _ => Err(Errno::INVAL),
    }
}

/// ntb_tool's `sscanf(buf, "%lli:%zi", &addr, &size)` for `peer_mw_transM`
/// (of the first 31 bytes, as its buffer holds).
pub fn parse_addr_size(input: &[u8]) -> Result<(u64, u64), Errno> {
    let input = &input[..input.len().min(31)];
    let (addr, rest) = scan_signed(input).ok_or(Errno::INVAL)?;
    let rest = rest.strip_prefix(b":").ok_or(Errno::INVAL)?;
    let (size, _) = scan_signed(rest).ok_or(Errno::INVAL)?;
    Ok((addr, size))
}

/// The kernel's `kstrtoull(s, 0)`: an optional `+`, base by prefix, digits, an
/// optional newline, nothing else (`EINVAL`); a value past 64 bits is
/// `ERANGE`.
fn kstrtoull(s: &[u8]) -> Result<u64, Errno> {
    let s = s.strip_prefix(b"+").unwrap_or(s);
    let (base, skip) = match s {
        [b'0', x, d, ..] if x.eq_ignore_ascii_case(&b'x') && d.is_ascii_hexdigit() => (16, 2),
        [b'0', ..] => (8, 0),
        _ => (10, 0),
    };
    let mut value: u64 = 0;
    let mut overflow = false;
    let mut taken = 0;
    for &b in &s[skip..] {
        let Some(digit) = (b as char).to_digit(base) else {
            break;
        };
        match value
            .checked_mul(u64::from(base))
            .and_then(|v| v.checked_add(u64::from(digit)))
        {
            Some(v) => value = v,
            None => overflow = true,
        }
        taken += 1;
    }
    if overflow {
        return Err(Errno::RANGE);
    }
    if taken == 0 {
        return Err(Errno::INVAL);
    }
    match &s[skip + taken..] {
        [] | [b'\n'] => Ok(value),
        _ => Err(Errno::INVAL),
    }
}

/// `kstrtou64_from_user(buf, count, 0, &v)`: the kernel reads at most 22
/// bytes of the write.
pub fn parse_u64(input: &[u8]) -> Result<u64, Errno> {
    kstrtoull(&input[..input.len().min(22)])
}

/// `kstrtou32_from_user(buf, count, 0, &v)` (and `kstrtouint`): at most 11
/// bytes read; past `u32::MAX` is `ERANGE`.
pub fn parse_u32(input: &[u8]) -> Result<u32, Errno> {
    let value = kstrtoull(&input[..input.len().min(11)])?;
    u32::try_from(value).map_err(|_| Errno::RANGE)
}

/// `kstrtobool_from_user`: `y`/`Y`/`t`/`T`/`1`/`on` are true,
/// `n`/`N`/`f`/`F`/`0`/`off` false; the rest is `EINVAL`.
pub fn parse_bool(input: &[u8]) -> Result<bool, Errno> {
    match input {
        [b'y' | b'Y' | b't' | b'T' | b'1', ..] => Ok(true),
        [b'n' | b'N' | b'f' | b'F' | b'0', ..] => Ok(false),
        [b'o' | b'O', b'n' | b'N', ..] => Ok(true),
        [b'o' | b'O', b'f' | b'F', ..] => Ok(false),
        _ => Err(Errno::INVAL),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNTS: Counts = Counts {
        peers: 2,
        spads: 4,
        msgs: 4,
        mws: 2,
    };

    #[test]
    fn names_round_trip_and_respect_counts() {
        for dir in [Dir::Top, Dir::Peer(0), Dir::Peer(1)] {
            for file in dir.files(&COUNTS) {
                assert_eq!(File::parse(&file.path(), &COUNTS), Some(file), "{file:?}");
            }
        }
        assert_eq!(File::parse("spad3", &COUNTS), Some(File::Spad(3)));
        assert_eq!(File::parse("spad4", &COUNTS), None);
        assert_eq!(File::parse("spad03", &COUNTS), None);
        assert_eq!(File::parse("spad99", &COUNTS), None);
        assert_eq!(
            File::parse("peer1/peer_mw_trans1", &COUNTS),
            Some(File::Peer(1, PeerFile::PeerMwTrans(1)))
        );
        assert_eq!(File::parse("peer2/port", &COUNTS), None);
        assert_eq!(File::parse("peer0/db", &COUNTS), None);
        assert_eq!(File::parse("peer_spad", &COUNTS), None);
        assert_eq!(File::parse("peer0", &COUNTS), None);
        assert_eq!(Dir::parse("peer0", &COUNTS), Some(Dir::Peer(0)));
    }

    #[test]
    fn message_files_exist_only_with_message_registers() {
        let none = Counts { msgs: 0, ..COUNTS };
        assert_eq!(File::parse("msg_sts", &none), None);
        assert_eq!(File::parse("msg0", &none), None);
        assert_eq!(File::parse("peer0/msg0", &none), None);
        assert_eq!(File::parse("msg_event", &COUNTS), Some(File::MsgEvent));
    }

    #[test]
    fn reads_print_as_the_kernel_does() {
        assert_eq!(hex_line(0), "0x0\n");
        assert_eq!(hex_line(0xdeadbeef), "0xdeadbeef\n");
        assert_eq!(decimal_line(2), "2\n");
        assert_eq!(bool_line(true), "Y\n");
        assert_eq!(message_line(0xdeadbeef, Some(0)), "0xdeadbeef<-0\n");
        assert_eq!(message_line(5, Some(1)), "0x00000005<-1\n");
        assert_eq!(message_line(0, None), "0x00000000<--1\n");
    }

    #[test]
    fn window_info_has_ntb_tools_layout() {
        let text = inbound_info(&InboundInfo {
            widx: 0,
            peer_port: 1,
            pidx: 0,
            addr: 0x10000,
            size: 0x1000,
            addr_align: 0x1000,
            size_align: 0x1000,
            size_max: 0x100000,
        });
        assert!(text.starts_with("Inbound MW     \t0\nPort           \t1 (0)\n"));
        assert!(text.contains("DMA Address    \t0x0000000000010000\n"));
        assert!(text.ends_with("Size Max       \t0x0000000000100000\n"));
        let text = outbound_info(&OutboundInfo {
            widx: 1,
            attached: None,
            addr: 0,
            aperture: 0x100000,
            size: 0,
        });
        assert!(text.starts_with("Outbound MW:        \t1\nPort attached       \t-1 (-1)\n"));
        assert!(text.contains("Translation Address \t0x0000000000000000\n"));
    }

    #[test]
    fn bits_commands_parse_like_sscanf() {
        assert_eq!(
            parse_bits(b"s 0xdeadbeef\n"),
            Ok(BitsCommand::Set(0xdeadbeef))
        );
        assert_eq!(
            parse_bits(b"c 0xffffffff"),
            Ok(BitsCommand::Clear(0xffffffff))
        );
        assert_eq!(parse_bits(b"s 010"), Ok(BitsCommand::Set(8)));
        assert_eq!(parse_bits(b"s 12 junk"), Ok(BitsCommand::Set(12)));
        assert_eq!(parse_bits(b"s12"), Ok(BitsCommand::Set(12)));
        assert_eq!(parse_bits(b"s  \t7"), Ok(BitsCommand::Set(7)));
        assert_eq!(parse_bits(b"s -1"), Ok(BitsCommand::Set(u64::MAX)));
        assert_eq!(parse_bits(b"s 0x"), Ok(BitsCommand::Set(0)));
        assert_eq!(parse_bits(b"x 1"), Err(Errno::INVAL));
        assert_eq!(parse_bits(b" s 1"), Err(Errno::INVAL));
        assert_eq!(parse_bits(b"s +1"), Err(Errno::INVAL));
        assert_eq!(parse_bits(b"s"), Err(Errno::INVAL));
        assert_eq!(parse_bits(b"s -"), Err(Errno::INVAL));
        assert_eq!(parse_bits(b""), Err(Errno::INVAL));
        assert_eq!(parse_bits(b"1 2"), Err(Errno::INVAL));
    }

    #[test]
    fn kstrto_values_give_einval_or_erange() {
        assert_eq!(parse_u32(b"0xdeadbeef\n"), Ok(0xdeadbeef));
        assert_eq!(parse_u32(b"017"), Ok(15));
        assert_eq!(parse_u32(b"+5"), Ok(5));
        assert_eq!(parse_u32(b"4294967295"), Ok(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), Err(Errno::RANGE));
        assert_eq!(parse_u32(b"0x100000000"), Err(Errno::RANGE));
        assert_eq!(parse_u32(b"1 2"), Err(Errno::INVAL));
        assert_eq!(parse_u32(b"-1"), Err(Errno::INVAL));
        assert_eq!(parse_u32(b""), Err(Errno::INVAL));
        assert_eq!(parse_u32(b"\n"), Err(Errno::INVAL));
        assert_eq!(parse_u32(b"0x"), Err(Errno::INVAL));
        assert_eq!(parse_u32(b"08"), Err(Errno::INVAL));
        assert_eq!(parse_u32(b" 1"), Err(Errno::INVAL));
        assert_eq!(parse_u32(b"1\n\n"), Err(Errno::INVAL));
        assert_eq!(parse_u64(b"0xffffffffffffffff\n"), Ok(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), Err(Errno::RANGE));
    }

    #[test]
    fn kstrto_reads_only_what_the_kernels_buffer_holds() {
        // kstrtou32_from_user copies 11 bytes: the rest never reaches the parser.
        assert_eq!(parse_u32(b"00000000001junk"), Ok(1));
        assert_eq!(parse_u32(b"99999999999999"), Err(Errno::RANGE));
    }

    #[test]
    fn booleans_parse_like_kstrtobool() {
        for yes in [&b"Y"[..], b"y\n", b"1", b"true", b"on"] {
            assert_eq!(parse_bool(yes), Ok(true), "{yes:?}");
        }
        for no in [&b"N"[..], b"n\n", b"0", b"false", b"off"] {
            assert_eq!(parse_bool(no), Ok(false), "{no:?}");
        }
        for bad in [&b""[..], b"x", b"o", b" Y"] {
            assert_eq!(parse_bool(bad), Err(Errno::INVAL), "{bad:?}");
        }
    }

    #[test]
    fn window_translations_parse_addr_colon_size() {
        assert_eq!(parse_addr_size(b"0x10000:4096\n"), Ok((0x10000, 4096)));
        assert_eq!(parse_addr_size(b"0:0"), Ok((0, 0)));
        assert_eq!(parse_addr_size(b"0x10000 :4096"), Err(Errno::INVAL));
        assert_eq!(parse_addr_size(b"4096"), Err(Errno::INVAL));
        assert_eq!(parse_addr_size(b"a:1"), Err(Errno::INVAL));
    }
}
