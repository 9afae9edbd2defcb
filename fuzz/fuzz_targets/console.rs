//! Fuzzes a console's driver and device sessions (native, one or two ports, and
//! the Zephyr sample's layout) with hostile region bytes.
//!
//! Both sides negotiate; the input then interleaves writes, reads, polls, ended
//! outputs and restarts of either side with bytes XORed into the header, the
//! register block, the vrings and the buffers. Nothing may panic, no read may
//! hand out more than asked for, and every call returns (each does bounded work).
#![no_main]

use core::sync::atomic::Ordering;

use ivlink_core::console::{
    ConsoleConfig, ConsoleLayout, DeviceSession, DriverSession, NativeShape,
};
use ivlink_core::{HeapRegion, Region};
use libfuzzer_sys::fuzz_target;

const NATIVE_SIZE: usize = 0x40000;
const HVL_SIZE: usize = 0x180800;
const SECTION: usize = 4096;

const CONFIG: ConsoleConfig = ConsoleConfig {
    cols: 80,
    rows: 25,
    max_nr_ports: 1,
    emerg_wr: 0,
};

fn device(region: &HeapRegion, layout: ConsoleLayout) -> Option<DeviceSession> {
    DeviceSession::new(&**region, layout, 1, CONFIG)
        .ok()
        .map(|(session, _)| session)
}

fuzz_target!(|data: &[u8]| {
    let Some((&profile, ops)) = data.split_first() else {
        return;
    };
    let (region, layout) = match profile % 3 {
        2 => {
            let region = HeapRegion::new(HVL_SIZE);
            let layout = ConsoleLayout::hvl_zephyr(HVL_SIZE, 0x1000_0000).unwrap();
            (region, layout)
        }
        ports => {
            let shape = NativeShape {
                ports: u32::from(ports) + 1,
                num: 8,
                buf_size: 256,
            };
            let region = HeapRegion::new(NATIVE_SIZE);
            let size = shape.section_size().unwrap();
            let layout = ConsoleLayout::create_native(&*region, SECTION, size, shape).unwrap();
            (region, layout)
        }
    };
    let Some(mut dev) = device(&region, layout) else {
        return;
    };
    let Ok(mut drv) = DriverSession::new(&*region, layout, 0) else {
        return;
    };
    let r = &*region;
    for _ in 0..64 {
        let _ = drv.poll(r);
        let _ = dev.poll(r);
        let _ = drv.flush(r);
        let _ = dev.flush(r);
    }
    // Patches land where the console lives: the native header, the register
    // block, the vrings' starts and the buffer pool.
    let mut spots = vec![layout.header.unwrap_or(0), layout.block, layout.pool.offset];
    spots.extend(layout.queues().iter().map(|q| q.base()));
    let ports = layout.ports;
    let mut buf = [0u8; 300];
    for op in ops.chunks(4) {
        let (code, a, b, c) = (
            op[0],
            op.get(1).copied().unwrap_or(0),
            op.get(2).copied().unwrap_or(0),
            op.get(3).copied().unwrap_or(0),
        );
        let port = u32::from(a) % (ports + 1);
        match code % 9 {
            0 => {
                let len = usize::from(b) + 1;
                let _ = drv.write(r, port, &buf[..len.min(buf.len())]);
            }
            1 => {
                let len = usize::from(b) + 1;
                let _ = dev.write(r, port, &buf[..len.min(buf.len())]);
            }
            2 => {
                let want = usize::from(b) % buf.len() + 1;
                if let Ok(n) = drv.read(r, port, &mut buf[..want]) {
                    assert!(n <= want);
                }
                let _ = drv.commit_taken(r);
            }
            3 => {
                let want = usize::from(b) % buf.len() + 1;
                if let Ok(n) = dev.read(r, port, &mut buf[..want]) {
                    assert!(n <= want);
                }
                let _ = dev.commit_taken(r);
            }
            4 => {
                let _ = drv.poll(r);
                let _ = dev.poll(r);
                let _ = drv.flush(r);
                let _ = dev.flush(r);
            }
            5 => {
                let _ = if b & 1 == 0 {
                    drv.close_output(r, port)
                } else {
                    dev.close_output(r, port)
                };
                let _ = drv.peer_ended(r, port);
                let _ = dev.peer_ended(r, port);
                let _ = drv.all_taken(r);
                let _ = dev.all_taken(r);
                let _ = drv.emergency_write(r, c);
                let _ = dev.resize(r, u16::from(b), u16::from(c));
            }
            6 => {
                // A restart: the process state is gone, the region keeps its words.
                if b & 1 == 0 {
                    if let Ok(fresh) = DriverSession::new(r, layout, 0) {
                        drv = fresh;
                    }
                } else if let Some(fresh) = device(&region, layout) {
                    dev = fresh;
                }
            }
            _ => {
                let spot = spots[usize::from(a) % spots.len()];
                let at = (spot + usize::from(u16::from_le_bytes([b, c])) % 0x800) % region.len();
                let old = region.load_u8(at, Ordering::Relaxed).unwrap();
                region
                    .store_u8(at, old ^ c.wrapping_add(1), Ordering::Relaxed)
                    .unwrap();
            }
        }
    }
});
