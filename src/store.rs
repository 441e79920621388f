//! Durable reservation state (SPEC §7): an append-only journal.
//!
//! Each line is `<crc32 hex> <json record>`; a put or delete is appended and
//! `fdatasync`ed before the API answers. On start the journal is replayed and
//! rewritten compactly (temp file, fsync, rename, fsync directory), and again
//! whenever it grows to several times the live set. Any damaged line stops
//! start-up with an error naming the file and line: nothing is dropped or
//! overwritten silently. A lock file keeps a second relay off the same state.

use crate::group::GroupId;
use crate::reservation::Reservation;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// A reservation as stored: its content and the group it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    /// The group in use.
    pub group: GroupId,
    /// The reservation's content.
    pub reservation: Reservation,
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
    _lock: nix::fcntl::Flock<File>,
}

/// Why the state could not be opened.
#[derive(Debug)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl Store {
    /// Opens (or creates) the journal at `path` and returns the stored reservations.
    pub fn open(path: &Path) -> Result<(Store, Vec<Stored>), StoreError> {
        let shown = path.display();
        let fail =
            |what: &str, e: io::Error| StoreError(format!("state file {shown}: {what}: {e}"));
        if path.is_dir() {
            return Err(StoreError(format!(
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
        let stored: Vec<Stored> = live.into_values().collect();
        let file = rewrite(path, stored.iter()).map_err(|e| fail("cannot rewrite it", e))?;
        let store = Store {
            path: path.to_path_buf(),
            file,
            records: stored.len(),
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
        self.file = rewrite(&self.path, live)?;
        self.records = n;
        Ok(())
    }

    fn append(&mut self, record: &Record) -> io::Result<()> {
        self.file.write_all(&line(record))?;
        self.file.sync_data()?;
        self.records += 1;
        Ok(())
    }
}

/// Writes `live` to a temp file, syncs it, renames it over `path`, syncs the
/// directory, and returns `path` opened for appending.
fn rewrite<'a>(path: &Path, live: impl Iterator<Item = &'a Stored>) -> io::Result<File> {
    let tmp = path.with_extension("tmp");
    let mut out = io::BufWriter::new(File::create(&tmp)?);
    for s in live {
        out.write_all(&line(&Record::Put(s.clone())))?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path)?;
    OpenOptions::new().append(true).open(path)
}

fn line(record: &Record) -> Vec<u8> {
    let json = serde_json::to_string(record).expect("records always serialize");
    format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes())).into_bytes()
}

fn replay(path: &Path, file: File) -> Result<BTreeMap<String, Stored>, StoreError> {
    let shown = path.display();
    let damaged = |n: usize, why: String| {
        StoreError(format!(
            "state file {shown} is damaged at line {n}: {why}. The relay will not start on damaged state; restore the file from a backup, or move it aside to start with no reservations"
        ))
    };
    let mut live = BTreeMap::new();
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| StoreError(format!("state file {shown}: cannot read it: {e}")))?;
        if read == 0 {
            break;
        }
        n += 1;
        let Some(text) = buf.strip_suffix(b"\n") else {
            return Err(damaged(
                n,
                "the last record is truncated (no line end)".into(),
            ));
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
            Record::Put(s) => {
                live.insert(s.reservation.event_id.clone(), s);
            }
            Record::Delete { event_id } => {
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
            StoreError(format!(
                "state lock {}: cannot open it: {e}",
                lock_path.display()
            ))
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        StoreError(format!(
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
            let (mut s, loaded) = Store::open(&path).unwrap();
            assert!(loaded.is_empty());
            s.put(&stored("a", 1)).unwrap();
            s.put(&stored("b", 2)).unwrap();
            s.delete("a").unwrap();
            s.put(&stored("c", 3)).unwrap();
        }
        let (_, loaded) = Store::open(&path).unwrap();
        let ids: Vec<_> = loaded
            .iter()
            .map(|s| s.reservation.event_id.as_str())
            .collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(loaded[0], stored("b", 2));
        // Opening compacted the journal to the live set.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    #[test]
    fn damaged_state_stops_start_up_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reservations");
        {
            let (mut s, _) = Store::open(&path).unwrap();
            s.put(&stored("a", 1)).unwrap();
            s.put(&stored("b", 2)).unwrap();
        }
        let good = std::fs::read(&path).unwrap();
        for (what, bytes) in [
            ("truncated", good[..good.len() - 10].to_vec()),
            ("flipped", {
                let mut b = good.clone();
                let i = b.len() - 20;
                b[i] ^= 0x01;
                b
            }),
            ("garbage", b"hello\n".to_vec()),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            let err = Store::open(&path).unwrap_err().0;
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
    fn a_second_relay_cannot_open_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reservations");
        let _first = Store::open(&path).unwrap();
        let err = Store::open(&path).unwrap_err().0;
        assert!(err.contains("in use by another rtp-relay"), "{err}");
    }
}
