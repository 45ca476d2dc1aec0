//! A try's output not yet acknowledged by a coordinator, on disk: the command writes into it
//! and never waits for the network; the sender (`logs.rs`) ships it from the last acknowledged
//! offset, to whichever coordinator answers.
//!
//! Offsets count every byte of the try's output from 0, the markers of dropped output
//! included, so the coordinator stores exactly this stream, in order. The unacknowledged part
//! is bounded: a line that does not fit is dropped, counted, and once there is room again a
//! marker `[goflow: N bytes of output dropped: spool full]` takes its place in the log.
//!
//! The bytes live in segment files of [`SEGMENT_BYTES`], deleted once acknowledged, so the disk
//! holds about the bound, however long the try runs.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Size of one spool file.
const SEGMENT_BYTES: u64 = 1024 * 1024;

struct Segment {
    /// Offset of its first byte in the output.
    start: u64,
    len: u64,
    file: File,
    path: PathBuf,
}

struct State {
    dir: PathBuf,
    bound: u64,
    segments: VecDeque<Segment>,
    /// End of the output so far.
    written: u64,
    /// Everything before it is stored by a coordinator.
    acked: u64,
    /// Bytes dropped since the last marker.
    dropped: u64,
    /// The command's output has ended.
    closed: bool,
    /// The folder exists: it is made with the first segment, so a try without output (most
    /// of a pipeline's `true`-like steps) costs no mkdir and rmdir.
    made: bool,
}

/// One try's spool, shared by the writer (the runner's output) and the sender. The folder is
/// removed when the last handle goes.
#[derive(Clone)]
pub struct Spool {
    state: Arc<Mutex<State>>,
    /// Signalled on every write, ack and close.
    changed: Arc<Notify>,
}

/// What the sender should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send `data`, which starts at `offset`.
    Send { offset: u64, data: Vec<u8> },
    /// Everything is acknowledged and the output has ended.
    Done,
    /// Everything so far is acknowledged: wait for more.
    Wait,
}

impl Spool {
    /// A spool in `dir` (made with the first output, and removed with the spool) holding at
    /// most `bound` unacknowledged bytes. Fails if `dir` cannot be made where it is to be.
    pub fn create(dir: PathBuf, bound: u64) -> std::io::Result<Self> {
        // Its parent is checked now, so that a bad spool setting is told at the try's start.
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        Ok(Self {
            state: Arc::new(Mutex::new(State {
                dir,
                bound,
                segments: VecDeque::new(),
                written: 0,
                acked: 0,
                dropped: 0,
                closed: false,
                made: false,
            })),
            changed: Arc::new(Notify::new()),
        })
    }

    /// Adds output (whole lines). Never waits on the network: past the bound, it is dropped
    /// and counted (see the module's notes).
    pub fn write(&self, data: &[u8]) {
        let mut state = self.state.lock().unwrap();
        if state.closed || data.is_empty() {
            return;
        }
        let pending = state.written - state.acked;
        if pending + data.len() as u64 > state.bound {
            state.dropped += data.len() as u64;
            return;
        }
        state.mark_dropped();
        state.append(data);
        drop(state);
        self.changed.notify_one();
    }

    /// The output has ended; what was dropped last is recorded now.
    pub fn close(&self) {
        let mut state = self.state.lock().unwrap();
        state.mark_dropped();
        state.closed = true;
        drop(state);
        self.changed.notify_one();
    }

    /// A coordinator stored everything before `offset`: those bytes leave the disk.
    pub fn ack(&self, offset: u64) {
        let mut state = self.state.lock().unwrap();
        let offset = offset.min(state.written);
        if offset <= state.acked {
            return;
        }
        state.acked = offset;
        while let Some(first) = state.segments.front() {
            if first.start + first.len > offset {
                break;
            }
            let done = state.segments.pop_front().expect("a first segment");
            let _ = std::fs::remove_file(&done.path);
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Up to `max` bytes from `offset` (which must not be before the acknowledged offset).
    pub fn next(&self, offset: u64, max: usize) -> std::io::Result<Next> {
        let state = self.state.lock().unwrap();
        if offset < state.acked {
            return Err(std::io::Error::other(format!(
                "output before offset {} is gone from the spool",
                state.acked
            )));
        }
        if offset >= state.written {
            return Ok(if state.closed { Next::Done } else { Next::Wait });
        }
        let end = state.written.min(offset + max as u64);
        let mut data = vec![0u8; (end - offset) as usize];
        let mut filled = 0usize;
        for segment in &state.segments {
            let seg_end = segment.start + segment.len;
            let at = offset + filled as u64;
            if seg_end <= at || filled == data.len() {
                continue;
            }
            let take = ((seg_end - at) as usize).min(data.len() - filled);
            segment
                .file
                .read_exact_at(&mut data[filled..filled + take], at - segment.start)?;
            filled += take;
        }
        data.truncate(filled);
        Ok(Next::Send { offset, data })
    }

    /// Waits until something changes (a write, an ack, the end).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn acked(&self) -> u64 {
        self.state.lock().unwrap().acked
    }

    pub fn written(&self) -> u64 {
        self.state.lock().unwrap().written
    }
}

impl State {
    /// Records the dropped bytes counted so far, if any, in the output itself. The marker may
    /// go past the bound: it is short, and saying what was lost matters more.
    fn mark_dropped(&mut self) {
        if self.dropped == 0 {
            return;
        }
        let marker = format!("[goflow: {} bytes of output dropped: spool full]\n", self.dropped);
        self.dropped = 0;
        self.append(marker.as_bytes());
    }

    fn append(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let full = self.segments.back().is_none_or(|s| s.len >= SEGMENT_BYTES);
            if full && let Err(e) = self.open_segment() {
                tracing::error!(dir = %self.dir.display(), "cannot create a log spool file: {e}");
                self.dropped += data.len() as u64;
                return;
            }
            let segment = self.segments.back_mut().expect("an open segment");
            let take = ((SEGMENT_BYTES - segment.len) as usize).min(data.len());
            // At its position: after a failed partial write, later bytes still land right.
            if let Err(e) = segment.file.write_all_at(&data[..take], segment.len) {
                tracing::error!(path = %segment.path.display(), "cannot write the log spool: {e}");
                self.dropped += data.len() as u64;
                return;
            }
            segment.len += take as u64;
            self.written += take as u64;
            data = &data[take..];
        }
    }

    fn open_segment(&mut self) -> std::io::Result<()> {
        if !self.made {
            std::fs::create_dir_all(&self.dir)?;
            self.made = true;
        }
        let path = self.dir.join(format!("{:020}.out", self.written));
        let file = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        self.segments.push_back(Segment {
            start: self.written,
            len: 0,
            file,
            path,
        });
        Ok(())
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.segments.clear();
        if !self.made {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), "cannot remove the log spool: {e}");
        }
    }
}

/// The spool folder of one try under `root`: its attempt id, made safe as a file name.
pub fn try_dir(root: &Path, attempt_id: &str) -> PathBuf {
    let name: String = attempt_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    root.join(name)
}

#[cfg(test)]
mod tests;
