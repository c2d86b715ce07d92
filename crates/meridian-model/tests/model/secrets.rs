use meridian_model::{
    spec::{PrivateKeyPem, SecretSpec},
    Object, Spec,
};

fn self_signed(not_after_year: i32) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn errors(chain: &str, key: &str) -> Vec<String> {
    let o = Object::new(
        "tls",
        Spec::Secret(SecretSpec {
            certificate_chain: chain.into(),
            private_key: PrivateKeyPem(key.into()),
        }),
    );
    o.validate().iter().map(ToString::to_string).collect()
}

#[test]
fn valid_pair_passes() {
    let (cert, key) = self_signed(2090);
    assert_eq!(errors(&cert, &key), Vec::<String>::new());
}

#[test]
fn key_must_match() {
    let (cert, _) = self_signed(2090);
    let (_, other_key) = self_signed(2090);
    assert_eq!(
        errors(&cert, &other_key),
        vec!["secret/tls: privateKey: does not match the first certificate of certificateChain"]
    );
}

#[test]
fn expired_is_rejected() {
    let (cert, key) = self_signed(2021);
    let errs = errors(&cert, &key);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("secret/tls: certificateChain: certificate 0 expired at"),
        "{errs:?}"
    );
}

#[test]
fn garbage_is_rejected() {
    let (_, key) = self_signed(2090);
    assert_eq!(
        errors("hello", &key),
        vec!["secret/tls: certificateChain: contains no PEM certificate"]
    );
    let (cert, _) = self_signed(2090);
    assert_eq!(
        errors(&cert, ""),
        vec!["secret/tls: privateKey: must hold exactly one PEM private key, found 0 blocks"]
    );
}
