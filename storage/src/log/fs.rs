//! The file layer under the log, behind two small traits so tests can swap in [`SimFs`]: an
//! in-memory disk that keeps written-but-unsynced bytes apart and can crash (losing them, or
//! keeping a torn prefix), fill up, or fail an fsync.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// One open log file. Writes go at explicit positions (the log tracks the end).
pub trait LogFile: Send + Sync + Debug {
    /// Writes all of `buf` at `pos`.
    fn write_at(&self, pos: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes everything written so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// Current length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads exactly `buf.len()` bytes at `pos`.
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Cuts (or extends with zeros) the file to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Grows the file with zeros to at least `len` bytes so later writes inside it do not
    /// change the file's size (then an fdatasync need not also write the size). Best effort;
    /// the default does nothing. The log cuts the zero tail off when it closes a segment, and
    /// recovery treats zeros after the last record as the end of the log.
    fn preallocate(&self, len: u64) -> io::Result<()> {
        let _ = len;
        Ok(())
    }
}

/// A directory of log files.
pub trait LogFs: Send + Sync + Debug {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path` for reading and writing, creating it if `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>>;
    /// Removes `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to` (atomic on POSIX file systems).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile(std::fs::File);

impl LogFile for StdFile {
    fn write_at(&self, pos: u64, buf: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, buf, pos)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn preallocate(&self, len: u64) -> io::Result<()> {
        // A sparse extension (ftruncate): no data written now, reads give zeros, and writes
        // inside it leave the size alone. Measured on this box's ext4 as about as good as
        // fallocate for append + fdatasync, without a libc dependency.
        if self.0.metadata()?.len() < len {
            self.0.set_len(len)?;
        }
        Ok(())
    }
}

impl LogFs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            if let Some(n) = e?.file_name().to_str() {
                out.push(n.to_owned());
            }
        }
        Ok(out)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(StdFile(f)))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
}

#[derive(Debug, Default)]
struct SimData {
    /// What survives a crash.
    durable: Vec<u8>,
    /// What readers see now.
    current: Vec<u8>,
}

#[derive(Debug, Default)]
struct SimFile {
    data: Mutex<SimData>,
    disk: Arc<SimDisk>,
}

impl SimData {
    /// What a crash leaves: the synced bytes, with the first `keep_unsynced` bytes written
    /// after them (from the first byte that differs from the synced contents) on top — a torn
    /// write, also inside a preallocated (zero-filled, synced) region.
    fn after_crash(&self, keep_unsynced: usize) -> Vec<u8> {
        let mut after = self.durable.clone();
        if self.current.len() < self.durable.len() {
            return after;
        }
        let first_diff = self
            .durable
            .iter()
            .zip(&self.current)
            .position(|(a, b)| a != b)
            .unwrap_or(self.durable.len());
        let keep = first_diff
            .saturating_add(keep_unsynced)
            .min(self.current.len());
        if keep > after.len() {
            after.resize(keep, 0);
        }
        after[first_diff..keep].copy_from_slice(&self.current[first_diff..keep]);
        after
    }
}

#[derive(Debug, Default)]
struct SimDisk {
    ctl: Mutex<SimCtl>,
}

#[derive(Debug, Default)]
struct SimCtl {
    /// Bytes that may still be written past the current ends (None: unlimited).
    space_left: Option<u64>,
    /// The next this many syncs fail.
    failing_syncs: u32,
    /// Whether [`LogFile::preallocate`] extends files (off by default: most tests keep
    /// small files).
    preallocate: bool,
    syncs: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LogFile for SimFile {
    fn write_at(&self, pos: u64, buf: &[u8]) -> io::Result<()> {
        let mut d = lock(&self.data);
        let pos = pos as usize;
        if pos > d.current.len() {
            d.current.resize(pos, 0);
        }
        let grow = (pos + buf.len()).saturating_sub(d.current.len()) as u64;
        let mut ctl = lock(&self.disk.ctl);
        let (n, full) = match ctl.space_left {
            Some(left) if left < grow => {
                let fits = buf.len() - (grow - left) as usize;
                ctl.space_left = Some(0);
                (fits, true)
            }
            Some(left) => {
                ctl.space_left = Some(left - grow);
                (buf.len(), false)
            }
            None => (buf.len(), false),
        };
        drop(ctl);
        let end = pos + n;
        if end > d.current.len() {
            d.current.resize(end, 0);
        }
        d.current[pos..end].copy_from_slice(&buf[..n]);
        if full {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            ));
        }
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        {
            let mut ctl = lock(&self.disk.ctl);
            if ctl.failing_syncs > 0 {
                ctl.failing_syncs -= 1;
                return Err(io::Error::other("fsync failed (simulated)"));
            }
            ctl.syncs += 1;
        }
        let mut d = lock(&self.data);
        d.durable = d.current.clone();
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(lock(&self.data).current.len() as u64)
    }
    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let d = lock(&self.data);
        let pos = pos as usize;
        let end = pos.checked_add(buf.len()).filter(|&e| e <= d.current.len());
        let Some(end) = end else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end",
            ));
        };
        buf.copy_from_slice(&d.current[pos..end]);
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut d = lock(&self.data);
        let old = d.current.len() as u64;
        if len < old {
            let mut ctl = lock(&self.disk.ctl);
            if let Some(left) = ctl.space_left.as_mut() {
                *left += old - len;
            }
        }
        d.current.resize(len as usize, 0);
        Ok(())
    }
    fn preallocate(&self, len: u64) -> io::Result<()> {
        if !lock(&self.disk.ctl).preallocate {
            return Ok(());
        }
        let mut d = lock(&self.data);
        if (d.current.len() as u64) < len {
            d.current.resize(len as usize, 0);
        }
        Ok(())
    }
}

/// An in-memory file system for crash tests. Clones share the same disk.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    files: Arc<Mutex<BTreeMap<PathBuf, Arc<SimFile>>>>,
    disk: Arc<SimDisk>,
}

impl SimFs {
    /// An empty disk.
    pub fn new() -> Self {
        SimFs::default()
    }

    /// Simulates power loss: every file falls back to what was synced, plus the first
    /// `keep_unsynced` bytes of what was written after it (a torn write).
    pub fn crash(&self, keep_unsynced: usize) {
        for f in lock(&self.files).values() {
            let mut d = lock(&f.data);
            let after = d.after_crash(keep_unsynced);
            d.current = after.clone();
            d.durable = after;
        }
    }

    /// A new disk holding what this one would after power loss right now: every file's synced
    /// bytes plus the first `keep_unsynced` bytes written after them (a torn write). This disk
    /// keeps running; the image shares nothing with it.
    pub fn crash_image(&self, keep_unsynced: usize) -> SimFs {
        let img = SimFs::new();
        let files = lock(&self.files);
        let mut out = lock(&img.files);
        for (p, f) in files.iter() {
            let d = lock(&f.data);
            let bytes = d.after_crash(keep_unsynced);
            out.insert(
                p.clone(),
                Arc::new(SimFile {
                    data: Mutex::new(SimData {
                        durable: bytes.clone(),
                        current: bytes,
                    }),
                    disk: img.disk.clone(),
                }),
            );
        }
        drop(out);
        img
    }

    /// Lets only `bytes` more be written (then writes fail with "no space").
    pub fn set_space_left(&self, bytes: Option<u64>) {
        lock(&self.disk.ctl).space_left = bytes;
    }

    /// Makes [`LogFile::preallocate`] extend files with zeros (as [`StdFs`] does).
    pub fn set_preallocate(&self, on: bool) {
        lock(&self.disk.ctl).preallocate = on;
    }

    /// Makes the next `n` syncs fail.
    pub fn fail_syncs(&self, n: u32) {
        lock(&self.disk.ctl).failing_syncs = n;
    }

    /// Successful syncs so far.
    pub fn syncs(&self) -> u64 {
        lock(&self.disk.ctl).syncs
    }

    /// Flips one bit of a file (current and durable contents).
    pub fn flip_bit(&self, path: &Path, byte: u64, bit: u8) -> io::Result<()> {
        let files = lock(&self.files);
        let f = files
            .get(path)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        let mut d = lock(&f.data);
        let i = byte as usize;
        if i >= d.current.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "past end"));
        }
        d.current[i] ^= 1 << (bit % 8);
        if i < d.durable.len() {
            d.durable[i] ^= 1 << (bit % 8);
        }
        Ok(())
    }

    /// Length of a file as readers see it.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        lock(&self.files)
            .get(path)
            .map(|f| lock(&f.data).current.len() as u64)
    }

    /// Paths of all files, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        lock(&self.files).keys().cloned().collect()
    }
}

impl LogFs for SimFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        Ok(lock(&self.files)
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn LogFile>> {
        let mut files = lock(&self.files);
        if let Some(f) = files.get(path) {
            return Ok(f.clone());
        }
        if !create {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such file"));
        }
        let f = Arc::new(SimFile {
            data: Mutex::new(SimData::default()),
            disk: self.disk.clone(),
        });
        files.insert(path.to_owned(), f.clone());
        Ok(f)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        lock(&self.files)
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = lock(&self.files);
        let f = files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        files.insert(to.to_owned(), f);
        Ok(())
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}
