//! The xDS listener's authorization: an Envoy's certificate names its
//! proxy group (`proxy/GROUP`), and a stream may view only as that group.
//! The group a stream asks for is Envoy's `node.cluster` (the xDS server's
//! `Viewer`); a mismatch is refused rather than silently corrected, so a
//! misconfigured Envoy is noticed instead of getting another group's
//! listeners. Other identities the listener's handshake lets in (nodes,
//! for CSDS) may not pose as a proxy. Installed only on a TLS listener;
//! the region is not bound (it comes from the serving controller's region
//! when absent, and carries no secrets).

use meridian_pki::Identity;
use meridian_xds::{Denied, StreamAuthorizer, Viewer};

use crate::tls::Caller;

/// [`StreamAuthorizer`] of a TLS xDS listener.
pub(crate) struct ProxyGroupBinding;

impl StreamAuthorizer for ProxyGroupBinding {
    fn authorize(&self, viewer: &Viewer, peer: &tonic::Extensions) -> Result<(), Denied> {
        // The TLS acceptor names every connection it lets through; none
        // here means the connection did not come through it: fail closed.
        let Some(caller) = peer.get::<Caller>() else {
            return Err(Denied::new(
                "no verified client certificate on this connection; xDS streams need a proxy/GROUP certificate",
            ));
        };
        check(&caller.identity, viewer)
    }
}

fn check(identity: &Identity, viewer: &Viewer) -> Result<(), Denied> {
    match identity {
        Identity::Proxy { group } if *group == viewer.proxy_group => Ok(()),
        Identity::Proxy { group } => Err(Denied::new(format!(
            "{identity} may not receive proxy group {:?}: node.cluster is {:?} but the certificate names proxy group {group:?}",
            viewer.proxy_group, viewer.proxy_group
        ))),
        other => Err(Denied::new(format!(
            "{other} is not a proxy: only proxy/GROUP identities may open xDS streams (asked for proxy group {:?})",
            viewer.proxy_group
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(group: &str) -> Viewer {
        Viewer {
            region: "us-east".into(),
            proxy_group: group.into(),
        }
    }

    fn with_caller(identity: Identity) -> tonic::Extensions {
        let mut ext = tonic::Extensions::new();
        ext.insert(Caller {
            identity,
            remote: None,
        });
        ext
    }

    #[test]
    fn a_proxy_views_only_as_the_group_its_certificate_names() {
        let edge = with_caller(Identity::Proxy {
            group: "edge".into(),
        });
        assert_eq!(ProxyGroupBinding.authorize(&viewer("edge"), &edge), Ok(()));
        let err = ProxyGroupBinding
            .authorize(&viewer("payments"), &edge)
            .unwrap_err();
        assert!(
            err.reason.contains("proxy/edge") && err.reason.contains("\"payments\""),
            "{err}"
        );
    }

    #[test]
    fn nodes_operators_and_unnamed_connections_may_not_pose_as_proxies() {
        let node = with_caller(Identity::Node { id: 2 });
        let err = ProxyGroupBinding
            .authorize(&viewer("default"), &node)
            .unwrap_err();
        assert!(err.reason.contains("node/2 is not a proxy"), "{err}");
        assert!(ProxyGroupBinding
            .authorize(&viewer("default"), &tonic::Extensions::new())
            .is_err());
    }
}
