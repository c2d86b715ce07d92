//! Certificate checks on both ends: the chain (webpki, which also refuses
//! expired certificates), then the Meridian identity in the URI SAN. Host
//! names are not checked: a controller is known by its identity, which
//! survives a change of address (docs/SECURITY.md).

use std::sync::Arc;

use meridian_pki::{Identity, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};

use crate::source::{provider, Expect, Listener};

/// Why a certificate that chains is still refused; carried inside rustls's
/// error so the handshake failure says it.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refuse(reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(
        reason,
    )))))
}

fn identity_of(der: &[u8], domain: &TrustDomain) -> Result<Identity, rustls::Error> {
    meridian_pki::inspect(der, domain)
        .map(|info| info.identity)
        .map_err(|e| refuse(e.to_string()))
}

/// The server's check of a client: webpki's, then the identity type the
/// listener takes.
#[derive(Debug)]
pub(crate) struct ClientIdentityVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    domain: TrustDomain,
    listener: Listener,
}

impl ClientIdentityVerifier {
    pub(crate) fn new(
        inner: Arc<dyn ClientCertVerifier>,
        domain: TrustDomain,
        listener: Listener,
    ) -> Self {
        ClientIdentityVerifier {
            inner,
            domain,
            listener,
        }
    }
}

impl ClientCertVerifier for ClientIdentityVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let id = identity_of(end_entity, &self.domain)?;
        if !self.listener.accepts(&id) {
            return Err(refuse(format!(
                "{id} may not connect to the {} listener, which takes {}",
                self.listener.name(),
                self.listener.accepted()
            )));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A client's check of the server: the chain to the CA bundle, then that
/// it is a controller (or the one controller dialled).
#[derive(Debug)]
pub(crate) struct ServerIdentityVerifier {
    roots: Arc<RootCertStore>,
    domain: TrustDomain,
    expect: Expect,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerIdentityVerifier {
    pub(crate) fn new(roots: Arc<RootCertStore>, domain: TrustDomain, expect: Expect) -> Self {
        ServerIdentityVerifier {
            roots,
            domain,
            expect,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for ServerIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let id = identity_of(end_entity, &self.domain)?;
        match (self.expect, &id) {
            (Expect::AnyNode, Identity::Node { .. }) => {}
            (Expect::Node(want), Identity::Node { id }) if *id == want => {}
            (Expect::AnyNode, _) => {
                return Err(refuse(format!(
                    "the server is {id}, not a controller (node/ID)"
                )))
            }
            (Expect::Node(want), _) => {
                return Err(refuse(format!(
                    "the server is {id}; node/{want} was dialled"
                )))
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
