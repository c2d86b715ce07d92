//! The object files an operator applies (YAML or JSON), through parsing and
//! per-object and whole-set validation: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_model::{parse_documents, parse_documents_located, ConfigSet};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_documents_located(text, "fuzz.yaml");
    if let Ok(objects) = parse_documents(text, "fuzz.yaml") {
        let mut set = ConfigSet::new();
        for o in objects {
            let _ = o.validate();
            set.insert(o);
        }
        let _ = set.validate();
    }
});
