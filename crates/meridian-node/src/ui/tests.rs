use super::*;

/// A source that answers from fixed values and counts its questions.
#[derive(Default)]
struct Fixed {
    asked: std::sync::atomic::AtomicUsize,
}

impl UiSource for Fixed {
    fn cluster_status(&self) -> BoxFuture<'_, Result<pb::ClusterStatusResponse, Status>> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async {
            Ok(pb::ClusterStatusResponse {
                leader_id: 1,
                ..Default::default()
            })
        })
    }
    fn proxy_status(&self) -> BoxFuture<'_, Result<pb::ProxyStatusResponse, Status>> {
        Box::pin(async { Err(Status::permission_denied("operator/viewer/x may not")) })
    }
    fn history(&self, _: u32) -> BoxFuture<'_, Result<pb::HistoryResponse, Status>> {
        Box::pin(async {
            Ok(pb::HistoryResponse {
                entries: vec![pb::HistoryEntry {
                    key: Some(pb::ObjectKey {
                        kind: "service".into(),
                        name: "web".into(),
                    }),
                    revision: 7,
                    action: "created".into(),
                    value: br#"{"port":80}"#.to_vec(),
                    ..Default::default()
                }],
                revision: 7,
                oldest_revision: 0,
            })
        })
    }
    fn list(&self, _: &'static str) -> BoxFuture<'_, Result<pb::ListResponse, Status>> {
        Box::pin(async { Ok(pb::ListResponse::default()) })
    }
    fn rollouts(&self) -> BoxFuture<'_, Result<pb::ListRolloutsResponse, Status>> {
        Box::pin(async { Ok(pb::ListRolloutsResponse::default()) })
    }
}

async fn get(page: Arc<Page>, path: &str, host: &str) -> (StatusCode, HeaderMap, String) {
    use tower_service::Service;
    let req = http::Request::builder()
        .uri(path)
        .header(header::HOST, host)
        .body(axum::body::Body::empty())
        .unwrap();
    let r = routes(page).call(req).await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[test]
fn the_admin_listener_serves_the_page_under_tls_only_on_loopback() {
    let lo: std::net::SocketAddr = "127.0.0.1:9901".parse().unwrap();
    let any: std::net::SocketAddr = "0.0.0.0:9901".parse().unwrap();
    assert!(matches!(Access::for_admin(false, any), Access::Open));
    assert!(matches!(Access::for_admin(true, lo), Access::Loopback));
    assert!(matches!(
        Access::for_admin(true, "[::1]:9901".parse().unwrap()),
        Access::Loopback
    ));
    match Access::for_admin(true, any) {
        Access::Off(why) => assert!(
            why.contains("0.0.0.0:9901") && why.contains("meridian ui"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn loopback_hosts() {
    for h in [
        "127.0.0.1:80",
        "127.0.0.1",
        "localhost:9901",
        "LOCALHOST",
        "[::1]:9901",
        "[::1]",
    ] {
        assert!(is_loopback_host(h), "{h}");
    }
    for h in [
        "",
        "evil.example:9901",
        "10.0.0.1:9901",
        "127.0.0.1.evil.example",
        "[::2]:1",
    ] {
        assert!(!is_loopback_host(h), "{h}");
    }
}

#[tokio::test]
async fn off_answers_why_and_loopback_refuses_other_hosts() {
    let off = Page::new(
        Arc::new(Fixed::default()),
        Access::Off("the page is off: why".into()),
    );
    for path in ["/ui", "/ui/api/state", "/ui/api/revision/7"] {
        let (st, _, body) = get(off.clone(), path, "127.0.0.1:1").await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(body, "the page is off: why\n");
    }
    let lo = Page::new(Arc::new(Fixed::default()), Access::Loopback);
    let (st, _, body) = get(lo.clone(), "/ui/api/state", "rebound.example:9901").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(body.contains("rebound.example"), "{body}");
    let (st, _, _) = get(lo, "/ui/api/state", "localhost:9901").await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn the_page_is_self_contained_and_locked_down() {
    let page = Page::new(Arc::new(Fixed::default()), Access::Open);
    let (st, headers, body) = get(page, "/ui", "x").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    // No asset from elsewhere: no src= or href= at all, no URL but its own API.
    for bad in [" src=", " href=", "http://", "https://", "innerHTML"] {
        assert!(!body.contains(bad), "the page contains {bad:?}");
    }
    assert!(body.contains("/ui/api/state") && body.contains("/ui/api/revision/"));
}

#[tokio::test]
async fn state_reports_failed_parts_and_is_shared_between_pollers() {
    let source = Arc::new(Fixed::default());
    let page = Page::new(source.clone(), Access::Open);
    let (st, _, body) = get(page.clone(), "/ui/api/state", "x").await;
    assert_eq!(st, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["leader_id"], 1);
    assert_eq!(v["rollouts"], serde_json::json!([]));
    assert_eq!(v["errors"][0], "proxy status: operator/viewer/x may not");
    assert_eq!(v["history"][0]["revision"], 7);
    let _ = get(page, "/ui/api/state", "x").await;
    assert_eq!(
        source.asked.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the second poll within the TTL is answered from the first"
    );
}

#[tokio::test]
async fn a_revision_answers_its_diff_or_not_found() {
    let page = Page::new(Arc::new(Fixed::default()), Access::Open);
    let (st, _, body) = get(page.clone(), "/ui/api/revision/7", "x").await;
    assert_eq!(st, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["changes"][0]["name"], "web");
    assert!(v["changes"][0]["diff"]
        .as_str()
        .unwrap()
        .contains("+  \"port\": 80"));
    let (st, _, body) = get(page, "/ui/api/revision/6", "x").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(body.contains("revision 6"), "{body}");
}
