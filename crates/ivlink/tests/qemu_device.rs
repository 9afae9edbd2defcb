//! A real QEMU `ivshmem-doorbell` device accepts ivlink's server.
//!
//! No guest is booted: QEMU realizes the device synchronously at start-up (it blocks
//! until the server has sent the shared memory) and exits if the server sends
//! anything it rejects. Later messages (vectors, joins, leaves) are read by QEMU's
//! main loop, which reports rejected ones on stderr. The CPU stays paused (`-S`).
//!
//! The test runs QEMU with TCG only. Without `qemu-system-x86_64` on `PATH` it
//! prints a skip notice and passes, unless `IVLINK_REQUIRE_QEMU=1` is set (CI).

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ivlink::server::ServerThread;
use ivlink::shm::ShmBacking;
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::{Device, Event, Notify, NotifyError, PeerInfo, ServerConfig, WaitFor};

const QEMU: &str = "qemu-system-x86_64";
/// QEMU start-up under TCG, device realize included.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Anything after start-up.
const TIMEOUT: Duration = Duration::from_secs(15);
const VECTORS: u16 = 2;
/// Words in QEMU's stderr that mean it rejected something the server sent.
const BAD_WORDS: &[&str] = &[
    "ivshmem", "invalid", "server", "eventfd", "peer", "error", "vector",
];

#[test]
fn qemu_ivshmem_doorbell_devices_accept_the_server() {
    let Some(qemu_bin) = find_qemu() else {
        if std::env::var_os("IVLINK_REQUIRE_QEMU").is_some_and(|v| v == "1") {
            panic!("{QEMU} is not on PATH, but IVLINK_REQUIRE_QEMU=1 requires this test to run");
        }
        eprintln!(
            "SKIPPED qemu_ivshmem_doorbell_devices_accept_the_server: {QEMU} is not on PATH \
             (set IVLINK_REQUIRE_QEMU=1 to make this a failure)"
        );
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let server = ServerThread::start(ServerConfig {
        socket_path: dir.path().join("sock"),
        shm: ShmBacking::Memfd,
        size: 1 << 20,
        vectors: VECTORS,
        ..ServerConfig::default()
    })
    .unwrap();
    let host = HostPeer::connect(&HostConfig::new(server.socket_path())).unwrap();
    assert_eq!((host.id(), host.vectors()), (0, usize::from(VECTORS)));

    // QEMU #1 becomes peer 1.
    let q1 = Qemu::launch(&qemu_bin, dir.path(), server.socket_path(), "qemu1");
    expect_join(&host, 1, &[&q1]);
    wait_until("the server to count 2 peers", TIMEOUT, &[&q1], || {
        server.handle().peer_count() == 2
    });
    let mut qmp1 = Qmp::connect(&q1);
    check_pci_device(&q1, &mut qmp1, server.shm_size());
    assert_eq!(
        host.peers(),
        vec![PeerInfo {
            id: 1,
            vectors: usize::from(VECTORS)
        }]
    );
    // QEMU drains its own vectors' eventfds even with MSI-X off, so a ring that
    // gets drained proves the device took its vectors (they come after the shm).
    ring_every_vector(&host, 1, &q1);
    q1.assert_running_and_quiet("after setup and notifications");

    // QEMU #2 becomes peer 2; everyone already there learns about it.
    let q1_eventfds = q1.eventfd_count();
    let q2 = Qemu::launch(&qemu_bin, dir.path(), server.socket_path(), "qemu2");
    expect_join(&host, 2, &[&q1, &q2]);
    wait_until("the server to count 3 peers", TIMEOUT, &[&q1, &q2], || {
        server.handle().peer_count() == 3
    });
    let mut qmp2 = Qmp::connect(&q2);
    check_pci_device(&q2, &mut qmp2, server.shm_size());
    assert_eq!(
        host.peers().iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![1, 2]
    );
    ring_every_vector(&host, 2, &q2);
    // QEMU #1 got peer 2's vectors (one connect message each) and keeps the eventfds.
    wait_for_eventfds(&q1, q1_eventfds, |before, now| {
        now >= before + usize::from(VECTORS)
    });
    qmp1.command(r#"{"execute":"query-status"}"#);
    q1.assert_running_and_quiet("after peer 2 joined");
    q2.assert_running_and_quiet("after setup and notifications");

    // QEMU #1 dies; the server tells the host peer and QEMU #2.
    let q2_eventfds = q2.eventfd_count();
    drop(qmp1);
    q1.kill();
    assert_eq!(next_peer_event(&host, &[&q2]), Event::PeerLeft { peer: 1 });
    wait_until("the server to count 2 peers", TIMEOUT, &[&q2], || {
        server.handle().peer_count() == 2
    });
    // On the disconnect notice QEMU closes the leaver's eventfds (one per vector).
    wait_for_eventfds(&q2, q2_eventfds, |before, now| {
        now + usize::from(VECTORS) <= before
    });
    assert_eq!(
        host.peers(),
        vec![PeerInfo {
            id: 2,
            vectors: usize::from(VECTORS)
        }]
    );
    assert_eq!(host.notify(1, 0), Err(NotifyError::UnknownPeer(1)));
    ring_every_vector(&host, 2, &q2);
    qmp2.command(r#"{"execute":"query-status"}"#);
    q2.assert_running_and_quiet("after peer 1 left");

    drop(qmp2);
    for q in [&q1, &q2] {
        let text = q.stderr();
        let text = if text.trim().is_empty() {
            "(nothing)"
        } else {
            text.trim_end()
        };
        eprintln!("{} (pid {}) stderr: {text}", q.name, q.pid);
    }
    eprintln!(
        "QEMU device test finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// `qemu-system-x86_64` from `PATH`, if it is there and executable.
fn find_qemu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(QEMU))
        .find(|file| {
            file.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A QEMU child process, killed (by its pid) when dropped.
struct Qemu {
    name: &'static str,
    pid: u32,
    child: RefCell<Child>,
    stderr_path: PathBuf,
    qmp_path: PathBuf,
}

impl Qemu {
    fn launch(bin: &Path, dir: &Path, socket: &Path, name: &'static str) -> Qemu {
        let stderr_path = dir.join(format!("{name}.stderr"));
        let qmp_path = dir.join(format!("{name}.qmp"));
        let stderr = File::create(&stderr_path).unwrap();
        let mut command = Command::new(bin);
        command
            .args([
                "-accel",
                "tcg",
                "-M",
                "q35",
                "-nodefaults",
                "-no-user-config",
            ])
            .args(["-display", "none", "-S", "-m", "64"])
            .arg("-chardev")
            .arg(format!("socket,path={},id=ivs", socket.display()))
            .arg("-device")
            .arg(format!("ivshmem-doorbell,chardev=ivs,vectors={VECTORS}"))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: the closure runs between fork and exec and only makes one
        // async-signal-safe system call (prctl), allocating nothing.
        unsafe {
            command.pre_exec(|| {
                // Belt and braces next to Drop: QEMU dies with the thread that
                // started it, even if this test process is killed outright.
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))?;
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let pid = child.id();
        eprintln!("started {name} (pid {pid})");
        Qemu {
            name,
            pid,
            child: RefCell::new(child),
            stderr_path,
            qmp_path,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Panics, with QEMU's stderr, if it has exited.
    fn assert_running(&self, when: &str) {
        let status = self.child.borrow_mut().try_wait().unwrap();
        if let Some(status) = status {
            panic!(
                "{} (pid {}) exited {when} ({status}); its stderr:\n{}",
                self.name,
                self.pid,
                self.stderr()
            );
        }
    }

    /// Panics if QEMU has exited or complained about what the server sent.
    fn assert_running_and_quiet(&self, when: &str) {
        self.assert_running(when);
        let stderr = self.stderr();
        let complaints: Vec<&str> = stderr
            .lines()
            .filter(|line| {
                let line = line.to_lowercase();
                BAD_WORDS.iter().any(|word| line.contains(word))
            })
            .collect();
        assert!(
            complaints.is_empty(),
            "{} (pid {}) complained {when}:\n{}",
            self.name,
            self.pid,
            complaints.join("\n")
        );
    }

    /// Kills QEMU (SIGKILL to its pid) and reaps it.
    fn kill(&self) {
        let mut child = self.child.borrow_mut();
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// How many eventfds QEMU holds open, if its fd table can be read.
    fn eventfd_count(&self) -> Option<usize> {
        let entries = std::fs::read_dir(format!("/proc/{}/fd", self.pid)).ok()?;
        Some(
            entries
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.as_os_str() == "anon_inode:[eventfd]")
                .count(),
        )
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `done` until it holds; panics after `timeout` or if a QEMU exits.
fn wait_until(what: &str, timeout: Duration, qemus: &[&Qemu], mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return;
        }
        for q in qemus {
            q.assert_running(&format!("while waiting for {what}"));
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}{}",
            stderr_report(qemus)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// QEMU's stderr, for failure messages.
fn stderr_report(qemus: &[&Qemu]) -> String {
    qemus
        .iter()
        .map(|q| format!("\n{} (pid {}) stderr:\n{}", q.name, q.pid, q.stderr()))
        .collect()
}

/// Waits until QEMU's count of open eventfds, compared with `before`, passes `done`
/// (skipped, with a note, where another process's fd table cannot be read).
fn wait_for_eventfds(qemu: &Qemu, before: Option<usize>, done: impl Fn(usize, usize) -> bool) {
    let Some(before) = before else {
        eprintln!(
            "note: cannot read /proc/{}/fd; not checking {}'s eventfds",
            qemu.pid, qemu.name
        );
        return;
    };
    wait_until(
        &format!("{}'s eventfds to change from {before}", qemu.name),
        TIMEOUT,
        &[qemu],
        || qemu.eventfd_count().is_some_and(|now| done(before, now)),
    );
}

/// Waits for the host peer to see `peer` join with all its vectors. The server sends
/// them one message each, so a join may be reported in steps (`PeerJoined` with 1,
/// then 2 vectors); any other event fails.
fn expect_join(host: &HostPeer, peer: u16, qemus: &[&Qemu]) {
    let mut seen = Vec::new();
    loop {
        let event = next_peer_event(host, qemus);
        seen.push(event.clone());
        match event {
            Event::PeerJoined { peer: p, vectors } if p == peer => {
                if vectors == usize::from(VECTORS) {
                    return;
                }
                assert!(vectors < usize::from(VECTORS), "too many vectors: {seen:?}");
            }
            _ => panic!("expected peer {peer} to join, saw {seen:?}"),
        }
    }
}

/// The host peer's next join or leave event; QEMU must not exit meanwhile.
fn next_peer_event(host: &HostPeer, qemus: &[&Qemu]) -> Event {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(event) = host
            .wait(WaitFor::PEER_EVENTS, Some(Duration::from_millis(100)))
            .unwrap()
        {
            return event;
        }
        for q in qemus {
            q.assert_running("while the host peer waited for a peer event");
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {START_TIMEOUT:?} waiting for a peer event{}",
            stderr_report(qemus)
        );
    }
}

/// Rings every vector of QEMU's peer `peer` and waits until QEMU has drained each.
fn ring_every_vector(host: &HostPeer, peer: u16, qemu: &Qemu) {
    for vector in 0..VECTORS {
        host.notify(peer, vector).unwrap();
        // This process (server and host peer) holds every eventfd in play and
        // reads none of QEMU's: only QEMU can bring the count back to 0.
        wait_until(
            &format!("{} to take the ring on vector {vector}", qemu.name),
            TIMEOUT,
            &[qemu],
            || rung_eventfds_here().is_empty(),
        );
    }
}

/// Eventfds of this process whose counter is not 0, as "fd N: count".
fn rung_eventfds_here() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fdinfo") else {
        panic!("/proc/self/fdinfo is needed to see whether QEMU takes notifications");
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            // An fd closed meanwhile has no info left: skip it.
            let info = std::fs::read_to_string(entry.path()).ok()?;
            let count = info
                .lines()
                .find_map(|l| l.strip_prefix("eventfd-count:"))?
                .trim();
            let count = u64::from_str_radix(count, 16).ok()?;
            (count != 0).then(|| format!("fd {}: {count}", entry.file_name().to_string_lossy()))
        })
        .collect()
}

/// A minimal QMP client (one command at a time, replies read line by line).
struct Qmp {
    reader: BufReader<UnixStream>,
    name: &'static str,
}

impl Qmp {
    /// Connects once QEMU listens, reads the greeting and enters command mode.
    fn connect(qemu: &Qemu) -> Qmp {
        let deadline = Instant::now() + START_TIMEOUT;
        let stream = loop {
            match UnixStream::connect(&qemu.qmp_path) {
                Ok(stream) => break stream,
                Err(e) => {
                    qemu.assert_running("before its QMP socket answered");
                    assert!(
                        Instant::now() < deadline,
                        "{}: QMP socket not ready after {START_TIMEOUT:?}: {e}",
                        qemu.name
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        stream.set_read_timeout(Some(START_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            name: qemu.name,
        };
        let greeting = qmp.read_line();
        assert!(
            greeting.contains("\"QMP\""),
            "unexpected greeting {greeting}"
        );
        qmp.command(r#"{"execute":"qmp_capabilities"}"#);
        qmp
    }

    fn read_line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("{}: QMP connection closed", self.name),
            Ok(_) => line,
            Err(e) => panic!("{}: reading QMP: {e}", self.name),
        }
    }

    /// Sends one command and returns its `return` reply (events are skipped).
    fn command(&mut self, json: &str) -> String {
        let stream = self.reader.get_mut();
        stream.write_all(json.as_bytes()).unwrap();
        stream.write_all(b"\n").unwrap();
        loop {
            let line = self.read_line();
            if line.starts_with("{\"return\"") {
                return line;
            }
            assert!(
                line.starts_with("{\"event\""),
                "{}: {json} failed: {line}",
                self.name
            );
        }
    }
}

/// Checks through `info pci` that the ivshmem device (1af4:1110) is there with its
/// registers (BAR0, 256 bytes), MSI-X (BAR1) and the server's memory (BAR2).
fn check_pci_device(qemu: &Qemu, qmp: &mut Qmp, shm_size: u64) {
    let reply = qmp
        .command(r#"{"execute":"human-monitor-command","arguments":{"command-line":"info pci"}}"#);
    let text = reply.replace("\\r\\n", "\n").replace("\\n", "\n");
    let device = text
        .split("Bus ")
        .find(|section| section.contains("1af4:1110"))
        .unwrap_or_else(|| panic!("{}: no 1af4:1110 device in info pci:\n{text}", qemu.name));
    let expected = [
        ("BAR0", Some(256)),
        ("BAR1", None),
        ("BAR2", Some(shm_size)),
    ];
    for (bar, size) in expected {
        let line = device
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{bar}:")))
            .unwrap_or_else(|| panic!("{}: the ivshmem device lacks {bar}:\n{device}", qemu.name));
        if let Some(size) = size {
            assert_eq!(
                bar_size(line),
                Some(size),
                "{}: wrong size for {line}",
                qemu.name
            );
        }
    }
}

/// The size in an `info pci` BAR line, "... memory at 0x<addr> [0x<addr + size - 1>]."
/// (an unassigned BAR has address all-ones, hence the wrapping arithmetic).
fn bar_size(line: &str) -> Option<u64> {
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    let (_, rest) = line.split_once(" at 0x")?;
    let (addr, rest) = rest.split_once(' ')?;
    let (_, rest) = rest.split_once("[0x")?;
    let (end, _) = rest.split_once(']')?;
    Some(hex(end)?.wrapping_sub(hex(addr)?).wrapping_add(1))
}
