//! One certificate, its key and the CA bundle it trusts, as rustls
//! configs, swapped in place when the files on disk change.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use meridian_pki::{CertInfo, Identity, PrivateKeyFormat, TrustDomain};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tracing::{info, warn};

use crate::verify::{ClientIdentityVerifier, ServerIdentityVerifier};
use crate::TlsError;

/// Where a certificate (chain, leaf first), its key and the trusted CA
/// bundle live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A listener, and so which identity types it lets in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Raft and the internal service: nodes only.
    Peer,
    /// Config, cluster and agent services: operators, agents, nodes (forwarding).
    Api,
    /// xDS: Envoys (`proxy/GROUP`) and nodes (tools run by controllers).
    Xds,
}

impl Listener {
    pub fn name(self) -> &'static str {
        match self {
            Listener::Peer => "peer",
            Listener::Api => "api",
            Listener::Xds => "xds",
        }
    }

    /// Whether a connection of `id` may get past the handshake. What it
    /// may call then is the listener's own authorization.
    pub fn accepts(self, id: &Identity) -> bool {
        matches!(
            (self, id),
            (Listener::Peer, Identity::Node { .. })
                | (
                    Listener::Api,
                    Identity::Node { .. } | Identity::Operator { .. } | Identity::Agent { .. }
                )
                | (
                    Listener::Xds,
                    Identity::Proxy { .. } | Identity::Node { .. }
                )
        )
    }

    pub(crate) fn accepted(self) -> &'static str {
        match self {
            Listener::Peer => "node/ID",
            Listener::Api => "operator/ROLE/NAME, cluster/NAME or node/ID",
            Listener::Xds => "proxy/GROUP or node/ID",
        }
    }
}

/// What a client insists the server it dials is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Some controller (`node/ID`): the CLI, agents, joining and forwarding.
    AnyNode,
    /// This controller (`node/ID`): the Raft transport, which knows whom it dials.
    Node(u64),
}

/// What `/metrics` and status show of a loaded certificate.
#[derive(Clone, Debug)]
pub struct TlsStatus {
    /// `peer`, `api`, `xds` or `client`.
    pub name: &'static str,
    pub identity: Identity,
    pub cert: PathBuf,
    pub not_after_unix: i64,
    /// Until notAfter; negative once expired.
    pub expires_in_seconds: i64,
    /// Successful reloads since start.
    pub reloads: u64,
    /// Changed files that could not be used (the previous ones stayed).
    pub reload_failures: u64,
    /// Handshakes this listener refused.
    pub handshakes_refused: u64,
}

pub(crate) struct Material {
    pub(crate) domain: TrustDomain,
    pub(crate) info: CertInfo,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pub(crate) roots: Arc<RootCertStore>,
    server: Option<Arc<ServerConfig>>,
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSource")
            .field("name", &self.name)
            .field("identity", &self.identity().to_string())
            .field("cert", &self.files.cert)
            .finish()
    }
}

/// A certificate, key and CA bundle in use by one listener or client.
pub struct TlsSource {
    name: &'static str,
    files: TlsFiles,
    listener: Option<Listener>,
    current: RwLock<Arc<Material>>,
    stamps: Mutex<Vec<Option<Stamp>>>,
    reloads: AtomicU64,
    failures: AtomicU64,
    pub(crate) refused: AtomicU64,
}

/// What tells a changed file: its mtime and length.
type Stamp = (SystemTime, u64);

fn stamp(p: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsSource {
    /// For a listener: presents `files.cert`, and lets in clients whose
    /// certificate chains to `files.ca` and names an identity `listener`
    /// accepts.
    pub fn server(files: TlsFiles, listener: Listener) -> Result<Arc<TlsSource>, TlsError> {
        Self::new(listener.name(), files, Some(listener))
    }

    /// For a client: presents `files.cert` and trusts servers whose
    /// certificate chains to `files.ca`.
    pub fn client(files: TlsFiles) -> Result<Arc<TlsSource>, TlsError> {
        Self::new("client", files, None)
    }

    fn new(
        name: &'static str,
        files: TlsFiles,
        listener: Option<Listener>,
    ) -> Result<Arc<TlsSource>, TlsError> {
        let stamps = vec![stamp(&files.cert), stamp(&files.key), stamp(&files.ca)];
        let material = load(&files, listener)?;
        Ok(Arc::new(TlsSource {
            name,
            files,
            listener,
            current: RwLock::new(Arc::new(material)),
            stamps: Mutex::new(stamps),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }))
    }

    pub(crate) fn material(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The config new handshakes of this listener use.
    pub(crate) fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.material().server.clone()
    }

    /// A client config for one connection, presenting the current
    /// certificate and checking the server is `expect`.
    pub fn client_config(&self, expect: Expect) -> Result<Arc<ClientConfig>, TlsError> {
        let m = self.material();
        let verifier = Arc::new(ServerIdentityVerifier::new(
            m.roots.clone(),
            m.domain.clone(),
            expect,
        ));
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::config("TLS versions", e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(m.chain.clone(), m.key.clone_key())
            .map_err(|e| TlsError::config(self.files.key.display(), e))?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// As [`TlsSource::client_config`], presenting no certificate.
    pub fn client_config_without_cert(
        &self,
        expect: Expect,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let m = self.material();
        let verifier = Arc::new(ServerIdentityVerifier::new(
            m.roots.clone(),
            m.domain.clone(),
            expect,
        ));
        let mut cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::config("TLS versions", e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The identity this side presents.
    pub fn identity(&self) -> Identity {
        self.material().info.identity.clone()
    }

    pub fn status(&self) -> TlsStatus {
        let m = self.material();
        let now = meridian_pki_unix(SystemTime::now());
        TlsStatus {
            name: self.name,
            identity: m.info.identity.clone(),
            cert: self.files.cert.clone(),
            not_after_unix: m.info.not_after_unix(),
            expires_in_seconds: m.info.not_after_unix() - now,
            reloads: self.reloads.load(Ordering::Relaxed),
            reload_failures: self.failures.load(Ordering::Relaxed),
            handshakes_refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// Re-reads the files if any changed since the last look. A file that
    /// cannot be used keeps the previous material (and is tried again once
    /// it changes again). `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = vec![
            stamp(&self.files.cert),
            stamp(&self.files.key),
            stamp(&self.files.ca),
        ];
        {
            let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
            if *stamps == now {
                return None;
            }
            *stamps = now;
        }
        Some(match load(&self.files, self.listener) {
            Ok(m) => {
                info!(
                    tls = self.name,
                    identity = %m.info.identity,
                    not_after = %meridian_pki::format_utc(m.info.not_after),
                    "reloaded TLS certificate and CA bundle; new handshakes use them"
                );
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(m);
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                warn!(
                    tls = self.name,
                    error = %e,
                    "changed TLS files cannot be used; keeping the previous certificate"
                );
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        })
    }
}

fn meridian_pki_unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Polls every source's files every `every` until `stop` completes.
pub async fn reload_loop(
    sources: Vec<Arc<TlsSource>>,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stop => return,
        }
        for s in &sources {
            // Errors are logged and counted inside.
            let _ = s.reload_if_changed();
        }
    }
}

fn load(files: &TlsFiles, listener: Option<Listener>) -> Result<Material, TlsError> {
    let (loaded, domain) = meridian_pki::load_trusting(&files.cert, &files.key, &files.ca)?;
    let chain: Vec<CertificateDer<'static>> =
        loaded.chain.into_iter().map(CertificateDer::from).collect();
    let der = loaded.key.der().to_vec();
    let key = match loaded.key.format {
        PrivateKeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
        PrivateKeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
        PrivateKeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
    };
    let mut roots = RootCertStore::empty();
    for der in loaded.roots {
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| TlsError::config(files.ca.display(), e))?;
    }
    let roots = Arc::new(roots);
    let server = match listener {
        None => None,
        Some(l) => {
            let inner = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(|e| TlsError::config(files.ca.display(), e))?;
            let verifier = Arc::new(ClientIdentityVerifier::new(inner, domain.clone(), l));
            let mut cfg = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::config("TLS versions", e))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| TlsError::config(files.key.display(), e))?;
            cfg.alpn_protocols = vec![b"h2".to_vec()];
            Some(Arc::new(cfg))
        }
    };
    Ok(Material {
        domain,
        info: loaded.info,
        chain,
        key,
        roots,
        server,
    })
}
