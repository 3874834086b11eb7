//! The SQLite database file, created readable by its owner only.
//!
//! SQLite creates a missing database file with mode 0644 (less the umask), and its `-wal` and
//! `-shm` files with the mode of the database file. The database holds sealed secrets, hashed
//! tokens, stored API answers and payment records, so [`create_sqlite_file`] creates it first,
//! with mode 0600; its `-wal` and `-shm` files then get 0600 too. An existing file keeps the
//! mode its operator gave it.

use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

use crate::Result;

/// Creates the (empty) database file of a SQLite `url` that asks for it to be created
/// (`mode=rwc`) and names a file that does not exist yet, with mode 0600. SQLite takes an empty
/// file as an empty database.
pub(crate) fn create_sqlite_file(url: &str) -> Result<()> {
    let opts = SqliteConnectOptions::from_str(url)?;
    let creates = url
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|p| p == "mode=rwc"));
    let path = opts.get_filename();
    if !creates || path.as_os_str().is_empty() || path.exists() {
        return Ok(());
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        file.mode(0o600);
    }
    match file.open(path) {
        Ok(_) => Ok(()),
        // Created meanwhile by another process: SQLite opens it.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(crate::StoreError::Db(sqlx::Error::Io(e))),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use crate::Store;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    }

    /// The database, its write-ahead log and its shared-memory file: owner only.
    #[tokio::test]
    async fn a_new_sqlite_database_is_private_to_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let store = Store::connect(&format!("sqlite://{}?mode=rwc", db.display()))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
        store.close().await;
    }

    /// Nothing is created for a URL that does not ask for it, nor for an in-memory database.
    #[tokio::test]
    async fn only_urls_that_create_make_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("absent.db");
        assert!(
            Store::connect(&format!("sqlite://{}", db.display()))
                .await
                .is_err()
        );
        assert!(!db.exists());
        let mem = Store::connect("sqlite::memory:").await.unwrap();
        mem.close().await;
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
