//! The node's TLS: one source per listener (each can have its own trust
//! root), the node's client identity for dialling other nodes, and what
//! `/metrics` shows of them. The verified caller of a request is
//! [`Caller`], in the request's extensions.

use std::fmt::Write as _;
use std::sync::Arc;

use meridian_tls::{Listener, TlsSource};

use crate::config::TlsConfig;

pub use meridian_tls::Caller;

/// The TLS sources of a node.
pub(crate) struct NodeTls {
    pub(crate) peer: Arc<TlsSource>,
    pub(crate) api: Arc<TlsSource>,
    pub(crate) xds: Arc<TlsSource>,
    /// The peer listener's certificate and CA, as a client: Raft,
    /// forwarding and joining.
    pub(crate) client: Arc<TlsSource>,
}

impl NodeTls {
    /// Loads every listener's files; the error names the listener and file.
    pub(crate) fn load(cfg: &TlsConfig) -> Result<NodeTls, String> {
        let server = |l: Listener| {
            let files = cfg.files(l.name())?;
            TlsSource::server(files, l).map_err(|e| format!("tls.{}: {e}", l.name()))
        };
        let client = TlsSource::client(cfg.files("peer")?).map_err(|e| format!("tls.peer: {e}"))?;
        Ok(NodeTls {
            peer: server(Listener::Peer)?,
            api: server(Listener::Api)?,
            xds: server(Listener::Xds)?,
            client,
        })
    }

    pub(crate) fn all(&self) -> Vec<Arc<TlsSource>> {
        vec![
            self.peer.clone(),
            self.api.clone(),
            self.xds.clone(),
            self.client.clone(),
        ]
    }
}

/// Prometheus text for the loaded certificates.
pub(crate) fn render(sources: &[Arc<TlsSource>], out: &mut String) {
    if sources.is_empty() {
        return;
    }
    let families: [(&str, &str, fn(&meridian_tls::TlsStatus) -> i64); 4] = [
        (
            "meridian_tls_cert_expiry_seconds",
            "Seconds until the loaded certificate's notAfter (negative: expired).",
            |s| s.expires_in_seconds,
        ),
        (
            "meridian_tls_reloads_total",
            "Certificate and CA reloads from disk that were taken into use.",
            |s| s.reloads as i64,
        ),
        (
            "meridian_tls_reload_failures_total",
            "Changed TLS files that could not be used (the previous certificate stayed).",
            |s| s.reload_failures as i64,
        ),
        (
            "meridian_tls_handshakes_refused_total",
            "TLS handshakes a listener refused (no, unknown, expired or wrong-type certificate).",
            |s| s.handshakes_refused as i64,
        ),
    ];
    let status: Vec<_> = sources.iter().map(|s| s.status()).collect();
    for (name, help, value) in families {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in &status {
            let _ = writeln!(
                out,
                "{name}{{tls=\"{}\",identity=\"{}\"}} {}",
                s.name,
                s.identity,
                value(s)
            );
        }
    }
}
