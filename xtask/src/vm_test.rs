//! `cargo xtask vm-test`: real Linux guests on the `ivshmem-doorbell` device of an
//! `ivlink server`, checked end to end: guest to guest on every vector with the
//! message seen in the region, guest to host peer and back, a guest that powers off
//! reported as gone, a new guest joining, and a token ring over guests and a host
//! peer, the seed's virtio console between two guests (its demo lines, and a
//! shell in one guest driven from the other), seed 004's NTB tools between two
//! guests (ntb_tool's files through FUSE, pingpong, perf). Serial logs are kept when anything
//! fails; every wait is bounded.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use ivlink::transport::host::{HostConfig, HostPeer};
use ivlink::{Device, Event, Notify, PeerId, Region, WaitFor};
use ivlink_core::raw_message;
use ivlink_lab::testbed::guests::{ConsoleDemo, console_demo, guest_peer_id};
use ivlink_lab::testbed::{self, PeerPlan};
use ivlink_lab::vm::{Guest, GuestConfig, find_qemu};

use crate::harness::{GuestArgs, ServerProcess, build_host_ivlink, prepare_image};

mod ntb;

/// Options of `cargo xtask vm-test`.
#[derive(Debug, Args)]
pub struct VmTestArgs {
    #[command(flatten)]
    guest: GuestArgs,
    /// Seconds allowed for any one step inside a guest
    #[arg(long, default_value_t = 60)]
    step_timeout: u64,
}

const VECTORS: u16 = 2;

/// Runs the VM tests; prints one line per check and fails on the first failure.
pub fn run(root: &Path, args: &VmTestArgs) -> Result<()> {
    let started = Instant::now();
    let qemu = find_qemu()
        .context("qemu-system-x86_64 is not on PATH (apt-get install qemu-system-x86)")?;
    let image = prepare_image(root, args.guest.image.as_deref())?;
    let ivlink = build_host_ivlink(root)?;
    let run_dir = root.join("target").join("vm-test").join(format!(
        "run-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let mut bed = Bed {
        qemu,
        image,
        dir: run_dir.clone(),
        accel: args.guest.accel.clone(),
        ready: Duration::from_secs(args.guest.ready_timeout),
        step: Duration::from_secs(args.step_timeout),
        guests: Vec::new(),
    };
    let result = scenario(&mut bed, &ivlink);
    if let Err(e) = &result {
        println!("vm-test: FAILED: {e:#}");
        for guest in &bed.guests {
            println!(
                "--- last lines of {} ({})",
                guest.name(),
                guest.log_path().display()
            );
            println!("{}", guest.log_tail(30));
        }
        println!("vm-test: logs kept in {}", run_dir.display());
    }
    drop(bed);
    result?;
    if args.guest.keep {
        println!("vm-test: logs kept in {}", run_dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    println!(
        "vm-test: PASSED in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Everything a scenario needs; guests are killed (by pid) when it is dropped.
struct Bed {
    qemu: PathBuf,
    image: PathBuf,
    dir: PathBuf,
    accel: String,
    ready: Duration,
    step: Duration,
    guests: Vec<Guest>,
}

impl Bed {
    /// Starts QEMU for a new guest; returns its index in `guests`.
    fn boot(&mut self, name: &str, socket: &Path) -> Result<usize> {
        let mut config = GuestConfig::from_image(name, &self.image, socket, &self.dir);
        config.vectors = VECTORS;
        config.accel = self.accel.clone();
        config.qemu = self.qemu.clone();
        self.guests.push(Guest::boot(config)?);
        Ok(self.guests.len() - 1)
    }

    fn wait_ready(&mut self, index: usize) -> Result<()> {
        let ready = self.ready;
        let guest = &mut self.guests[index];
        guest.wait_ready(ready)?;
        let after = guest.ready_after().unwrap_or_default();
        check(&format!(
            "{} booted to its shell in {:.1} s",
            guest.name(),
            after.as_secs_f64()
        ));
        Ok(())
    }

    /// Runs a command in a guest and requires exit status 0.
    fn run_ok(&mut self, index: usize, command: &str) -> Result<String> {
        let step = self.step;
        let guest = &mut self.guests[index];
        let out = guest.run(command, step)?;
        ensure!(
            out.status == 0,
            "`{command}` in {} exited {}:\n{}",
            guest.name(),
            out.status,
            out.output
        );
        Ok(out.output)
    }

    fn wait_for(&mut self, index: usize, needle: &str) -> Result<String> {
        let step = self.step;
        Ok(self.guests[index].wait_for(needle, step)?)
    }
}

fn check(what: &str) {
    println!("ok  {what}");
}

fn scenario(bed: &mut Bed, ivlink: &Path) -> Result<()> {
    let mut server = ServerProcess::start(ivlink, &bed.dir, VECTORS)?;
    let socket = server.socket().to_path_buf();
    check(&format!("ivlink server listening on {}", socket.display()));
    let host = HostPeer::connect(&HostConfig::new(&socket))?;
    ensure!(
        host.id() == 0,
        "the host peer got id {}, expected 0",
        host.id()
    );
    check("host peer connected as peer 0");

    // Two guests boot in parallel; the server is already listening.
    let a = bed.boot("guest-a", &socket)?;
    let b = bed.boot("guest-b", &socket)?;
    bed.wait_ready(a)?;
    bed.wait_ready(b)?;
    let id_a = guest_peer_id(&mut bed.guests[a])?;
    let id_b = guest_peer_id(&mut bed.guests[b])?;
    let mut joined = vec![wait_joined(&host, bed.step)?, wait_joined(&host, bed.step)?];
    joined.sort_unstable();
    let mut expected = vec![id_a, id_b];
    expected.sort_unstable();
    ensure!(
        joined == expected,
        "host saw guests {joined:?} join, the guests say {expected:?}"
    );
    check(&format!(
        "guests are peers {id_a} and {id_b}; the host peer saw both join with {VECTORS} vectors"
    ));
    let dump = bed.run_ok(a, "ivlink dump --device")?;
    ensure!(
        dump.contains(&format!("Notification vectors: {VECTORS}")) && dump.contains("via VFIO"),
        "unexpected dump in guest-a:\n{dump}"
    );
    check("guest dump shows the region, its id and its MSI-X vectors (VFIO)");

    guest_to_guest(bed, (a, id_a), (b, id_b))?;
    guest_to_guest(bed, (b, id_b), (a, id_a))?;
    guest_to_host(bed, &host, (a, id_a))?;
    host_to_guest(bed, &host, (b, id_b))?;

    bed.guests[a].poweroff(bed.step)?;
    wait_left(&host, id_a, bed.step)?;
    check(&format!(
        "guest-a powered off; the host peer saw peer {id_a} leave"
    ));

    let c = bed.boot("guest-c", &socket)?;
    bed.wait_ready(c)?;
    let id_c = guest_peer_id(&mut bed.guests[c])?;
    ensure!(
        wait_joined(&host, bed.step)? == id_c,
        "the host peer did not see guest-c join"
    );
    ensure!(
        id_c > id_b,
        "guest-c got id {id_c}; the rotating cursor should give a new, higher id"
    );
    check(&format!("a new guest joined as peer {id_c}"));
    guest_to_guest(bed, (c, id_c), (b, id_b))?;

    ring(bed, &host, &[(b, id_b), (c, id_c)])?;
    stress_between(bed, &host, [(b, id_b), (c, id_c)])?;
    rpmsg_between(bed, b, c)?;
    console_between(bed, b, c)?;
    ntb::ntb_between(bed, b, c)?;
    plain_device(bed)?;

    for index in [b, c] {
        bed.guests[index].poweroff(bed.step)?;
    }
    server.ensure_running()?;
    check("guests powered off; the server kept running throughout");
    testbed_with_guests(ivlink, &bed.image, &bed.dir)?;
    testbed_console_with_guests(ivlink, &bed.image, &bed.dir)
}

/// The seed's virtio console between two running guests, through the real
/// doorbell device over VFIO: guest `device` prints the demo lines guest
/// `driver` writes; then a shell in guest `device` runs a command sent from
/// guest `driver` and its output comes back. Each check has a section of its
/// own, so the second starts fresh.
fn console_between(bed: &mut Bed, device: usize, driver: usize) -> Result<()> {
    ensure!(device < driver, "the device guest comes first");
    let started = Instant::now();
    let step = bed.step;
    let (first, rest) = bed.guests.split_at_mut(driver);
    let demo = ConsoleDemo {
        lines: 3,
        interval: Duration::from_millis(100),
    };
    let mut log = Vec::new();
    let lines = console_demo(&mut first[device], &mut rest[0], &demo, step, &mut log)
        .with_context(|| format!("the console demo:\n{}", String::from_utf8_lossy(&log)))?;
    check(&format!(
        "virtio console between guests: the device printed the register dump and the driver's {} demo lines, in order ({:.1} s)",
        lines.len(),
        started.elapsed().as_secs_f64()
    ));

    let started = Instant::now();
    let options = format!("--device=auto --section shell --timeout {}", step.as_secs());
    bed.guests[device].start(&format!(
        "ivlink console device {options} --exec /bin/sh </dev/null; echo console-shell-exit=$?"
    ))?;
    let reply = bed.run_ok(
        driver,
        &format!(
            "printf 'echo shell over the console: $((6*7)) on $(hostname); exit\\n' | ivlink console driver {options}"
        ),
    )?;
    let host = bed.guests[device].name().to_owned();
    let expected = format!("shell over the console: 42 on {host}");
    ensure!(
        reply.lines().any(|l| l.trim_end() == expected),
        "the shell in {host} did not answer '{expected}':\n{reply}"
    );
    let exit = bed.wait_for(device, "console-shell-exit=")?;
    ensure!(
        exit.trim_end().ends_with("console-shell-exit=0"),
        "the console device with the shell ended with {exit}"
    );
    check(&format!(
        "a shell in {host} driven from {} through the console: the command ran there, its output came back, both sides exited 0 ({:.1} s)",
        bed.guests[driver].name(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `ivlink testbed --guests 2 --console`: the console demo as the user runs it.
fn testbed_console_with_guests(ivlink: &Path, image: &Path, dir: &Path) -> Result<()> {
    let started = Instant::now();
    let work_dir = dir.join("testbed-console");
    let output = std::process::Command::new(ivlink)
        .args([
            "testbed",
            "--guests",
            "2",
            "--console",
            "--rounds",
            "3",
            "--image",
        ])
        .arg(image)
        .arg("--work-dir")
        .arg(&work_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running ivlink testbed --guests 2 --console")?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success()
            && text.contains("printed the register dump up to DRIVER_OK and the 3 demo lines"),
        "`ivlink testbed --guests 2 --console` failed ({}):\n{text}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    check(&format!(
        "`ivlink testbed --guests 2 --console`: the device guest printed the driver guest's 3 demo lines ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `ivlink stress` between two guests: both flood each other through a channel
/// in the region for a few seconds; nothing may be lost, damaged or reordered.
fn stress_between(bed: &mut Bed, host: &HostPeer, guests: [(usize, PeerId); 2]) -> Result<()> {
    // Clear the raw messages of the earlier checks from the message area (the
    // channel's directory goes after it either way).
    host.region()
        .fill(0, 4096, 0)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let command = "ivlink stress-peer --device --peers 2 --duration 3s --message-size 32..512 --ring-capacity 65536";
    for (index, _) in guests {
        bed.guests[index].start(command)?;
    }
    let mut totals = (0u64, 0u64);
    for (index, id) in guests {
        let line = bed.wait_for(index, "result {")?;
        let json = &line[line.find('{').context("no JSON in the result line")?..];
        let report: serde_json::Value = serde_json::from_str(json.trim())
            .with_context(|| format!("guest {id}'s stress result: {json}"))?;
        for field in ["lost", "corrupted", "reordered"] {
            ensure!(
                report[field] == 0,
                "guest {id}: {field} = {} in {json}",
                report[field]
            );
        }
        let received = report["received"].as_u64().unwrap_or(0);
        ensure!(received > 0, "guest {id} received nothing: {json}");
        totals.0 += report["sent"].as_u64().unwrap_or(0);
        totals.1 += received;
    }
    ensure!(
        totals.0 == totals.1,
        "sent {} but received {}",
        totals.0,
        totals.1
    );
    check(&format!(
        "stress between two guests for 3 s: {} messages, lost 0, corrupted 0, reordered 0",
        totals.1
    ));
    Ok(())
}

/// RPMsg echo between two guests (native profile, found through the directory the
/// stress run left): guest `remote` echoes, guest `host` sends, then a second
/// host process (a restart, as far as the link can tell) measures round trips.
fn rpmsg_between(bed: &mut Bed, remote: usize, host: usize) -> Result<()> {
    const SENT: u64 = 1000;
    const ROUNDS: u64 = 2;
    const WARMUP: u64 = 200;
    const COUNT: u64 = 2000;
    // The echo stops after exactly what send and bench ask for, freeing the
    // shell; the bench warms up in each of its rounds.
    let echoes = SENT + ROUNDS * WARMUP + COUNT;
    bed.guests[remote].start(&format!("ivlink rpmsg echo --device -q --count {echoes}"))?;
    bed.wait_for(remote, "echoing on endpoint 'rpmsg-echo'")?;
    let sent = bed.run_ok(
        host,
        &format!("ivlink rpmsg send --device 'RPMsg between guests' {SENT} -q --wait 30"),
    )?;
    ensure!(
        sent.contains(&format!("sent {SENT}, echoed {SENT}, lost 0")),
        "unexpected rpmsg send output:\n{sent}"
    );
    check(&format!(
        "RPMsg echo between two guests: {SENT} messages sent, {SENT} echoed, 0 lost"
    ));
    let bench = bed.run_ok(
        host,
        &format!(
            "ivlink rpmsg bench --device --count {COUNT} --warmup {WARMUP} --rounds {ROUNDS} \
             --wait 30 --json"
        ),
    )?;
    let json = &bench[bench.find('{').context("no JSON from rpmsg bench")?..];
    let report: serde_json::Value =
        serde_json::from_str(json.trim()).with_context(|| format!("rpmsg bench: {json}"))?;
    let rate = report["round_trips_per_second"].as_f64().unwrap_or(0.0);
    let p50 = report["latency_ns"]["p50"].as_f64().unwrap_or(0.0);
    ensure!(rate > 0.0, "rpmsg bench measured nothing: {json}");
    bed.wait_for(remote, &format!("echoed {echoes} messages"))?;
    check(&format!(
        "RPMsg round trips between guests after a host restart: {rate:.0}/s, median {:.1} µs (TCG)",
        p50 / 1000.0
    ));
    Ok(())
}

/// A guest on `ivshmem-plain` (no server, no interrupts): `--device` falls back to
/// mapping `resource2` and polling, and its bytes meet a host process's in the file.
fn plain_device(bed: &mut Bed) -> Result<()> {
    let file = bed.dir.join("plain.shm");
    let host = ivlink::FilePeer::create(&file, 1 << 20, 0)?;
    let mut config = GuestConfig::from_image(
        "guest-plain",
        &bed.image,
        bed.dir.join("unused.sock"),
        &bed.dir,
    );
    config.doorbell = false;
    config.memory_file = Some(file);
    config.accel = bed.accel.clone();
    config.qemu = bed.qemu.clone();
    bed.guests.push(Guest::boot(config)?);
    let plain = bed.guests.len() - 1;
    bed.wait_ready(plain)?;
    let dump = bed.run_ok(plain, "ivlink dump --device")?;
    ensure!(
        dump.contains("of size 1048576 bytes") && dump.contains("Notification vectors: 0"),
        "unexpected dump on ivshmem-plain:\n{dump}"
    );
    bed.run_ok(
        plain,
        "ivlink notify --device 0 0 'written by the plain guest'",
    )?;
    let found = host_message(&host);
    ensure!(
        found == "written by the plain guest",
        "the host read '{found}' from the file"
    );
    bed.guests[plain].start(&format!(
        "ivlink listen --device --count 1 --timeout {}; echo listen-exit=$?",
        bed.step.as_secs()
    ))?;
    bed.wait_for(plain, "Listening as peer")?;
    raw_message::write(host.region(), raw_message::OFFSET, b"written by the host")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    bed.wait_for(
        plain,
        "region changed: received IRQ and full message: written by the host",
    )?;
    bed.wait_for(plain, "listen-exit=0")?;
    bed.guests[plain].poweroff(bed.step)?;
    check(
        "ivshmem-plain guest: --device maps resource2 and polls; bytes meet the host's in the file both ways",
    );
    Ok(())
}

/// `ivlink testbed --guests 2`, the user's one command, end to end.
fn testbed_with_guests(ivlink: &Path, image: &Path, dir: &Path) -> Result<()> {
    let work_dir = dir.join("testbed");
    let output = std::process::Command::new(ivlink)
        .args(["testbed", "--guests", "2", "--image"])
        .arg(image)
        .arg("--work-dir")
        .arg(&work_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running ivlink testbed --guests 2")?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && text.contains("testbed: OK: 2 guests exchanged 4 messages"),
        "`ivlink testbed --guests 2` failed ({}):\n{text}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    check("`ivlink testbed --guests 2`: server and guests started in order, 4 messages intact");
    Ok(())
}

/// `from` rings `to` on every vector with a message; `to` prints it from the region.
fn guest_to_guest(
    bed: &mut Bed,
    (from, from_id): (usize, PeerId),
    (to, to_id): (usize, PeerId),
) -> Result<()> {
    let guest = &mut bed.guests[to];
    guest.start(&format!(
        "ivlink listen --device --count {VECTORS} --timeout {}; echo listen-exit=$?",
        bed.step.as_secs()
    ))?;
    bed.wait_for(to, "Listening as peer")?;
    for vector in 0..VECTORS {
        let text = format!("guest {from_id} to guest {to_id} on vector {vector}");
        bed.run_ok(
            from,
            &format!("ivlink notify --device {to_id} {vector} '{text}'"),
        )?;
        bed.wait_for(
            to,
            &format!("vector {vector}: received IRQ and full message: {text}"),
        )?;
    }
    let exit = bed.wait_for(to, "listen-exit=")?;
    ensure!(
        exit.trim_end().ends_with("listen-exit=0"),
        "listen in the guest ended with {exit}"
    );
    check(&format!(
        "guest {from_id} -> guest {to_id}: a doorbell on each of {VECTORS} vectors, the message read from the region"
    ));
    Ok(())
}

fn guest_to_host(bed: &mut Bed, host: &HostPeer, (guest, id): (usize, PeerId)) -> Result<()> {
    for vector in 0..VECTORS {
        let text = format!("guest {id} to the host on vector {vector}");
        bed.run_ok(
            guest,
            &format!("ivlink notify --device 0 {vector} '{text}'"),
        )?;
        match host.wait(WaitFor::vector(vector), Some(bed.step))? {
            Some(Event::Notified { .. }) => {}
            other => {
                bail!("the host peer got {other:?} instead of a notification on vector {vector}")
            }
        }
        let found = host_message(host);
        ensure!(
            found == text,
            "the host peer read '{found}', expected '{text}'"
        );
    }
    check(&format!(
        "guest {id} -> host peer on each vector, message intact"
    ));
    Ok(())
}

fn host_to_guest(bed: &mut Bed, host: &HostPeer, (guest, id): (usize, PeerId)) -> Result<()> {
    bed.guests[guest].start(&format!(
        "ivlink listen --device --count {VECTORS} --timeout {}; echo listen-exit=$?",
        bed.step.as_secs()
    ))?;
    bed.wait_for(guest, "Listening as peer")?;
    for vector in 0..VECTORS {
        let text = format!("host to guest {id} on vector {vector}");
        raw_message::write(host.region(), raw_message::OFFSET, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        host.notify(id, vector)?;
        bed.wait_for(
            guest,
            &format!("vector {vector}: received IRQ and full message: {text}"),
        )?;
    }
    let exit = bed.wait_for(guest, "listen-exit=")?;
    ensure!(
        exit.trim_end().ends_with("listen-exit=0"),
        "listen in the guest ended with {exit}"
    );
    check(&format!(
        "host peer -> guest {id} on each vector, message intact"
    ));
    Ok(())
}

/// The test bed's token ring over guests and the host peer: every hop a doorbell
/// and a message checked by its receiver.
fn ring(bed: &mut Bed, host: &HostPeer, guests: &[(usize, PeerId)]) -> Result<()> {
    let ids: Vec<PeerId> = guests
        .iter()
        .map(|&(_, id)| id)
        .chain([host.id()])
        .collect();
    let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let nonce = std::process::id() as u64 * 2 + 1;
    let rounds = 2;
    for &(index, _) in guests {
        bed.guests[index].start(&format!(
            "ivlink testbed-peer --device --ring {} --rounds {rounds} --timeout {} --nonce {nonce}; echo ring-exit=$?",
            list.join(","),
            bed.step.as_secs()
        ))?;
    }
    let plan = PeerPlan {
        peers: ids.len(),
        rounds,
        timeout: bed.step,
        ring: Some(ids.clone()),
        nonce,
    };
    let mut log = Vec::new();
    let report = testbed::run_peer(host, &plan, &mut log)
        .with_context(|| format!("host peer in the ring:\n{}", String::from_utf8_lossy(&log)))?;
    for &(index, _) in guests {
        let exit = bed.wait_for(index, "ring-exit=")?;
        ensure!(
            exit.trim_end().ends_with("ring-exit=0"),
            "the ring failed in a guest: {exit}"
        );
    }
    check(&format!(
        "token ring over peers {ids:?}: {} laps on {VECTORS} vectors, host sent {} and received {}, all intact",
        rounds, report.sent, report.received
    ));
    Ok(())
}

fn host_message(host: &dyn Device) -> String {
    let mut buf = [0u8; 256];
    let len = raw_message::read(host.region(), raw_message::OFFSET, &mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

fn wait_joined(host: &HostPeer, timeout: Duration) -> Result<PeerId> {
    match host.wait(WaitFor::PEER_EVENTS, Some(timeout))? {
        Some(Event::PeerJoined { peer, vectors }) if vectors == usize::from(VECTORS) => Ok(peer),
        other => bail!("the host peer expected a guest to join, got {other:?}"),
    }
}

fn wait_left(host: &HostPeer, id: PeerId, timeout: Duration) -> Result<()> {
    match host.wait(WaitFor::PEER_EVENTS, Some(timeout))? {
        Some(Event::PeerLeft { peer }) if peer == id => Ok(()),
        other => bail!("the host peer expected peer {id} to leave, got {other:?}"),
    }
}
