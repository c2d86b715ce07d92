//! Reports: the `meridian` CLI's output formats, tables and duration syntax.

pub use meridian_cli_output::{parse_duration, print_value, table, Format};
