//! The template folder as the console last read it, kept until a file in it
//! changes.
//!
//! Reading the folder compiles every template in every locale and checking
//! them renders each one: tens of milliseconds of CPU, which the preview
//! spent again on every frame, every keystroke in the sample and every
//! page. The console promises that an edit on disk shows at once, so the
//! folder is not read again only while a cheap walk of it (names, sizes and
//! modification times; a few dozen `stat`s) finds what it found last time,
//! and the running configuration (its mapping, brand and defaults, swapped
//! by a reload) is the one it was read with.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::disk::Disk;
use crate::live::{current, Live, SharedLive};

/// Folder depth walked: locale folders and their `partials/` are two down.
const MAX_DEPTH: usize = 4;

/// One console's cache (one per application, shared by its workers).
#[derive(Default)]
pub struct DiskCache {
    slot: Mutex<Option<Entry>>,
}

struct Entry {
    fingerprint: u64,
    /// Held, not just compared by address: a dropped `Live` could be
    /// replaced by a new one at the same address.
    live: Arc<Live>,
    disk: Arc<Disk>,
}

/// Whether the folder had to be read for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    Read,
    Cached,
}

impl Freshness {
    pub fn as_str(self) -> &'static str {
        match self {
            Freshness::Read => "read",
            Freshness::Cached => "cached",
        }
    }
}

impl DiskCache {
    /// The folder of the running configuration as it is on disk now, and
    /// the configuration it was read with. Blocking (disk): call it off the
    /// async workers.
    pub fn get(&self, live: &SharedLive) -> (Arc<Live>, Arc<Disk>, Freshness) {
        let live = current(live);
        // Taken before reading: an edit during the read changes the next
        // fingerprint, so it is read again then, never missed.
        let fingerprint = fingerprint(&live.config.templates.dir);
        {
            let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = slot.as_ref() {
                if e.fingerprint == fingerprint && Arc::ptr_eq(&e.live, &live) {
                    return (live, e.disk.clone(), Freshness::Cached);
                }
            }
        }
        let disk = Arc::new(Disk::read(&live.config));
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Entry {
            fingerprint,
            live: live.clone(),
            disk: disk.clone(),
        });
        (live, disk, Freshness::Read)
    }
}

/// Every entry under `dir` (path, kind, size, modification time), hashed.
/// A file added, removed, renamed, rewritten or touched changes it.
fn fingerprint(dir: &Path) -> u64 {
    let mut entries = Vec::new();
    walk(dir, dir, 0, &mut entries);
    entries.sort();
    let mut h = DefaultHasher::new();
    dir.hash(&mut h);
    entries.hash(&mut h);
    h.finish()
}

type Stat = (String, bool, u64, Option<SystemTime>);

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<Stat>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        out.push((dir.display().to_string(), false, 0, None));
        return;
    };
    for entry in rd.flatten() {
        let path = entry.path();
        // `metadata` follows symbolic links, as the loader does.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        out.push((rel, meta.is_dir(), meta.len(), meta.modified().ok()));
        if meta.is_dir() && depth + 1 < MAX_DEPTH {
            walk(root, &path, depth + 1, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_change_in_the_folder_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("es/partials")).unwrap();
        std::fs::write(d.join("a.subject.hbs"), "A").unwrap();
        std::fs::write(d.join("es/partials/f.hbs"), "F").unwrap();
        let first = fingerprint(d);
        assert_eq!(fingerprint(d), first, "stable while nothing changes");
        std::fs::write(d.join("es/partials/f.hbs"), "F2").unwrap();
        let second = fingerprint(d);
        assert_ne!(second, first, "an edit two folders down");
        std::fs::rename(d.join("a.subject.hbs"), d.join("b.subject.hbs")).unwrap();
        let third = fingerprint(d);
        assert_ne!(third, second, "a rename");
        std::fs::remove_file(d.join("b.subject.hbs")).unwrap();
        assert_ne!(fingerprint(d), third, "a removal");
    }
}
