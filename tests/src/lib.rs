//! The black-box tests of `tests/tests/*` (one binary per topic, see
//! docs/ARCHITECTURE.md); their support code is the shared test kit,
//! re-exported here so every test names it as `meridian_tests::…`.

pub use meridian_testkit::*;
