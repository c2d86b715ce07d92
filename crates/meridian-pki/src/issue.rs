//! A certificate authority that issues Meridian identities (rcgen, ECDSA
//! P-256). Meant for development and tests; a production deployment may use
//! any CA that puts the same URI SANs into its certificates.

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};

use crate::x509::{ca_trust_domain, parse, unix_seconds};
use crate::{Error, Identity, TrustDomain, Validity};

/// A CA: its certificate and the key it signs with.
pub struct Ca {
    trust_domain: TrustDomain,
    cert_der: Vec<u8>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// One leaf certificate to issue.
#[derive(Clone, Debug)]
pub struct LeafRequest {
    pub identity: Identity,
    /// DNS names and IP addresses the holder is reached at (a node's listen
    /// and advertise hosts); Envoys and agents only dial out and need none.
    pub hosts: Vec<String>,
    pub validity: Validity,
}

impl LeafRequest {
    /// No hosts, valid for the default leaf lifetime.
    pub fn new(identity: Identity) -> LeafRequest {
        LeafRequest {
            identity,
            hosts: Vec::new(),
            validity: Validity::leaf_default(),
        }
    }
}

/// An issued certificate and its new private key (PKCS#8 PEM).
pub struct Issued {
    pub identity: Identity,
    pub cert_der: Vec<u8>,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("identity", &self.identity)
            .field("not_after", &self.not_after)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed CA for `domain`, with a fresh key. Its one URI SAN
    /// is `spiffe://DOMAIN`, so leaves issued later learn the domain from it.
    pub fn generate(domain: &TrustDomain, validity: Validity) -> Result<Ca, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("Meridian CA {domain}"));
        params.subject_alt_names = vec![uri_san(&domain.uri())?];
        // No intermediates: every Meridian certificate is signed by the root.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, validity)?;
        let key = KeyPair::generate().map_err(issue_error)?;
        let cert = params.self_signed(&key).map_err(issue_error)?;
        Ok(Ca {
            trust_domain: domain.clone(),
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA read back from its PEM certificate and PKCS#8 PEM key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, Error> {
        let der = crate::load::pem_blocks(cert_pem.as_bytes())
            .map_err(Error::Der)?
            .into_iter()
            .find(|(label, _)| label == "CERTIFICATE")
            .map(|(_, der)| der)
            .ok_or_else(|| Error::Der("no CERTIFICATE block in the CA's PEM".into()))?;
        let trust_domain = ca_trust_domain(&der)?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| Error::Issue(format!("the CA key is not a PKCS#8 PEM key ({e})")))?;
        if key.subject_public_key_info() != parse(&der)?.public_key().raw {
            return Err(Error::Issue(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key).map_err(issue_error)?;
        Ok(Ca {
            trust_domain,
            cert_pem: cert_pem.to_string(),
            cert_der: der,
            issuer,
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PKCS#8 PEM: handle like any secret.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A leaf certificate for the request's identity, usable for both
    /// client and server authentication (every Meridian connection is
    /// mutual), with a fresh key.
    pub fn issue(&self, req: &LeafRequest) -> Result<Issued, Error> {
        req.identity.validate()?;
        let mut params = CertificateParams::default();
        // Informational only: authorization reads the URI SAN, never the CN.
        params.distinguished_name = name(&req.identity.to_string());
        params.subject_alt_names = vec![uri_san(&req.identity.uri(&self.trust_domain))?];
        for host in &req.hosts {
            params.subject_alt_names.push(host_san(host)?);
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, req.validity)?;
        let key = KeyPair::generate().map_err(issue_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(issue_error)?;
        // Read back rather than echo the request: X.509 keeps whole seconds.
        let not_after = crate::inspect(cert.der(), &self.trust_domain)?.not_after;
        Ok(Issued {
            identity: req.identity.clone(),
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Meridian");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn uri_san(uri: &str) -> Result<SanType, Error> {
    let ia5 = uri.to_string().try_into().map_err(issue_error)?;
    Ok(SanType::URI(ia5))
}

fn host_san(host: &str) -> Result<SanType, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        });
    if !valid {
        return Err(Error::Issue(format!(
            "host {host:?} is neither an IP address nor a DNS name"
        )));
    }
    Ok(SanType::DnsName(
        host.to_string().try_into().map_err(issue_error)?,
    ))
}

fn set_validity(params: &mut CertificateParams, validity: Validity) -> Result<(), Error> {
    if validity.not_after <= validity.not_before {
        return Err(Error::Issue(
            "not_after must be later than not_before".into(),
        ));
    }
    let at = |t: SystemTime| {
        time::OffsetDateTime::from_unix_timestamp(unix_seconds(t))
            .map_err(|e| Error::Issue(format!("validity out of range: {e}")))
    };
    params.not_before = at(validity.not_before)?;
    params.not_after = at(validity.not_after)?;
    Ok(())
}

fn issue_error(e: rcgen::Error) -> Error {
    Error::Issue(e.to_string())
}
