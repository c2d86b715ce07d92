//! Free loopback ports for test processes. Ports are probed by binding, and
//! handed out from a per-process range below the kernel's ephemeral range
//! (32768-60999 here): a port picked there could be taken by any outgoing
//! connection between the probe and the moment a server binds it.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;

fn next() -> &'static AtomicU16 {
    static NEXT: OnceLock<AtomicU16> = OnceLock::new();
    NEXT.get_or_init(|| AtomicU16::new(FIRST + (std::process::id() % 200) as u16 * 100))
}

const FIRST: u16 = 10_000;
const LAST: u16 = 32_000;

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    loop {
        let p = next().fetch_add(1, Ordering::Relaxed);
        if p >= LAST {
            next().store(FIRST, Ordering::Relaxed);
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}
