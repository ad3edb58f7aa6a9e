//! PostgreSQL log store: one multi-row `INSERT ... SELECT FROM unnest(...)` per batch on a
//! tokio-postgres connection driven by a small current-thread runtime owned by the writer
//! thread. Every call (connect, statement_timeout, insert, purge) runs under a client-side
//! deadline, so a store that holds the connection open and never answers cannot stall the
//! writer: on expiry the connection is dropped and the batch is spooled.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls, Statement};

use tokio_postgres_rustls::MakeRustlsConnect;

use super::record::{LogRecord, COLUMNS};
use super::store::{safe_url, Store, StoreError};
use super::tls;

/// The element type of each column's array, in COLUMNS order.
const ARRAY_TYPES: [&str; 29] = [
    "text", "float8", "text", "text", "text", "text", "text", "text", "text", "text", "bool",
    "int4", "text", "text", "float8", "float8", "float8", "float8", "int4", "int4", "int4", "bool",
    "float8", "text", "text", "text", "text", "text", "text",
];

fn insert_sql() -> String {
    let arrays: Vec<String> = ARRAY_TYPES
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", i + 1))
        .collect();
    format!(
        "INSERT INTO requests ({}) SELECT * FROM unnest({}) ON CONFLICT (id) DO NOTHING",
        COLUMNS.join(", "),
        arrays.join(", ")
    )
}

/// PostgreSQL INTEGER is 32-bit: larger values are clamped rather than failing the batch.
fn int4(v: i64) -> i32 {
    v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

struct Connected {
    client: Client,
    insert: Statement,
    driver: JoinHandle<()>,
}

pub struct PostgresStore {
    /// As given (for log lines, without its password).
    url: String,
    /// As tokio-postgres reads it (sslmode/sslrootcert taken out; see tls.rs).
    tokio_url: String,
    tls: Option<MakeRustlsConnect>,
    timeout: Duration,
    runtime: Runtime,
    conn: Option<Connected>,
}

impl PostgresStore {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the PostgreSQL writer runtime: {e}"))?;
        let bad = |e: String| format!("PostgreSQL URL {}: {e}", safe_url(url));
        let (tokio_url, tls) = tls::split_url(url).map_err(bad)?;
        Config::from_str(&tokio_url).map_err(|e| bad(e.to_string()))?;
        let tls = tls::connector(&tls).map_err(bad)?;
        Ok(Self {
            url: url.to_owned(),
            tokio_url,
            tls,
            timeout,
            runtime,
            conn: None,
        })
    }

    fn classify(&self, err: tokio_postgres::Error) -> StoreError {
        let msg = format!("postgres: {err}");
        let data = err.as_db_error().is_some_and(|db| {
            let code = db.code().code();
            // data exception, integrity violation, program limit (a row too large)
            code.starts_with("22") || code.starts_with("23") || code.starts_with("54")
        });
        if data {
            StoreError::Data(msg)
        } else {
            StoreError::Down(msg)
        }
    }

    /// The result of a store call, or `Down` (and the connection dropped) on a broken
    /// connection or an expired deadline.
    fn finish<T>(
        &mut self,
        what: &str,
        result: Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        let err = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => self.classify(e),
            Err(_) => StoreError::Down(format!(
                "postgres: {what} got no answer within {:.3}s",
                self.timeout.as_secs_f64()
            )),
        };
        if let StoreError::Down(_) = err {
            self.close();
        }
        Err(err)
    }

    fn ensure_connected(&mut self) -> Result<(), StoreError> {
        if self.conn.is_none() {
            self.connect()?;
        }
        Ok(())
    }
}

/// Run `work` on `runtime`, giving up after `timeout`.
fn run<T>(
    runtime: &Runtime,
    timeout: Duration,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<Result<T, tokio_postgres::Error>, tokio::time::error::Elapsed> {
    runtime.block_on(async { tokio::time::timeout(timeout, work).await })
}

impl Store for PostgresStore {
    fn connect(&mut self) -> Result<(), StoreError> {
        self.close();
        let mut config =
            Config::from_str(&self.tokio_url).map_err(|e| StoreError::Down(e.to_string()))?;
        config.connect_timeout(self.timeout);
        let timeout_ms = self.timeout.as_millis().max(1);
        let tls = self.tls.clone();
        let connecting = run(&self.runtime, self.timeout, async move {
            Ok(match tls {
                None => {
                    let (client, connection) = config.connect(NoTls).await?;
                    let driver = tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    (client, driver)
                }
                Some(tls) => {
                    let (client, connection) = config.connect(tls).await?;
                    let driver = tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    (client, driver)
                }
            })
        });
        let (client, driver) = self.finish("connect", connecting)?;
        // Not as a connect option: that would replace `options` given in the URL.
        let setup = async {
            client
                .batch_execute(&format!("SET statement_timeout = {timeout_ms}"))
                .await?;
            client.prepare(&insert_sql()).await
        };
        let setup = run(&self.runtime, self.timeout, setup);
        let insert = match self.finish("setup", setup) {
            Ok(insert) => insert,
            Err(e) => {
                driver.abort();
                return Err(match e {
                    StoreError::Data(msg) => StoreError::Down(msg),
                    down => down,
                });
            }
        };
        self.conn = Some(Connected {
            client,
            insert,
            driver,
        });
        Ok(())
    }

    fn write(&mut self, records: &[LogRecord]) -> Result<(), StoreError> {
        self.ensure_connected()?;
        let conn = self.conn.as_ref().expect("connected");
        let text = |f: fn(&LogRecord) -> &str| records.iter().map(f).collect::<Vec<&str>>();
        let opt = |f: fn(&LogRecord) -> Option<&str>| records.iter().map(f).collect::<Vec<_>>();
        let id = text(|r| &r.id);
        let ts: Vec<f64> = records.iter().map(|r| r.ts).collect();
        let request_id = text(|r| &r.request_id);
        let door = text(|r| &r.door);
        let key_id = opt(|r| r.key_id.as_deref());
        let team = opt(|r| r.team.as_deref());
        let model = text(|r| &r.model);
        let provider = opt(|r| r.provider.as_deref());
        let provider_model = opt(|r| r.provider_model.as_deref());
        let endpoint = text(|r| &r.endpoint);
        let stream: Vec<bool> = records.iter().map(|r| r.stream).collect();
        let status: Vec<i32> = records.iter().map(|r| int4(r.status)).collect();
        let error_type = opt(|r| r.error_type.as_deref());
        let error_message = opt(|r| r.error_message.as_deref());
        let latency: Vec<f64> = records.iter().map(|r| r.latency_ms).collect();
        let upstream: Vec<f64> = records.iter().map(|r| r.upstream_ms).collect();
        let overhead: Vec<f64> = records.iter().map(|r| r.overhead_ms).collect();
        let ttft: Vec<Option<f64>> = records.iter().map(|r| r.ttft_ms).collect();
        let tokens = |f: fn(&LogRecord) -> Option<i64>| {
            records.iter().map(|r| f(r).map(int4)).collect::<Vec<_>>()
        };
        let prompt_tokens = tokens(|r| r.prompt_tokens);
        let completion_tokens = tokens(|r| r.completion_tokens);
        let total_tokens = tokens(|r| r.total_tokens);
        let counted: Vec<bool> = records.iter().map(|r| r.tokens_counted).collect();
        let cost: Vec<Option<f64>> = records.iter().map(|r| r.cost_usd).collect();
        let cache_status = text(|r| &r.cache_status);
        let content = text(|r| &r.content);
        let prompt = opt(|r| r.prompt.as_deref());
        let completion = opt(|r| r.completion.as_deref());
        let tool_calls = opt(|r| r.tool_calls.as_deref());
        let attempts = opt(|r| r.attempts.as_deref());
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 29] = [
            &id,
            &ts,
            &request_id,
            &door,
            &key_id,
            &team,
            &model,
            &provider,
            &provider_model,
            &endpoint,
            &stream,
            &status,
            &error_type,
            &error_message,
            &latency,
            &upstream,
            &overhead,
            &ttft,
            &prompt_tokens,
            &completion_tokens,
            &total_tokens,
            &counted,
            &cost,
            &cache_status,
            &content,
            &prompt,
            &completion,
            &tool_calls,
            &attempts,
        ];
        let result = run(&self.runtime, self.timeout, async {
            conn.client.execute(&conn.insert, &params).await.map(|_| ())
        });
        self.finish("insert", result)
    }

    fn purge(&mut self, before_ts: f64, max_rows: Option<u64>) -> Result<u64, StoreError> {
        self.ensure_connected()?;
        let client = &self.conn.as_ref().expect("connected").client;
        let result = run(&self.runtime, self.timeout, async move {
            let mut deleted = client
                .execute("DELETE FROM requests WHERE ts < $1", &[&before_ts])
                .await?;
            if let Some(max_rows) = max_rows {
                let offset = max_rows.saturating_sub(1) as i64;
                let row = client
                    .query_opt(
                        "SELECT seq FROM requests ORDER BY seq DESC LIMIT 1 OFFSET $1",
                        &[&offset],
                    )
                    .await?;
                if let Some(row) = row {
                    let seq: i64 = row.get(0);
                    deleted += client
                        .execute("DELETE FROM requests WHERE seq < $1", &[&seq])
                        .await?;
                }
            }
            Ok(deleted)
        });
        self.finish("purge", result)
    }

    fn close(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.driver.abort();
        }
    }

    fn describe(&self) -> String {
        format!("postgres {}", safe_url(&self.url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_names_every_column_once_with_its_array_type() {
        let sql = insert_sql();
        assert!(sql.contains("$29::text[]"));
        assert!(sql.contains("$2::float8[]"));
        assert!(!sql.contains("$30"));
        assert_eq!(int4(1 << 40), i32::MAX);
    }

    #[test]
    fn bad_tls_settings_are_refused_at_start() {
        let second = Duration::from_secs(1);
        let url = "postgresql://u@h/db?sslmode=verify-full&sslrootcert=/no/ca.pem";
        assert!(PostgresStore::new(url, second)
            .err()
            .unwrap()
            .contains("/no/ca.pem"));
        assert!(PostgresStore::new("postgresql://u@h/db?sslmode=often", second).is_err());
        assert!(PostgresStore::new("postgresql://u:pw@h/db?sslmode=require", second).is_ok());
    }

    #[test]
    fn a_refused_store_is_down_within_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("postgresql://u@127.0.0.1:{port}/db");
        let mut store = PostgresStore::new(&url, Duration::from_millis(300)).unwrap();
        assert!(matches!(store.connect(), Err(StoreError::Down(_))));
    }

    #[test]
    fn a_hung_store_is_down_within_the_deadline() {
        // Accepts the connection and never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("postgresql://u@127.0.0.1:{port}/db");
        let mut store = PostgresStore::new(&url, Duration::from_millis(300)).unwrap();
        let started = std::time::Instant::now();
        let err = store.connect().unwrap_err();
        assert!(matches!(err, StoreError::Down(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(listener);
    }
}
