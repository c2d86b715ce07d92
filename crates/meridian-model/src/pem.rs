//! Checks that a Secret's certificate and key are usable before they are
//! accepted, so a broken secret is rejected at apply time rather than by
//! every Envoy that receives it.

use ring::{
    rand::SystemRandom,
    signature::{self, KeyPair},
};
use x509_parser::pem::Pem;

/// Returns (field path, reason) for every problem found.
pub(crate) fn check_key_pair(
    chain_pem: &str,
    key_pem: &str,
    now_unix: i64,
) -> Vec<(&'static str, String)> {
    let mut errs = Vec::new();
    let certs: Vec<Pem> =
        match Pem::iter_from_buffer(chain_pem.as_bytes()).collect::<Result<_, _>>() {
            Ok(c) => c,
            Err(e) => {
                errs.push(("certificateChain", format!("is not valid PEM: {e}")));
                return errs;
            }
        };
    let Some(leaf_pem) = certs.first() else {
        errs.push((
            "certificateChain",
            "contains no PEM certificate".to_string(),
        ));
        return errs;
    };
    let mut leaf_key = None;
    for (i, pem) in certs.iter().enumerate() {
        if pem.label != "CERTIFICATE" {
            errs.push((
                "certificateChain",
                format!("block {i} is a {:?}, expected a CERTIFICATE", pem.label),
            ));
            continue;
        }
        match pem.parse_x509() {
            Ok(cert) => {
                let validity = cert.validity();
                if validity.not_after.timestamp() < now_unix {
                    errs.push((
                        "certificateChain",
                        format!("certificate {i} expired at {}", validity.not_after),
                    ));
                }
                if validity.not_before.timestamp() > now_unix {
                    errs.push((
                        "certificateChain",
                        format!(
                            "certificate {i} is not valid before {}",
                            validity.not_before
                        ),
                    ));
                }
                if std::ptr::eq(pem, leaf_pem) {
                    leaf_key = Some(cert.public_key().subject_public_key.data.to_vec());
                }
            }
            Err(e) => errs.push((
                "certificateChain",
                format!("certificate {i} does not parse: {e}"),
            )),
        }
    }
    let keys: Vec<Pem> = match Pem::iter_from_buffer(key_pem.as_bytes()).collect::<Result<_, _>>() {
        Ok(k) => k,
        Err(e) => {
            errs.push(("privateKey", format!("is not valid PEM: {e}")));
            return errs;
        }
    };
    let [key] = keys.as_slice() else {
        errs.push((
            "privateKey",
            format!(
                "must hold exactly one PEM private key, found {} blocks",
                keys.len()
            ),
        ));
        return errs;
    };
    match public_key_of(key) {
        Ok(public) => {
            if let Some(leaf) = leaf_key {
                if leaf != public {
                    errs.push((
                        "privateKey",
                        "does not match the first certificate of certificateChain".to_string(),
                    ));
                }
            }
        }
        Err(reason) => errs.push(("privateKey", reason)),
    }
    errs
}

/// The public key bytes as they appear in a certificate's
/// subjectPublicKeyInfo bit string.
fn public_key_of(pem: &Pem) -> Result<Vec<u8>, String> {
    let der = pem.contents.as_slice();
    match pem.label.as_str() {
        "PRIVATE KEY" => {
            let rng = SystemRandom::new();
            for alg in [
                &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            ] {
                if let Ok(k) = signature::EcdsaKeyPair::from_pkcs8(alg, der, &rng) {
                    return Ok(k.public_key().as_ref().to_vec());
                }
            }
            if let Ok(k) = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                return Ok(k.public_key().as_ref().to_vec());
            }
            if let Ok(k) = signature::RsaKeyPair::from_pkcs8(der) {
                return Ok(k.public_key().as_ref().to_vec());
            }
            Err("is not a PKCS#8 key of a supported type (ECDSA P-256/P-384, Ed25519, RSA ≥ 2048 bits)".into())
        }
        "RSA PRIVATE KEY" => signature::RsaKeyPair::from_der(der)
            .map(|k| k.public_key().as_ref().to_vec())
            .map_err(|e| format!("is not a usable RSA key: {e}")),
        "EC PRIVATE KEY" => Err(
            "SEC1 EC keys are not supported; convert with `openssl pkcs8 -topk8 -nocrypt`".into(),
        ),
        other => Err(format!(
            "is a {other:?} block, expected PRIVATE KEY or RSA PRIVATE KEY"
        )),
    }
}
