//! A test cluster's certificates: a CA in the cluster's dir, node
//! certificates issued as nodes start, an admin operator for the kit's own
//! clients, and whatever a test asks for (other identities, expired ones,
//! another CA, a client without a certificate).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use meridian_pki::{dev, Identity, LeafRequest, Role, TrustDomain, Validity};
use meridian_tls::{TlsFiles, TlsSource};

pub struct Pki {
    dir: PathBuf,
    admin: TlsFiles,
    admin_source: Arc<TlsSource>,
    extra: std::sync::atomic::AtomicU64,
}

impl Pki {
    /// A new CA in `dir` (made if missing) and the kit's admin operator.
    pub fn create(dir: &Path) -> Result<Pki> {
        dev::init_ca(dir, &TrustDomain::default(), Validity::ca_default(), false)
            .with_context(|| format!("creating a test CA in {}", dir.display()))?;
        let admin = issue_in(
            dir,
            Identity::Operator {
                name: "kit".into(),
                role: Role::Admin,
            },
            Validity::leaf_default(),
            &[],
        )?;
        let admin_source =
            TlsSource::client(admin.clone()).context("loading the kit's admin certificate")?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            admin,
            admin_source,
            extra: Default::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA bundle (`ca.pem`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join(dev::CA_CERT)
    }

    /// Node `id`'s certificate, issued the first time it is asked for.
    pub fn node(&self, id: u64) -> Result<TlsFiles> {
        let files = self.files_of(&Identity::Node { id });
        if files.cert.exists() && files.key.exists() {
            return Ok(files);
        }
        self.rotate(Identity::Node { id }, Validity::leaf_default())
    }

    /// Replaces the live files of `identity` (what a node started with):
    /// a rotation on disk.
    pub fn rotate(&self, identity: Identity, validity: Validity) -> Result<TlsFiles> {
        issue_in(&self.dir, identity, validity, &["127.0.0.1", "localhost"])
    }

    /// Issues a certificate of `identity` into a directory of its own (with
    /// a copy of the CA bundle), so that it never replaces a running
    /// node's files.
    pub fn issue(&self, identity: Identity, validity: Validity) -> Result<TlsFiles> {
        let n = self
            .extra
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.dir.join(format!("extra-{n}"));
        std::fs::create_dir_all(&dir)?;
        for f in [dev::CA_CERT, dev::CA_KEY] {
            std::fs::copy(self.dir.join(f), dir.join(f))?;
        }
        issue_in(&dir, identity, validity, &["127.0.0.1", "localhost"])
    }

    /// A certificate that expired a day ago.
    pub fn issue_expired(&self, identity: Identity) -> Result<TlsFiles> {
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        self.issue(
            identity,
            Validity {
                not_before: now - 2 * day,
                not_after: now - day,
            },
        )
    }

    /// Where `identity`'s files are (or would be).
    pub fn files_of(&self, identity: &Identity) -> TlsFiles {
        let stem = dev::file_stem(identity);
        TlsFiles {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}-key.pem")),
            ca: self.ca(),
        }
    }

    /// The kit's admin operator (`operator/admin/kit`).
    pub fn admin(&self) -> &TlsFiles {
        &self.admin
    }

    pub fn admin_source(&self) -> Arc<TlsSource> {
        self.admin_source.clone()
    }

    /// A client presenting `files`.
    pub fn client(&self, files: &TlsFiles) -> Result<Arc<TlsSource>> {
        Ok(TlsSource::client(files.clone())?)
    }
}

fn issue_in(
    dir: &Path,
    identity: Identity,
    validity: Validity,
    hosts: &[&str],
) -> Result<TlsFiles> {
    let req = LeafRequest {
        identity: identity.clone(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        validity,
    };
    let w = dev::issue(dir, &req, true)
        .with_context(|| format!("issuing {identity} in {}", dir.display()))?;
    Ok(TlsFiles {
        cert: w.cert,
        key: w.key,
        ca: dir.join(dev::CA_CERT),
    })
}

/// A certificate of `identity` from a CA the cluster does not trust, for a
/// client that still trusts the cluster's servers: the returned files'
/// CA bundle holds both CAs (the client's chain must end at one of them).
pub fn foreign(cluster: &Pki, dir: &Path, identity: Identity) -> Result<TlsFiles> {
    let other = Pki::create(dir)?;
    let files = other.issue(identity, Validity::leaf_default())?;
    let bundle = dir.join("both-cas.pem");
    let pem = format!(
        "{}{}",
        std::fs::read_to_string(cluster.ca())?,
        std::fs::read_to_string(other.ca())?
    );
    std::fs::write(&bundle, pem)?;
    Ok(TlsFiles {
        ca: bundle,
        ..files
    })
}

impl Pki {
    /// A TLS client that trusts the cluster's servers but presents no
    /// certificate: what a stranger without credentials can do.
    pub fn anonymous(&self) -> meridian_tls::Connector {
        meridian_tls::Connector::without_certificate(
            self.admin_source(),
            meridian_tls::Expect::AnyNode,
        )
    }
}
