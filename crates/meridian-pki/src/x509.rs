//! Reading identities and validity out of DER certificates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::{Error, IdError, Identity, TrustDomain};

/// What the TLS layer and `meridian status` need from a leaf certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub identity: Identity,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Whether `at` lies outside the validity window.
    pub fn expired_at(&self, at: SystemTime) -> bool {
        at > self.not_after || at < self.not_before
    }

    /// `not_after` as unix seconds (for the expiry metric).
    pub fn not_after_unix(&self) -> i64 {
        unix_seconds(self.not_after)
    }
}

/// The identity and validity of a leaf certificate of `domain`. The
/// certificate must carry exactly one URI SAN, a Meridian identity of that
/// trust domain (as in SPIFFE X.509-SVIDs); the subject's CN is ignored.
pub fn inspect(der: &[u8], domain: &TrustDomain) -> Result<CertInfo, Error> {
    let cert = parse(der)?;
    let uri = match uri_sans(&cert)?.as_slice() {
        [] => return Err(Error::NoIdentity),
        [one] => one.to_string(),
        many => {
            return Err(Error::ManyIdentities(
                many.iter().map(|s| s.to_string()).collect(),
            ))
        }
    };
    let validity = cert.validity();
    Ok(CertInfo {
        identity: Identity::from_uri(&uri, domain)?,
        not_before: system_time(validity.not_before),
        not_after: system_time(validity.not_after),
    })
}

/// The trust domain of a Meridian CA, from its `spiffe://DOMAIN` URI SAN.
pub fn ca_trust_domain(ca_der: &[u8]) -> Result<TrustDomain, Error> {
    let cert = parse(ca_der)?;
    if !cert.is_ca() {
        return Err(Error::NotCa("basicConstraints does not say CA:true".into()));
    }
    let uris = uri_sans(&cert)?;
    let [uri] = uris.as_slice() else {
        return Err(Error::NotCa(
            "a Meridian CA carries one URI SAN, spiffe://TRUST_DOMAIN; create one with `meridian certs init-ca`".into(),
        ));
    };
    let domain = uri
        .strip_prefix("spiffe://")
        .ok_or_else(|| IdError::Scheme {
            uri: uri.to_string(),
        })?;
    Ok(TrustDomain::new(domain)?)
}

/// Whether `ca_der` issued `leaf_der`: the leaf's issuer is the CA's subject
/// and its signature verifies with the CA's key. Only this one link; the TLS
/// layer does full path validation (validity, key usage) with webpki.
pub fn verify_issued_by(leaf_der: &[u8], ca_der: &[u8]) -> Result<(), Error> {
    let leaf = parse(leaf_der)?;
    let ca = parse(ca_der)?;
    if leaf.issuer().as_raw() != ca.subject().as_raw() {
        return Err(Error::NotIssuedBy(format!(
            "its issuer is {:?}, the CA is {:?}",
            leaf.issuer().to_string(),
            ca.subject().to_string()
        )));
    }
    leaf.verify_signature(Some(ca.public_key())).map_err(|e| {
        Error::NotIssuedBy(format!(
            "the signature does not verify with the CA's key ({e})"
        ))
    })
}

pub(crate) fn not_after(der: &[u8]) -> Result<SystemTime, Error> {
    Ok(system_time(parse(der)?.validity().not_after))
}

pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, Error> {
    match X509Certificate::from_der(der) {
        Ok((rest, _)) if !rest.is_empty() => {
            Err(Error::Der(format!("{} trailing bytes", rest.len())))
        }
        Ok((_, cert)) => Ok(cert),
        Err(e) => Err(Error::Der(e.to_string())),
    }
}

fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>, Error> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::Der(format!("subjectAltName: {e}")))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

fn system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}
