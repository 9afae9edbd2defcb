//! Seed 004 between two guests over the real doorbell device: ntb_tool's files
//! mounted with FUSE in each guest and the seed's own lines typed into them,
//! then ntb_pingpong's counter and ntb_perf's copy between the guests.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use super::{Bed, check};

/// The switch every guest command opens: one section for all three checks
/// (each frees its port on exit), with small windows, since the region holds
/// the earlier checks' sections too.
const SWITCH: &str = "--device=auto --switch vm-ntb --mw-size 262144";

/// Runs the NTB checks between guests `a` and `b`.
pub(super) fn ntb_between(bed: &mut Bed, a: usize, b: usize) -> Result<()> {
    tool_between(bed, a, b)?;
    pingpong_between(bed, a, b)?;
    perf_between(bed, a, b)
}

/// Both guests mount `ivlink ntb tool`; the seed's lines work across them.
fn tool_between(bed: &mut Bed, a: usize, b: usize) -> Result<()> {
    let started = Instant::now();
    for guest in [a, b] {
        bed.run_ok(
            guest,
            &format!(
                "mkdir -p /ntb && ivlink ntb tool {SWITCH} --mount /ntb \
                 >/tmp/ntb-tool.log 2>&1 & echo $! >/tmp/ntb-tool.pid"
            ),
        )?;
    }
    for guest in [a, b] {
        poll(bed, guest, "cat /ntb/peer0/link", "Y")?;
    }
    bed.run_ok(a, "echo 's 0xdeadbeef' > /ntb/peer_db")?;
    expect(bed, b, "cat /ntb/db", "0xdeadbeef")?;
    bed.run_ok(a, "echo 0xdeadbeef > /ntb/peer0/msg0")?;
    expect(bed, b, "cat /ntb/msg0", "0xdeadbeef<-0")?;
    bed.run_ok(b, "echo 'c 0xffffffff' > /ntb/msg_sts")?;
    expect(bed, b, "cat /ntb/msg_sts", "0x0")?;
    let refused = bed.run_ok(a, "echo 'x 1' > /ntb/db; echo status=$?")?;
    ensure!(
        refused.contains("Invalid argument") && refused.contains("status=1"),
        "`echo 'x 1' > db` was not refused with EINVAL:\n{refused}"
    );
    for guest in [a, b] {
        let left = bed.run_ok(
            guest,
            "kill $(cat /tmp/ntb-tool.pid); for i in 1 2 3 4 5 6 7 8 9 10; do \
             grep -q ' /ntb ' /proc/mounts || break; sleep 0.5; done; grep -c ' /ntb ' /proc/mounts; true",
        )?;
        ensure!(
            left.trim_end().ends_with('0'),
            "ntb tool left /ntb mounted after SIGTERM:\n{left}"
        );
    }
    check(&format!(
        "ntb_tool between guests through FUSE: `echo 's 0xdeadbeef' > peer_db` then `cat db` = 0xdeadbeef, \
         `echo 0xdeadbeef > peer0/msg0` then `cat msg0` = 0xdeadbeef<-0, `x 1` refused with EINVAL, \
         unmounted on SIGTERM ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// ntb_pingpong between the guests for a few seconds: both counts rise.
fn pingpong_between(bed: &mut Bed, a: usize, b: usize) -> Result<()> {
    let started = Instant::now();
    let command = format!("ivlink ntb pingpong {SWITCH} --delay 100ms --duration 5s");
    bed.guests[b].start(&format!("{command}; echo pingpong-exit=$?"))?;
    let out = bed.run_ok(a, &command)?;
    ensure!(
        out.lines().any(|l| l.contains("count 5 ")),
        "pingpong in {} did not count to 5:\n{out}",
        bed.guests[a].name()
    );
    bed.wait_for(b, "count 5 ")?;
    let exit = bed.wait_for(b, "pingpong-exit=")?;
    ensure!(
        exit.trim_end().ends_with("pingpong-exit=0"),
        "pingpong in {} ended with {exit}",
        bed.guests[b].name()
    );
    check(&format!(
        "ntb_pingpong between guests: each side counted 5 pongs or more ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// ntb_perf between the guests: `b` serves, `a` measures through the window.
fn perf_between(bed: &mut Bed, a: usize, b: usize) -> Result<()> {
    let switch = SWITCH;
    bed.run_ok(
        b,
        &format!("ivlink ntb perf {switch} >/tmp/ntb-perf.log 2>&1 & echo $! >/tmp/ntb-perf.pid"),
    )?;
    let out = bed.run_ok(
        a,
        &format!(
            "ivlink ntb perf {switch} --run --chunk-order 17 --total-order 24 --json --timeout {}",
            bed.step.as_secs()
        ),
    )?;
    bed.run_ok(b, "kill $(cat /tmp/ntb-perf.pid)")?;
    let json = &out[out.find('{').context("no JSON from ntb perf")?..];
    let report: serde_json::Value =
        serde_json::from_str(json.trim()).with_context(|| format!("ntb perf: {json}"))?;
    let rate = report["mbytes_per_s"].as_f64().unwrap_or(0.0);
    let ceiling = report["memcpy"]["mbytes_per_s"].as_f64().unwrap_or(0.0);
    ensure!(rate > 0.0, "ntb perf measured nothing: {json}");
    check(&format!(
        "ntb_perf between guests: {rate:.0} MB/s through the window (memcpy in the guest {ceiling:.0} MB/s; \
         the seed's emulated NTB: 0.8 MB/s)"
    ));
    Ok(())
}

/// Runs `command` in `guest` and requires its output to be `want`.
fn expect(bed: &mut Bed, guest: usize, command: &str, want: &str) -> Result<()> {
    let out = bed.run_ok(guest, command)?;
    ensure!(
        out.trim_end() == want,
        "`{command}` in {} printed {out:?}, expected {want:?}",
        bed.guests[guest].name()
    );
    Ok(())
}

/// Runs `command` in `guest` until it prints `want` (bounded by the step time).
fn poll(bed: &mut Bed, guest: usize, command: &str, want: &str) -> Result<()> {
    let deadline = Instant::now() + bed.step;
    loop {
        let out = bed.guests[guest].run(command, bed.step)?;
        if out.status == 0 && out.output.trim_end() == want {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "`{command}` in {} never printed {want:?} (last: {:?})",
            bed.guests[guest].name(),
            out.output
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
