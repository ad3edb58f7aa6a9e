//! SQLite log store: one file in WAL mode (created 0600), written in batches of multi-row
//! inserts inside one transaction.
//!
//! This SQLite is the bundled copy, not the one Python's `sqlite3` uses. Two copies of SQLite
//! in one process do not see each other's POSIX locks, and closing a file descriptor drops
//! every lock the process holds on that file (sqlite.org/howtocorrupt.html, 2.2): so in a
//! process running the writer, Python must not open the log file while the writer runs
//! (create the schema first and close that connection; read from other processes).

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};

use super::record::{LogRecord, COLUMNS};
use super::store::{Store, StoreError};

/// Rows per INSERT statement (29 values a row, under SQLite's 32,766 bound parameters).
const ROWS_PER_INSERT: usize = 500;

/// `sqlite:///rel/path` -> `rel/path`; `sqlite:////abs/path` -> `/abs/path`; a path as is.
pub fn sqlite_path(url: &str) -> PathBuf {
    match url.strip_prefix("sqlite://") {
        Some(path) => PathBuf::from(path.strip_prefix('/').unwrap_or(path)),
        None => PathBuf::from(url),
    }
}

pub struct SqliteStore {
    path: PathBuf,
    timeout: Duration,
    conn: Option<Connection>,
}

impl SqliteStore {
    pub fn new(url: &str, timeout: Duration) -> Self {
        Self {
            path: sqlite_path(url),
            timeout,
            conn: None,
        }
    }

    fn error(&self, err: rusqlite::Error) -> StoreError {
        let msg = format!("sqlite {}: {err}", self.path.display());
        match err.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation | ErrorCode::TooBig | ErrorCode::TypeMismatch) => {
                StoreError::Data(msg)
            }
            _ => StoreError::Down(msg),
        }
    }

    fn insert_sql(rows: usize) -> String {
        let marks = format!("({})", vec!["?"; COLUMNS.len()].join(", "));
        format!(
            "INSERT OR IGNORE INTO requests ({}) VALUES {}",
            COLUMNS.join(", "),
            vec![marks; rows].join(", ")
        )
    }

    fn insert(conn: &Connection, chunk: &[LogRecord]) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(&Self::insert_sql(chunk.len()))?;
        let mut i = 0;
        let mut bind = |stmt: &mut rusqlite::CachedStatement<'_>,
                        value: &dyn rusqlite::ToSql|
         -> rusqlite::Result<()> {
            i += 1;
            stmt.raw_bind_parameter(i, value)
        };
        for r in chunk {
            bind(&mut stmt, &r.id)?;
            bind(&mut stmt, &r.ts)?;
            bind(&mut stmt, &r.request_id)?;
            bind(&mut stmt, &r.door)?;
            bind(&mut stmt, &r.key_id)?;
            bind(&mut stmt, &r.team)?;
            bind(&mut stmt, &r.model)?;
            bind(&mut stmt, &r.provider)?;
            bind(&mut stmt, &r.provider_model)?;
            bind(&mut stmt, &r.endpoint)?;
            bind(&mut stmt, &i64::from(r.stream))?;
            bind(&mut stmt, &r.status)?;
            bind(&mut stmt, &r.error_type)?;
            bind(&mut stmt, &r.error_message)?;
            bind(&mut stmt, &r.latency_ms)?;
            bind(&mut stmt, &r.upstream_ms)?;
            bind(&mut stmt, &r.overhead_ms)?;
            bind(&mut stmt, &r.ttft_ms)?;
            bind(&mut stmt, &r.prompt_tokens)?;
            bind(&mut stmt, &r.completion_tokens)?;
            bind(&mut stmt, &r.total_tokens)?;
            bind(&mut stmt, &i64::from(r.tokens_counted))?;
            bind(&mut stmt, &r.cost_usd)?;
            bind(&mut stmt, &r.cache_status)?;
            bind(&mut stmt, &r.content)?;
            bind(&mut stmt, &r.prompt)?;
            bind(&mut stmt, &r.completion)?;
            bind(&mut stmt, &r.tool_calls)?;
            bind(&mut stmt, &r.attempts)?;
        }
        stmt.raw_execute()?;
        Ok(())
    }
}

/// Create `path` (and its directory) readable by its owner only, if it does not exist yet.
pub fn create_private(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

impl Store for SqliteStore {
    fn connect(&mut self) -> Result<(), StoreError> {
        self.conn = None;
        if self.path.as_os_str() != ":memory:" {
            create_private(&self.path)
                .map_err(|e| StoreError::Down(format!("sqlite {}: {e}", self.path.display())))?;
        }
        let conn = Connection::open(&self.path).map_err(|e| self.error(e))?;
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(self.timeout)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            // The same page cache and checkpoint interval as the Python store used.
            conn.pragma_update(None, "cache_size", -32768)?;
            conn.pragma_update(None, "wal_autocheckpoint", 10000)?;
            conn.set_prepared_statement_cache_capacity(32);
            Ok(())
        };
        setup().map_err(|e| self.error(e))?;
        self.conn = Some(conn);
        Ok(())
    }

    fn write(&mut self, records: &[LogRecord]) -> Result<(), StoreError> {
        if self.conn.is_none() {
            self.connect()?;
        }
        let conn = self.conn.as_ref().expect("connected");
        let result = (|| -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            for chunk in records.chunks(ROWS_PER_INSERT) {
                if let Err(e) = Self::insert(conn, chunk) {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
            conn.execute_batch("COMMIT")
        })();
        result.map_err(|e| {
            let err = self.error(e);
            if let StoreError::Down(_) = err {
                self.close();
            }
            err
        })
    }

    fn purge(&mut self, before_ts: f64, max_rows: Option<u64>) -> Result<u64, StoreError> {
        if self.conn.is_none() {
            self.connect()?;
        }
        let conn = self.conn.as_ref().expect("connected");
        let result = (|| -> rusqlite::Result<u64> {
            let mut deleted = conn.execute("DELETE FROM requests WHERE ts < ?", [before_ts])?;
            if let Some(max_rows) = max_rows {
                let keep_from: Option<i64> = conn
                    .query_row(
                        "SELECT seq FROM requests ORDER BY seq DESC LIMIT 1 OFFSET ?",
                        [max_rows.saturating_sub(1) as i64],
                        |row| row.get(0),
                    )
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })?;
                if let Some(seq) = keep_from {
                    deleted += conn.execute("DELETE FROM requests WHERE seq < ?", [seq])?;
                }
            }
            Ok(deleted as u64)
        })();
        result.map_err(|e| self.error(e))
    }

    fn close(&mut self) {
        self.conn = None;
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.path.display())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::logwriter::record::tests::sample;
    use std::os::unix::fs::PermissionsExt;

    /// The schema (v1 and v2) as Python creates it (only the tests create it from Rust).
    pub(crate) const SCHEMA: &str = "CREATE TABLE requests (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, ts REAL NOT NULL,
        request_id TEXT NOT NULL, door TEXT NOT NULL, key_id TEXT, team TEXT,
        model TEXT NOT NULL, provider TEXT, provider_model TEXT, endpoint TEXT NOT NULL,
        stream INTEGER NOT NULL, status INTEGER NOT NULL, error_type TEXT, error_message TEXT,
        latency_ms REAL NOT NULL, upstream_ms REAL, overhead_ms REAL, ttft_ms REAL,
        prompt_tokens INTEGER, completion_tokens INTEGER, total_tokens INTEGER,
        tokens_counted INTEGER NOT NULL, cost_usd REAL, cache_status TEXT, content TEXT,
        prompt TEXT, completion TEXT, tool_calls TEXT, attempts TEXT)";

    pub(crate) fn with_schema(path: &Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
    }

    pub(crate) fn count(path: &Path) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row("SELECT COUNT(*) FROM requests", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn writes_batches_idempotently_into_a_private_file() {
        let dir = tempdir();
        let path = dir.join("log.db");
        let mut store = SqliteStore::new(path.to_str().unwrap(), Duration::from_secs(1));
        store.connect().unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No table yet: the store is "down" (Python creates the schema), not the data bad.
        let mut records: Vec<LogRecord> = (0..1203).map(sample).collect();
        for (i, r) in records.iter_mut().enumerate() {
            r.id = format!("id-{i}");
        }
        assert!(matches!(store.write(&records), Err(StoreError::Down(_))));
        with_schema(&path);
        store.write(&records).unwrap();
        store.write(&records[..10]).unwrap();
        assert_eq!(count(&path), 1203);
        assert_eq!(store.purge(1_765_000_000.25 + 3.0, None).unwrap(), 3);
        assert_eq!(store.purge(0.0, Some(100)).unwrap(), 1100);
        assert_eq!(count(&path), 100);
    }

    /// A fresh directory, removed when dropped.
    pub(crate) struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn tempdir() -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "logwriter-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}
