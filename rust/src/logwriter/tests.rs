//! The writer end to end with a store the tests control: batching, the byte-bounded queue,
//! dead-lettering, the spool while the store is down, and close.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::record::tests::sample;
use super::record::LogRecord;
use super::sqlite::tests::{count, tempdir, with_schema};
use super::store::{Store, StoreError};
use super::{LogWriter, Settings};

#[derive(Default)]
struct Fake {
    rows: Vec<LogRecord>,
    /// Sizes of the batches written.
    calls: Vec<usize>,
    down: bool,
}

#[derive(Clone, Default)]
struct FakeStore(Arc<Mutex<Fake>>);

impl FakeStore {
    fn set_down(&self, down: bool) {
        self.0.lock().unwrap().down = down;
    }
    fn ids(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .rows
            .iter()
            .map(|r| r.id.clone())
            .collect()
    }
}

impl Store for FakeStore {
    fn connect(&mut self) -> Result<(), StoreError> {
        if self.0.lock().unwrap().down {
            return Err(StoreError::Down("refused".into()));
        }
        Ok(())
    }
    fn write(&mut self, records: &[LogRecord]) -> Result<(), StoreError> {
        let mut fake = self.0.lock().unwrap();
        if fake.down {
            return Err(StoreError::Down("refused".into()));
        }
        fake.calls.push(records.len());
        // Like PostgreSQL's text: a record with a NUL makes the whole batch fail; so does
        // a model the "store" finds too long.
        if records
            .iter()
            .any(|r| r.model.contains('\0') || r.model.len() > 100)
        {
            return Err(StoreError::Data("text fields cannot contain that".into()));
        }
        for r in records {
            if !fake.rows.iter().any(|x| x.id == r.id) {
                fake.rows.push(r.clone());
            }
        }
        Ok(())
    }
    fn purge(&mut self, _: f64, _: Option<u64>) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn close(&mut self) {}
    fn describe(&self) -> String {
        "fake".into()
    }
}

fn settings(dir: &std::path::Path) -> Settings {
    let mut s = Settings::new("fake", dir.join("log.spool"));
    s.batch_size = 100;
    s.max_batch_delay = Duration::from_millis(10);
    s.retry_interval = Duration::from_millis(20);
    s.id_prefix = "p".into();
    s
}

fn raw(i: usize) -> Vec<u8> {
    sample(i).encode()
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn batches_are_at_most_four_batch_sizes_and_every_record_arrives_in_order() {
    let dir = tempdir();
    let store = FakeStore::default();
    let writer = LogWriter::with_store(settings(&dir), Box::new(store.clone())).unwrap();
    for i in 0..1050 {
        assert!(writer.submit(&raw(i)));
    }
    assert!(writer.flush(WAIT));
    let stats = writer.stats();
    assert_eq!(
        (stats.written, stats.queue_len, stats.queue_bytes),
        (1050, 0, 0)
    );
    assert!(writer.close(WAIT));
    let fake = store.0.lock().unwrap();
    assert!(fake.calls.iter().all(|&n| n <= 400), "{:?}", fake.calls);
    let requests: Vec<&str> = fake.rows.iter().map(|r| r.request_id.as_str()).collect();
    let want: Vec<String> = (0..1050).map(|i| format!("req-{i}")).collect();
    assert_eq!(requests, want);
}

#[test]
fn the_queue_is_bounded_by_bytes_and_drops_are_counted() {
    let dir = tempdir();
    let store = FakeStore::default();
    store.set_down(true);
    let mut s = settings(&dir);
    let one = raw(0).len();
    s.queue_max_bytes = one * 3 + one / 2;
    s.max_batch_delay = Duration::from_secs(5); // the writer does not take them meanwhile
    s.batch_size = 1000;
    let writer = LogWriter::with_store(s, Box::new(store.clone())).unwrap();
    let accepted: Vec<bool> = (0..5).map(|i| writer.submit(&raw(i))).collect();
    assert_eq!(accepted, [true, true, true, false, false]);
    let stats = writer.stats();
    assert_eq!(stats.dropped, 2);
    assert!(stats.queue_bytes <= (one * 3 + one / 2) as u64);
    assert!(writer.close(WAIT));
    assert!(!writer.submit(&raw(9)), "a closed writer takes nothing");
    assert_eq!(writer.stats().dropped, 3);
    assert_eq!(writer.stats().spooled, 3);
}

#[test]
fn a_bad_record_is_isolated_and_dead_lettered_without_blocking_the_rest() {
    let dir = tempdir();
    let store = FakeStore::default();
    let writer = LogWriter::with_store(settings(&dir), Box::new(store.clone())).unwrap();
    for i in 0..50 {
        let mut r = sample(i);
        if i == 17 {
            r.model = "m".repeat(200); // the store rejects it whatever its text
        }
        if i == 30 {
            r.model = "gpt\0x".into(); // made safe before the store sees it
        }
        assert!(writer.submit(&r.encode()));
    }
    assert!(writer.submit(b"{not a record"));
    assert!(writer.flush(WAIT));
    let stats = writer.stats();
    assert_eq!((stats.written, stats.dead_lettered), (49, 2));
    let fake = store.0.lock().unwrap();
    assert!(fake.rows.iter().any(|r| r.model == "gpt\\u0000x"));
    // Split in halves down to the bad record: log2(50) + a few calls, not one per record.
    assert!(fake.calls.len() < 20, "{:?}", fake.calls);
    drop(fake);
    let dead = std::fs::read_to_string(dir.join("log.spool-dead-letter.jsonl")).unwrap();
    assert_eq!(dead.lines().count(), 2);
    assert!(dead.contains("req-17"));
    assert!(writer.close(WAIT));
}

#[test]
fn records_spooled_while_the_store_is_down_arrive_in_order_when_it_is_back() {
    let dir = tempdir();
    let store = FakeStore::default();
    store.set_down(true);
    let writer = LogWriter::with_store(settings(&dir), Box::new(store.clone())).unwrap();
    for i in 0..300 {
        writer.submit(&raw(i));
    }
    assert!(writer.flush(WAIT));
    let stats = writer.stats();
    assert_eq!(
        (stats.spooled, stats.written, stats.store_up),
        (300, 0, false)
    );
    assert!(stats.store_errors >= 1);
    store.set_down(false);
    for i in 300..400 {
        writer.submit(&raw(i));
    }
    assert!(writer.flush(WAIT));
    let deadline = std::time::Instant::now() + WAIT;
    while writer.stats().written < 400 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(writer.close(WAIT));
    let requests: Vec<String> = store
        .0
        .lock()
        .unwrap()
        .rows
        .iter()
        .map(|r| r.request_id.clone())
        .collect();
    let want: Vec<String> = (0..400).map(|i| format!("req-{i}")).collect();
    assert_eq!(requests, want);
    assert_eq!(store.ids().len(), 400);
    assert!(
        !dir.join("log.spool").exists(),
        "an empty spool is removed at close"
    );
}

#[test]
fn close_spools_what_a_down_store_cannot_take_and_the_next_writer_replays_it() {
    let dir = tempdir();
    let store = FakeStore::default();
    store.set_down(true);
    let writer = LogWriter::with_store(settings(&dir), Box::new(store.clone())).unwrap();
    for i in 0..120 {
        writer.submit(&raw(i));
    }
    assert!(writer.close(WAIT));
    assert_eq!(writer.stats().spooled, 120);
    assert!(dir.join("log.spool").exists());

    let store = FakeStore::default();
    let writer = LogWriter::with_store(settings(&dir), Box::new(store.clone())).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while writer.stats().written < 120 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(writer.close(WAIT));
    assert_eq!(store.ids().len(), 120);
}

#[test]
fn sqlite_end_to_end() {
    let dir = tempdir();
    let db = dir.join("log.db");
    with_schema(&db);
    let mut s = settings(&dir);
    s.store_url = format!("sqlite:///{}", db.display()); // sqlite:////abs/path
    s.retention_days = 36500.0; // the samples are from 2025
    let writer = LogWriter::start(s).unwrap();
    for i in 0..2500 {
        writer.submit(&raw(i));
    }
    assert!(writer.close(WAIT));
    assert_eq!(count(&db), 2500);
    assert_eq!(writer.stats().written, 2500);

    // Retention, at start: the samples are older than 30 days.
    let mut s = settings(&dir);
    s.store_url = db.display().to_string(); // a plain path works too
    s.max_rows = Some(2000);
    let writer = LogWriter::start(s).unwrap();
    assert!(writer.flush(WAIT));
    assert!(writer.close(WAIT));
    assert_eq!(writer.stats().purged, 2500);
    assert_eq!(count(&db), 0);
}
