//! The server under a service manager's protocols, with real parts: socket
//! activation by `systemd-socket-activate` (Debian's systemd package), readiness
//! notifications received on a real datagram socket, the unit files checked by
//! `systemd-analyze verify`, and the errors and warnings a misconfigured server
//! gives.
//!
//! Every socket lives in a temporary directory; every process started is killed
//! by its pid if a test fails.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::{Device, Region};
use rustix::process::Signal;

use common::{IVLINK, Running, WAIT, run_bounded, text};

const DROPIN_SERVER: &str = env!("CARGO_BIN_EXE_ivshmem-server");
const SOCKET_ACTIVATE: &str = "systemd-socket-activate";

/// Whether `program` can run here; says why a test is skipped when not.
fn available(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        println!("skipped: {program} is not installed (Debian's systemd package has it)");
    }
    found
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn connect(socket: &Path, vectors: usize) -> HostPeer {
    HostPeer::connect(&HostConfig {
        socket_path: socket.to_owned(),
        vectors: Some(vectors),
        setup_timeout: WAIT,
    })
    .expect("connect a peer")
}

/// A notification socket bound in a temporary directory, as a service manager's.
struct NotifySocket {
    socket: UnixDatagram,
    address: String,
}

impl NotifySocket {
    fn at_path(path: PathBuf) -> Self {
        let socket = UnixDatagram::bind(&path).unwrap();
        Self::ready(socket, path_str(&path).to_owned())
    }

    fn abstract_name(tag: &str) -> Self {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("ivlink-test-notify-{tag}-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        Self::ready(socket, format!("@{name}"))
    }

    fn ready(socket: UnixDatagram, address: String) -> Self {
        socket.set_read_timeout(Some(WAIT)).unwrap();
        NotifySocket { socket, address }
    }

    /// The next notification; fails the test after [`WAIT`].
    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
                // Signals (the test harness's children ending) interrupt the wait.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("no notification in time: {e}"),
            }
        }
    }

    /// Skips notifications until one contains `needle`.
    fn expect(&self, needle: &str) -> String {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let message = self.next();
            if message.contains(needle) {
                return message;
            }
            seen.push(message);
        }
        panic!("no notification containing {needle:?}; saw {seen:?}");
    }

    fn nothing_within(&self, time: Duration) -> bool {
        self.socket.set_read_timeout(Some(time)).unwrap();
        let mut buf = [0u8; 4096];
        let quiet = loop {
            match self.socket.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                result => break result.is_err(),
            }
        };
        self.socket.set_read_timeout(Some(WAIT)).unwrap();
        quiet
    }
}

#[test]
fn socket_activation_starts_the_server_on_the_first_connection() {
    if !available(SOCKET_ACTIVATE) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let not_used = dir.path().join("given-with-S.sock");
    let mut server = Running::start_program(
        SOCKET_ACTIVATE,
        &[
            "-l",
            path_str(&socket),
            IVLINK,
            "server",
            "-F",
            "--memfd",
            "-l",
            "1M",
            "-n",
            "2",
            "-S",
            path_str(&not_used),
        ],
        &[],
    );
    server.expect_line("Listening on");
    // Nothing of the server yet: the socket is systemd-socket-activate's.
    let peer = connect(&socket, 2);
    assert_eq!(peer.id(), 0);
    assert_eq!(peer.region().len(), 1 << 20);
    assert_eq!(peer.vectors(), 2);
    let note = server.expect_line("the socket the service manager passed");
    assert!(
        note.contains(&format!("-S {} is ignored", not_used.display())),
        "{note}"
    );
    assert!(
        !not_used.exists(),
        "-S must not be bound under socket activation"
    );
    let second = connect(&socket, 2);
    assert_eq!(second.id(), 1);
    drop((peer, second));

    server.signal(Signal::TERM);
    assert!(server.wait_exit().success());
    assert!(
        socket.exists(),
        "the server must not remove a socket file it did not create"
    );
}

#[test]
fn the_dropin_server_takes_an_activated_socket_and_notifies() {
    if !available(SOCKET_ACTIVATE) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let notify = NotifySocket::abstract_name("dropin-activated");
    let setenv = format!("NOTIFY_SOCKET={}", notify.address);
    let mut server = Running::start_program(
        SOCKET_ACTIVATE,
        &[
            "-l",
            path_str(&socket),
            "-E",
            &setenv,
            DROPIN_SERVER,
            "-F",
            "-m",
            path_str(dir.path()),
            "-l",
            "1M",
            "-n",
            "2",
        ],
        &[],
    );
    server.expect_line("Listening on");
    let peer = connect(&socket, 2);
    assert_eq!(peer.region().len(), 1 << 20);
    let ready = notify.expect("READY=1");
    assert!(
        ready.contains(&format!(
            "STATUS=listening on {}, 1048576 bytes, 2 vectors",
            socket.display()
        )),
        "{ready}"
    );
    server.signal(Signal::TERM);
    assert_eq!(notify.expect("STOPPING=1"), "STOPPING=1\nSTATUS=stopping");
    assert!(server.wait_exit().success());
    assert!(socket.exists());
}

#[test]
fn readiness_status_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let notify = NotifySocket::at_path(dir.path().join("notify"));
    let mut server = Running::start_program(
        IVLINK,
        &[
            "server",
            "-F",
            "-S",
            path_str(&socket),
            "--memfd",
            "-l",
            "1M",
            "-n",
            "2",
        ],
        &[("NOTIFY_SOCKET", &notify.address)],
    );
    // Ready means connectable: connect only once told.
    let ready = notify.next();
    assert_eq!(
        ready,
        format!(
            "READY=1\nSTATUS=listening on {}, 1048576 bytes, 2 vectors",
            socket.display()
        )
    );
    let peer = connect(&socket, 2);
    assert!(notify.expect("STATUS=").ends_with("; 1 peer"));
    drop(peer);
    assert!(notify.expect("STATUS=").ends_with("; 0 peers"));
    assert!(
        notify.nothing_within(Duration::from_millis(700)),
        "no change, no update"
    );

    server.signal(Signal::TERM);
    assert_eq!(notify.next(), "STOPPING=1\nSTATUS=stopping");
    assert!(server.wait_exit().success());
}

#[test]
fn the_dropin_server_notifies_an_abstract_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let notify = NotifySocket::abstract_name("dropin");
    let mut server = Running::start_program(
        DROPIN_SERVER,
        &["-F", "-S", path_str(&socket), "-m", path_str(dir.path())],
        &[("NOTIFY_SOCKET", &notify.address)],
    );
    assert!(notify.next().starts_with("READY=1\nSTATUS=listening on "));
    drop(connect(&socket, 1));
    server.signal(Signal::INT);
    assert_eq!(notify.expect("STOPPING=1"), "STOPPING=1\nSTATUS=stopping");
    assert!(server.wait_exit().success());
}

#[test]
fn a_bad_notify_socket_is_warned_about_and_the_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let mut server = Running::start_program(
        IVLINK,
        &["server", "-F", "-S", path_str(&socket), "--memfd"],
        &[("NOTIFY_SOCKET", "relative/notify")],
    );
    server.expect_line("NOTIFY_SOCKET=\"relative/notify\": expected an absolute socket path");
    server.expect_line("listening on");
    drop(connect(&socket, 1));
    server.signal(Signal::TERM);
    assert!(server.wait_exit().success());
}

/// Runs `ivlink server` through `sh` with fd 3 set up by `redirect` and
/// `LISTEN_PID` naming the server, as a service manager would; gives the output.
fn activated_with_fd3(redirect: &str, listen_fds: &str, dir: &Path) -> std::process::Output {
    let script = format!("export LISTEN_PID=$$ LISTEN_FDS={listen_fds}; exec \"$@\" {redirect}");
    let socket = dir.join("unused.sock");
    run_bounded(
        "sh",
        &[
            "-c",
            &script,
            "sh",
            IVLINK,
            "server",
            "-F",
            "--memfd",
            "-S",
            path_str(&socket),
        ],
    )
}

/// The output is exactly one line holding `needle`, and the server failed.
fn one_line_failure(output: &std::process::Output, needle: &str) {
    let all = text(output);
    assert!(!output.status.success(), "{all}");
    assert_eq!(all.lines().count(), 1, "one line expected:\n{all}");
    assert!(all.contains(needle), "{all}");
}

#[test]
fn a_passed_fd_that_is_no_listening_socket_gives_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let output = activated_with_fd3(&format!("3<{}", path_str(&file)), "1", dir.path());
    one_line_failure(
        &output,
        "ivlink: socket activation: fd 3 is a regular file, not a listening UNIX stream socket",
    );
    let output = activated_with_fd3("3<&-", "1", dir.path());
    one_line_failure(
        &output,
        "socket activation: LISTEN_FDS=1 but fd 3 is not open",
    );
    let output = activated_with_fd3("3<&-", "many", dir.path());
    one_line_failure(&output, "LISTEN_FDS=\"many\" is not a number of sockets");
    assert!(!dir.path().join("unused.sock").exists());
}

#[test]
fn sockets_passed_to_another_process_are_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let mut server = Running::start_program(
        IVLINK,
        &["server", "-F", "-S", path_str(&socket), "--memfd"],
        &[("LISTEN_PID", "1"), ("LISTEN_FDS", "1")],
    );
    server.expect_line("create & bind socket");
    drop(connect(&socket, 1));
    server.signal(Signal::TERM);
    assert!(server.wait_exit().success());
    assert!(!socket.exists(), "its own socket is removed");
}

#[test]
fn an_activated_datagram_socket_gives_one_line() {
    if !available(SOCKET_ACTIVATE) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("dgram");
    let mut server = Running::start_program(
        SOCKET_ACTIVATE,
        &[
            "--datagram",
            "-l",
            path_str(&socket),
            IVLINK,
            "server",
            "-F",
            "--memfd",
            "-S",
            path_str(&dir.path().join("unused.sock")),
        ],
        &[],
    );
    server.expect_line("Listening on");
    // A datagram is what starts a datagram-activated service.
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"wake up", &socket)
        .unwrap();
    let status = server.wait_exit();
    assert!(!status.success());
    let lines = server.remaining_lines();
    let errors: Vec<&String> = lines.iter().filter(|l| l.starts_with("ivlink:")).collect();
    assert_eq!(errors.len(), 1, "{lines:?}");
    assert!(
        errors[0].contains(
            "socket activation: fd 3 is a UNIX datagram socket, not a listening UNIX stream \
             socket (the .socket unit needs ListenStream=/path)"
        ),
        "{lines:?}"
    );
}

fn refused(args: &[&str]) -> String {
    let output = run_bounded(IVLINK, args);
    assert!(!output.status.success());
    text(&output)
}

#[test]
fn size_and_vector_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let server = |extra: &[&str]| {
        let mut args = vec!["server", "-F", "-S", path_str(&socket), "--memfd"];
        args.extend_from_slice(extra);
        refused(&args)
    };
    let out = server(&["-l", "99999999999999999999"]);
    assert!(
        out.contains("too large: sizes go up to 2^64 - 1 bytes"),
        "{out}"
    );
    let out = server(&["-n", "100000000000"]);
    assert!(
        out.contains("too many vectors: at most 64 per peer"),
        "{out}"
    );
    let out = server(&["-n", "65"]);
    assert!(
        out.contains("too many vectors: at most 64 per peer"),
        "{out}"
    );
    let out = server(&["-n", "-1"]);
    assert!(
        out.contains("a number of vectors cannot be negative"),
        "{out}"
    );
    let out = server(&["-l", "-1"]);
    assert!(out.contains("a size cannot be negative"), "{out}");

    let output = run_bounded(
        DROPIN_SERVER,
        &["-F", "-S", path_str(&socket), "-l", "99999999999999999999"],
    );
    assert!(
        text(&output)
            .contains("cannot parse shm size: invalid size '99999999999999999999': too large"),
        "{}",
        text(&output)
    );
    assert!(!socket.exists());
}

#[test]
fn a_region_larger_than_its_filesystem_is_warned_about_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let stat = rustix::fs::statvfs(dir.path()).unwrap();
    let beyond = (stat.f_bavail * stat.f_frsize + 1).next_power_of_two();
    // Files and memfds are filled lazily: sizing them costs no space.
    let mut server = Running::start_program(
        IVLINK,
        &[
            "server",
            "-F",
            "-S",
            path_str(&socket),
            "-m",
            path_str(dir.path()),
            "-l",
            &beyond.to_string(),
        ],
        &[],
    );
    let warning = server.expect_line("are free on its filesystem");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains(&format!("{beyond} bytes")), "{warning}");
    server.expect_line("listening on");
    server.signal(Signal::TERM);
    assert!(server.wait_exit().success());

    let mut server = Running::start_program(
        IVLINK,
        &[
            "server",
            "-F",
            "-S",
            path_str(&socket),
            "--memfd",
            "-l",
            "1024T",
        ],
        &[],
    );
    server.expect_line("the machine has only");
    server.expect_line("listening on");
    server.signal(Signal::TERM);
    assert!(server.wait_exit().success());

    let mut quiet = Running::start_program(
        IVLINK,
        &[
            "server",
            "-F",
            "-S",
            path_str(&socket),
            "--memfd",
            "-l",
            "1M",
        ],
        &[],
    );
    quiet.expect_line("listening on");
    quiet.signal(Signal::TERM);
    assert!(quiet.wait_exit().success());
    let rest = quiet.remaining_lines();
    assert!(!rest.iter().any(|l| l.contains("WARN")), "{rest:?}");
}

#[test]
fn the_unit_files_pass_systemd_analyze_verify() {
    if !available("systemd-analyze") {
        return;
    }
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&units).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        // Templates are verified as an instance; the binary is the one built here.
        let name = name.replace("@.", "@verify.");
        let unit = std::fs::read_to_string(&path)
            .unwrap()
            .replace("/usr/bin/ivlink ", &format!("{IVLINK} "));
        std::fs::write(dir.path().join(&name), unit).unwrap();
        names.push(format!("./{name}"));
    }
    names.sort();
    assert_eq!(
        names,
        [
            "./ivshmem-server.service",
            "./ivshmem-server.socket",
            "./ivshmem-server@verify.service",
            "./ivshmem-server@verify.socket"
        ]
    );
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--generators=no"])
        .args(&names)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let all = text(&output);
    assert!(output.status.success(), "{all}");
    // Unknown keys and bad values are only warnings to systemd-analyze.
    assert!(
        all.trim().is_empty(),
        "systemd-analyze verify complains:\n{all}"
    );
}

#[test]
fn the_sysusers_entry_creates_the_service_user() {
    if !available("systemd-sysusers") {
        return;
    }
    let entry = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../packaging/sysusers.d/ivshmem-server.conf")
        .canonicalize()
        .unwrap();
    // A private root holding copies of the user database: the system's is untouched.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    for file in ["passwd", "group"] {
        std::fs::copy(
            Path::new("/etc").join(file),
            root.path().join("etc").join(file),
        )
        .unwrap();
    }
    let output = Command::new("systemd-sysusers")
        .arg(format!("--root={}", path_str(root.path())))
        .arg(&entry)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|line| line.starts_with("ivshmem-server:"))
        .unwrap_or_else(|| panic!("no ivshmem-server user:\n{passwd}"));
    assert!(user.contains(":ivshmem server:/nonexistent:"), "{user}");
}
