//! Writing files safely: every file convscope writes (a model, a PNG, a `.npy`, a cache
//! entry, exported digits) goes into a temporary file in the same folder, is synced to disk
//! and only then renamed into place, so a full disk or a crash never leaves a truncated
//! file under the name. Anything at that name that is not a regular file (a device, a FIFO,
//! a folder, a symbolic link) is refused rather than replaced.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Writes the file at `path` with what `write` puts into the writer it is given.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.is_file()
    {
        return Err(Error::bad_file(path, "is not a regular file: convscope will not replace it"));
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Dropped on any error below, the temporary file is deleted with it.
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| io(without_temporary_path(e)))?;
    {
        let mut writer = BufWriter::new(tmp.as_file_mut());
        write(&mut writer).map_err(io)?;
        writer.flush().map_err(io)?;
    }
    // A temporary file is private (0600); what convscope writes is an ordinary document.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// `tempfile` wraps the cause in a message that adds the temporary file's path ("No such
/// file or directory (os error 2) at path \"/d/.tmpX\""); the error already names the real
/// path, so only the cause is kept.
fn without_temporary_path(e: std::io::Error) -> std::io::Error {
    // Its wrapper gives no access to the cause but through its message.
    let message = e.get_ref().map(ToString::to_string);
    match message.as_deref().and_then(|m| m.rsplit_once(" at path ")) {
        Some((cause, _)) => std::io::Error::new(e.kind(), cause.to_string()),
        None => e,
    }
}

/// Writes `bytes` to `path` with [`write_atomically`].
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomically(path, |w| w.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_folder_is_said_once_without_the_temporary_name() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("no/such/folder/x.png");
        let error = write_bytes(&path, b"x").expect_err("no folder");
        let text = crate::error::report(&error);
        assert!(text.starts_with(&path.display().to_string()), "{text}");
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        assert!(!text.contains(" at path "), "{text}");
    }

    #[test]
    fn writes_replace_regular_files_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.bin");
        write_bytes(&path, b"one").expect("new file");
        write_bytes(&path, b"two").expect("replaced");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let err = write_bytes(dir.path(), b"x").expect_err("a folder");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        #[cfg(unix)]
        {
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(&path, &link).expect("symlink");
            assert!(write_bytes(&link, b"x").is_err());
            assert_eq!(std::fs::read(&path).expect("read"), b"two", "the target is untouched");
        }
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.bin");
        let err = write_atomically(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left"))
        })
        .expect_err("the write failed");
        assert!(crate::error::report(&err).contains("no space left"));
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0, "no partial file");
    }
}
