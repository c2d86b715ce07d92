use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Errors;

/// A certificate chain and its private key, both PEM, delivered to Envoy by
/// SDS. `Debug` never shows the key; see [`PrivateKeyPem`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    pub certificate_chain: String,
    pub private_key: PrivateKeyPem,
}

/// The private key PEM. Serializes in full (the stored form needs it), but
/// `Debug` and `Display` print `<redacted>` so a key never reaches a log;
/// output for humans goes through `Object::to_redacted_json`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrivateKeyPem(pub String);

impl PrivateKeyPem {
    pub const REDACTED: &'static str = "<redacted>";

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl fmt::Display for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl SecretSpec {
    pub(crate) fn validate(&self, now_unix: i64, errs: &mut Errors<'_>) {
        let checked = crate::pem::check_key_pair(
            &self.certificate_chain,
            self.private_key.expose(),
            now_unix,
        );
        for (path, reason) in checked {
            errs.push(path, reason);
        }
    }
}
