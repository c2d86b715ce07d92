//! The parser and validator never panic, whatever the input.

use meridian_model::{parse_documents, ConfigSet};
use proptest::prelude::*;

fn validate_all(text: &str) {
    if let Ok(objs) = parse_documents(text, "p.yaml") {
        let set: ConfigSet = objs.into_iter().collect();
        let _ = set.validate();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(text in ".{0,400}") {
        validate_all(&text);
    }

    #[test]
    fn yaml_shaped_text(
        kind in prop::sample::select(vec!["service", "route", "listener", "secret", "region", "x"]),
        name in "[a-zA-Z0-9-]{0,8}",
        body in prop::collection::vec(("[a-zA-Z]{1,12}", "[-a-z0-9/*:\\[\\]{}, ]{0,12}"), 0..6),
    ) {
        let mut text = format!("kind: {kind}\nname: {name}\nspec:\n");
        for (k, v) in body {
            text.push_str(&format!("  {k}: {v}\n"));
        }
        validate_all(&text);
    }

    /// Cutting the example at any point or flipping one byte.
    #[test]
    fn mutated_example(cut in 0usize..6000, flip in 0usize..6000, byte in any::<u8>()) {
        let text = crate::example();
        let mut bytes = text.into_bytes();
        if flip < bytes.len() {
            bytes[flip] = byte;
        }
        bytes.truncate(cut.max(1).min(bytes.len()));
        validate_all(&String::from_utf8_lossy(&bytes));
    }
}
