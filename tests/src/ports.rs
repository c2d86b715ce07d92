//! Free loopback ports for test processes. Ports are probed by binding, and
//! handed out from a per-process random range so parallel test binaries
//! rarely collide.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;

fn next() -> &'static AtomicU16 {
    static NEXT: OnceLock<AtomicU16> = OnceLock::new();
    NEXT.get_or_init(|| AtomicU16::new(20_000 + (std::process::id() % 400) as u16 * 100))
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    loop {
        let p = next().fetch_add(1, Ordering::Relaxed);
        if p >= 60_000 {
            next().store(20_000, Ordering::Relaxed);
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}
