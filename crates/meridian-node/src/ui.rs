//! The status page: one self-contained HTML page (`/ui`) that polls a JSON
//! state (`/ui/api/state`) once a second, and the diff of one revision
//! (`/ui/api/revision/{rev}`). Read-only. The state is gathered through a
//! [`UiSource`], the same five questions the CLI asks (cluster status,
//! proxy status, history, the agents' objects): the admin listener asks
//! its own node's services in process, `meridian ui` asks over the
//! mutually authenticated API as the operator. Who may see the page:
//! docs/SECURITY.md.

mod state;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use meridian_model::reported::{KIND_CLAIM, KIND_ENDPOINTS, KIND_LEASE};
use meridian_proto::v1 as pb;
use tonic::{Request, Status};

pub use state::{
    build, revision_diff, Objects, Parts, RevisionDiff, Rollout, RolloutStep, UiState,
};

/// The page, inline CSS and JS, no external asset.
pub const INDEX_HTML: &str = include_str!("ui/index.html");

/// How long one gathered state answers every poller: many open pages cost
/// one fan-out per interval, not one each.
const STATE_TTL: Duration = Duration::from_millis(500);
/// Changes the history request reads to find the listed revisions.
const HISTORY_ENTRIES: u32 = 200;

/// Where the page's state comes from: the cluster and config APIs.
pub trait UiSource: Send + Sync + 'static {
    fn cluster_status(&self) -> BoxFuture<'_, Result<pb::ClusterStatusResponse, Status>>;
    fn proxy_status(&self) -> BoxFuture<'_, Result<pb::ProxyStatusResponse, Status>>;
    /// Config changes, newest first; `limit` 0: every retained one.
    fn history(&self, limit: u32) -> BoxFuture<'_, Result<pb::HistoryResponse, Status>>;
    /// This replica's objects of `kind` (a local read).
    fn list(&self, kind: &'static str) -> BoxFuture<'_, Result<pb::ListResponse, Status>>;
    /// The rollouts the cluster keeps, active and recently finished.
    fn rollouts(&self) -> BoxFuture<'_, Result<pb::ListRolloutsResponse, Status>>;
}

/// What `meridian rollout status` asks: every rollout, from this replica.
pub fn rollouts_request() -> pb::ListRolloutsRequest {
    pb::ListRolloutsRequest {
        id: String::new(),
        consistency: pb::Consistency::Local as i32,
    }
}

/// Who the page is served to.
#[derive(Debug, Clone)]
pub enum Access {
    /// Anyone who reaches the listener (a plaintext node: its admin and
    /// API listeners are open alike).
    Open,
    /// Only requests whose Host names the loopback address, so a web page
    /// elsewhere cannot read it through DNS rebinding.
    Loopback,
    /// Not served; the reason is the answer.
    Off(String),
}

impl Access {
    /// The admin listener's rule: with TLS on, the page only on a loopback
    /// listener (the rest of the cluster is behind mutual TLS, and
    /// `meridian ui` serves the page with an operator's credentials).
    pub fn for_admin(tls: bool, admin: std::net::SocketAddr) -> Access {
        match (tls, admin.ip().is_loopback()) {
            (false, _) => Access::Open,
            (true, true) => Access::Loopback,
            (true, false) => Access::Off(format!(
                "the status page is off on this listener: TLS is on and the admin listener is bound to {admin}, \
                 not to loopback; run `meridian ui` with an operator certificate, or bind --admin-listen to 127.0.0.1"
            )),
        }
    }
}

/// The page, its state cache and its access rule, shared by its routes.
pub struct Page {
    source: Arc<dyn UiSource>,
    access: Access,
    last: tokio::sync::Mutex<Option<(Instant, Arc<String>)>>,
}

impl Page {
    pub fn new(source: Arc<dyn UiSource>, access: Access) -> Arc<Page> {
        Arc::new(Page {
            source,
            access,
            last: Default::default(),
        })
    }

    /// Asks every question at once; a part that fails is reported in the
    /// state, not as a failed page.
    pub async fn gather(&self) -> UiState {
        let s = &*self.source;
        let err = |e: Status| e.message().to_string();
        let objects = async {
            let (regions, clusters, claims, leases, endpoints) = futures::try_join!(
                s.list("region"),
                s.list("cluster"),
                s.list(KIND_CLAIM),
                s.list(KIND_LEASE),
                s.list(KIND_ENDPOINTS),
            )?;
            Ok::<_, Status>(Objects {
                regions: regions.objects,
                clusters: clusters.objects,
                claims: claims.objects,
                leases: leases.objects,
                endpoints: endpoints.objects,
            })
        };
        let (cluster, proxies, history, objects, rollouts) = futures::join!(
            s.cluster_status(),
            s.proxy_status(),
            s.history(HISTORY_ENTRIES),
            objects,
            s.rollouts()
        );
        let parts = Parts {
            cluster: Some(cluster.map_err(err)),
            proxies: Some(proxies.map_err(err)),
            history: Some(history.map_err(err)),
            objects: Some(objects.map_err(err)),
            rollouts: Some(rollouts.map_err(err)),
        };
        build(parts, unix_ms())
    }

    async fn state_json(&self) -> Arc<String> {
        let mut last = self.last.lock().await;
        if let Some((at, json)) = last.as_ref() {
            if at.elapsed() < STATE_TTL {
                return json.clone();
            }
        }
        let json = Arc::new(serde_json::to_string(&self.gather().await).unwrap_or_default());
        *last = Some((Instant::now(), json.clone()));
        json
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `/ui`, `/ui/api/state` and `/ui/api/revision/{rev}`.
pub(crate) fn routes(page: Arc<Page>) -> axum::Router {
    axum::Router::new()
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/api/state", get(state))
        .route("/ui/api/revision/{rev}", get(revision))
        .with_state(page)
}

/// Serves the page on `listener` (for `meridian ui`) until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    page: Arc<Page>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = routes(page).route("/", get(|| async { Redirect::temporary("/ui") }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// `Err` with the answer when this request may not see the page.
fn admit(page: &Page, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    match &page.access {
        Access::Open => Ok(()),
        Access::Off(why) => Err((StatusCode::FORBIDDEN, format!("{why}\n"))),
        Access::Loopback => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if is_loopback_host(host) {
                Ok(())
            } else {
                Err((
                    StatusCode::FORBIDDEN,
                    format!("the status page answers only to a loopback Host (127.0.0.1, [::1] or localhost), not {host:?}\n"),
                ))
            }
        }
    }
}

fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// No framing, no sniffing, nothing loaded from elsewhere, never cached.
const PAGE_HEADERS: [(header::HeaderName, &str); 4] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
         connect-src 'self'; img-src data:; frame-ancestors 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CACHE_CONTROL, "no-store"),
];

async fn index(State(page): State<Arc<Page>>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&page, &headers) {
        return r.into_response();
    }
    let mut r = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response();
    r.headers_mut().extend(
        PAGE_HEADERS
            .iter()
            .map(|(k, v)| (k.clone(), header::HeaderValue::from_static(v))),
    );
    r
}

fn json(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn state(State(page): State<Arc<Page>>, headers: HeaderMap) -> Response {
    if let Err(r) = admit(&page, &headers) {
        return r.into_response();
    }
    json(page.state_json().await.as_str().to_owned())
}

async fn revision(
    State(page): State<Arc<Page>>,
    headers: HeaderMap,
    Path(rev): Path<u64>,
) -> Response {
    if let Err(r) = admit(&page, &headers) {
        return r.into_response();
    }
    match page.source.history(0).await {
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("reading the history: {}\n", e.message()),
        )
            .into_response(),
        Ok(h) => match revision_diff(&h, rev) {
            Some(d) => json(serde_json::to_string(&d).unwrap_or_default()),
            None => (
                StatusCode::NOT_FOUND,
                format!(
                    "revision {rev} changed no config object in the retained history (oldest retained: {})\n",
                    h.oldest_revision
                ),
            )
                .into_response(),
        },
    }
}

/// The node's own services as a [`UiSource`], called in process (no
/// listener, no authorization: the admin listener's [`Access`] decides).
pub(crate) struct NodeSource<C, K, R> {
    pub(crate) cluster: Arc<C>,
    pub(crate) config: Arc<K>,
    pub(crate) rollouts: Arc<R>,
}

impl<C, K, R> UiSource for NodeSource<C, K, R>
where
    C: pb::cluster_service_server::ClusterService,
    K: pb::config_service_server::ConfigService,
    R: pb::rollout_service_server::RolloutService,
{
    fn rollouts(&self) -> BoxFuture<'_, Result<pb::ListRolloutsResponse, Status>> {
        Box::pin(async move {
            let r = self
                .rollouts
                .list_rollouts(Request::new(rollouts_request()))
                .await?;
            Ok(r.into_inner())
        })
    }

    fn cluster_status(&self) -> BoxFuture<'_, Result<pb::ClusterStatusResponse, Status>> {
        Box::pin(async move {
            let r = self
                .cluster
                .get_cluster_status(Request::new(pb::ClusterStatusRequest {}))
                .await?;
            Ok(r.into_inner())
        })
    }

    fn proxy_status(&self) -> BoxFuture<'_, Result<pb::ProxyStatusResponse, Status>> {
        Box::pin(async move {
            let r = self
                .cluster
                .get_proxy_status(Request::new(pb::ProxyStatusRequest { local_only: false }))
                .await?;
            Ok(r.into_inner())
        })
    }

    fn history(&self, limit: u32) -> BoxFuture<'_, Result<pb::HistoryResponse, Status>> {
        Box::pin(async move {
            let r = self
                .config
                .get_history(Request::new(history_request(limit)))
                .await?;
            Ok(r.into_inner())
        })
    }

    fn list(&self, kind: &'static str) -> BoxFuture<'_, Result<pb::ListResponse, Status>> {
        Box::pin(async move {
            let r = self.config.list(Request::new(list_request(kind))).await?;
            Ok(r.into_inner())
        })
    }
}

/// The page's history question: config kinds only.
pub fn history_request(limit: u32) -> pb::HistoryRequest {
    pb::HistoryRequest {
        kind: String::new(),
        name: String::new(),
        limit,
        internal: false,
    }
}

/// The page's list question: this replica's objects, without a quorum
/// round trip per poll.
pub fn list_request(kind: &str) -> pb::ListRequest {
    pb::ListRequest {
        kind: kind.to_string(),
        consistency: pb::Consistency::Local as i32,
    }
}

#[cfg(test)]
mod tests;
