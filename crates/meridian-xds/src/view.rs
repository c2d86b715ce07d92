//! A snapshot as streams hold it: numbered, and, when the server saw the
//! snapshot it replaced for the same viewer, with the names that differ
//! between the two. A push then costs each stream O(changed names) instead
//! of O(resources in view): the diff is computed once per view, not once
//! per stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::source::{Resources, VersionedResource, ViewSnapshot};
use crate::subscription::sotw::response_version;

static SERIAL: AtomicU64 = AtomicU64::new(1);

/// One snapshot of one viewer, as every stream of that viewer shares it.
#[derive(Debug)]
pub(crate) struct View {
    pub snap: Arc<ViewSnapshot>,
    /// Unique per `View` in this process (never 0).
    pub serial: u64,
    /// What changed since the view numbered `changes.base`.
    pub changes: Option<Changes>,
    /// SotW responses by (type, subscription key), built once per view for
    /// every stream that asks for the same names.
    sotw: Mutex<HashMap<(String, u64), (Option<Vec<Arc<str>>>, Arc<SotwList>)>>,
}

/// Names added, updated or removed between two views, per type URL.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub base: u64,
    pub by_type: HashMap<String, Vec<Arc<str>>>,
}

/// The content of one SotW response: resources in name order and the
/// `version_info` that hashes them.
#[derive(Debug, Default)]
pub struct SotwList {
    pub items: Vec<Arc<VersionedResource>>,
    pub version: String,
    /// `items` as the `resources` field of a `DiscoveryResponse`, encoded
    /// on first use and then sent by every stream that holds this list.
    encoded: std::sync::OnceLock<bytes::Bytes>,
}

impl SotwList {
    pub fn new(items: Vec<Arc<VersionedResource>>) -> SotwList {
        let version = response_version(&items);
        SotwList {
            items,
            version,
            encoded: std::sync::OnceLock::new(),
        }
    }

    /// The encoded `resources` field (field 2 of `DiscoveryResponse`).
    pub fn encoded_resources(&self) -> bytes::Bytes {
        self.encoded
            .get_or_init(|| {
                let mut buf = Vec::new();
                for r in &self.items {
                    prost::encoding::message::encode(2, &r.resource, &mut buf);
                }
                bytes::Bytes::from(buf)
            })
            .clone()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<VersionedResource>> {
        self.items
            .binary_search_by(|r| (*r.name).cmp(name))
            .ok()
            .map(|i| &self.items[i])
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl View {
    /// A view with no known predecessor: streams moving to it plan in full.
    pub fn first(snap: Arc<ViewSnapshot>) -> View {
        View {
            snap,
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
            changes: None,
            sotw: Mutex::new(HashMap::new()),
        }
    }

    /// The view after `prev`, with the names that differ from it.
    pub fn next(snap: Arc<ViewSnapshot>, prev: &View) -> View {
        let mut by_type = HashMap::new();
        let types: BTreeSet<&String> = snap
            .by_type
            .keys()
            .chain(prev.snap.by_type.keys())
            .collect();
        for t in types {
            let changed = diff(prev.snap.resources(t), snap.resources(t));
            if !changed.is_empty() {
                by_type.insert(t.clone(), changed);
            }
        }
        let mut v = View::first(snap);
        v.changes = Some(Changes {
            base: prev.serial,
            by_type,
        });
        v
    }

    /// The names of `type_url` that changed since `changes.base`.
    pub fn changed(&self, type_url: &str) -> &[Arc<str>] {
        self.changes
            .as_ref()
            .and_then(|c| c.by_type.get(type_url))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The shared SotW list for a subscription: wildcard (`names` is
    /// `None`) or a set of names, whose `key` is [`names_key`]. Built by
    /// `make` on first use; a key collision between different sets only
    /// costs an unshared list.
    pub fn sotw_list(
        &self,
        type_url: &str,
        names: Option<&BTreeSet<Arc<str>>>,
        key: u64,
        make: impl FnOnce() -> Vec<Arc<VersionedResource>>,
    ) -> Arc<SotwList> {
        let mut cache = self.sotw.lock().unwrap_or_else(|p| p.into_inner());
        let same = |stored: &Option<Vec<Arc<str>>>| match (stored, names) {
            (None, None) => true,
            (Some(a), Some(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y),
            _ => false,
        };
        let k = (type_url.to_string(), key);
        match cache.get(&k) {
            Some((stored, l)) if same(stored) => return l.clone(),
            Some(_) => return Arc::new(SotwList::new(make())),
            None => {}
        }
        let list = Arc::new(SotwList::new(make()));
        cache.insert(
            k,
            (names.map(|n| n.iter().cloned().collect()), list.clone()),
        );
        list
    }
}

/// Names whose presence or version differs, in name order: one merge walk
/// over two sorted maps.
fn diff(old: &Resources, new: &Resources) -> Vec<Arc<str>> {
    let mut out = Vec::new();
    let mut a = old.iter().peekable();
    let mut b = new.iter().peekable();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((_, r)), None) => {
                out.push(r.name.clone());
                a.next();
            }
            (None, Some((_, r))) => {
                out.push(r.name.clone());
                b.next();
            }
            (Some((ka, ra)), Some((kb, rb))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => {
                    out.push(ra.name.clone());
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(rb.name.clone());
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if ra.key != rb.key || ra.version != rb.version {
                        out.push(rb.name.clone());
                    }
                    a.next();
                    b.next();
                }
            },
        }
    }
    out
}

/// A stable key for a set of names, so streams asking for the same names
/// share one SotW list. 0 is reserved for wildcard.
pub(crate) fn names_key(names: &BTreeSet<Arc<str>>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    names.len().hash(&mut h);
    for n in names {
        n.hash(&mut h);
    }
    h.finish().max(1)
}

/// Views by viewer: the newest each stream can move to.
#[derive(Default)]
pub(crate) struct Views {
    by_viewer: Mutex<BTreeMap<crate::source::Viewer, Arc<View>>>,
}

impl Views {
    /// The `View` for `snap`, reusing the cached one when it is the same
    /// snapshot, else diffing against the previous one of the viewer.
    pub fn get(&self, viewer: &crate::source::Viewer, snap: Arc<ViewSnapshot>) -> Arc<View> {
        let mut map = self.by_viewer.lock().unwrap_or_else(|p| p.into_inner());
        let view = match map.get(viewer) {
            Some(v) if Arc::ptr_eq(&v.snap, &snap) => return v.clone(),
            Some(prev) => View::next(snap, prev),
            None => View::first(snap),
        };
        let view = Arc::new(view);
        map.insert(viewer.clone(), view.clone());
        view
    }
}
