//! [`LogBackend`] on sled 0.34.

use std::io;
use std::path::Path;

use crate::backend::LogBackend;

/// sled's page cache; its default (1 GiB) is far more than a control plane's
/// log needs.
const CACHE_CAPACITY: u64 = 64 * 1024 * 1024;

/// One sled database with two trees: `log` (key: big-endian u64 index, so
/// that key order is index order) and `meta`.
///
/// `flush` is sled's blocking `Db::flush`: `flush_async` hangs when called
/// concurrently (sled #1308), so callers run this on a blocking thread.
pub struct SledBackend {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

impl SledBackend {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(CACHE_CAPACITY)
            .open()
            .map_err(io_err)?;
        let log = db.open_tree("log").map_err(io_err)?;
        let meta = db.open_tree("meta").map_err(io_err)?;
        Ok(SledBackend { db, log, meta })
    }
}

fn io_err(e: sled::Error) -> io::Error {
    io::Error::from(e)
}

fn index_of(key: &[u8]) -> io::Result<u64> {
    let raw: [u8; 8] = key
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "log key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(raw))
}

impl LogBackend for SledBackend {
    fn append(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for (index, bytes) in entries {
            batch.insert(&index.to_be_bytes(), bytes.as_slice());
        }
        self.log.apply_batch(batch).map_err(io_err)
    }

    fn get_range(&self, start: u64, end: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.log
            .range(start.to_be_bytes()..end.to_be_bytes())
            .map(|kv| {
                let (k, v) = kv.map_err(io_err)?;
                Ok((index_of(&k)?, v.to_vec()))
            })
            .collect()
    }

    fn last(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        match self.log.last().map_err(io_err)? {
            Some((k, v)) => Ok(Some((index_of(&k)?, v.to_vec()))),
            None => Ok(None),
        }
    }

    fn truncate_from(&self, from: u64) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for kv in self.log.range(from.to_be_bytes()..) {
            let (k, _) = kv.map_err(io_err)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(io_err)
    }

    fn purge_upto(&self, upto: u64) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for kv in self.log.range(..=upto.to_be_bytes()) {
            let (k, _) = kv.map_err(io_err)?;
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(io_err)
    }

    fn save_meta(&self, key: &str, value: &[u8]) -> io::Result<()> {
        self.meta
            .insert(key.as_bytes(), value)
            .map(|_| ())
            .map_err(io_err)
    }

    fn read_meta(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self
            .meta
            .get(key.as_bytes())
            .map_err(io_err)?
            .map(|v| v.to_vec()))
    }

    fn flush(&self) -> io::Result<()> {
        self.db.flush().map(|_| ()).map_err(io_err)
    }
}
