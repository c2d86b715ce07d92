//! Who may call what on the API listener: the one table from gRPC method
//! to the role it needs, enforced by a tower layer in front of every API
//! service, from the identity the TLS handshake verified. A request that
//! is refused never reaches its service, so it changes nothing.
//!
//! Nodes may call everything: a node forwards its clients' requests (after
//! checking them itself) and joins through `AddNode`, and a node
//! certificate is already everything (docs/SECURITY.md). On a plaintext
//! (`--insecure`) listener there is no caller and no check.

use std::task::{Context, Poll};

use meridian_pki::{Identity, Role};
use tracing::warn;

use crate::tls::Caller;

/// One API method, the role an operator needs for it, and whether agents
/// (`cluster/NAME`) may call it.
struct Rule {
    path: &'static str,
    role: Role,
    agents: bool,
}

const fn rule(path: &'static str, role: Role, agents: bool) -> Rule {
    Rule { path, role, agents }
}

use Role::{Admin, Editor, Viewer};

/// Every method the API listener serves. A method missing here is refused
/// to everyone but nodes (the unit test keeps this complete).
const RULES: &[Rule] = &[
    rule("/meridian.v1.ConfigService/Get", Viewer, false),
    rule("/meridian.v1.ConfigService/List", Viewer, false),
    rule("/meridian.v1.ConfigService/Watch", Viewer, false),
    rule("/meridian.v1.ConfigService/GetHistory", Viewer, false),
    rule("/meridian.v1.ConfigService/Txn", Editor, false),
    rule("/meridian.v1.ConfigService/Rollback", Editor, false),
    rule("/meridian.v1.ClusterService/GetNodeStatus", Viewer, true),
    rule(
        "/meridian.v1.ClusterService/GetClusterStatus",
        Viewer,
        false,
    ),
    rule("/meridian.v1.ClusterService/GetProxyStatus", Viewer, false),
    rule("/meridian.v1.ClusterService/GetProxyConfig", Viewer, false),
    rule(
        "/meridian.v1.ClusterService/GetTrafficErrors",
        Viewer,
        false,
    ),
    rule("/meridian.v1.ClusterService/Init", Admin, false),
    rule("/meridian.v1.ClusterService/AddNode", Admin, false),
    rule("/meridian.v1.ClusterService/RemoveNode", Admin, false),
    rule("/meridian.v1.ClusterService/Snapshot", Admin, false),
    rule("/meridian.v1.RolloutService/ListRollouts", Viewer, false),
    rule("/meridian.v1.RolloutService/StartRollout", Editor, false),
    rule("/meridian.v1.RolloutService/PromoteRollout", Editor, false),
    rule("/meridian.v1.RolloutService/PauseRollout", Editor, false),
    rule("/meridian.v1.RolloutService/ResumeRollout", Editor, false),
    rule("/meridian.v1.RolloutService/AbortRollout", Editor, false),
    // The agents' upward protocol: agents only (their cluster is checked
    // by the session); operators have no business there.
    rule("/meridian.v1.AgentService/Report", Admin, true),
    rule(
        "/envoy.service.status.v3.ClientStatusDiscoveryService/StreamClientStatus",
        Viewer,
        false,
    ),
    rule(
        "/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus",
        Viewer,
        false,
    ),
];

/// `Ok` if `caller` may call `path`; else the PERMISSION_DENIED message,
/// naming the identity and what it lacks.
pub(crate) fn check(caller: Option<&Identity>, path: &str) -> Result<(), String> {
    let Some(id) = caller else { return Ok(()) };
    if matches!(id, Identity::Node { .. }) {
        return Ok(());
    }
    let method = path.rsplit('/').next().unwrap_or(path);
    let Some(rule) = RULES.iter().find(|r| r.path == path) else {
        return Err(format!(
            "{id} may not call {path}: not a method of this API"
        ));
    };
    match id {
        Identity::Operator { role, .. } if rule.path.starts_with("/meridian.v1.AgentService/") => Err(format!(
            "{id} may not call {method}: only agents (cluster/NAME) speak the agents' protocol, and {role} is an operator role"
        )),
        Identity::Operator { role, .. } if role.allows(rule.role) => Ok(()),
        Identity::Operator { role, .. } => Err(format!(
            "{id} may not call {method}: it needs the {} role, and {id} has {role}",
            rule.role
        )),
        Identity::Agent { .. } if rule.agents => Ok(()),
        Identity::Agent { .. } => Err(format!(
            "{id} may not call {method}: an agent may use only the agents' protocol and node status"
        )),
        _ => Err(format!("{id} may not call {method} on the API listener")),
    }
}

/// Kinds a `Txn` may write only with the admin role: registering an
/// agent's cluster (`clusters add`) decides which agent may report
/// endpoints, which is cluster administration, not config editing. The
/// table above is keyed by method and cannot see what a `Txn` writes.
const ADMIN_KINDS: &[&str] = &["cluster"];

/// `Ok` if `caller` may write objects of `kinds` in one transaction (the
/// method itself was let through by [`check`]); else the PERMISSION_DENIED
/// message. Nodes forward writes they have checked at the entry node.
pub(crate) fn check_kinds<'a>(
    caller: Option<&Identity>,
    kinds: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    let Some(id @ Identity::Operator { role, .. }) = caller else {
        return Ok(());
    };
    if role.allows(Role::Admin) {
        return Ok(());
    }
    match kinds.into_iter().find(|k| ADMIN_KINDS.contains(k)) {
        Some(kind) => Err(format!(
            "{id} may not write {kind} objects (cluster registration): it needs the admin role, and {id} has {role}"
        )),
        None => Ok(()),
    }
}

/// Set by an entry node on a request it forwards to the leader: the
/// identity its TLS handshake verified. The leader sees only the
/// forwarding node's certificate, and some checks (a rollback's kinds) can
/// be made only where the request is planned, on the leader.
pub(crate) const ON_BEHALF_OF: &str = "x-meridian-on-behalf-of";

/// The identity a request acts for: its TLS caller, or, when a node
/// forwarded it, the identity that node put in [`ON_BEHALF_OF`] (trusted
/// from nodes only; an operator's own header is ignored). `None` on a
/// plaintext listener. A node's header that does not parse is refused
/// rather than treated as the node's own request.
pub(crate) fn acting_for<T>(req: &tonic::Request<T>) -> Result<Option<Identity>, String> {
    let caller = req.extensions().get::<Caller>().map(|c| c.identity.clone());
    let Some(node @ Identity::Node { .. }) = &caller else {
        return Ok(caller);
    };
    let Some(v) = req.metadata().get(ON_BEHALF_OF) else {
        return Ok(caller);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.parse::<Identity>().ok())
        .map(Some)
        .ok_or_else(|| format!("{node} forwarded a request with an invalid {ON_BEHALF_OF} header"))
}

/// The header value that forwards `acting` to the leader; `None` when
/// the request acts for no one or for a node (which is everything).
pub(crate) fn on_behalf_of(
    acting: Option<&Identity>,
) -> Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> {
    match acting {
        Some(id @ (Identity::Operator { .. } | Identity::Agent { .. })) => {
            id.to_string().parse().ok()
        }
        _ => None,
    }
}

/// `Ok` if `caller` may let a rollback make `changes` (kind, name,
/// action); else the PERMISSION_DENIED message naming the first object
/// that needs admin. A rollback is an editor's call, yet restoring the
/// whole config can re-create or delete cluster registrations, which
/// only an admin may write.
pub(crate) fn check_rollback<'a>(
    caller: Option<&Identity>,
    changes: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Result<(), String> {
    let Some(id @ Identity::Operator { role, .. }) = caller else {
        // Agents cannot reach Rollback (the table), nodes are everything,
        // plaintext has no callers.
        return Ok(());
    };
    if role.allows(Role::Admin) {
        return Ok(());
    }
    match changes.into_iter().find(|(k, _, _)| ADMIN_KINDS.contains(k)) {
        Some((kind, name, action)) => Err(format!(
            "{id} may not roll back {kind}/{name} (it would be {action}): cluster registration needs the admin role, and {id} has {role}; roll back single objects, or ask an admin"
        )),
        None => Ok(()),
    }
}

/// The layer in front of the API listener's services.
#[derive(Clone, Copy, Default)]
pub(crate) struct AuthzLayer;

impl<S> tower_layer::Layer<S> for AuthzLayer {
    type Service = Authz<S>;
    fn layer(&self, inner: S) -> Authz<S> {
        Authz { inner }
    }
}

#[derive(Clone)]
pub(crate) struct Authz<S> {
    inner: S,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for Authz<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = futures::future::Either<
        futures::future::Ready<Result<http::Response<R>, S::Error>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let caller = req.extensions().get::<Caller>();
        match check(caller.map(|c| &c.identity), req.uri().path()) {
            Ok(()) => futures::future::Either::Right(self.inner.call(req)),
            Err(msg) => {
                warn!(
                    caller = %caller.map(|c| c.identity.to_string()).unwrap_or_default(),
                    method = %req.uri().path(),
                    reason = %msg,
                    "request refused"
                );
                let denied = tonic::Status::permission_denied(msg).into_http();
                futures::future::Either::Left(futures::future::ready(Ok(denied)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/meridian.v1.Service/Rpc` of every rpc in a proto file's services.
    fn methods(proto: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut service = None;
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest.split_whitespace().next().map(str::to_string);
            } else if let (Some(svc), Some(rest)) = (&service, line.strip_prefix("rpc ")) {
                let name = rest.split('(').next().unwrap_or("").trim();
                out.push(format!("/meridian.v1.{svc}/{name}"));
            }
        }
        out
    }

    fn api_methods() -> Vec<String> {
        let mut all = Vec::new();
        for proto in [
            include_str!("../../../proto/meridian/v1/config.proto"),
            include_str!("../../../proto/meridian/v1/cluster.proto"),
            include_str!("../../../proto/meridian/v1/agent.proto"),
            include_str!("../../../proto/meridian/v1/rollout.proto"),
        ] {
            all.extend(methods(proto));
        }
        all.push("/envoy.service.status.v3.ClientStatusDiscoveryService/StreamClientStatus".into());
        all.push("/envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus".into());
        all
    }

    #[test]
    fn every_api_method_is_in_the_table_and_nothing_else() {
        let all = api_methods();
        assert!(all.len() > 10, "the proto parse found only {all:?}");
        for m in &all {
            assert!(
                RULES.iter().any(|r| r.path == m),
                "{m} has no rule in RULES"
            );
        }
        for r in RULES {
            assert!(
                all.iter().any(|m| m == r.path),
                "RULES names {} which no service serves",
                r.path
            );
        }
    }

    fn op(role: Role) -> Identity {
        Identity::Operator {
            name: "alice".into(),
            role,
        }
    }

    #[test]
    fn roles_follow_the_table() {
        let txn = "/meridian.v1.ConfigService/Txn";
        let add = "/meridian.v1.ClusterService/AddNode";
        let get = "/meridian.v1.ConfigService/Get";
        assert!(check(Some(&op(Viewer)), get).is_ok());
        let denied = check(Some(&op(Viewer)), txn).unwrap_err();
        assert!(
            denied.contains("operator/viewer/alice") && denied.contains("editor"),
            "{denied}"
        );
        assert!(check(Some(&op(Editor)), txn).is_ok());
        let denied = check(Some(&op(Editor)), add).unwrap_err();
        assert!(denied.contains("admin"), "{denied}");
        assert!(check(Some(&op(Admin)), add).is_ok());
        let agent = Identity::Agent {
            cluster: "us".into(),
        };
        assert!(check(Some(&agent), "/meridian.v1.AgentService/Report").is_ok());
        assert!(check(Some(&agent), txn).is_err());
        assert!(check(Some(&op(Admin)), "/meridian.v1.AgentService/Report").is_err());
        assert!(check(Some(&Identity::Node { id: 2 }), add).is_ok());
        assert!(check(Some(&Identity::Proxy { group: "g".into() }), get).is_err());
        assert!(check(Some(&op(Admin)), "/meridian.v1.ConfigService/Nope").is_err());
        assert!(
            check(None, txn).is_ok(),
            "plaintext listeners carry no caller"
        );
    }

    #[test]
    fn a_rollback_that_touches_cluster_registrations_needs_admin() {
        let changes = [("service", "web", "updated"), ("cluster", "a", "deleted")];
        let denied = check_rollback(Some(&op(Editor)), changes).unwrap_err();
        assert!(
            denied.contains("operator/editor/alice")
                && denied.contains("cluster/a")
                && denied.contains("deleted")
                && denied.contains("admin"),
            "{denied}"
        );
        assert!(check_rollback(Some(&op(Admin)), changes).is_ok());
        assert!(check_rollback(Some(&op(Editor)), [("service", "web", "created")]).is_ok());
        assert!(check_rollback(None, changes).is_ok());
    }

    fn forwarded_by(node: u64, header: Option<&str>) -> tonic::Request<()> {
        let mut req = tonic::Request::new(());
        req.extensions_mut().insert(Caller {
            identity: Identity::Node { id: node },
            remote: None,
        });
        if let Some(h) = header {
            req.metadata_mut().insert(ON_BEHALF_OF, h.parse().unwrap());
        }
        req
    }

    #[test]
    fn the_acting_identity_is_taken_from_a_node_only() {
        let ed = op(Editor);
        let via = forwarded_by(2, Some("operator/editor/alice"));
        assert_eq!(acting_for(&via).unwrap(), Some(ed.clone()));
        assert_eq!(
            acting_for(&forwarded_by(2, None)).unwrap(),
            Some(Identity::Node { id: 2 })
        );
        assert!(acting_for(&forwarded_by(2, Some("root"))).is_err());
        // An operator cannot claim to act for someone else.
        let mut own = tonic::Request::new(());
        own.extensions_mut().insert(Caller {
            identity: ed.clone(),
            remote: None,
        });
        own.metadata_mut()
            .insert(ON_BEHALF_OF, "operator/admin/mallory".parse().unwrap());
        assert_eq!(acting_for(&own).unwrap(), Some(ed.clone()));
        assert_eq!(
            on_behalf_of(Some(&ed)).unwrap().to_str().unwrap(),
            "operator/editor/alice"
        );
        assert!(on_behalf_of(Some(&Identity::Node { id: 1 })).is_none());
    }
}
