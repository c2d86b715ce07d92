//! The rule for names inside identities. It is Meridian's object-name rule
//! (cluster names and proxy groups are object and label names elsewhere),
//! restated here so this crate depends on nothing of the model.

/// The DNS label limit, as for Meridian object names.
pub const MAX_NAME_LEN: usize = 63;

/// 1-63 characters of `a-z`, `0-9` and `-`, starting with a letter and
/// ending with a letter or digit; the reason when `name` breaks it.
pub(crate) fn check(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} characters long, at most {MAX_NAME_LEN} allowed",
            name.len()
        ));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "contains {c:?}; use lowercase letters a-z, digits 0-9 and '-'"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a lowercase letter".into());
    }
    if name.ends_with('-') {
        return Err("must end with a letter or digit".into());
    }
    Ok(())
}
