use envoy_types::pb::envoy::{
    config::core::v3::{data_source::Specifier, DataSource},
    extensions::transport_sockets::tls::v3::{secret, Secret, TlsCertificate},
};
use meridian_model::SecretSpec;

pub(crate) fn build(name: &str, spec: &SecretSpec) -> Secret {
    let inline = |s: &str| {
        Some(DataSource {
            specifier: Some(Specifier::InlineString(s.to_string())),
            ..Default::default()
        })
    };
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(&spec.certificate_chain),
            private_key: inline(spec.private_key.expose()),
            ..Default::default()
        })),
    }
}
