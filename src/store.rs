//! Durable reservation state (docs/configuration.md): an append-only journal.
//!
//! Each line is `<crc32 hex> <json record>`; a put or delete is appended and
//! `fdatasync`ed before the API answers. An append that fails (a full disk, a
//! failed `fdatasync`) is cut off again, so the journal always ends on a
//! record boundary. On start the journal is replayed and rewritten compactly
//! (temp file, fsync, rename, fsync directory), and again whenever it grows to
//! several times the live set. A last line without its line end is a record
//! torn by a crash, never acknowledged: it is dropped with a warning. Any other
//! damaged line, or a record the caller's check refuses (the API's checks,
//! docs/configuration.md), stops start-up with an error naming the file and
//! line: nothing else is dropped or overwritten silently. A lock file keeps a
//! second relay off the same state.

use crate::group::GroupId;
use crate::reservation::{Reservation, check_event_id};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use tracing::warn;

/// A reservation as stored: its content and the group it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    /// The group in use.
    pub group: GroupId,
    /// The reservation's content.
    pub reservation: Reservation,
}

/// A live reservation as replayed, with the line of the record that put it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The line (from 1) of its last put.
    pub line: usize,
    /// The reservation.
    pub stored: Stored,
}

/// A loaded record the relay refuses to run with, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The line (from 1).
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Record {
    Put(Stored),
    Delete { event_id: String },
}

/// The open journal.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    file: File,
    records: usize,
    /// The file's length up to its last whole record.
    len: u64,
    /// An append failed and cutting it off failed too: the file may end in
    /// part of a record, to be cut off before anything is appended.
    torn: bool,
    _lock: nix::fcntl::Flock<File>,
}

/// Why the state could not be opened.
#[derive(Debug)]
pub enum StoreError {
    /// The file's content is damaged: the operator must repair it (exit status 2).
    Damaged(String),
    /// The file cannot be used: a directory, permissions, I/O, the lock.
    Unusable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Damaged(m) | StoreError::Unusable(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for StoreError {}

impl Store {
    /// Opens (or creates) the journal at `path` and returns the stored
    /// reservations. `check` vets them first, in file order (as the API would
    /// have: the records are input like any other); a refusal stops here,
    /// naming the line, and leaves the file as it was.
    pub fn open(
        path: &Path,
        check: impl FnOnce(&[Loaded]) -> Result<(), Refused>,
    ) -> Result<(Store, Vec<Stored>), StoreError> {
        let shown = path.display();
        let fail = |what: &str, e: io::Error| {
            StoreError::Unusable(format!("state file {shown}: {what}: {e}"))
        };
        if path.is_dir() {
            return Err(StoreError::Unusable(format!(
                "state file {shown} is a directory; set [state] path to a file inside it, e.g. {shown}/reservations"
            )));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail("cannot create its directory", e))?;
        }
        let lock = lock(path)?;
        let live = match File::open(path) {
            Ok(f) => replay(path, f)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(fail("cannot read it", e)),
        };
        let mut loaded: Vec<Loaded> = live.into_values().collect();
        loaded.sort_by_key(|l| l.line);
        check(&loaded).map_err(|Refused { line, why }| {
            StoreError::Damaged(format!(
                "state file {shown}: the record on line {line} is refused: {why}. The relay will not start with it; delete that line (every line carries its own checksum; an earlier line of the same event_id, if any, applies again) or restore the file from a backup"
            ))
        })?;
        let mut stored: Vec<Stored> = loaded.into_iter().map(|l| l.stored).collect();
        stored.sort_by(|a, b| a.reservation.event_id.cmp(&b.reservation.event_id));
        let (file, len) = rewrite(path, stored.iter()).map_err(|e| fail("cannot rewrite it", e))?;
        let store = Store {
            path: path.to_path_buf(),
            file,
            records: stored.len(),
            len,
            torn: false,
            _lock: lock,
        };
        Ok((store, stored))
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durably records a created or changed reservation.
    pub fn put(&mut self, stored: &Stored) -> io::Result<()> {
        self.append(&Record::Put(stored.clone()))
    }

    /// Durably records a deleted reservation.
    pub fn delete(&mut self, event_id: &str) -> io::Result<()> {
        self.append(&Record::Delete {
            event_id: event_id.to_string(),
        })
    }

    /// True when the journal holds many more records than the `live` reservations.
    pub fn wants_compaction(&self, live: usize) -> bool {
        self.records > 4 * live + 256
    }

    /// Rewrites the journal as one put per live reservation, atomically.
    pub fn compact<'a>(
        &mut self,
        live: impl ExactSizeIterator<Item = &'a Stored>,
    ) -> io::Result<()> {
        let n = live.len();
        (self.file, self.len) = rewrite(&self.path, live)?;
        self.records = n;
        self.torn = false;
        Ok(())
    }

    /// Appends one record, durably, or leaves the journal as it was.
    fn append(&mut self, record: &Record) -> io::Result<()> {
        let line = line(record)?;
        if self.torn {
            self.cut_back()?;
        }
        let written = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // A failed write may have left part of the line; after a failed
            // fdatasync its fate is unknown. Either way the caller answers an
            // error: cut the line off, so that it never comes back and the
            // next record starts on a line of its own.
            self.torn = true;
            let _ = self.cut_back();
            return Err(e);
        }
        self.len += line.len() as u64;
        self.records += 1;
        Ok(())
    }

    /// Truncates the file back to its last whole record, durably.
    fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.sync_all()?;
        self.torn = false;
        Ok(())
    }
}

/// Writes `live` to a temp file, syncs it, renames it over `path`, syncs the
/// directory, and returns `path` opened for appending, and its length. A
/// failure leaves `path` as it was and removes the temp file.
fn rewrite<'a>(path: &Path, live: impl Iterator<Item = &'a Stored>) -> io::Result<(File, u64)> {
    let tmp = path.with_extension("tmp");
    let written = (|| -> io::Result<u64> {
        let mut out = io::BufWriter::new(File::create(&tmp)?);
        let mut len = 0;
        for s in live {
            let line = line(&Record::Put(s.clone()))?;
            out.write_all(&line)?;
            len += line.len() as u64;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(len)
    })();
    let len = written.inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    Ok((OpenOptions::new().append(true).open(path)?, len))
}

fn line(record: &Record) -> io::Result<Vec<u8>> {
    let json = serde_json::to_string(record).map_err(io::Error::other)?;
    Ok(format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes())).into_bytes())
}

fn replay(path: &Path, file: File) -> Result<BTreeMap<String, Loaded>, StoreError> {
    let shown = path.display();
    let damaged = |n: usize, why: String| {
        StoreError::Damaged(format!(
            "state file {shown} is damaged at line {n}: {why}. The relay will not start on damaged state; restore the file from a backup, or move it aside to start with no reservations"
        ))
    };
    let mut live = BTreeMap::new();
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        let read = reader.read_until(b'\n', &mut buf).map_err(|e| {
            StoreError::Unusable(format!("state file {shown}: cannot read it: {e}"))
        })?;
        if read == 0 {
            break;
        }
        n += 1;
        let Some(text) = buf.strip_suffix(b"\n") else {
            // Only the last line can lack its end (read_until stops at one):
            // an append cut short by a crash, so never acknowledged. The
            // rewrite that follows the replay drops it from the file.
            warn!(state = %shown, line = n, bytes = buf.len(),
                "the last record is torn (no line end: a write cut short by a crash or a full disk); it was never acknowledged and is dropped");
            break;
        };
        let text = std::str::from_utf8(text).map_err(|_| damaged(n, "not UTF-8".into()))?;
        let (crc, json) = text
            .split_once(' ')
            .ok_or_else(|| damaged(n, "no checksum".into()))?;
        let crc = u32::from_str_radix(crc, 16)
            .map_err(|_| damaged(n, format!("bad checksum field {crc:?}")))?;
        if crc != crc32fast::hash(json.as_bytes()) {
            return Err(damaged(n, "checksum mismatch".into()));
        }
        match serde_json::from_str(json).map_err(|e| damaged(n, e.to_string()))? {
            Record::Put(stored) => {
                let id = stored.reservation.event_id.clone();
                live.insert(id, Loaded { line: n, stored });
            }
            Record::Delete { event_id } => {
                check_event_id(&event_id).map_err(|e| damaged(n, e))?;
                live.remove(&event_id);
            }
        }
    }
    Ok(live)
}

fn lock(path: &Path) -> Result<nix::fcntl::Flock<File>, StoreError> {
    let lock_path = path.with_extension("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            StoreError::Unusable(format!(
                "state lock {}: cannot open it: {e}",
                lock_path.display()
            ))
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        StoreError::Unusable(format!(
            "state file {} is in use by another rtp-relay (lock {} is held: {e}); stop it, or give this one its own [state] path",
            path.display(),
            lock_path.display()
        ))
    })
}

fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reservation::tests::request;

    fn open(path: &Path) -> Result<(Store, Vec<Stored>), StoreError> {
        Store::open(path, |_| Ok(()))
    }

    fn stored(id: &str, g: u32) -> Stored {
        Stored {
            group: GroupId::try_from(g).unwrap(),
            reservation: request(id, None),
        }
    }

    #[test]
    fn replays_puts_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/reservations");
        {
            let (mut s, loaded) = open(&path).unwrap();
            assert!(loaded.is_empty());
            s.put(&stored("a", 1)).unwrap();
            s.put(&stored("b", 2)).unwrap();
            s.delete("a").unwrap();
            s.put(&stored("c", 3)).unwrap();
        }
        let (_, loaded) = open(&path).unwrap();
        let ids: Vec<_> = loaded
            .iter()
            .map(|s| s.reservation.event_id.as_str())
            .collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(loaded[0], stored("b", 2));
        // Opening compacted the journal to the live set.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    /// A journal with "a" and "b"; its bytes.
    fn two_records(path: &Path) -> Vec<u8> {
        let (mut s, _) = open(path).unwrap();
        s.put(&stored("a", 1)).unwrap();
        s.put(&stored("b", 2)).unwrap();
        std::fs::read(path).unwrap()
    }

    #[test]
    fn damaged_state_stops_start_up_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reservations");
        let good = two_records(&path);
        for (what, bytes) in [
            ("flipped in the last record", {
                let mut b = good.clone();
                let i = b.len() - 20;
                b[i] ^= 0x01;
                b
            }),
            ("flipped in the first record", {
                let mut b = good.clone();
                b[20] ^= 0x01;
                b
            }),
            ("garbage", b"hello\n".to_vec()),
            ("an empty line", [&b"\n"[..], &good].concat()),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            let err = open(&path).unwrap_err();
            assert!(matches!(err, StoreError::Damaged(_)), "{what}: {err}");
            let err = err.to_string();
            assert!(err.contains(&path.display().to_string()), "{what}: {err}");
            assert!(err.contains("damaged at line"), "{what}: {err}");
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bytes,
                "{what}: file untouched"
            );
        }
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reservations");
        let good = two_records(&path);
        let first = good.iter().position(|&b| b == b'\n').unwrap() + 1;
        // Whole but for its line end, or a few bytes: never acknowledged.
        for cut in [1, 10, good.len() - first - 1] {
            std::fs::write(&path, &good[..good.len() - cut]).unwrap();
            let (mut s, loaded) = open(&path).unwrap();
            assert_eq!(loaded, [stored("a", 1)], "cut {cut}");
            assert_eq!(std::fs::read(&path).unwrap(), &good[..first]);
            // The next record starts on a line of its own.
            s.put(&stored("c", 3)).unwrap();
            drop(s);
            let (_, loaded) = open(&path).unwrap();
            assert_eq!(loaded.len(), 2, "cut {cut}");
        }
    }

    #[test]
    fn a_refused_record_stops_start_up_naming_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reservations");
        {
            let (mut s, _) = open(&path).unwrap();
            s.put(&stored("a", 1)).unwrap();
            s.put(&stored("b", 2)).unwrap();
            s.put(&stored("a", 3)).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut seen = Vec::new();
        let err = Store::open(&path, |loaded| {
            seen = loaded.to_vec();
            Err(Refused {
                line: loaded[1].line,
                why: "no good".into(),
            })
        })
        .unwrap_err();
        // In file order, each with the line of its last put.
        let lines: Vec<(usize, &str)> = seen
            .iter()
            .map(|l| (l.line, l.stored.reservation.event_id.as_str()))
            .collect();
        assert_eq!(lines, [(2, "b"), (3, "a")]);
        assert!(matches!(err, StoreError::Damaged(_)));
        let err = err.to_string();
        assert!(
            err.contains("the record on line 3 is refused: no good")
                && err.contains("delete that line"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "file untouched");
    }

    #[test]
    fn a_second_relay_cannot_open_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reservations");
        let _first = open(&path).unwrap();
        let err = open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Unusable(_)));
        assert!(
            err.to_string().contains("in use by another rtp-relay"),
            "{err}"
        );
    }
}
