//! Properties of revisions through the config API: each committed write
//! has its own, however the leader batches them; a list or get and its
//! revision are one state, so list-then-watch misses and repeats nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use meridian_proto::v1 as pb;
use meridian_tests::{Cluster, ClusterOpts};
use tokio::sync::watch;

use super::support::*;

/// Many concurrent writes share log entries (group commit); each still
/// gets a revision of its own, and it is the revision its object carries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_each_get_their_own_revision() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let leader = c.wait_leader().await;
    let mut tasks = Vec::new();
    for i in 0..48u16 {
        let mut client = c.config(leader).await;
        tasks.push(tokio::spawn(async move {
            let name = format!("rev-{i}");
            let r = client
                .txn(pb::TxnRequest {
                    request_id: format!("rev-test-{i}"),
                    ops: vec![put_op("service", &name, service(8000 + i), None)],
                    dry_run: false,
                })
                .await
                .unwrap()
                .into_inner();
            (name, r.revision)
        }));
    }
    let mut by_revision: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut client = c.config(leader).await;
    for t in tasks {
        let (name, revision) = t.await.unwrap();
        let got = client
            .get(get_request("service", &name))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.object.unwrap().revision, revision, "{name}");
        by_revision.entry(revision).or_default().push(name);
    }
    let shared: Vec<_> = by_revision.values().filter(|n| n.len() > 1).collect();
    assert!(shared.is_empty(), "writes sharing a revision: {shared:?}");
    // A client can compare-and-set on the revision of its own write.
    let (&rev, names) = by_revision.iter().next().unwrap();
    client
        .txn(pb::TxnRequest {
            request_id: "rev-test-cas".into(),
            ops: vec![put_op("service", &names[0], service(9000), Some(rev))],
            dry_run: false,
        })
        .await
        .unwrap();
}

/// Writes `service/{prefix}-{w}-{i}` from `n` concurrent writers until
/// told to stop; each name is written once.
fn writers(
    c: &Cluster,
    leader: u64,
    prefix: &str,
    n: usize,
) -> (watch::Sender<bool>, Vec<tokio::task::JoinHandle<usize>>) {
    let (stop, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for w in 0..n {
        let rx = rx.clone();
        let prefix = prefix.to_string();
        let addr = c.node(leader).api_addr();
        tasks.push(tokio::spawn(async move {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut client = pb::config_service_client::ConfigServiceClient::new(ch);
            let mut i = 0;
            while !*rx.borrow() {
                let name = format!("{prefix}-{w}-{i}");
                client
                    .txn(pb::TxnRequest {
                        request_id: format!("lw-{name}"),
                        ops: vec![put_op("service", &name, service(8000), None)],
                        dry_run: false,
                    })
                    .await
                    .unwrap();
                i += 1;
            }
            i
        }));
    }
    (stop, tasks)
}

/// What `get --watch` does: list, then watch from the listed revision,
/// while others write. Every write is either in the list or arrives as an
/// event exactly once, never both, and the first message of the watch
/// says the revision it covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_then_watch_under_concurrent_writes_sees_every_event_once() {
    let c = Cluster::start(1, ClusterOpts::default()).await;
    let leader = c.wait_leader().await;
    let (stop, tasks) = writers(&c, leader, "lw", 6);
    let mut client = c.config(leader).await;
    let mut rounds = Vec::new();
    for _ in 0..5 {
        // Let some writes land between rounds.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let listed = client
            .list(pb::ListRequest {
                kind: "service".into(),
                consistency: pb::Consistency::Local as i32,
            })
            .await
            .unwrap()
            .into_inner();
        let stream = client
            .watch(pb::WatchRequest {
                from_revision: listed.revision,
                kind: "service".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let names: BTreeSet<String> = listed.objects.into_iter().map(|o| o.name).collect();
        rounds.push((names, listed.revision, stream));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop.send(true);
    let mut written = 0;
    for t in tasks {
        written += t.await.unwrap();
    }
    let last = client
        .list(pb::ListRequest {
            kind: "service".into(),
            consistency: pb::Consistency::Local as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.objects.len(), written);
    let all: BTreeSet<String> = last.objects.into_iter().map(|o| o.name).collect();

    for (round, (listed, from, mut stream)) in rounds.into_iter().enumerate() {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut at = 0;
        while at < last.revision {
            let msg = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .expect("watch answers")
                .unwrap()
                .expect("watch goes on");
            for e in &msg.events {
                assert!(
                    e.revision > from,
                    "round {round}: event at {} from {from}",
                    e.revision
                );
                *seen.entry(e.key.clone().unwrap().name).or_default() += 1;
            }
            at = msg.revision;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "round {round}: events seen twice: {twice:?}"
        );
        let both: Vec<_> = listed.iter().filter(|n| seen.contains_key(*n)).collect();
        assert!(
            both.is_empty(),
            "round {round}: listed at {from} and then watched: {both:?}"
        );
        let seen: BTreeSet<String> = seen.into_keys().collect();
        let union: BTreeSet<String> = listed.union(&seen).cloned().collect();
        let missed: Vec<_> = all.difference(&union).collect();
        assert!(
            missed.is_empty(),
            "round {round}: missed from {from}: {missed:?}"
        );
    }
}
