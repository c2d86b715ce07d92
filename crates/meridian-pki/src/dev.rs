//! Certificate files in one directory, as `meridian certs` writes them:
//! `ca.pem` and `ca-key.pem`, then `KIND-NAME.pem` and `KIND-NAME-key.pem`
//! per identity (`node-3`, `cluster-east`, `proxy-edge`, `operator-alice`).
//! Keys are written mode 0600 and never replaced unless asked to.

mod files;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::{
    Ca, Error, Identity, LeafRequest, Role, TrustDomain, Validity, CA_VALIDITY, LEAF_VALIDITY,
};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";

/// What was written, for the CLI to print (never the key itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The URI in the certificate (`spiffe://DOMAIN` for the CA).
    pub uri: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub not_after: SystemTime,
}

/// `KIND-NAME`, the file stem of an identity's certificate.
pub fn file_stem(identity: &Identity) -> String {
    match identity {
        Identity::Node { id } => format!("node-{id}"),
        Identity::Agent { cluster } => format!("cluster-{cluster}"),
        Identity::Proxy { group } => format!("proxy-{group}"),
        Identity::Operator { name, .. } => format!("operator-{name}"),
    }
}

/// Creates a CA in `dir` (made if missing).
pub fn init_ca(
    dir: &Path,
    domain: &TrustDomain,
    validity: Validity,
    force: bool,
) -> Result<Written, Error> {
    let (cert, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    files::refuse_existing(&[&cert, &key], force)?;
    let ca = Ca::generate(domain, validity)?;
    files::write_pair(&cert, ca.cert_pem(), &key, &ca.key_pem(), force)?;
    Ok(Written {
        uri: domain.uri(),
        cert,
        key,
        not_after: crate::x509::not_after(ca.cert_der())?,
    })
}

/// The CA `init_ca` wrote into `dir`.
pub fn open_ca(dir: &Path) -> Result<Ca, Error> {
    let (cert, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let cert_pem = files::read(&cert)?;
    let key_pem = files::read(&key)?;
    Ca::from_pem(&cert_pem, &key_pem).map_err(|e| Error::file(&cert, e))
}

/// Issues `req` with the CA in `dir` and writes it next to the CA.
pub fn issue(dir: &Path, req: &LeafRequest, force: bool) -> Result<Written, Error> {
    let ca = open_ca(dir)?;
    issue_with(&ca, dir, req, force)
}

fn issue_with(ca: &Ca, dir: &Path, req: &LeafRequest, force: bool) -> Result<Written, Error> {
    let (cert, key) = leaf_paths(dir, &req.identity);
    files::refuse_existing(&[&cert, &key], force)?;
    let issued = ca.issue(req)?;
    files::write_pair(&cert, &issued.cert_pem, &key, &issued.key_pem, force)?;
    Ok(Written {
        uri: issued.identity.uri(ca.trust_domain()),
        cert,
        key,
        not_after: issued.not_after,
    })
}

fn leaf_paths(dir: &Path, identity: &Identity) -> (PathBuf, PathBuf) {
    let stem = file_stem(identity);
    (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}-key.pem")),
    )
}

/// A whole development deployment's certificates.
#[derive(Clone, Debug)]
pub struct DevSet {
    pub trust_domain: TrustDomain,
    /// Nodes `1..=nodes`.
    pub nodes: u64,
    /// Hosts every node certificate names (all nodes of a development set
    /// usually share one machine).
    pub hosts: Vec<String>,
    /// Registered clusters, one agent certificate each.
    pub clusters: Vec<String>,
    /// Proxy groups, one Envoy certificate each.
    pub groups: Vec<String>,
    pub operators: Vec<(String, Role)>,
    pub ca_validity: Duration,
    pub leaf_validity: Duration,
}

impl Default for DevSet {
    fn default() -> Self {
        DevSet {
            trust_domain: TrustDomain::default(),
            nodes: 3,
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            clusters: Vec::new(),
            groups: vec!["default".into()],
            operators: vec![("admin".into(), Role::Admin)],
            ca_validity: CA_VALIDITY,
            leaf_validity: LEAF_VALIDITY,
        }
    }
}

impl DevSet {
    fn requests(&self) -> Result<Vec<LeafRequest>, Error> {
        let mut out = Vec::new();
        let mut add = |identity: Identity, hosts: &[String]| -> Result<(), Error> {
            identity.validate()?;
            out.push(LeafRequest {
                identity,
                hosts: hosts.to_vec(),
                validity: Validity::for_period(self.leaf_validity),
            });
            Ok(())
        };
        for id in 1..=self.nodes {
            add(Identity::Node { id }, &self.hosts)?;
        }
        for cluster in &self.clusters {
            add(
                Identity::Agent {
                    cluster: cluster.clone(),
                },
                &[],
            )?;
        }
        for group in &self.groups {
            add(
                Identity::Proxy {
                    group: group.clone(),
                },
                &[],
            )?;
        }
        for (name, role) in &self.operators {
            add(
                Identity::Operator {
                    name: name.clone(),
                    role: *role,
                },
                &[],
            )?;
        }
        Ok(out)
    }
}

/// Writes a CA and every certificate of `set` into `dir`. Nothing is written
/// when any of the files exists already (unless `force`), so a second run
/// never leaves a mix of old and new keys.
pub fn write_set(dir: &Path, set: &DevSet, force: bool) -> Result<Vec<Written>, Error> {
    let requests = set.requests()?;
    let mut paths = vec![dir.join(CA_CERT), dir.join(CA_KEY)];
    for req in &requests {
        let (cert, key) = leaf_paths(dir, &req.identity);
        paths.extend([cert, key]);
    }
    files::refuse_existing(
        &paths.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        force,
    )?;
    let mut written = vec![init_ca(
        dir,
        &set.trust_domain,
        Validity::for_period(set.ca_validity),
        force,
    )?];
    let ca = open_ca(dir)?;
    for req in &requests {
        written.push(issue_with(&ca, dir, req, force)?);
    }
    Ok(written)
}
