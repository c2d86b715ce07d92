//! Disk faults through the storage trait: a [`LogBackend`] wrapper whose
//! flushes (the fsyncs every acknowledgement waits for) can be slowed or
//! made to fail. The node puts it under every log store; it does nothing
//! until fault injection (`--enable-fault-injection`, the admin API's
//! `/debug/disk-faults`) sets a fault, for tests and the chaos suite's
//! `slow-fsync` and `fsync-error`.
//!
//! A failed flush here is what a failed fsync is to the log store: final
//! (the store fails every later write with it), so the node stops instead
//! of acknowledging over a hole.

use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::LogBackend;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskFaultConfig {
    /// Added before every flush (a slow disk, a saturated volume).
    pub flush_delay_ms: u64,
    /// Every flush fails, as an fsync returning EIO would.
    pub fail_flush: bool,
}

/// The disk faults in force; clones share them.
#[derive(Clone, Default)]
pub struct DiskFaults {
    inner: Arc<RwLock<DiskFaultConfig>>,
}

impl DiskFaults {
    pub fn get(&self) -> DiskFaultConfig {
        self.inner.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, c: DiskFaultConfig) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = c;
    }
}

/// A backend whose flushes obey [`DiskFaults`]; everything else passes.
pub struct FaultyBackend<B> {
    inner: B,
    faults: DiskFaults,
}

impl<B: LogBackend> FaultyBackend<B> {
    pub fn new(inner: B, faults: DiskFaults) -> Self {
        FaultyBackend { inner, faults }
    }
}

impl<B: LogBackend> LogBackend for FaultyBackend<B> {
    fn append(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<()> {
        self.inner.append(entries)
    }

    fn get_range(&self, start: u64, end: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
        self.inner.get_range(start, end)
    }

    fn last(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        self.inner.last()
    }

    fn truncate_from(&self, from: u64) -> io::Result<()> {
        self.inner.truncate_from(from)
    }

    fn purge_upto(&self, upto: u64) -> io::Result<()> {
        self.inner.purge_upto(upto)
    }

    fn save_meta(&self, key: &str, value: &[u8]) -> io::Result<()> {
        self.inner.save_meta(key, value)
    }

    fn read_meta(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.inner.read_meta(key)
    }

    fn flush(&self) -> io::Result<()> {
        let c = self.faults.get();
        if c.flush_delay_ms > 0 {
            // The flusher has a thread of its own: blocking it is the fault.
            std::thread::sleep(Duration::from_millis(c.flush_delay_ms));
        }
        if c.fail_flush {
            return Err(io::Error::other(
                "fsync failed (injected: /debug/disk-faults fail_flush)",
            ));
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use super::*;

    /// Counts flushes; holds nothing.
    #[derive(Default)]
    struct Counting(Mutex<u32>);

    impl LogBackend for Counting {
        fn append(&self, _: &[(u64, Vec<u8>)]) -> io::Result<()> {
            Ok(())
        }
        fn get_range(&self, _: u64, _: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
            Ok(vec![])
        }
        fn last(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
            Ok(None)
        }
        fn truncate_from(&self, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn purge_upto(&self, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn save_meta(&self, _: &str, _: &[u8]) -> io::Result<()> {
            Ok(())
        }
        fn read_meta(&self, _: &str) -> io::Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn flush(&self) -> io::Result<()> {
            *self.0.lock().unwrap() += 1;
            Ok(())
        }
    }

    #[test]
    fn flushes_pass_until_a_fault_is_set_and_obey_it_then() {
        let faults = DiskFaults::default();
        let b = FaultyBackend::new(Counting::default(), faults.clone());
        b.flush().unwrap();
        faults.set(DiskFaultConfig {
            flush_delay_ms: 50,
            fail_flush: false,
        });
        let t = Instant::now();
        b.flush().unwrap();
        assert!(t.elapsed() >= Duration::from_millis(50));
        faults.set(DiskFaultConfig {
            flush_delay_ms: 0,
            fail_flush: true,
        });
        let e = b.flush().unwrap_err();
        assert!(e.to_string().contains("fsync failed"), "{e}");
        // A failed flush never reached the disk.
        assert_eq!(*b.inner.0.lock().unwrap(), 2);
    }
}
