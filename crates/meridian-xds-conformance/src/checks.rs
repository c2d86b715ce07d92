//! The checks, one function per rule. Each opens fresh streams, so the order
//! they run in does not matter, and a server's answer to one check cannot be
//! mistaken for another's.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use meridian_xds::testing::fixtures::{eds_name, rds_names};
use meridian_xds::testing::{delta_names, names, Client, DeltaClient, SotwClient, Wire};
use meridian_xds::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use prost::Message;

use crate::{Check, CheckResult, Target, Verdict};

macro_rules! check {
    ($id:literal, $rule:literal, $needs_change:literal, $f:ident) => {
        Check {
            id: $id,
            rule: $rule,
            needs_change: $needs_change,
            run: |t| Box::pin($f(t)),
        }
    };
}

/// Every check, in the order they run.
pub fn all() -> Vec<Check> {
    vec![
        check!("sotw.cds.first-request-answered",
            "a first CDS request (legacy wildcard) is answered with the clusters, a version and a nonce",
            false, sotw_first_request),
        check!("sotw.cds.ack-not-answered",
            "an ACK (the response's version and nonce) is not answered",
            false, sotw_ack_silence),
        check!("sotw.cds.nack-not-answered",
            "a NACK is not answered with the same config again, and the stream stays usable",
            false, sotw_nack),
        check!("sotw.cds.stale-nonce-ignored",
            "a request with a nonce that is not the latest sent is ignored",
            false, sotw_stale_nonce),
        check!("sotw.cds.streams-agree",
            "two streams of the same node get the same CDS version",
            false, sotw_streams_agree),
        check!("sotw.cds.per-type-service",
            "the per-type ClusterDiscoveryService answers like ADS",
            false, sotw_per_type),
        check!("sotw.eds.only-requested-names",
            "an EDS request gets only the assignments it names (EDS is not full state)",
            false, sotw_eds_names),
        check!("sotw.rds.names-from-listeners",
            "the route configurations the listeners name are served by RDS",
            false, sotw_rds_names),
        check!("delta.cds.first-request-answered",
            "a first delta CDS subscription to * is answered with named, versioned clusters",
            false, delta_first_request),
        check!("delta.cds.ack-not-answered",
            "a delta ACK is not answered",
            false, delta_ack_silence),
        check!("delta.cds.nack-not-answered",
            "a delta NACK is not answered with the rejected versions again",
            false, delta_nack),
        check!("delta.cds.held-versions-not-resent",
            "resources a reconnecting client holds at the current version (initial_resource_versions) are not resent",
            false, delta_resume),
        check!("delta.eds.missing-name-removed",
            "a subscribed name that does not exist is answered in removed_resources, or not at all; never as a resource",
            false, delta_missing_name),
        check!("sotw.cds.push-after-change",
            "a config change reaches an ACKed stream as a new CDS version, and its ACK is not answered",
            true, sotw_push),
        check!("delta.cds.push-after-change",
            "a config change reaches an ACKed delta stream as new cluster versions, and its ACK is not answered",
            true, delta_push),
    ]
}

// ---- helpers -------------------------------------------------------------

async fn sotw(t: &Target) -> Result<SotwClient, String> {
    SotwClient::ads(t.addr, t.node.clone())
        .await
        .map_err(|e| format!("opening a SotW ADS stream to {}: {e}", t.addr))
}

async fn delta(t: &Target) -> Result<DeltaClient, String> {
    DeltaClient::ads(t.addr, t.node.clone())
        .await
        .map_err(|e| format!("opening a delta ADS stream to {}: {e}", t.addr))
}

async fn recv<W: Wire>(c: &mut Client<W>, t: &Target, what: &str) -> Result<W::Resp, String> {
    c.recv_within(t.wait).await.ok_or_else(|| {
        format!(
            "no response to {what} within {:?} (or the stream ended)",
            t.wait
        )
    })
}

async fn silent<W: Wire>(c: &mut Client<W>, t: &Target, after: &str) -> Result<(), String> {
    match c.recv_within(t.quiet).await {
        None => Ok(()),
        Some(r) => Err(format!("the server answered {after}: {}", W::describe(&r))),
    }
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(why())
    }
}

/// A SotW stream's first CDS response, checked for what every response must
/// carry.
async fn first_cds(t: &Target) -> Result<(SotwClient, DiscoveryResponse), String> {
    let mut c = sotw(t).await?;
    c.request(CLUSTER, &[], "", "").await;
    let r = recv(&mut c, t, "the first CDS request").await?;
    ensure(r.type_url == CLUSTER, || {
        format!("response type {:?}, asked {CLUSTER}", r.type_url)
    })?;
    ensure(!r.version_info.is_empty(), || {
        "the response has no version_info".into()
    })?;
    ensure(!r.nonce.is_empty(), || "the response has no nonce".into())?;
    ensure(!r.resources.is_empty(), || {
        "no clusters for this node: the checks need at least one (check --node-cluster and --region)".into()
    })?;
    if let Some(bad) = r.resources.iter().find(|a| a.type_url != CLUSTER) {
        return Err(format!(
            "a CDS response carries a resource of type {:?}",
            bad.type_url
        ));
    }
    Ok((c, r))
}

async fn first_delta_cds(t: &Target) -> Result<(DeltaClient, DeltaDiscoveryResponse), String> {
    let mut c = delta(t).await?;
    c.subscribe(CLUSTER, &["*"], &[], "").await;
    let r = recv(&mut c, t, "the first delta CDS subscription").await?;
    ensure(r.type_url == CLUSTER, || {
        format!("response type {:?}, asked {CLUSTER}", r.type_url)
    })?;
    ensure(!r.nonce.is_empty(), || "the response has no nonce".into())?;
    ensure(!r.resources.is_empty(), || {
        "no clusters for this node: the checks need at least one (check --node-cluster and --region)".into()
    })?;
    for res in &r.resources {
        ensure(!res.name.is_empty(), || "a resource has no name".into())?;
        ensure(!res.version.is_empty(), || {
            format!("{} has no version", res.name)
        })?;
        let ty = res.resource.as_ref().map(|a| a.type_url.as_str());
        ensure(ty == Some(CLUSTER), || {
            format!("{} carries a resource of type {ty:?}", res.name)
        })?;
    }
    Ok((c, r))
}

/// The names EDS knows the node's EDS clusters by.
fn eds_names(r: &DiscoveryResponse) -> Vec<String> {
    r.resources
        .iter()
        .filter(|a| {
            Cluster::decode(a.value.as_slice()).is_ok_and(|c| {
                c.cluster_discovery_type
                    == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
            })
        })
        .filter_map(eds_name)
        .collect()
}

/// The route configurations the listeners of `r` take from RDS.
fn listeners_rds_names(r: &DiscoveryResponse) -> Vec<String> {
    let mut out: Vec<String> = r.resources.iter().flat_map(rds_names).collect();
    out.sort();
    out.dedup();
    out
}

// ---- SotW ----------------------------------------------------------------

async fn sotw_first_request(t: Arc<Target>) -> CheckResult {
    first_cds(&t).await?;
    Ok(Verdict::Pass)
}

async fn sotw_ack_silence(t: Arc<Target>) -> CheckResult {
    let (mut c, r) = first_cds(&t).await?;
    c.ack(&r, &[]).await;
    silent(&mut c, &t, "an ACK").await?;
    Ok(Verdict::Pass)
}

async fn sotw_nack(t: Arc<Target>) -> CheckResult {
    let (mut c, r) = first_cds(&t).await?;
    c.nack(&r, &[], "", "xds-conformance: rejected on purpose")
        .await;
    silent(&mut c, &t, "a NACK").await?;
    // The stream must still serve: a NACK is not an error of the stream.
    c.request(LISTENER, &[], "", "").await;
    let l = recv(&mut c, &t, "an LDS request after a NACK").await?;
    ensure(l.type_url == LISTENER, || {
        format!("response type {:?}, asked {LISTENER}", l.type_url)
    })?;
    Ok(Verdict::Pass)
}

async fn sotw_stale_nonce(t: Arc<Target>) -> CheckResult {
    let (mut c, r) = first_cds(&t).await?;
    c.ack(&r, &[]).await;
    silent(&mut c, &t, "an ACK").await?;
    // Narrowing the subscription under a nonce the server never sent: if it
    // took it, it would answer with the narrowed state.
    let first = names(&r).into_iter().next().unwrap_or_default();
    c.request(
        CLUSTER,
        &[first.as_str()],
        &r.version_info,
        "xds-conformance-stale-nonce",
    )
    .await;
    silent(&mut c, &t, "a request with a stale nonce").await?;
    Ok(Verdict::Pass)
}

async fn sotw_streams_agree(t: Arc<Target>) -> CheckResult {
    let (_a, ra) = first_cds(&t).await?;
    let (_b, rb) = first_cds(&t).await?;
    ensure(ra.version_info == rb.version_info, || {
        format!(
            "two streams of node {:?} got CDS versions {:?} and {:?}",
            t.node.id, ra.version_info, rb.version_info
        )
    })?;
    Ok(Verdict::Pass)
}

async fn sotw_per_type(t: Arc<Target>) -> CheckResult {
    let (_ads, ads) = first_cds(&t).await?;
    let mut c = SotwClient::per_type(t.addr, CLUSTER, t.node.clone())
        .await
        .map_err(|e| format!("opening the ClusterDiscoveryService stream: {e}"))?;
    c.request(CLUSTER, &[], "", "").await;
    let r = recv(&mut c, &t, "a CDS request on the per-type service").await?;
    let (mut want, mut got) = (names(&ads), names(&r));
    want.sort();
    got.sort();
    ensure(want == got, || {
        format!("ADS sent clusters {want:?}, CDS sent {got:?}")
    })?;
    Ok(Verdict::Pass)
}

async fn sotw_eds_names(t: Arc<Target>) -> CheckResult {
    let (mut c, r) = first_cds(&t).await?;
    let eds = eds_names(&r);
    let Some(one) = eds.first() else {
        return Ok(Verdict::Skip("no EDS cluster in this node's config".into()));
    };
    c.ack(&r, &[]).await;
    c.request(ENDPOINT, &[one.as_str()], "", "").await;
    let e = recv(&mut c, &t, "an EDS request").await?;
    ensure(e.type_url == ENDPOINT, || {
        format!("response type {:?}, asked {ENDPOINT}", e.type_url)
    })?;
    let got = names(&e);
    ensure(got == vec![one.clone()], || {
        format!("asked for [{one}], got {got:?}")
    })?;
    Ok(Verdict::Pass)
}

async fn sotw_rds_names(t: Arc<Target>) -> CheckResult {
    let mut c = sotw(&t).await?;
    c.request(LISTENER, &[], "", "").await;
    let l = recv(&mut c, &t, "the first LDS request").await?;
    let wanted = listeners_rds_names(&l);
    if wanted.is_empty() {
        return Ok(Verdict::Skip("no listener of this node uses RDS".into()));
    }
    c.ack(&l, &[]).await;
    let asked: Vec<&str> = wanted.iter().map(String::as_str).collect();
    c.request(ROUTE, &asked, "", "").await;
    let r = recv(&mut c, &t, "an RDS request for the listeners' routes").await?;
    let (mut got, mut want) = (names(&r), wanted.clone());
    got.sort();
    want.sort();
    ensure(got == want, || format!("asked for {want:?}, got {got:?}"))?;
    Ok(Verdict::Pass)
}

async fn sotw_push(t: Arc<Target>) -> CheckResult {
    let (mut c, r) = first_cds(&t).await?;
    c.ack(&r, &[]).await;
    silent(&mut c, &t, "an ACK").await?;
    change(&t, 0).await?;
    let p = recv(&mut c, &t, "a config change").await?;
    ensure(p.type_url == CLUSTER, || {
        format!("a push of type {:?} came first", p.type_url)
    })?;
    ensure(p.version_info != r.version_info, || {
        format!("the push carries the old version {:?}", p.version_info)
    })?;
    ensure(p.nonce != r.nonce, || {
        "the push reuses the previous nonce".into()
    })?;
    c.ack(&p, &[]).await;
    silent(&mut c, &t, "the ACK of a push").await?;
    change(&t, 1).await?;
    Ok(Verdict::Pass)
}

// ---- delta ---------------------------------------------------------------

async fn delta_first_request(t: Arc<Target>) -> CheckResult {
    first_delta_cds(&t).await?;
    Ok(Verdict::Pass)
}

async fn delta_ack_silence(t: Arc<Target>) -> CheckResult {
    let (mut c, r) = first_delta_cds(&t).await?;
    c.ack(&r).await;
    silent(&mut c, &t, "a delta ACK").await?;
    Ok(Verdict::Pass)
}

async fn delta_nack(t: Arc<Target>) -> CheckResult {
    let (mut c, r) = first_delta_cds(&t).await?;
    c.nack(&r, "xds-conformance: rejected on purpose").await;
    silent(&mut c, &t, "a delta NACK").await?;
    Ok(Verdict::Pass)
}

async fn delta_resume(t: Arc<Target>) -> CheckResult {
    let (_first, r) = first_delta_cds(&t).await?;
    let held: HashMap<String, String> = r
        .resources
        .iter()
        .map(|res| (res.name.clone(), res.version.clone()))
        .collect();
    let mut c = delta(&t).await?;
    c.resume(CLUSTER, &["*"], held.clone()).await;
    if let Some(again) = c.recv_within(t.quiet).await {
        let resent: Vec<&String> = again
            .resources
            .iter()
            .filter(|res| held.get(&res.name) == Some(&res.version))
            .map(|res| &res.name)
            .collect();
        ensure(resent.is_empty(), || {
            format!(
                "resent clusters the client declared it holds at the current version: {resent:?}"
            )
        })?;
    }
    Ok(Verdict::Pass)
}

async fn delta_missing_name(t: Arc<Target>) -> CheckResult {
    const MISSING: &str = "xds-conformance-no-such-cluster";
    let mut c = delta(&t).await?;
    c.subscribe(ENDPOINT, &[MISSING], &[], "").await;
    if let Some(r) = c.recv_within(t.quiet).await {
        let got = delta_names(&r);
        ensure(!got.iter().any(|n| n == MISSING), || {
            format!("the server sent a resource for a name that does not exist: {got:?}")
        })?;
    }
    Ok(Verdict::Pass)
}

async fn delta_push(t: Arc<Target>) -> CheckResult {
    let (mut c, r) = first_delta_cds(&t).await?;
    let held: HashMap<String, String> = r
        .resources
        .iter()
        .map(|res| (res.name.clone(), res.version.clone()))
        .collect();
    c.ack(&r).await;
    silent(&mut c, &t, "a delta ACK").await?;
    change(&t, 0).await?;
    let p = recv(&mut c, &t, "a config change").await?;
    ensure(p.type_url == CLUSTER, || {
        format!("a push of type {:?} came first", p.type_url)
    })?;
    ensure(
        !p.resources.is_empty() || !p.removed_resources.is_empty(),
        || "the push changes nothing".into(),
    )?;
    let unchanged: Vec<&String> = p
        .resources
        .iter()
        .filter(|res| held.get(&res.name) == Some(&res.version))
        .map(|res| &res.name)
        .collect();
    ensure(unchanged.is_empty(), || {
        format!("the push resends clusters the client holds at that version: {unchanged:?}")
    })?;
    c.ack(&p).await;
    silent(&mut c, &t, "the ACK of a push").await?;
    change(&t, 1).await?;
    Ok(Verdict::Pass)
}

/// Changes the config; the second call of a check puts it back, so checks
/// that follow see what the first saw.
async fn change(t: &Target, step: u32) -> Result<(), String> {
    let c = t.change.as_ref().ok_or("no way to change the config")?;
    c.change(step)
        .await
        .map_err(|e| format!("changing the config (step {step}): {e}"))
}
