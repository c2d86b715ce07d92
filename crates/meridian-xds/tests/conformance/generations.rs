//! go-control-plane's integration shape: several generations of config whose
//! cluster and route names change each time; a simulated Envoy must converge
//! on each. Plus the load generator at 200 streams.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use meridian_xds::testing::bench::{bench, BenchConfig};
use meridian_xds::testing::envoy::{run_delta, run_sotw, Held};
use meridian_xds::testing::fixtures::{cluster, endpoints, listener, route};
use meridian_xds::testing::TestServer;
use meridian_xds::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use meridian_xds::{MemorySource, Variant, ViewSnapshot};
use tokio::sync::watch;

use super::support::{both, envoy, eventually, fast, Flavor};

fn generation(v: &mut ViewSnapshot, g: u32) {
    v.by_type.clear();
    for i in 0..3 {
        let c = format!("g{g}-c{i}");
        v.insert(c.clone(), cluster(&c, "v"));
        v.insert(c.clone(), endpoints(&c, &format!("g{g}")));
    }
    for l in ["http", "admin"] {
        let r = format!("g{g}-{l}-routes");
        v.insert(l, listener(l, &r, &format!("g{g}")));
        v.insert(r.clone(), route(&r, &format!("g{g}")));
    }
}

fn expected(src: &MemorySource) -> BTreeMap<String, BTreeMap<String, String>> {
    use meridian_xds::SnapshotSource;
    let snap = src.snapshot(&meridian_xds::Viewer {
        region: String::new(),
        proxy_group: String::new(),
    });
    [CLUSTER, ENDPOINT, LISTENER, ROUTE]
        .into_iter()
        .map(|t| {
            (
                t.to_string(),
                snap.resources(t)
                    .iter()
                    .map(|(n, r)| (n.clone(), r.version.clone()))
                    .collect(),
            )
        })
        .collect()
}

both!(generations_of_config_converge);

async fn generations_of_config_converge(f: Flavor) {
    let src = Arc::new(MemorySource::new());
    src.update(|v| generation(v, 0));
    let srv = TestServer::start(src.clone(), fast()).await;
    let held = Arc::new(Mutex::new(Held::default()));
    let (stop_tx, stop) = watch::channel(false);
    let task = match f {
        Flavor::Delta => tokio::spawn(run_delta(srv.addr, envoy("gen"), held.clone(), stop)),
        Flavor::Sotw => tokio::spawn(run_sotw(srv.addr, envoy("gen"), held.clone(), stop)),
    };
    for g in 0..5 {
        if g > 0 {
            src.update(|v| generation(v, g));
        }
        let want = expected(&src);
        let ok = eventually(|| {
            let h = held.lock().unwrap();
            [CLUSTER, ENDPOINT, LISTENER, ROUTE]
                .iter()
                .all(|t| h.by_type.get(*t) == want.get(*t))
        })
        .await;
        assert!(
            ok,
            "generation {g}: held {:?}",
            held.lock().unwrap().by_type
        );
    }
    stop_tx.send_replace(true);
    task.await.unwrap().unwrap();
    assert_eq!(srv.server.recent_nacks().len(), 0);
}

both!(bench_200_streams);

async fn bench_200_streams(f: Flavor) {
    let variant = match f {
        Flavor::Sotw => Variant::SotwAds,
        Flavor::Delta => Variant::DeltaAds,
    };
    let src = Arc::new(MemorySource::new());
    src.update(|v| generation(v, 0));
    let srv = TestServer::start(src.clone(), fast()).await;
    let report = bench(BenchConfig::new(srv.addr, 200, variant)).await;
    assert_eq!((report.synced, report.failed), (200, 0), "{report:?}");
    // CDS, EDS, LDS, RDS each answered and acknowledged at least once.
    assert!(report.acks >= 800, "{report:?}");
    assert!(report.sync_max >= report.sync_p50);
}
