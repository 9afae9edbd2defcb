//! ntb_tool's files as a FUSE filesystem, with debugfs's behaviour: files
//! report size 0 and are opened for direct I/O (so `cat` reads what the
//! handler returns), truncation is accepted (shell `>`), and every write(2) is
//! one command whose error comes back from that write. Blocking writes
//! (`db_event`, `msg_event`, `peerN/link_event`) are answered from a thread of
//! their own, so the rest of the tree keeps working meanwhile.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner,
    MountOption, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr, Request, WriteFlags,
};
use ivlink::DeviceError;
use ivlink::ntb::{Ntb, NtbError};

use super::files::{Dir, File};
use super::ops;

/// A node of the tree: inode numbers are positions in the node table plus one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir(Dir),
    File(File),
}

/// The mounted tree's state, shared with the threads of blocking writes.
struct Shared {
    ntb: Ntb<'static>,
    nodes: Vec<Node>,
    stop: Arc<AtomicBool>,
    /// Blocking writes still waiting.
    waiting: AtomicUsize,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

impl Shared {
    fn node(&self, ino: INodeNo) -> Option<Node> {
        let index = usize::try_from(ino.0).ok()?.checked_sub(1)?;
        let node = *self.nodes.get(index)?;
        match node {
            Node::File(file) if !ops::exists(&self.ntb, &file) => None,
            node => Some(node),
        }
    }

    fn ino(&self, node: Node) -> INodeNo {
        let index = self.nodes.iter().position(|n| *n == node).unwrap_or(0);
        INodeNo(index as u64 + 1)
    }

    fn attr(&self, node: Node) -> FileAttr {
        let (kind, perm, nlink) = match node {
            Node::Dir(_) => (FileType::Directory, 0o755, 2),
            Node::File(file) => (FileType::RegularFile, file.mode(), 1),
        };
        FileAttr {
            ino: self.ino(node),
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 512,
            flags: 0,
        }
    }

    fn file(&self, ino: INodeNo) -> Result<File, Errno> {
        match self.node(ino) {
            Some(Node::File(file)) => Ok(file),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }
}

/// Every node a switch of this port's counts can have.
fn node_table(ntb: &Ntb<'_>) -> Vec<Node> {
    let counts = ops::counts(ntb);
    let mut nodes = vec![Node::Dir(Dir::Top)];
    let mut dirs = vec![Dir::Top];
    dirs.extend(Dir::Top.dirs(&counts));
    for dir in dirs {
        if dir != Dir::Top {
            nodes.push(Node::Dir(dir));
        }
        nodes.extend(dir.files(&counts).into_iter().map(Node::File));
    }
    nodes
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

/// The filesystem fuser serves.
struct ToolFs(Arc<Shared>);

/// Names change as windows come and go: nothing is cached.
const TTL: Duration = Duration::ZERO;

impl Filesystem for ToolFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let shared = &self.0;
        let Some(Node::Dir(dir)) = shared.node(parent) else {
            return reply.error(Errno::ENOTDIR);
        };
        let counts = ops::counts(&shared.ntb);
        let name = name.to_string_lossy();
        let found = dir
            .dirs(&counts)
            .into_iter()
            .map(Node::Dir)
            .find(|d| matches!(d, Node::Dir(d) if d.name() == name))
            .or_else(|| {
                ops::listing(&shared.ntb, dir)
                    .into_iter()
                    .find(|f| f.name() == name)
                    .map(Node::File)
            });
        match found {
            Some(node) => reply.entry(&TTL, &shared.attr(node), fuser::Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.0.node(ino) {
            Some(node) => reply.attr(&TTL, &self.0.attr(node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    /// Truncation (shell `>`) and the like change nothing: the files have no
    /// contents to cut.
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.0.node(ino) {
            Some(node) => reply.attr(&TTL, &self.0.attr(node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.0.file(ino) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self
            .0
            .file(ino)
            .and_then(|file| ops::read(&self.0.ntb, &file, offset, size as usize).map_err(errno));
        match result {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let file = match self.0.file(ino) {
            Ok(file) => file,
            Err(e) => return reply.error(e),
        };
        let answer = move |shared: &Shared, data: &[u8], reply: ReplyWrite| match ops::write(
            &shared.ntb,
            &file,
            offset,
            data,
            &shared.stop,
        ) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        };
        if !file.blocks() {
            return answer(&self.0, data, reply);
        }
        let shared = self.0.clone();
        let data = data.to_vec();
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("ntb-tool {}", file.path()))
            .spawn({
                let shared = shared.clone();
                move || {
                    answer(&shared, &data, reply);
                    shared.waiting.fetch_sub(1, Ordering::SeqCst);
                }
            });
        if let Err(error) = spawned {
            // The reply went with the closure; fuser answers EIO for it.
            tracing::warn!(%error, "cannot start a thread for a blocking write");
            shared.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Each write ran when it came: closing has nothing left to report.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    /// Permission is the kernel's business with `default_permissions`; without
    /// it, every access is allowed, as for root on debugfs.
    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    /// debugfs directories have no `create`: the VFS gives `EACCES`.
    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EACCES);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let shared = &self.0;
        let Some(Node::Dir(dir)) = shared.node(ino) else {
            return reply.error(Errno::ENOTDIR);
        };
        let parent = match dir {
            Dir::Top => ino,
            Dir::Peer(_) => shared.ino(Node::Dir(Dir::Top)),
        };
        let counts = ops::counts(&shared.ntb);
        let mut entries = vec![
            (ino, FileType::Directory, ".".to_owned()),
            (parent, FileType::Directory, "..".to_owned()),
        ];
        for sub in dir.dirs(&counts) {
            entries.push((shared.ino(Node::Dir(sub)), FileType::Directory, sub.name()));
        }
        for file in ops::listing(&shared.ntb, dir) {
            entries.push((
                shared.ino(Node::File(file)),
                FileType::RegularFile,
                file.name(),
            ));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// Mounts the files of `ntb` on `dir` and serves them until `stop` is raised,
/// then unmounts. `announce` runs once the mount is up.
pub fn serve(
    ntb: Ntb<'static>,
    dir: &Path,
    stop: Arc<AtomicBool>,
    announce: impl FnOnce(&Ntb<'_>),
) -> anyhow::Result<()> {
    let hint =
        "without FUSE, use `ivlink ntb tool read FILE` and `ivlink ntb tool write FILE VALUE`";
    if !Path::new("/dev/fuse").exists() {
        bail!(
            "cannot mount ntb_tool's files: /dev/fuse is missing (load the fuse module, or pass the device into the container); {hint}"
        );
    }
    let shared = Arc::new(Shared {
        nodes: node_table(&ntb),
        ntb,
        stop: stop.clone(),
        waiting: AtomicUsize::new(0),
        uid: rustix::process::getuid().as_raw(),
        gid: rustix::process::getgid().as_raw(),
        started: SystemTime::now(),
    });
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("ivlink-ntb".into()),
        MountOption::Subtype("ntb_tool".into()),
    ];
    let session = fuser::Session::new(ToolFs(shared.clone()), dir, &config)
        .with_context(|| format!("cannot mount ntb_tool's files on {}; {hint}", dir.display()))?;
    let background = session.spawn().context("cannot serve the FUSE mount")?;
    announce(&shared.ntb);
    let outcome = watch(&shared.ntb, &stop, dir);
    stop.store(true, Ordering::SeqCst);
    // Blocking writes see the flag within a tick and answer EINTR; their
    // callers then close their files, which lets the unmount through.
    let deadline = Instant::now() + Duration::from_secs(2);
    while shared.waiting.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    unmount(dir, background)?;
    outcome
}

/// Until stopped, takes the port's events as they come, so that a peer the
/// server reports gone has its ports freed (guests learn of it only so), and
/// notices the server going away: then the mount ends with that error.
fn watch(ntb: &Ntb<'_>, stop: &AtomicBool, dir: &Path) -> anyhow::Result<()> {
    let mut seen = ntb.events();
    while !stop.load(Ordering::Relaxed) {
        match ntb.wait_events(&mut seen, Some(Duration::from_millis(50))) {
            Ok(_) => {}
            Err(NtbError::Device(DeviceError::ServerGone)) => {
                bail!("the server went away; unmounted {}", dir.display())
            }
            Err(error) => {
                tracing::warn!(%error, "cannot take the port's events");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}

/// Unmounts `dir` and ends the session. A caller that has just been answered
/// may still hold its file open for a moment, so a busy mount is tried again
/// for a while before it is detached (the mount point is free at once, the
/// rest goes with its last user).
fn unmount(dir: &Path, background: fuser::BackgroundSession) -> anyhow::Result<()> {
    use rustix::mount::{UnmountFlags, unmount};
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match unmount(dir, UnmountFlags::empty()) {
            Ok(()) => break,
            Err(rustix::io::Errno::BUSY) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(rustix::io::Errno::BUSY) => {
                tracing::debug!("mount still busy; detaching it");
                unmount(dir, UnmountFlags::DETACH)
                    .with_context(|| format!("cannot unmount {}", dir.display()))?;
                return Ok(());
            }
            // Not root: fuser unmounts through fusermount.
            Err(rustix::io::Errno::PERM) => {
                return background
                    .umount_and_join()
                    .with_context(|| format!("cannot unmount {}", dir.display()));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot unmount {}", dir.display())),
        }
    }
    background.join().context("the FUSE session failed")
}
