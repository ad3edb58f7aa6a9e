//! The local spool (records the store could not take yet, as JSON lines, replayed in order
//! later) and the dead-letter file (records no store would take, set aside for a person).
//!
//! The spool's format and locking are those of the Python spool it replaces, so spool files
//! an older process left behind are replayed: each process appends to a file it holds an
//! exclusive `flock` on (`path`, or `path.<pid>` when another live process holds that one);
//! a spool file nobody holds belongs to a process that is gone, and whoever can lock it
//! replays it. Files are created 0600 (they hold prompts).

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::record::LogRecord;

fn open_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

/// Open and exclusively lock `path` (created if missing), or None if someone holds it.
fn lock(path: &Path) -> io::Result<Option<File>> {
    loop {
        let file = open_private(path)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(err);
        }
        // The previous holder may have replayed and unlinked it between open and lock.
        match std::fs::metadata(path) {
            Ok(meta) if meta.ino() == file.metadata()?.ino() => return Ok(Some(file)),
            Ok(_) | Err(_) => continue,
        }
    }
}

/// One line of a spool file: a record, or a line no record could be read from.
pub enum Line {
    Record(Box<LogRecord>),
    Bad(Vec<u8>, String),
}

/// Reads `file` from `offset`: (line, the offset just after it).
fn read_lines(file: &mut File, offset: u64) -> io::Result<Vec<(Line, u64)>> {
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(&*file);
    let mut lines = Vec::new();
    let mut pos = offset;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        pos += n as u64;
        let text = buf.trim_ascii();
        if text.is_empty() {
            continue;
        }
        let line = match LogRecord::decode(text) {
            Ok(mut record) => {
                record.sanitize(); // older spools may hold what a store cannot
                Line::Record(Box::new(record))
            }
            Err(e) => Line::Bad(text.to_vec(), e.to_string()),
        };
        lines.push((line, pos));
    }
    Ok(lines)
}

/// What replaying did: records handed to `write`, and whether it stopped early.
pub struct Replay {
    pub done: usize,
    pub complete: bool,
}

/// This process's spool file, plus the replay of orphaned ones.
pub struct Spool {
    path: PathBuf,
    file: Option<File>,
    own_path: Option<PathBuf>,
    /// Where the part of our file not yet written to the store starts.
    replayed_to: u64,
    pub pending: usize,
}

impl Spool {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            path: std::path::absolute(&path).unwrap_or(path),
            file: None,
            own_path: None,
            replayed_to: 0,
            pending: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let pid_path = PathBuf::from(format!("{}.{}", self.path.display(), std::process::id()));
            for candidate in [self.path.clone(), pid_path] {
                if let Some(mut file) = lock(&candidate)? {
                    let lines = read_lines(&mut file, 0)?;
                    self.pending = lines.len();
                    self.replayed_to = 0;
                    self.file = Some(file);
                    self.own_path = Some(candidate);
                    break;
                }
            }
            if self.file.is_none() {
                return Err(io::Error::other(format!(
                    "cannot lock a spool file at {}",
                    self.path.display()
                )));
            }
        }
        Ok(self.file.as_mut().expect("opened"))
    }

    /// Append `records` (and fsync): they survive a crash from here on.
    pub fn append(&mut self, records: &[LogRecord]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(records.len() * 512);
        for r in records {
            buf.extend_from_slice(&r.encode());
            buf.push(b'\n');
        }
        let file = self.open()?;
        file.write_all(&buf)?;
        file.sync_data()?;
        self.pending += records.len();
        Ok(())
    }

    /// Whether anything waits: ours (known) or, if `look` is set, orphans (a directory scan).
    pub fn has_work(&self, look: bool) -> bool {
        self.pending > 0 || (look && self.has_orphans())
    }

    pub fn has_orphans(&self) -> bool {
        self.paths().iter().any(|p| {
            Some(p) != self.own_path.as_ref()
                && std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false)
        })
    }

    /// Every spool file: `path` and `path.*`, sorted (as Python's glob gave them).
    fn paths(&self) -> Vec<PathBuf> {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return Vec::new();
        };
        let name = name.to_string_lossy().into_owned();
        let prefix = format!("{name}.");
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n == name || n.starts_with(&prefix)
                    })
                    .map(|e| dir.join(e.file_name()))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// Hand every spooled record, in order and in chunks of `batch`, to `write` (ours first,
    /// then orphans'); stop at the first chunk `write` could not store (returns false). Lines
    /// no record can be read from go to `bad`.
    pub fn replay(
        &mut self,
        batch: usize,
        write: &mut dyn FnMut(Vec<LogRecord>) -> bool,
        bad: &mut dyn FnMut(&[u8], &str),
    ) -> io::Result<Replay> {
        let mut done = 0;
        if self.pending > 0 {
            let offset = self.replayed_to;
            let file = self.open()?;
            let lines = read_lines(file, offset)?;
            let (complete, n, to) = replay_lines(lines, batch, write, bad);
            done += n;
            self.replayed_to = to.unwrap_or(self.replayed_to);
            self.pending = self.pending.saturating_sub(n);
            if !complete {
                return Ok(Replay {
                    done,
                    complete: false,
                });
            }
            let file = self.file.as_mut().expect("opened");
            file.set_len(0)?;
            file.sync_data()?;
            self.replayed_to = 0;
            self.pending = 0;
        }
        for path in self.paths() {
            if Some(&path) == self.own_path.as_ref() {
                continue;
            }
            let Some(mut file) = lock(&path)? else {
                continue;
            };
            let lines = read_lines(&mut file, 0)?;
            let (complete, n, _) = replay_lines(lines, batch, write, bad);
            done += n;
            if !complete {
                return Ok(Replay {
                    done,
                    complete: false,
                });
            }
            std::fs::remove_file(&path)?;
        }
        Ok(Replay {
            done,
            complete: true,
        })
    }

    /// Close our file; remove it if nothing waits in it (a clean shutdown leaves no spool).
    pub fn close(&mut self) {
        if let Some(file) = self.file.take() {
            if self.pending == 0 {
                if let Some(own) = &self.own_path {
                    let _ = std::fs::remove_file(own);
                }
            }
            drop(file);
        }
    }
}

/// (all written, records handed over, offset after the last chunk written)
fn replay_lines(
    lines: Vec<(Line, u64)>,
    batch: usize,
    write: &mut dyn FnMut(Vec<LogRecord>) -> bool,
    bad: &mut dyn FnMut(&[u8], &str),
) -> (bool, usize, Option<u64>) {
    let mut chunk = Vec::with_capacity(batch);
    let mut done = 0;
    let mut to = None;
    let total = lines.len();
    for (i, (line, end)) in lines.into_iter().enumerate() {
        match line {
            Line::Record(r) => chunk.push(*r),
            Line::Bad(raw, why) => bad(&raw, &why),
        }
        if chunk.len() >= batch || i + 1 == total {
            let n = chunk.len();
            if n > 0 && !write(std::mem::replace(&mut chunk, Vec::with_capacity(batch))) {
                return (false, done, to);
            }
            done += n;
            to = Some(end);
        }
    }
    (true, done, to)
}

/// Records no store would take, as JSON lines, beside the spool (`<spool>-dead-letter.jsonl`:
/// not a name the spool's `path.*` replay would pick up).
pub struct DeadLetter {
    pub path: PathBuf,
}

impl DeadLetter {
    pub fn beside(spool: &Path) -> Self {
        Self {
            path: PathBuf::from(format!("{}-dead-letter.jsonl", spool.display())),
        }
    }

    /// Append one line: the record (or the bytes no record was read from) and why.
    pub fn append(&self, line: &[u8], error: &str) -> io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let entry = match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(record) => serde_json::json!({"error": error, "record": record}),
            Err(_) => serde_json::json!({
                "error": error,
                "raw": String::from_utf8_lossy(line),
            }),
        };
        let mut buf = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        buf.push(b'\n');
        let mut file = open_private(&self.path)?;
        file.write_all(&buf)?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logwriter::record::tests::sample;
    use crate::logwriter::sqlite::tests::tempdir;
    use std::os::unix::fs::PermissionsExt;

    fn records(range: std::ops::Range<usize>) -> Vec<LogRecord> {
        range
            .map(|i| {
                let mut r = sample(i);
                r.id = format!("id-{i:04}");
                r
            })
            .collect()
    }

    #[test]
    fn spooled_records_replay_in_order_and_resume_where_a_failure_stopped() {
        let dir = tempdir();
        let mut spool = Spool::new(dir.join("log.spool"));
        spool.append(&records(0..5)).unwrap();
        spool.append(&records(5..12)).unwrap();
        assert_eq!(spool.pending, 12);
        let mode = std::fs::metadata(dir.join("log.spool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        // The store takes the first chunk of 4, then fails.
        let mut got: Vec<String> = Vec::new();
        let mut calls = 0;
        let mut write = |chunk: Vec<LogRecord>| {
            calls += 1;
            if calls > 1 {
                return false;
            }
            got.extend(chunk.into_iter().map(|r| r.id));
            true
        };
        let r = spool.replay(4, &mut write, &mut |_, _| panic!()).unwrap();
        assert!(!r.complete);
        assert_eq!(r.done, 4);
        assert_eq!(spool.pending, 8);

        let mut write = |chunk: Vec<LogRecord>| {
            got.extend(chunk.into_iter().map(|r| r.id));
            true
        };
        let r = spool.replay(4, &mut write, &mut |_, _| panic!()).unwrap();
        assert!(r.complete);
        assert_eq!(r.done, 8);
        let want: Vec<String> = (0..12).map(|i| format!("id-{i:04}")).collect();
        assert_eq!(got, want);
        assert_eq!(spool.pending, 0);
        spool.close();
        assert!(!dir.join("log.spool").exists());
    }

    #[test]
    fn orphans_are_replayed_and_bad_lines_set_aside() {
        let dir = tempdir();
        let orphan = dir.join("log.spool.4242");
        let mut text = Vec::new();
        for r in records(0..3) {
            text.extend(r.encode());
            text.push(b'\n');
        }
        text.extend(b"{\"torn\": \n");
        std::fs::write(&orphan, &text).unwrap();

        let mut spool = Spool::new(dir.join("log.spool"));
        assert!(spool.has_work(true));
        let mut got = 0;
        let mut bad = Vec::new();
        let r = spool
            .replay(
                10,
                &mut |chunk| {
                    got += chunk.len();
                    true
                },
                &mut |raw, _| bad.push(raw.to_vec()),
            )
            .unwrap();
        assert!(r.complete);
        assert_eq!(got, 3);
        assert_eq!(bad, vec![b"{\"torn\":".to_vec()]);
        assert!(!orphan.exists());
    }

    #[test]
    fn a_second_process_file_is_not_taken_while_locked() {
        let dir = tempdir();
        let mut first = Spool::new(dir.join("log.spool"));
        first.append(&records(0..1)).unwrap();
        // Same process, second open file description: flock conflicts like another process.
        let mut second = Spool::new(dir.join("log.spool"));
        second.append(&records(1..2)).unwrap();
        assert_eq!(
            second.own_path.as_deref(),
            Some(Path::new(&format!(
                "{}.{}",
                dir.join("log.spool").display(),
                std::process::id()
            )))
        );
    }

    #[test]
    fn dead_letters_keep_the_record_and_the_reason() {
        let dir = tempdir();
        let dead = DeadLetter::beside(&dir.join("log.spool"));
        dead.append(&records(0..1)[0].encode(), "bad row").unwrap();
        dead.append(b"not json", "undecodable").unwrap();
        let text = std::fs::read_to_string(&dead.path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["record"]["id"], "id-0000");
        assert_eq!(lines[0]["error"], "bad row");
        assert_eq!(lines[1]["raw"], "not json");
        let mode = std::fs::metadata(&dead.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
