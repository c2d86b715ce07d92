//! Integration tests of the model crate, one module per topic.

mod model {
    pub mod parse;
    pub mod props;
    pub mod secrets;
    pub mod validate;
}

use meridian_model::{parse_documents, ConfigSet, ModelError};

/// Parses `yaml` into a set, panicking with the messages on failure.
pub fn must_parse(yaml: &str) -> ConfigSet {
    match parse_documents(yaml, "test.yaml") {
        Ok(objs) => objs.into_iter().collect(),
        Err(errs) => panic!("parse failed:\n{}", messages(&errs).join("\n")),
    }
}

pub fn messages(errs: &[ModelError]) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}

/// Parses and validates; returns the validation messages.
pub fn check(yaml: &str) -> Vec<String> {
    messages(&must_parse(yaml).validate())
}

/// The example shipped in `examples/`.
pub fn example() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/multi-region.yaml"
    );
    std::fs::read_to_string(path).expect("examples/multi-region.yaml exists")
}
