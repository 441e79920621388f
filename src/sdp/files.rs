//! The SDP files in Wowza's content folder (`[wowza] sdp_dir`,
//! docs/configuration.md): one per reservation and video role, written
//! atomically once ready (a temporary file renamed over it), rewritten when
//! the description changes, removed when the reservation's group is freed.
//!
//! The folder is Wowza's and may hold other files: the relay only ever removes
//! files it wrote, which it knows by their origin line (`o=rtp-relay …`,
//! see [`super::render::ORIGIN_USER`]). Errors never stop anything: each is
//! kept per reservation (for its view and a log line), and tried again.

use super::render::ORIGIN_USER;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the folder should hold for one reservation now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The reservation.
    pub event_id: String,
    /// File name (`<event_id>.sdp`, `<event_id>_<role>.sdp`) and its content.
    pub files: Vec<(String, String)>,
}

/// The folder and what the relay has written there.
#[derive(Debug)]
pub struct SdpDir {
    dir: PathBuf,
    /// File name → (reservation, content written).
    written: HashMap<String, (String, String)>,
    /// Reservation → its current write error.
    errors: HashMap<String, String>,
}

/// What a [`SdpDir::sync`] did, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    /// Files written (new or changed).
    pub written: Vec<String>,
    /// Files removed.
    pub removed: Vec<String>,
    /// Reservations whose error is new (or different): (event_id, error).
    pub new_errors: Vec<(String, String)>,
}

impl SdpDir {
    /// The folder `dir` (not touched yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SdpDir {
            dir: dir.into(),
            written: HashMap::new(),
            errors: HashMap::new(),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the relay's files of reservations not in `existing` (after a
    /// restart: those freed while it was down); the names removed.
    pub fn clean(&mut self, existing: &dyn Fn(&str) -> bool) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(event_id) = name.strip_suffix(".sdp") else {
                continue;
            };
            let ours = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|text| origin_session(&text).map(|s| s.to_string()));
            // The session name is the event id; the file name may add a role.
            let Some(session) = ours else { continue };
            let event_ok = event_id == session || event_id.starts_with(&format!("{session}_"));
            if event_ok && !existing(&session) && std::fs::remove_file(entry.path()).is_ok() {
                removed.push(name);
            }
        }
        removed
    }

    /// Makes the folder hold `wanted` (the reservations whose group is bound,
    /// each with the files that are ready) and nothing else of the relay's:
    /// writes what is new or changed, removes what no longer belongs.
    pub fn sync(&mut self, wanted: &[Wanted]) -> Synced {
        let mut done = Synced::default();
        let mut keep: HashMap<&str, &str> = HashMap::new();
        for w in wanted {
            let mut error = None;
            for (name, content) in &w.files {
                // The first reservation to claim a name keeps it.
                keep.entry(name).or_insert(&w.event_id);
                match self.written.get(name) {
                    Some((owner, old)) if owner == &w.event_id && old == content => continue,
                    Some((owner, _)) if owner != &w.event_id => {
                        error = Some(format!(
                            "{name} is already the SDP of reservation {owner:?}; give one of them another event_id"
                        ));
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        // Never over a file someone else put there.
                        if let Some(e) = foreign(&self.dir.join(name)) {
                            error = Some(e);
                            continue;
                        }
                    }
                }
                match write_atomically(&self.dir, name, content) {
                    Ok(()) => {
                        self.written
                            .insert(name.clone(), (w.event_id.clone(), content.clone()));
                        done.written.push(name.clone());
                    }
                    Err(e) => error = Some(e),
                }
            }
            match error {
                Some(e) => {
                    if self.errors.get(&w.event_id) != Some(&e) {
                        done.new_errors.push((w.event_id.clone(), e.clone()));
                    }
                    self.errors.insert(w.event_id.clone(), e);
                }
                None => {
                    self.errors.remove(&w.event_id);
                }
            }
        }
        let stale: Vec<String> = self
            .written
            .iter()
            .filter(|(name, (owner, _))| keep.get(name.as_str()) != Some(&owner.as_str()))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            let path = self.dir.join(&name);
            match std::fs::remove_file(&path) {
                Ok(()) => done.removed.push(name.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Kept in `written`: tried again next time.
                Err(_) => continue,
            }
            self.written.remove(&name);
        }
        self.errors
            .retain(|event, _| wanted.iter().any(|w| &w.event_id == event));
        done
    }

    /// The current write error of a reservation's files.
    pub fn error(&self, event_id: &str) -> Option<&str> {
        self.errors.get(event_id).map(String::as_str)
    }

    /// Every current error, by reservation.
    pub fn errors(&self) -> &HashMap<String, String> {
        &self.errors
    }
}

/// Checks that the relay can write into `dir` (for `check-config`): creates
/// and removes a file there.
pub fn check_writable(dir: &Path) -> Result<(), String> {
    write_atomically(dir, ".rtp-relay-check.sdp", "")?;
    std::fs::remove_file(dir.join(".rtp-relay-check.sdp"))
        .map_err(|e| format!("cannot remove a file in {}: {e}", dir.display()))
}

/// Writes `content` into `dir/name` through a temporary file in the same
/// folder, flushed and renamed over it: Wowza never reads half a file.
fn write_atomically(dir: &Path, name: &str, content: &str) -> Result<(), String> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })
}

/// Why `path` must not be written: a file there that the relay did not write.
fn foreign(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let ours = std::str::from_utf8(&text)
        .ok()
        .and_then(origin_session)
        .is_some();
    (!ours).then(|| {
        format!(
            "{} exists and was not written by the relay; move it away, or give the reservation another event_id",
            path.display()
        )
    })
}

/// The session name (`s=`) of an SDP the relay wrote, `None` for any other.
fn origin_session(text: &str) -> Option<&str> {
    let mut lines = text.lines();
    let ours = lines.any(|l| {
        l.strip_prefix("o=")
            .is_some_and(|o| o.split(' ').next() == Some(ORIGIN_USER))
    });
    if !ours {
        return None;
    }
    text.lines().find_map(|l| l.strip_prefix("s="))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(event: &str, v: u32) -> String {
        format!("v=0\r\no={ORIGIN_USER} 1 {v} IN IP4 127.0.0.1\r\ns={event}\r\nt=0 0\r\n")
    }

    fn wanted(event: &str, files: &[(&str, String)]) -> Wanted {
        Wanted {
            event_id: event.into(),
            files: files
                .iter()
                .map(|(n, c)| (n.to_string(), c.clone()))
                .collect(),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_once_rewrites_on_change_and_removes_when_freed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut d = SdpDir::new(tmp.path());
        let a = wanted(
            "a",
            &[
                ("a.sdp", sdp("a", 1)),
                ("a_secondary_video.sdp", sdp("a", 1)),
            ],
        );
        let s = d.sync(std::slice::from_ref(&a));
        assert_eq!(s.written.len(), 2);
        assert_eq!(names(tmp.path()), ["a.sdp", "a_secondary_video.sdp"]);
        assert_eq!(
            d.sync(std::slice::from_ref(&a)),
            Synced::default(),
            "unchanged"
        );
        let a2 = wanted("a", &[("a.sdp", sdp("a", 2))]);
        let s = d.sync(std::slice::from_ref(&a2));
        assert_eq!(s.written, ["a.sdp"]);
        assert_eq!(
            s.removed,
            ["a_secondary_video.sdp"],
            "no longer ready or wanted"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("a.sdp")).unwrap(),
            sdp("a", 2)
        );
        let s = d.sync(&[]);
        assert_eq!(s.removed, ["a.sdp"]);
        assert!(names(tmp.path()).is_empty(), "no temporary files left");
    }

    #[test]
    fn an_unwritable_folder_is_an_error_of_the_reservation_said_once_and_retried() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("not-there");
        let mut d = SdpDir::new(&missing);
        let a = wanted("a", &[("a.sdp", sdp("a", 1))]);
        let s = d.sync(std::slice::from_ref(&a));
        assert_eq!(s.new_errors.len(), 1);
        assert!(
            s.new_errors[0]
                .1
                .starts_with(&format!("cannot write {}", missing.join("a.sdp").display()))
        );
        assert!(d.error("a").is_some());
        assert!(
            d.sync(std::slice::from_ref(&a)).new_errors.is_empty(),
            "said once"
        );
        std::fs::create_dir(&missing).unwrap();
        let s = d.sync(std::slice::from_ref(&a));
        assert_eq!(s.written, ["a.sdp"], "tried again");
        assert_eq!(d.error("a"), None);
        assert!(check_writable(&missing).is_ok());
        assert!(check_writable(&tmp.path().join("nope")).is_err());
    }

    #[test]
    fn one_file_name_for_two_reservations_is_refused_for_the_second() {
        let tmp = tempfile::tempdir().unwrap();
        let mut d = SdpDir::new(tmp.path());
        // "a_primary_display" the default file of event "a_primary_display",
        // and event "a"'s primary_display file.
        let first = wanted(
            "a_primary_display",
            &[("a_primary_display.sdp", sdp("a_primary_display", 1))],
        );
        let second = wanted(
            "a",
            &[
                ("a.sdp", sdp("a", 1)),
                ("a_primary_display.sdp", sdp("a", 1)),
            ],
        );
        let s = d.sync(&[first.clone(), second.clone()]);
        assert_eq!(s.written, ["a_primary_display.sdp", "a.sdp"]);
        assert!(
            d.error("a")
                .unwrap()
                .contains("already the SDP of reservation \"a_primary_display\"")
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("a_primary_display.sdp")).unwrap(),
            sdp("a_primary_display", 1)
        );
    }

    #[test]
    fn a_file_the_relay_did_not_write_is_never_written_over() {
        let tmp = tempfile::tempdir().unwrap();
        let hand = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=a\r\n";
        std::fs::write(tmp.path().join("a.sdp"), hand).unwrap();
        // A file of the relay's from before a restart is its own to rewrite.
        std::fs::write(tmp.path().join("b.sdp"), sdp("b", 1)).unwrap();
        let mut d = SdpDir::new(tmp.path());
        let s = d.sync(&[
            wanted("a", &[("a.sdp", sdp("a", 1))]),
            wanted("b", &[("b.sdp", sdp("b", 2))]),
        ]);
        assert_eq!(s.written, ["b.sdp"]);
        assert!(
            d.error("a")
                .unwrap()
                .contains("was not written by the relay"),
            "{:?}",
            d.error("a")
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("a.sdp")).unwrap(),
            hand
        );
        // Moved away: written at the next pass.
        std::fs::remove_file(tmp.path().join("a.sdp")).unwrap();
        let s = d.sync(&[wanted("a", &[("a.sdp", sdp("a", 1))])]);
        assert_eq!(s.written, ["a.sdp"]);
        assert_eq!(d.error("a"), None);
    }

    #[test]
    fn cleaning_removes_only_the_relays_own_files_of_reservations_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        std::fs::write(p.join("gone.sdp"), sdp("gone", 1)).unwrap();
        std::fs::write(p.join("gone_secondary_video.sdp"), sdp("gone", 1)).unwrap();
        std::fs::write(p.join("kept.sdp"), sdp("kept", 1)).unwrap();
        std::fs::write(
            p.join("hand.sdp"),
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=hand\r\n",
        )
        .unwrap();
        std::fs::write(p.join("notes.txt"), "x").unwrap();
        let mut d = SdpDir::new(p);
        let mut removed = d.clean(&|e| e == "kept");
        removed.sort();
        assert_eq!(removed, ["gone.sdp", "gone_secondary_video.sdp"]);
        assert_eq!(names(p), ["hand.sdp", "kept.sdp", "notes.txt"]);
    }
}
