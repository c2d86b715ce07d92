/// Longest object name; 63 is the DNS label limit, so names can become label
/// values, hostnames and Envoy stat prefixes without escaping.
pub const MAX_NAME_LEN: usize = 63;

/// Largest canonical JSON of one object's spec (1 MiB). It bounds the size of
/// one replicated write and one xDS resource.
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;

/// Checks the name rule: 1-63 characters of lowercase `a-z`, `0-9` and `-`,
/// starting with a letter and ending with a letter or digit. Returns the
/// reason when the name breaks it.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name is {} characters long, at most {MAX_NAME_LEN} allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "name contains {c:?}; use lowercase letters a-z, digits 0-9 and '-'"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("name must start with a lowercase letter".into());
    }
    if name.ends_with('-') {
        return Err("name must end with a letter or digit".into());
    }
    Ok(())
}
