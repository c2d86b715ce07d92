//! Reading a certificate chain, its key and the trusted roots from PEM
//! files, as DER for the TLS layer to wrap.

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;

use rcgen::{KeyPair, PublicKeyData};
use x509_parser::pem::Pem;

use crate::x509::parse;
use crate::{inspect, verify_issued_by, CertInfo, Error, TrustDomain};

/// How a private key's DER is encoded (what rustls's `PrivateKeyDer` needs
/// to know).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrivateKeyFormat {
    /// `PRIVATE KEY` (what `meridian certs` writes).
    Pkcs8,
    /// `RSA PRIVATE KEY`.
    Pkcs1,
    /// `EC PRIVATE KEY`.
    Sec1,
}

/// A private key's DER. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey {
    pub format: PrivateKeyFormat,
    der: Vec<u8>,
}

impl PrivateKey {
    pub fn der(&self) -> &[u8] {
        &self.der
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({:?}, <redacted>)", self.format)
    }
}

/// What a listener or client presents and trusts.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Leaf first, then any intermediates, as in the file.
    pub chain: Vec<Vec<u8>>,
    pub key: PrivateKey,
    /// The CA certificates peers' certificates must chain to.
    pub roots: Vec<Vec<u8>>,
    /// The leaf's identity and validity (an expired leaf still loads, so
    /// that status can show it; the TLS handshake refuses it).
    pub info: CertInfo,
}

/// Loads `cert` (chain, leaf first), `key` and `roots` (a bundle of CA
/// certificates). Checks that the leaf is a Meridian identity of `domain`,
/// that the key belongs to it (PKCS#8 keys; other formats are checked when
/// the TLS layer loads them) and that the chain ends at one of the roots.
/// Every error names the file it is about.
pub fn load(cert: &Path, key: &Path, roots: &Path, domain: &TrustDomain) -> Result<Loaded, Error> {
    let chain = certificates(cert)?;
    let root_certs = certificates(roots)?;
    let info = inspect(&chain[0], domain).map_err(|e| Error::file(cert, e))?;
    let key_der = private_key(key)?;
    if key_der.format == PrivateKeyFormat::Pkcs8 {
        if let Ok(pair) = KeyPair::try_from(key_der.der()) {
            let leaf = parse(&chain[0]).map_err(|e| Error::file(cert, e))?;
            if pair.subject_public_key_info() != leaf.public_key().raw {
                return Err(Error::file(
                    key,
                    format!(
                        "this key does not belong to the certificate in {}",
                        cert.display()
                    ),
                ));
            }
        }
    }
    for pair in chain.windows(2) {
        verify_issued_by(&pair[0], &pair[1]).map_err(|e| Error::file(cert, e))?;
    }
    let last = chain.last().expect("certificates() returns at least one");
    if !root_certs
        .iter()
        .any(|root| root == last || verify_issued_by(last, root).is_ok())
    {
        return Err(Error::file(
            cert,
            format!(
                "not issued by any CA in {}; issue it with that CA, or point to its CA bundle",
                roots.display()
            ),
        ));
    }
    Ok(Loaded {
        chain,
        key: key_der,
        roots: root_certs,
        info,
    })
}

/// As [`load`], with the trust domain taken from the CA bundle: the first
/// CA carrying a `spiffe://DOMAIN` URI SAN names it (what `meridian certs
/// init-ca` writes); a bundle without one means the default domain. So a
/// listener or client needs no trust-domain setting of its own.
pub fn load_trusting(
    cert: &Path,
    key: &Path,
    roots: &Path,
) -> Result<(Loaded, TrustDomain), Error> {
    let domain = bundle_trust_domain(roots)?;
    let loaded = load(cert, key, roots, &domain)?;
    Ok((loaded, domain))
}

/// The trust domain a CA bundle speaks for: that of the first CA carrying
/// a `spiffe://DOMAIN` URI SAN, else the default one (see
/// [`load_trusting`]). For tools that write other programs' TLS settings
/// (an Envoy bootstrap), which must match what the TLS layer will decide.
pub fn bundle_trust_domain(roots: &Path) -> Result<TrustDomain, Error> {
    Ok(certificates(roots)?
        .iter()
        .find_map(|der| crate::ca_trust_domain(der).ok())
        .unwrap_or_default())
}

/// The `(label, DER)` of every PEM block in `bytes`.
pub(crate) fn pem_blocks(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    Pem::iter_from_buffer(bytes)
        .map(|block| {
            block
                .map(|pem| (pem.label, pem.contents))
                .map_err(|e| format!("invalid PEM: {e}"))
        })
        .collect()
}

fn read_blocks(path: &Path) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    pem_blocks(&bytes).map_err(|reason| Error::file(path, reason))
}

fn certificates(path: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let certs: Vec<Vec<u8>> = read_blocks(path)?
        .into_iter()
        .filter(|(label, _)| label == "CERTIFICATE")
        .map(|(_, der)| der)
        .collect();
    if certs.is_empty() {
        return Err(Error::file(
            path,
            "no CERTIFICATE block; expected a PEM certificate file",
        ));
    }
    for der in &certs {
        parse(der).map_err(|e| Error::file(path, e))?;
    }
    Ok(certs)
}

fn private_key(path: &Path) -> Result<PrivateKey, Error> {
    let mut keys = read_blocks(path)?.into_iter().filter_map(|(label, der)| {
        let format = match label.as_str() {
            "PRIVATE KEY" => PrivateKeyFormat::Pkcs8,
            "RSA PRIVATE KEY" => PrivateKeyFormat::Pkcs1,
            "EC PRIVATE KEY" => PrivateKeyFormat::Sec1,
            _ => return None,
        };
        Some(PrivateKey { format, der })
    });
    match (keys.next(), keys.next()) {
        (Some(key), None) => Ok(key),
        (None, _) => Err(Error::file(
            path,
            "no private key block (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)",
        )),
        (Some(_), Some(_)) => Err(Error::file(
            path,
            "more than one private key; keep one key per file",
        )),
    }
}
