//! What the writer needs of a store, and how a store's failures are told apart.

use std::fmt;

use super::record::LogRecord;

/// Why a store call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The store cannot be reached or written right now (timeout, refused, locked, no table):
    /// the batch goes to the spool and is retried.
    Down(String),
    /// The store answered and rejected the data of this batch: the batch is split until the
    /// bad record is alone, and that record goes to the dead-letter file.
    Data(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Down(msg) | Self::Data(msg) => f.write_str(msg),
        }
    }
}

/// A log store backend. Every call has a deadline; none blocks without limit.
pub trait Store: Send {
    /// Open the connection (the schema is created by Python at startup).
    fn connect(&mut self) -> Result<(), StoreError>;
    /// Insert the records; a record whose id is already stored is skipped.
    fn write(&mut self, records: &[LogRecord]) -> Result<(), StoreError>;
    /// Delete records older than `before_ts` and all but the newest `max_rows`.
    fn purge(&mut self, before_ts: f64, max_rows: Option<u64>) -> Result<u64, StoreError>;
    fn close(&mut self);
    /// The store's address without credentials, for log lines.
    fn describe(&self) -> String;
}

/// `url` without its password.
pub fn safe_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_url_hides_the_password() {
        assert_eq!(
            safe_url("postgresql://u:pw@h:5432/db"),
            "postgresql://u:***@h:5432/db"
        );
        assert_eq!(safe_url("/tmp/log.db"), "/tmp/log.db");
    }
}
