//! The request-log writer: records are handed over in one non-blocking call, and a plain Rust
//! thread (no interpreter, no GIL) gives them their content (policy, redaction, secret mask),
//! makes their text safe for the store, and writes them in batches to SQLite or PostgreSQL.
//! While the store is down or hangs, batches go to the on-disk spool and are replayed in order
//! once it answers again; a record no store will take is set aside in a dead-letter file so it
//! never blocks the records behind it. The queue is bounded by bytes; what does not fit is
//! dropped and counted.

pub mod postgres;
pub mod record;
pub mod redact;
pub mod spool;
pub mod sqlite;
pub mod store;
pub mod tls;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use record::{ContentFilter, ContentPolicy, LogRecord};
use redact::SecretMask;
use spool::{DeadLetter, Spool};
use store::{Store, StoreError};

/// A writer that has fallen behind writes up to this many batches' records in one store call.
const CATCH_UP: usize = 4;

/// How a writer is started (`logging.*` in the config).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite:///PATH`, a plain file path, or `postgresql://...`.
    pub store_url: String,
    pub spool_path: PathBuf,
    pub queue_max_bytes: usize,
    /// The writer wakes when this many records wait (or after `max_batch_delay`) and writes
    /// them in one store call; up to 4 times as many when it has fallen behind.
    pub batch_size: usize,
    pub max_batch_delay: Duration,
    /// The client-side deadline of every store call (and PostgreSQL's statement_timeout).
    pub store_timeout: Duration,
    pub retry_interval: Duration,
    pub retention_days: f64,
    pub max_rows: Option<u64>,
    pub purge_interval: Duration,
    pub content: ContentPolicy,
    pub secrets: Vec<String>,
    /// The process's record-id prefix (Python's `calls.PROCESS_PREFIX`).
    pub id_prefix: String,
    /// Run the thread at SCHED_IDLE (Linux), as `writer_priority: idle` does.
    pub idle_priority: bool,
}

impl Settings {
    /// The defaults of `logging.*`, for `store_url` and `spool_path`.
    pub fn new(store_url: &str, spool_path: impl Into<PathBuf>) -> Self {
        Self {
            store_url: store_url.to_owned(),
            spool_path: spool_path.into(),
            queue_max_bytes: 256 << 20,
            batch_size: 500,
            max_batch_delay: Duration::from_millis(25),
            store_timeout: Duration::from_secs(2),
            retry_interval: Duration::from_secs(1),
            retention_days: 30.0,
            max_rows: None,
            purge_interval: Duration::from_secs(300),
            content: ContentPolicy::Full,
            secrets: Vec::new(),
            id_prefix: String::new(),
            idle_priority: false,
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.queue_max_bytes == 0 || self.batch_size == 0 {
            return Err("queue_max_bytes and batch_size must be positive".into());
        }
        if self.max_batch_delay.is_zero() || self.store_timeout.is_zero() {
            return Err("max_batch_delay and store_timeout must be positive".into());
        }
        if self.retention_days.is_nan() || self.retention_days <= 0.0 {
            return Err("retention_days must be positive".into());
        }
        if self.max_rows == Some(0) {
            return Err("max_rows must be positive".into());
        }
        Ok(())
    }

    fn open_store(&self) -> Result<Box<dyn Store>, String> {
        let url = self.store_url.as_str();
        if url.starts_with("postgresql://") || url.starts_with("postgres://") {
            Ok(Box::new(postgres::PostgresStore::new(
                url,
                self.store_timeout,
            )?))
        } else if url.contains("://") && !url.starts_with("sqlite://") {
            Err(format!(
                "unsupported log store {}: use sqlite:///PATH, a file path or postgresql://...",
                store::safe_url(url)
            ))
        } else {
            Ok(Box::new(sqlite::SqliteStore::new(url, self.store_timeout)))
        }
    }
}

/// The writer's counters (`stats()`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records written to the store (spooled ones again when replayed).
    pub written: u64,
    /// Records appended to the spool.
    pub spooled: u64,
    /// Records waiting in this process's spool file.
    pub spool_pending: u64,
    /// Records lost: queue full, writer closed, or the spool unwritable.
    pub dropped: u64,
    /// Records set aside in the dead-letter file.
    pub dead_lettered: u64,
    /// Failed store calls (connect, write, purge).
    pub store_errors: u64,
    pub store_up: bool,
    pub queue_bytes: u64,
    pub queue_len: u64,
    /// Records removed by retention.
    pub purged: u64,
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    spooled: AtomicU64,
    spool_pending: AtomicU64,
    dropped: AtomicU64,
    dead_lettered: AtomicU64,
    store_errors: AtomicU64,
    store_up: AtomicBool,
    purged: AtomicU64,
}

/// One submitted record: its JSON, and the request and answer bodies its content is read from
/// on the writer thread (when the loop left that to it).
struct Pending {
    record: Vec<u8>,
    prompt: Option<Vec<u8>>,
    answer: Option<Vec<u8>>,
}

impl Pending {
    fn bytes(&self) -> usize {
        self.record.len()
            + self.prompt.as_ref().map_or(0, Vec::len)
            + self.answer.as_ref().map_or(0, Vec::len)
    }
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Pending>,
    bytes: usize,
    /// Records accepted, taken by the writer, and done with (stored, spooled or lost).
    accepted: u64,
    taken: u64,
    done: u64,
    /// A flush wants everything accepted up to here: the writer does not wait for a batch.
    flush_to: u64,
    stopping: bool,
    finished: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// The writer waits here for a batch.
    wake: Condvar,
    /// flush() and close() wait here for the writer.
    progress: Condvar,
    counters: Counters,
    max_bytes: usize,
    batch_size: usize,
    max_batch_delay: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn drop_records(&self, n: u64) {
        let before = self.counters.dropped.fetch_add(n, Ordering::Relaxed);
        let after = before + n;
        if before == 0 || before / 1000 != after / 1000 {
            log(&format!("{after} log record(s) dropped so far"));
        }
    }

    /// The next batch (waiting up to the batch delay for it to fill) and whether to stop.
    fn take(&self) -> (Vec<Pending>, bool) {
        let mut q = self.lock();
        if !q.stopping && q.items.len() < self.batch_size && q.taken >= q.flush_to {
            q = self
                .wake
                .wait_timeout(q, self.max_batch_delay)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        // Behind (a backlog after a slow or down store, or a burst): fewer, larger writes.
        let n = q.items.len().min(self.batch_size * CATCH_UP);
        let batch: Vec<Pending> = q.items.drain(..n).collect();
        q.bytes -= batch.iter().map(Pending::bytes).sum::<usize>();
        q.taken += n as u64;
        let stop = q.stopping && q.items.is_empty();
        (batch, stop)
    }

    fn done(&self, n: usize) {
        let mut q = self.lock();
        q.done += n as u64;
        drop(q);
        self.progress.notify_all();
    }
}

fn log(message: &str) {
    eprintln!("llm_proxy._core.logwriter: {message}");
}

/// The handle the event loop holds; the thread does all the I/O.
pub struct LogWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl LogWriter {
    /// Start the writer thread (it connects to the store first thing).
    pub fn start(settings: Settings) -> Result<Self, String> {
        let store = settings.open_store()?;
        Self::with_store(settings, store)
    }

    /// Start the writer thread on a store of the caller's (tests, other backends).
    pub fn with_store(settings: Settings, store: Box<dyn Store>) -> Result<Self, String> {
        settings.check()?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            progress: Condvar::new(),
            counters: Counters::default(),
            max_bytes: settings.queue_max_bytes,
            batch_size: settings.batch_size,
            max_batch_delay: settings.max_batch_delay,
        });
        let now = Instant::now();
        let worker = Worker {
            shared: Arc::clone(&shared),
            store,
            spool: Spool::new(&settings.spool_path),
            dead: DeadLetter::beside(&settings.spool_path),
            filter: ContentFilter::new(
                settings.content,
                SecretMask::new(&settings.secrets),
                &settings.id_prefix,
            ),
            store_up: false,
            retry_at: now,
            purge_at: now,
            orphans_at: now,
            last_error_log: None,
            healthy: true,
            settings,
        };
        let thread = std::thread::Builder::new()
            .name("llm-proxy-logwriter".into())
            .spawn(move || worker.run())
            .map_err(|e| format!("cannot start the log writer thread: {e}"))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queue one record (the msgspec JSON of a `LogRecord`); false if it was dropped (the
    /// queue's bytes are at their bound, or the writer is closed), which is counted.
    pub fn submit(&self, record: &[u8]) -> bool {
        self.submit_with(record, None, None)
    }

    /// `submit`, with the request's prompt bytes and a whole answer's body for the writer to
    /// read the record's prompt and completion from (see `ContentFilter::fill`).
    pub fn submit_with(&self, record: &[u8], prompt: Option<&[u8]>, answer: Option<&[u8]>) -> bool {
        let shared = &*self.shared;
        // Copied before taking the lock the writer also takes.
        let pending = Pending {
            record: record.to_vec(),
            prompt: prompt.map(<[u8]>::to_vec),
            answer: answer.map(<[u8]>::to_vec),
        };
        let size = pending.bytes();
        let mut q = shared.lock();
        if q.stopping || q.bytes + size > shared.max_bytes {
            drop(q);
            shared.drop_records(1);
            return false;
        }
        q.items.push_back(pending);
        q.bytes += size;
        q.accepted += 1;
        let full = q.items.len() == shared.batch_size;
        drop(q);
        if full {
            shared.wake.notify_one();
        }
        true
    }

    /// Wait until every record accepted before this call is stored, spooled or counted as
    /// lost; false if `timeout` passed first.
    pub fn flush(&self, timeout: Duration) -> bool {
        let shared = &*self.shared;
        let deadline = Instant::now() + timeout;
        let mut q = shared.lock();
        let target = q.accepted;
        q.flush_to = q.flush_to.max(target);
        shared.wake.notify_one();
        while q.done < target && !q.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = shared
                .progress
                .wait_timeout(q, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        q.done >= target
    }

    /// Stop taking records, write (or spool) everything queued, replay the spool if the
    /// store answers, and stop the thread. False if `timeout` passed first (the thread then
    /// finishes on its own).
    pub fn close(&self, timeout: Duration) -> bool {
        let shared = &*self.shared;
        let deadline = Instant::now() + timeout;
        let mut q = shared.lock();
        q.stopping = true;
        shared.wake.notify_one();
        while !q.finished {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            q = shared
                .progress
                .wait_timeout(q, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(q);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        true
    }

    pub fn stats(&self) -> Stats {
        let (queue_bytes, queue_len) = {
            let q = self.shared.lock();
            (q.bytes as u64, q.items.len() as u64)
        };
        let c = &self.shared.counters;
        Stats {
            written: c.written.load(Ordering::Relaxed),
            spooled: c.spooled.load(Ordering::Relaxed),
            spool_pending: c.spool_pending.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            dead_lettered: c.dead_lettered.load(Ordering::Relaxed),
            store_errors: c.store_errors.load(Ordering::Relaxed),
            store_up: c.store_up.load(Ordering::Relaxed),
            queue_bytes,
            queue_len,
            purged: c.purged.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Not closed: let the thread write what is queued, without waiting for it here.
        let mut q = self.shared.lock();
        q.stopping = true;
        drop(q);
        self.shared.wake.notify_one();
    }
}

/// The writer thread's state.
struct Worker {
    shared: Arc<Shared>,
    settings: Settings,
    store: Box<dyn Store>,
    spool: Spool,
    dead: DeadLetter,
    filter: ContentFilter,
    store_up: bool,
    retry_at: Instant,
    purge_at: Instant,
    /// When to look for other processes' spool files next (a directory scan).
    orphans_at: Instant,
    last_error_log: Option<Instant>,
    /// A write has succeeded since the last warning (so the next failure is news).
    healthy: bool,
}

impl Worker {
    fn run(mut self) {
        // Even if this thread panics, flush() and close() must not wait for it in vain.
        let _finished = Finished(Arc::clone(&self.shared));
        if self.settings.idle_priority {
            set_idle_priority();
        }
        self.connect();
        loop {
            let (batch, stop) = self.shared.take();
            let n = batch.len();
            if n > 0 {
                self.persist(batch);
                self.shared.done(n);
            }
            self.maintain();
            if stop {
                break;
            }
        }
        self.finish();
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    fn connect(&mut self) {
        match self.store.connect() {
            Ok(()) => {
                self.store_up = true;
                self.counters().store_up.store(true, Ordering::Relaxed);
            }
            Err(e) => self.down(&e),
        }
    }

    fn down(&mut self, err: &StoreError) {
        let c = self.counters();
        c.store_errors.fetch_add(1, Ordering::Relaxed);
        c.store_up.store(false, Ordering::Relaxed);
        let now = Instant::now();
        let quiet = self
            .last_error_log
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60));
        if self.healthy || !quiet {
            log(&format!(
                "log store unavailable (records are spooled and retried): {err}"
            ));
            self.last_error_log = Some(now);
        }
        self.healthy = false;
        self.store_up = false;
        self.retry_at = now + self.settings.retry_interval;
        self.store.close();
    }

    fn retry_if_due(&mut self) {
        if !self.store_up && Instant::now() >= self.retry_at {
            self.connect();
        }
    }

    fn persist(&mut self, batch: Vec<Pending>) {
        let mut records = Vec::with_capacity(batch.len());
        for pending in batch {
            match LogRecord::decode(&pending.record) {
                Ok(mut record) => {
                    let (prompt, answer) = (pending.prompt.as_deref(), pending.answer.as_deref());
                    self.filter.fill(&mut record, prompt, answer);
                    self.filter.prepare(&mut record);
                    records.push(record);
                }
                Err(e) => self.dead_letter(&pending.record, &format!("undecodable record: {e}")),
            }
        }
        if records.is_empty() {
            return;
        }
        self.retry_if_due();
        if self.store_up && self.spool.pending > 0 {
            self.replay(); // older records first
        }
        if self.store_up && self.spool.pending == 0 {
            match self.write(records) {
                Ok(()) => return,
                Err(rest) => records = rest,
            }
        }
        self.spool_records(&records);
    }

    /// Write `records`, splitting a batch the store rejects until the bad record is alone
    /// and setting that one aside. On a store failure, the records not yet written.
    fn write(&mut self, records: Vec<LogRecord>) -> Result<(), Vec<LogRecord>> {
        let mut work: VecDeque<Vec<LogRecord>> = VecDeque::from([records]);
        while let Some(mut chunk) = work.pop_front() {
            match self.store.write(&chunk) {
                Ok(()) => {
                    self.healthy = true;
                    let c = self.counters();
                    c.written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                Err(StoreError::Data(msg)) if chunk.len() == 1 => {
                    self.dead_letter(&chunk[0].encode(), &msg);
                }
                Err(StoreError::Data(_)) => {
                    let right = chunk.split_off(chunk.len() / 2);
                    work.push_front(right);
                    work.push_front(chunk);
                }
                Err(down @ StoreError::Down(_)) => {
                    self.down(&down);
                    let mut rest = chunk;
                    rest.extend(work.into_iter().flatten());
                    return Err(rest);
                }
            }
        }
        Ok(())
    }

    fn dead_letter(&mut self, line: &[u8], error: &str) {
        let count = self
            .counters()
            .dead_lettered
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        let stored = self.dead.append(line, error);
        if count <= 10 || count % 1000 == 0 || stored.is_err() {
            let place = match &stored {
                Ok(()) => format!("set aside in {}", self.dead.path.display()),
                Err(e) => format!(
                    "and cannot be set aside in {}: {e}",
                    self.dead.path.display()
                ),
            };
            log(&format!(
                "a log record the store rejects was {place} ({count} so far): {error}"
            ));
        }
    }

    fn spool_records(&mut self, records: &[LogRecord]) {
        match self.spool.append(records) {
            Ok(()) => {
                let c = self.counters();
                c.spooled.fetch_add(records.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                log(&format!(
                    "cannot write the log spool at {}; {} record(s) lost: {e}",
                    self.spool.path().display(),
                    records.len()
                ));
                self.shared.drop_records(records.len() as u64);
            }
        }
        self.note_spool();
    }

    fn note_spool(&self) {
        let c = self.counters();
        c.spool_pending
            .store(self.spool.pending as u64, Ordering::Relaxed);
    }

    /// Write every spooled record (ours, then orphans') while the store takes them.
    fn replay(&mut self) {
        let mut spool = std::mem::replace(&mut self.spool, Spool::new(""));
        let mut bad: Vec<(Vec<u8>, String)> = Vec::new();
        let batch = self.settings.batch_size;
        let result = spool.replay(
            batch,
            &mut |chunk| self.write(chunk).is_ok(),
            &mut |raw, why| bad.push((raw.to_vec(), format!("unreadable spool line: {why}"))),
        );
        self.spool = spool;
        for (raw, why) in bad {
            self.dead_letter(&raw, &why);
        }
        match result {
            Ok(replay) if replay.done > 0 => log(&format!(
                "wrote {} spooled log record(s) to the store",
                replay.done
            )),
            Ok(_) => {}
            Err(e) => log(&format!(
                "cannot replay the log spool at {}: {e}",
                self.spool.path().display()
            )),
        }
        self.note_spool();
    }

    /// Replay the spool once the store is back, and enforce retention.
    fn maintain(&mut self) {
        let now = Instant::now();
        let look = now >= self.orphans_at;
        if look {
            self.orphans_at = now + self.settings.retry_interval;
        }
        if self.spool.has_work(look) {
            self.retry_if_due();
            if self.store_up {
                self.replay();
            }
        }
        if self.store_up && now >= self.purge_at {
            self.purge_at = now + self.settings.purge_interval;
            let unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let cutoff = unix - self.settings.retention_days * 86400.0;
            match self.store.purge(cutoff, self.settings.max_rows) {
                Ok(0) => {}
                Ok(n) => {
                    self.counters().purged.fetch_add(n, Ordering::Relaxed);
                    log(&format!("retention: purged {n} log record(s)"));
                }
                Err(e) => self.down(&e),
            }
        }
    }

    fn finish(&mut self) {
        self.orphans_at = Instant::now();
        self.maintain();
        self.spool.close();
        self.store.close();
    }
}

/// Marks the writer finished when its thread ends, however it ends.
struct Finished(Arc<Shared>);

impl Drop for Finished {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.finished = true;
        q.stopping = true;
        drop(q);
        self.0.progress.notify_all();
    }
}

#[cfg(target_os = "linux")]
fn set_idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; the parameter is valid for SCHED_IDLE.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        log(&format!(
            "log writer stays at normal priority: {}",
            std::io::Error::last_os_error()
        ));
    }
}

#[cfg(not(target_os = "linux"))]
fn set_idle_priority() {}

#[cfg(test)]
mod tests;
