//! Writing certificates and keys with the right permissions.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use crate::Error;

pub(super) fn refuse_existing(paths: &[&Path], force: bool) -> Result<(), Error> {
    if force {
        return Ok(());
    }
    match paths.iter().find(|p| p.exists()) {
        Some(path) => Err(Error::Exists {
            path: path.to_path_buf(),
        }),
        None => Ok(()),
    }
}

pub(super) fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// The key first: a certificate without its key is useless, a key without
/// its certificate is simply issued again.
pub(super) fn write_pair(
    cert: &Path,
    cert_pem: &str,
    key: &Path,
    key_pem: &str,
    force: bool,
) -> Result<(), Error> {
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write(key, key_pem, 0o600, force)?;
    write(cert, cert_pem, 0o644, force)
}

fn write(path: &Path, contents: &str, mode: u32, force: bool) -> Result<(), Error> {
    let mut options = OpenOptions::new();
    // Without force the file system itself refuses an existing file, so a
    // file created since `refuse_existing` looked is not replaced either.
    if force {
        options.write(true).create(true).truncate(true);
    } else {
        options.write(true).create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::Exists {
            path: path.to_path_buf(),
        },
        _ => Error::io(path, e),
    })?;
    // The mode above applies only to a new file; a replaced key keeps
    // whatever mode it had, so set it again.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(path, e))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}
