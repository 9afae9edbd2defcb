//! `ivlink ntb tool`: ntb_tool's files between two host peers of one server,
//! through FUSE mounts (`--mount`) and one file at a time (`read`/`write`).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::{Running, run, server, text};
use rustix::io::Errno;

/// FUSE needs /dev/fuse; without it the mount tests have nothing to test.
fn fuse_missing() -> bool {
    let missing = !Path::new("/dev/fuse").exists();
    if missing {
        eprintln!("skipped: /dev/fuse is missing, so nothing can be mounted");
    }
    missing
}

struct Mount {
    process: Running,
    dir: PathBuf,
}

impl Mount {
    fn start(sock: &Path, dir: PathBuf) -> Mount {
        std::fs::create_dir(&dir).unwrap();
        let process = Running::start(&[
            "ntb",
            "tool",
            "-S",
            sock.to_str().unwrap(),
            "--mount",
            dir.to_str().unwrap(),
        ]);
        process.expect_line("files at");
        Mount { process, dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.path(file)).unwrap_or_else(|e| panic!("read {file}: {e}"))
    }

    /// One write(2), as `echo -n DATA > FILE` (open with O_TRUNC) does.
    fn write(&self, file: &str, data: &str) -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path(file))?;
        f.write_all(data.as_bytes())
    }

    /// One write(2) from another thread (std's `write_all` would retry on
    /// EINTR); its result comes through the channel.
    fn write_in_thread(&self, file: &str, data: &'static str) -> mpsc::Receiver<Option<i32>> {
        let path = self.path(file);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let result = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|mut f| f.write(data.as_bytes()));
            let _ = tx.send(result.err().map(|e| e.raw_os_error().unwrap_or(0)));
        });
        rx
    }

    fn write_fails(&self, file: &str, data: &str, errno: Errno) {
        let error = self.write(file, data).expect_err(file);
        assert_eq!(
            error.raw_os_error(),
            Some(errno.raw_os_error()),
            "{file} <- {data:?}: {error}"
        );
    }

    /// SIGTERM, a clean exit, and nothing left mounted.
    fn stop(&mut self) {
        self.process.signal(rustix::process::Signal::TERM);
        assert!(self.process.wait_exit().success());
        assert_unmounted(&self.dir);
    }
}

impl Drop for Mount {
    /// A test that failed half way kills the tool (by pid) and would leave a
    /// dead mount behind: detach it.
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let dir = dir.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(dir))
}

fn assert_unmounted(dir: &Path) {
    assert!(!is_mounted(dir), "{} is still mounted", dir.display());
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
}

fn private_server() -> (tempfile::TempDir, Running, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sock");
    let running = server(&sock, &["--memfd", "-l", "4M"]);
    (dir, running, sock)
}

#[test]
fn two_mounts_ring_message_and_refuse_like_ntb_tool() {
    if fuse_missing() {
        return;
    }
    let (dir, _server, sock) = private_server();
    let mut a = Mount::start(&sock, dir.path().join("a"));
    let mut b = Mount::start(&sock, dir.path().join("b"));
    assert_eq!(a.read("port"), "0\n");
    assert_eq!(b.read("port"), "1\n");
    assert_eq!(a.read("peer0/port"), "1\n");
    assert_eq!(a.read("peer0/link"), "Y\n");
    assert_eq!(b.read("db"), "0x0\n");

    // The OSLL/ntb-cxl README's session.
    a.write("peer_db", "s 0xdeadbeef\n").unwrap();
    assert_eq!(b.read("db"), "0xdeadbeef\n");
    a.write("peer0/msg0", "0xdeadbeef\n").unwrap();
    assert_eq!(b.read("msg0"), "0xdeadbeef<-0\n");
    assert_eq!(b.read("msg_sts"), "0x10000\n");
    // A full register refuses the next message; as on IDT, the write succeeds
    // and the sender's outbound status bit tells.
    a.write("peer0/msg0", "0x1").unwrap();
    assert_eq!(b.read("msg0"), "0xdeadbeef<-0\n");
    assert_eq!(a.read("msg_sts"), "0x1\n");
    a.write("msg_sts", "c 0x1").unwrap();
    assert_eq!(a.read("msg_sts"), "0x0\n");
    b.write("msg_sts", "c 0xffffffff\n").unwrap();
    assert_eq!(b.read("msg_sts"), "0x0\n");

    a.write("peer0/spad3", "017").unwrap();
    assert_eq!(b.read("spad3"), "0xf\n");
    assert_eq!(a.read("peer0/spad3"), "0xf\n");

    // The kernel's refusals.
    b.write_fails("db", "x 1", Errno::INVAL);
    b.write_fails("spad0", "1 2", Errno::INVAL);
    b.write_fails("spad0", "4294967296", Errno::RANGE);
    b.write_fails("msg_sts", "s 1", Errno::INVAL);
    b.write_fails("port", "1", Errno::INVAL);
    let missing = b.write("spad99", "1").expect_err("spad99");
    assert_eq!(missing.raw_os_error(), Some(Errno::NOENT.raw_os_error()));
    let no_read = std::fs::read_to_string(b.path("link")).expect_err("link has no read");
    assert_eq!(no_read.raw_os_error(), Some(Errno::INVAL.raw_os_error()));

    // A blocked db_event holds up nothing else, and a ring releases it.
    b.write("db", "c -1").unwrap();
    let done = b.write_in_thread("db_event", "0x3\n");
    assert!(done.recv_timeout(Duration::from_millis(300)).is_err());
    assert_eq!(b.read("db"), "0x0\n");
    a.write("peer_db", "s 0x3").unwrap();
    assert_eq!(done.recv_timeout(common::WAIT), Ok(None));

    // An inbound window given a size, reached through the peer's outbound one.
    a.write("peer0/mw_trans0", "5000").unwrap();
    let info = a.read("peer0/mw_trans0");
    let addr = info
        .lines()
        .find_map(|l| l.strip_prefix("DMA Address    \t"))
        .unwrap()
        .to_owned();
    assert!(
        info.contains("Window Size    \t0x0000000000002000\n"),
        "{info}"
    );
    b.write("peer0/peer_mw_trans0", &format!("{addr}:8192"))
        .unwrap();
    b.write("peer0/peer_mw0", "hello").unwrap();
    assert_eq!(&a.read("peer0/mw0")[..5], "hello");
    b.write("peer0/peer_mw_trans0", "0:0").unwrap();
    assert!(!b.path("peer0/peer_mw0").exists());

    // Stopping answers a blocked write with EINTR, then unmounts.
    let done = b.write_in_thread("db_event", "0x99");
    assert!(done.recv_timeout(Duration::from_millis(300)).is_err());
    b.stop();
    assert_eq!(
        done.recv_timeout(common::WAIT),
        Ok(Some(Errno::INTR.raw_os_error()))
    );
    assert_eq!(a.read("peer0/link"), "N\n");
    a.stop();
}

#[test]
fn one_shot_read_and_write_reach_a_mounted_peer() {
    if fuse_missing() {
        return;
    }
    let (dir, _server, sock) = private_server();
    let mut a = Mount::start(&sock, dir.path().join("a"));
    let sock = sock.to_str().unwrap();
    let tool = |args: &[&str]| {
        let mut all = vec!["ntb", "tool", "-S", sock];
        all.extend_from_slice(args);
        run(&all)
    };

    let rang = tool(&["write", "peer_db", "s 0x5"]);
    assert!(rang.status.success(), "{}", text(&rang));
    assert_eq!(a.read("db"), "0x5\n");
    let sent = tool(&["write", "peer0/msg1", "0x12"]);
    assert!(sent.status.success(), "{}", text(&sent));
    assert_eq!(a.read("msg1"), "0x00000012<-0\n");
    // The one-shot run gave its port up: the link to it is down.
    a.write_fails("peer0/spad2", "0xabc", Errno::NOTCONN);
    let port = tool(&["read", "peer0/port"]);
    assert_eq!(String::from_utf8_lossy(&port.stdout), "0\n");

    let bad = tool(&["write", "spad0", "1 2"]);
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("spad0: Invalid argument"),
        "{}",
        text(&bad)
    );
    let missing = tool(&["read", "spad99"]);
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("spad99: No such file or directory"),
        "{}",
        text(&missing)
    );

    // A mount that cannot be made says why and what works without FUSE.
    let nowhere = dir.path().join("nowhere");
    let failed = tool(&["--mount", nowhere.to_str().unwrap()]);
    assert!(!failed.status.success());
    let said = text(&failed);
    assert!(said.contains("cannot mount"), "{said}");
    assert!(said.contains("ivlink ntb tool read FILE"), "{said}");
    a.stop();
}

#[test]
fn a_mount_whose_server_goes_away_says_so_and_unmounts() {
    if fuse_missing() {
        return;
    }
    let (dir, mut server, sock) = private_server();
    let mut mount = Mount::start(&sock, dir.path().join("a"));
    assert_eq!(mount.read("port"), "0\n");
    server.signal(rustix::process::Signal::KILL);
    server.wait_exit();
    assert!(!mount.process.wait_exit().success());
    mount.process.expect_line("the server went away");
    assert_unmounted(&mount.dir);
}
