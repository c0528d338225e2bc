//! Watching a model file for a complete rewrite: a change is taken once the file has stopped
//! changing for a moment, since a checkpoint being written is seen half-way otherwise.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long a changed file must stay unchanged before it is loaded.
const SETTLE: Duration = Duration::from_millis(400);

/// A watched file: its last loaded stamp and a change waiting to settle.
#[derive(Debug)]
pub struct Watch {
    path: PathBuf,
    seen: Option<Stamp>,
    pending: Option<(Stamp, Instant)>,
}

/// What tells a file's versions apart: its size and modification time.
type Stamp = (u64, SystemTime);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

impl Watch {
    /// Watches `path`, taking its present state as loaded.
    pub fn new(path: PathBuf) -> Watch {
        Watch { seen: stamp(&path), path, pending: None }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file changed and has settled since: then it counts as loaded.
    pub fn settled_change(&mut self) -> bool {
        let now = stamp(&self.path);
        let Some(now) = now.filter(|&n| Some(n) != self.seen) else {
            self.pending = None;
            return false;
        };
        match self.pending {
            Some((seen, since)) if seen == now && since.elapsed() >= SETTLE => {
                self.pending = None;
                self.seen = Some(now);
                true
            }
            Some((seen, _)) if seen == now => false,
            _ => {
                self.pending = Some((now, Instant::now()));
                false
            }
        }
    }
}
