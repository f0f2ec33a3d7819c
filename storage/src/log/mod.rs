//! The durable log: append-only segment files shared by all shards of a store, a checksum on
//! every record, offset and time indexes per segment, group commit, recovery.
//!
//! * Records are appended under the owning shard's lock, so each shard's records are in its
//!   order (shards interleave). Each record has a log sequence number (lsn), dense from 1.
//! * Durability: the committer thread syncs whatever has been written and then releases every
//!   waiter whose lsn it covered — one fdatasync for all the writes waiting on it (group
//!   commit). Waiters are callbacks ([`Log::on_durable`]), so an async driver can turn them into
//!   futures; [`Log::wait_durable`] blocks a thread.
//! * A failed write is cut back off the file and reported; nothing is applied. A failed fsync
//!   leaves the state of the unsynced bytes unknown, so the log turns read-only
//!   ([`StorageError::LogFailed`]) until a restart recovers what is on disk.
//! * The active segment is preallocated (grown with zeros to `segment_bytes_max` and synced
//!   once), so a group-commit fdatasync writes data only, not a new file size; a segment is cut
//!   to its true end before it is closed.
//! * Recovery reads every segment, verifies each record, cuts a torn tail (a short or
//!   zero-filled end; in the preallocated zeros also a record with a zero 4 KiB page piece,
//!   since an unsynced write's pages reach the disk in any order) and rebuilds the indexes;
//!   anything else wrong is [`StorageError::Corrupt`] naming file and offset — never skipped.
//!
//! File IO goes through [`fs::LogFs`] so tests run it on [`fs::SimFs`], a disk that loses
//! unsynced bytes on a simulated crash.

pub mod checkpoint;
pub mod fs;
pub mod record;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

pub use checkpoint::{Checkpoint, KeyMark, OwnerMark};
pub use fs::{LogFile, LogFs, SimFs, StdFs};
pub use record::{Record, RecordBody};

use crate::error::StorageError;
use crate::store::DurableCallback;
use crate::types::VALUE_BYTES_LIMIT;
use record::{decode_body, decode_header, encode_split, BODY_BYTES_MIN, HEADER_BYTES};

/// Default largest record body (a value at the hard limit plus a compaction key as large,
/// plus room for names).
pub const RECORD_BYTES_MAX_DEFAULT: u32 = 2 * VALUE_BYTES_LIMIT + 64 * 1024;

/// Largest checkpoint file read (it may hold a transferred shard's entries).
pub const CHECKPOINT_BYTES_MAX: u64 = 64 << 30;

/// Name of the checkpoint file in the log directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
const CHECKPOINT_TMP: &str = "checkpoint.tmp";

/// With group commit and nobody waiting, written data is still synced within this many ms.
pub const GROUP_COMMIT_IDLE_SYNC_MS: u64 = 10;

/// When the log fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Group commit: as soon as anyone waits, one fsync covers every write so far.
    #[default]
    GroupCommit,
    /// An fsync every this many milliseconds; durable puts wait for the next one.
    IntervalMs(u64),
    /// Never fsync (the OS writes back when it likes); a durable put is acknowledged once
    /// written. Crash safety is lost; for tests and benchmarks of the rest.
    Never,
}

/// Log configuration.
#[derive(Clone)]
pub struct LogConfig {
    /// Directory of the segment files.
    pub dir: PathBuf,
    /// A segment is closed once it reaches this size.
    pub segment_bytes_max: u64,
    /// When to fsync.
    pub sync: SyncPolicy,
    /// An offset/time index entry every this many bytes of a segment.
    pub index_interval_bytes: u64,
    /// Largest record body accepted on read (checked before allocating).
    pub record_bytes_max: u32,
    /// The file system (real, or simulated in tests).
    pub fs: Arc<dyn LogFs>,
}

impl std::fmt::Debug for LogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogConfig")
            .field("dir", &self.dir)
            .field("segment_bytes_max", &self.segment_bytes_max)
            .field("sync", &self.sync)
            .field("index_interval_bytes", &self.index_interval_bytes)
            .field("record_bytes_max", &self.record_bytes_max)
            .finish()
    }
}

impl LogConfig {
    /// Defaults with the segments in `dir` on the real file system.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            dir: dir.into(),
            segment_bytes_max: 64 * 1024 * 1024,
            sync: SyncPolicy::GroupCommit,
            index_interval_bytes: 4096,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            fs: Arc::new(StdFs),
        }
    }

    /// Checks every field is in range.
    pub fn validate(&self) -> Result<(), StorageError> {
        if self.segment_bytes_max < 4096 {
            return Err(StorageError::Config(
                "segment_bytes_max must be ≥ 4096".into(),
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err(StorageError::Config(
                "index_interval_bytes must be > 0".into(),
            ));
        }
        if (self.record_bytes_max as usize) < BODY_BYTES_MIN {
            return Err(StorageError::Config("record_bytes_max too small".into()));
        }
        if let SyncPolicy::IntervalMs(0) = self.sync {
            return Err(StorageError::Config("sync interval must be > 0 ms".into()));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Segment {
    base: u64,
    /// lsn after the last record.
    end: u64,
    path: PathBuf,
    file: Arc<dyn LogFile>,
    len: u64,
    /// (lsn, byte offset), one every `index_interval_bytes`.
    offsets: Vec<(u64, u64)>,
    /// (largest platform time so far in this segment, lsn), at the same points.
    times: Vec<(u64, u64)>,
    max_time_us: u64,
    last_indexed_pos: Option<u64>,
}

impl Segment {
    fn index(&mut self, lsn: u64, pos: u64, time_us: u64, interval: u64, off_bug: bool) {
        self.max_time_us = self.max_time_us.max(time_us);
        if self.last_indexed_pos.is_none_or(|p| pos >= p + interval) {
            let pos_ix = if off_bug { pos + 1 } else { pos };
            self.offsets.push((lsn, pos_ix));
            self.times.push((self.max_time_us, lsn));
            self.last_indexed_pos = Some(pos);
        }
    }
}

struct Writer {
    segs: Vec<Segment>,
    next_lsn: u64,
    to_sync: Vec<Arc<dyn LogFile>>,
    dir_dirty: bool,
    failed: Option<String>,
    buf: Vec<u8>,
}

#[derive(Default)]
struct SyncState {
    written: u64,
    synced: u64,
    waiters: BTreeMap<u64, Vec<DurableCallback>>,
    failed: Option<String>,
    shutdown: bool,
    fsyncs: u64,
}

type Hook = Arc<dyn Fn() + Send + Sync>;

struct Shared {
    config: LogConfig,
    w: Mutex<Writer>,
    st: Mutex<SyncState>,
    wake: Condvar,
    synced: AtomicU64,
    hook: RwLock<Option<Hook>>,
    index_bug: AtomicBool,
}

/// The durable log. Dropping it stops the committer after a last sync.
pub struct Log {
    sh: Arc<Shared>,
    committer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("config", &self.sh.config)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn seg_name(base: u64) -> String {
    format!("{base:020}.log")
}

fn parse_seg_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What one segment scan found.
enum Scan {
    /// Ran to the end cleanly.
    Clean,
    /// A torn tail starts at this offset.
    Torn(u64),
}

impl Log {
    /// Opens (or creates) the log in `config.dir`: returns the checkpoint, if any, and every
    /// record in order (the caller skips what the checkpoint covers). Starts the committer
    /// thread.
    #[allow(clippy::type_complexity)]
    pub fn open(config: LogConfig) -> Result<(Log, Option<Checkpoint>, Vec<Record>), StorageError> {
        config.validate()?;
        let fs = config.fs.clone();
        let dir = config.dir.clone();
        let dir_s = dir.display().to_string();
        fs.create_dir_all(&dir)
            .map_err(|e| StorageError::io(&dir_s, &e))?;
        let names = fs.list(&dir).map_err(|e| StorageError::io(&dir_s, &e))?;
        let checkpoint = if names.iter().any(|n| n == CHECKPOINT_FILE) {
            let path = dir.join(CHECKPOINT_FILE);
            let ps = path.display().to_string();
            let f = fs
                .open(&path, false)
                .map_err(|e| StorageError::io(&ps, &e))?;
            let len = f.len().map_err(|e| StorageError::io(&ps, &e))?;
            if len > CHECKPOINT_BYTES_MAX {
                return Err(StorageError::Corrupt {
                    file: ps,
                    offset: 0,
                    reason: format!("checkpoint larger than {CHECKPOINT_BYTES_MAX} bytes"),
                });
            }
            let mut data = vec![0u8; len as usize];
            f.read_at(0, &mut data)
                .map_err(|e| StorageError::io(&ps, &e))?;
            Some(
                Checkpoint::decode(&data).map_err(|reason| StorageError::Corrupt {
                    file: ps,
                    offset: 0,
                    reason,
                })?,
            )
        } else {
            None
        };
        let mut bases: Vec<u64> = names.iter().filter_map(|n| parse_seg_name(n)).collect();
        bases.sort_unstable();
        let mut records = Vec::new();
        let mut segs: Vec<Segment> = Vec::new();
        let mut next_lsn: Option<u64> = None;
        let mut i = 0;
        while i < bases.len() {
            let base = bases[i];
            let path = dir.join(seg_name(base));
            let ps = path.display().to_string();
            let file = fs
                .open(&path, false)
                .map_err(|e| StorageError::io(&ps, &e))?;
            let len = file.len().map_err(|e| StorageError::io(&ps, &e))?;
            let mut data = vec![0u8; len as usize];
            file.read_at(0, &mut data)
                .map_err(|e| StorageError::io(&ps, &e))?;
            if let Some(n) = next_lsn {
                if n != base {
                    return Err(StorageError::Corrupt {
                        file: ps,
                        offset: 0,
                        reason: format!("segment starts at lsn {base}, previous ended at {n}"),
                    });
                }
            }
            let mut seg = Segment {
                base,
                end: base,
                path: path.clone(),
                file: file.clone(),
                len,
                offsets: Vec::new(),
                times: Vec::new(),
                max_time_us: 0,
                last_indexed_pos: None,
            };
            let scan = Self::scan(&config, &ps, &data, &mut seg, &mut records)?;
            if let Scan::Torn(at) = scan {
                // A torn tail is only possible at the very end of what was written: every
                // later segment must be empty (or zeros), and goes.
                for &later in &bases[i + 1..] {
                    let lp = dir.join(seg_name(later));
                    let lps = lp.display().to_string();
                    let lf = fs
                        .open(&lp, false)
                        .map_err(|e| StorageError::io(&lps, &e))?;
                    let ll = lf.len().map_err(|e| StorageError::io(&lps, &e))?;
                    let mut ld = vec![0u8; ll as usize];
                    lf.read_at(0, &mut ld)
                        .map_err(|e| StorageError::io(&lps, &e))?;
                    if ld.iter().any(|&b| b != 0) {
                        return Err(StorageError::Corrupt {
                            file: ps,
                            offset: at,
                            reason: "bad record followed by later segments".into(),
                        });
                    }
                    fs.remove(&lp).map_err(|e| StorageError::io(&lps, &e))?;
                }
                file.set_len(at).map_err(|e| StorageError::io(&ps, &e))?;
                file.sync().map_err(|e| StorageError::io(&ps, &e))?;
                fs.sync_dir(&dir)
                    .map_err(|e| StorageError::io(&dir_s, &e))?;
                seg.len = at;
                next_lsn = Some(seg.end);
                segs.push(seg);
                break;
            }
            next_lsn = Some(seg.end);
            segs.push(seg);
            i += 1;
        }
        let next_lsn = next_lsn.unwrap_or(1);
        if segs.is_empty() {
            let path = dir.join(seg_name(next_lsn));
            let ps = path.display().to_string();
            let file = fs
                .open(&path, true)
                .map_err(|e| StorageError::io(&ps, &e))?;
            fs.sync_dir(&dir)
                .map_err(|e| StorageError::io(&dir_s, &e))?;
            segs.push(Segment {
                base: next_lsn,
                end: next_lsn,
                path,
                file,
                len: 0,
                offsets: Vec::new(),
                times: Vec::new(),
                max_time_us: 0,
                last_indexed_pos: None,
            });
        }
        if let Some(last) = segs.last() {
            preallocate(&config, &*last.file);
        }
        let written = next_lsn - 1;
        let sh = Arc::new(Shared {
            config,
            w: Mutex::new(Writer {
                segs,
                next_lsn,
                to_sync: Vec::new(),
                dir_dirty: false,
                failed: None,
                buf: Vec::new(),
            }),
            st: Mutex::new(SyncState {
                written,
                synced: written,
                ..SyncState::default()
            }),
            wake: Condvar::new(),
            synced: AtomicU64::new(written),
            hook: RwLock::new(None),
            index_bug: AtomicBool::new(false),
        });
        let sh2 = sh.clone();
        let committer = std::thread::Builder::new()
            .name("squall-log-commit".into())
            .spawn(move || committer(&sh2))
            .map_err(|e| StorageError::io("committer thread", &e))?;
        Ok((
            Log {
                sh,
                committer: Some(committer),
            },
            checkpoint,
            records,
        ))
    }

    /// Verifies and decodes one segment's records.
    fn scan(
        config: &LogConfig,
        file: &str,
        data: &[u8],
        seg: &mut Segment,
        out: &mut Vec<Record>,
    ) -> Result<Scan, StorageError> {
        let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
            file: file.to_owned(),
            offset: offset as u64,
            reason,
        };
        let zeros = |from: usize| data[from.min(data.len())..].iter().all(|&b| b == 0);
        let mut pos = 0usize;
        let mut expect = seg.base;
        while pos < data.len() {
            if data.len() - pos < HEADER_BYTES {
                return Ok(Scan::Torn(pos as u64));
            }
            let mut hb = [0u8; HEADER_BYTES];
            hb.copy_from_slice(&data[pos..pos + HEADER_BYTES]);
            let Some(h) = decode_header(&hb) else {
                if zeros(pos)
                    || zero_page_piece(data, pos, pos + HEADER_BYTES)
                    || zero_to_page_end(data, pos + HEADER_BYTES - 1)
                {
                    return Ok(Scan::Torn(pos as u64));
                }
                return Err(corrupt(pos, "header checksum mismatch".into()));
            };
            let blen = h.body_len as usize;
            if blen < BODY_BYTES_MIN || h.body_len > config.record_bytes_max {
                return Err(corrupt(pos, format!("record length {blen} out of range")));
            }
            let bstart = pos + HEADER_BYTES;
            let Some(bend) = bstart.checked_add(blen).filter(|&e| e <= data.len()) else {
                return Ok(Scan::Torn(pos as u64));
            };
            let body = &data[bstart..bend];
            if crc32c::crc32c(body) != h.body_crc {
                if zeros(bend) || zero_page_piece(data, pos, bend) {
                    return Ok(Scan::Torn(pos as u64));
                }
                return Err(corrupt(pos, "body checksum mismatch".into()));
            }
            let rec = decode_body(body).map_err(|e| corrupt(pos, e))?;
            if rec.lsn != expect {
                return Err(corrupt(
                    pos,
                    format!("lsn {} where {expect} expected", rec.lsn),
                ));
            }
            seg.index(
                rec.lsn,
                pos as u64,
                rec.stamp.time.physical_us,
                config.index_interval_bytes,
                false,
            );
            expect += 1;
            seg.end = expect;
            out.push(rec);
            pos = bend;
        }
        Ok(Scan::Clean)
    }

    /// Appends a record; returns its lsn. On a write error the partial record is cut off again
    /// and the error returned (nothing stored); if even that fails, the log turns read-only.
    pub fn append(&self, rec: &Record) -> Result<u64, StorageError> {
        let mut wg = lock(&self.sh.w);
        let w = &mut *wg;
        if let Some(f) = &w.failed {
            return Err(StorageError::LogFailed(f.clone()));
        }
        let lsn = w.next_lsn;
        w.buf.clear();
        // A large value (a produce request's batch) is written from its own buffer, not
        // copied into `buf` first: the bytes on disk are the same (see `encode_split`).
        let split = encode_split(rec, lsn, &mut w.buf);
        let rec_len = w.buf.len() + split.map_or(0, |(_, v)| v.len());
        let cfg = &self.sh.config;
        if rec_len - HEADER_BYTES > cfg.record_bytes_max as usize {
            return Err(StorageError::Invalid(format!(
                "record of {rec_len} bytes over the log's limit"
            )));
        }
        let needs_roll = w
            .segs
            .last()
            .is_some_and(|s| s.len > 0 && s.len + rec_len as u64 > cfg.segment_bytes_max);
        if needs_roll {
            self.roll(w)?;
        }
        let Some(seg) = w.segs.last_mut() else {
            return Err(StorageError::LogFailed("no active segment".into()));
        };
        let pos = seg.len;
        let written = match split {
            None => seg.file.write_at(pos, &w.buf),
            Some((at, value)) => {
                let (head, tail) = w.buf.split_at(at);
                let tail_at = pos + (at + value.len()) as u64;
                seg.file
                    .write_at(pos, head)
                    .and_then(|()| seg.file.write_at(pos + at as u64, value))
                    .and_then(|()| {
                        if tail.is_empty() {
                            Ok(())
                        } else {
                            seg.file.write_at(tail_at, tail)
                        }
                    })
            }
        };
        if let Err(e) = written {
            let err = StorageError::io(seg.path.display().to_string(), &e);
            if let Err(e2) = seg.file.set_len(pos) {
                let msg = format!("could not cut back a failed write: {e2}");
                w.failed = Some(msg.clone());
                self.fail(msg);
            }
            return Err(err);
        }
        seg.len += rec_len as u64;
        seg.end = lsn + 1;
        let bug = self.sh.index_bug.load(Ordering::Relaxed);
        seg.index(
            lsn,
            pos,
            rec.stamp.time.physical_us,
            cfg.index_interval_bytes,
            bug,
        );
        w.next_lsn = lsn + 1;
        lock(&self.sh.st).written = lsn;
        Ok(lsn)
    }

    /// Turns the log read-only with `msg` and fails everyone waiting for durability (the
    /// committer stops syncing once the log failed, so nobody else would answer them).
    fn fail(&self, msg: String) {
        let waiters = {
            let mut st = lock(&self.sh.st);
            st.failed = Some(msg.clone());
            std::mem::take(&mut st.waiters)
        };
        for cb in waiters.into_values().flatten() {
            cb(Err(StorageError::LogFailed(msg.clone())));
        }
    }

    /// Closes the active segment and starts the next one.
    fn roll(&self, w: &mut Writer) -> Result<(), StorageError> {
        let fs = &self.sh.config.fs;
        // The old segment is synced before the next one exists: otherwise a crash could keep
        // the new segment's records (written back by the kernel) but lose the old one's unsynced
        // tail, a hole recovery must treat as corruption. One extra fsync per segment.
        if let Some(old) = w.segs.last() {
            // Cut the preallocated zero tail first (recovery takes zeros as the end of the
            // log, which is only allowed in the last segment); the sync below makes it durable
            // before the next segment exists.
            if let Err(e) = old.file.set_len(old.len) {
                let msg = format!("could not cut {} to its end: {e}", old.path.display());
                w.failed = Some(msg.clone());
                self.fail(msg);
                return Err(StorageError::io(old.path.display().to_string(), &e));
            }
            if self.sh.config.sync == SyncPolicy::Never {
                w.to_sync.push(old.file.clone());
            } else if let Err(e) = old.file.sync() {
                let msg = format!("fsync of {} failed: {e}", old.path.display());
                w.failed = Some(msg.clone());
                self.fail(msg);
                return Err(StorageError::io(old.path.display().to_string(), &e));
            }
        }
        let path = self.sh.config.dir.join(seg_name(w.next_lsn));
        let ps = path.display().to_string();
        let file = fs
            .open(&path, true)
            .map_err(|e| StorageError::io(&ps, &e))?;
        preallocate(&self.sh.config, &*file);
        w.dir_dirty = true;
        w.segs.push(Segment {
            base: w.next_lsn,
            end: w.next_lsn,
            path,
            file,
            len: 0,
            offsets: Vec::new(),
            times: Vec::new(),
            max_time_us: 0,
            last_indexed_pos: None,
        });
        Ok(())
    }

    /// Calls `cb` once `lsn` is durable (see [`SyncPolicy`]); with an error if the log failed
    /// or shuts down first. Called from the committer thread, or at once.
    pub fn on_durable(&self, lsn: u64, cb: DurableCallback) {
        let mut st = lock(&self.sh.st);
        if lsn <= st.synced || (self.sh.config.sync == SyncPolicy::Never && lsn <= st.written) {
            drop(st);
            return cb(Ok(()));
        }
        if let Some(f) = &st.failed {
            let f = f.clone();
            drop(st);
            return cb(Err(StorageError::LogFailed(f)));
        }
        if st.shutdown {
            drop(st);
            return cb(Err(StorageError::ShuttingDown));
        }
        st.waiters.entry(lsn).or_default().push(cb);
        drop(st);
        self.sh.wake.notify_one();
    }

    /// Blocks until `lsn` is durable.
    pub fn wait_durable(&self, lsn: u64) -> Result<(), StorageError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.on_durable(
            lsn,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(StorageError::ShuttingDown))
    }

    /// Highest lsn known durable.
    pub fn synced_lsn(&self) -> u64 {
        if self.sh.config.sync == SyncPolicy::Never {
            return lock(&self.sh.st).written;
        }
        self.sh.synced.load(Ordering::Acquire)
    }

    /// Highest lsn written.
    pub fn written_lsn(&self) -> u64 {
        lock(&self.sh.st).written
    }

    /// fsync calls made by the committer so far.
    pub fn fsyncs(&self) -> u64 {
        lock(&self.sh.st).fsyncs
    }

    /// Sets a hook called after every sync (the store uses it to move frontiers and wake).
    pub fn set_hook(&self, hook: Arc<dyn Fn() + Send + Sync>) {
        *self.sh.hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Segment files: (first lsn, lsn after the last record, bytes), oldest first.
    pub fn segments(&self) -> Vec<(u64, u64, u64)> {
        lock(&self.sh.w)
            .segs
            .iter()
            .map(|s| (s.base, s.end, s.len))
            .collect()
    }

    /// Path of the segment holding `lsn`.
    pub fn segment_path(&self, lsn: u64) -> Option<PathBuf> {
        lock(&self.sh.w)
            .segs
            .iter()
            .find(|s| s.base <= lsn && lsn < s.end.max(s.base + 1))
            .map(|s| s.path.clone())
    }

    /// Total bytes in segment files.
    pub fn bytes(&self) -> u64 {
        lock(&self.sh.w).segs.iter().map(|s| s.len).sum()
    }

    /// Reads the record with `lsn` through the offset index.
    pub fn read(&self, lsn: u64) -> Result<Record, StorageError> {
        let w = lock(&self.sh.w);
        let seg = w
            .segs
            .iter()
            .find(|s| s.base <= lsn && lsn < s.end)
            .ok_or(StorageError::NotFound)?;
        let i = seg.offsets.partition_point(|&(l, _)| l <= lsn);
        let mut pos = if i == 0 { 0 } else { seg.offsets[i - 1].1 };
        let ps = seg.path.display().to_string();
        loop {
            let (rec, next) = read_record_at(&self.sh.config, &*seg.file, &ps, pos, seg.len)?;
            if rec.lsn == lsn {
                return Ok(rec);
            }
            if rec.lsn > lsn {
                return Err(StorageError::NotFound);
            }
            pos = next;
        }
    }

    /// The first lsn of the oldest segment that may hold a record with platform time ≥ `t_us`
    /// (through the time index; records of different shards interleave, so callers filter).
    pub fn lsn_for_time(&self, t_us: u64) -> u64 {
        let w = lock(&self.sh.w);
        for s in &w.segs {
            if s.max_time_us >= t_us {
                let i = s.times.partition_point(|&(m, _)| m < t_us);
                return if i == 0 { s.base } else { s.times[i - 1].1 };
            }
        }
        w.next_lsn
    }

    /// Writes a checkpoint atomically (temporary file, fsync, rename, directory fsync).
    pub fn write_checkpoint(&self, c: &Checkpoint) -> Result<(), StorageError> {
        let fs = &self.sh.config.fs;
        let dir = &self.sh.config.dir;
        let tmp = dir.join(CHECKPOINT_TMP);
        let ts = tmp.display().to_string();
        let bytes = c.encode();
        let f = fs.open(&tmp, true).map_err(|e| StorageError::io(&ts, &e))?;
        f.set_len(0).map_err(|e| StorageError::io(&ts, &e))?;
        f.write_at(0, &bytes)
            .map_err(|e| StorageError::io(&ts, &e))?;
        f.sync().map_err(|e| StorageError::io(&ts, &e))?;
        fs.rename(&tmp, &dir.join(CHECKPOINT_FILE))
            .map_err(|e| StorageError::io(&ts, &e))?;
        fs.sync_dir(dir)
            .map_err(|e| StorageError::io(dir.display().to_string(), &e))
    }

    /// Deletes whole closed segments whose records all have lsn < `lsn`; returns how many.
    pub fn remove_segments_below(&self, lsn: u64) -> Result<usize, StorageError> {
        let synced = self.synced_lsn();
        let mut w = lock(&self.sh.w);
        let mut n = 0;
        while w.segs.len() > 1 && w.segs[0].end <= lsn && w.segs[0].end <= synced + 1 {
            let seg = w.segs.remove(0);
            self.sh
                .config
                .fs
                .remove(&seg.path)
                .map_err(|e| StorageError::io(seg.path.display().to_string(), &e))?;
            n += 1;
        }
        if n > 0 {
            let d = &self.sh.config.dir;
            self.sh
                .config
                .fs
                .sync_dir(d)
                .map_err(|e| StorageError::io(d.display().to_string(), &e))?;
        }
        Ok(n)
    }

    /// Plants an off-by-one in the offset index (tests of the checker).
    #[cfg(test)]
    pub(crate) fn plant_index_bug(&self, on: bool) {
        self.sh.index_bug.store(on, Ordering::Relaxed);
    }

    /// Checks the log's rules: segments contiguous, indexes ascending, and every offset index
    /// entry pointing at a record with that lsn.
    pub fn check_invariants(&self) -> Result<(), String> {
        let w = lock(&self.sh.w);
        let mut prev_end: Option<u64> = None;
        for s in &w.segs {
            let ps = s.path.display().to_string();
            if prev_end.is_some_and(|e| e != s.base) {
                return Err(format!(
                    "log: segment {ps} does not follow the previous one"
                ));
            }
            prev_end = Some(s.end);
            for win in s.offsets.windows(2) {
                if win[0].0 >= win[1].0 || win[0].1 >= win[1].1 {
                    return Err(format!("log: offset index of {ps} not ascending"));
                }
            }
            for win in s.times.windows(2) {
                if win[0].0 > win[1].0 {
                    return Err(format!("log: time index of {ps} goes backwards"));
                }
            }
            for &(lsn, pos) in &s.offsets {
                match read_record_at(&self.sh.config, &*s.file, &ps, pos, s.len) {
                    Ok((rec, _)) if rec.lsn == lsn => {}
                    Ok((rec, _)) => {
                        return Err(format!(
                            "log: index of {ps} says lsn {lsn} at {pos}, found {}",
                            rec.lsn
                        ))
                    }
                    Err(e) => {
                        return Err(format!("log: index of {ps} says lsn {lsn} at {pos}: {e}"))
                    }
                }
            }
        }
        if prev_end != Some(w.next_lsn) {
            return Err("log: last segment does not end at next_lsn".into());
        }
        Ok(())
    }
}

/// Page size assumed for torn writes: a crash keeps or loses whole pages of unsynced data.
const TORN_PAGE_BYTES: usize = 4096;

/// Whether some piece of `data[from..to]` that one 4 KiB page covers is all zeros: the mark of
/// a torn write into a preallocated (zero) region, where the pages of one unsynced write
/// reach the disk in any order, so a record can be cut by a zero page in its middle or a later
/// page can survive an earlier lost one. A record cut that way was never acknowledged (a sync
/// covers every earlier write), so recovery ends the log there.
fn zero_page_piece(data: &[u8], from: usize, to: usize) -> bool {
    let to = to.min(data.len());
    let mut start = from;
    while start < to {
        let end = ((start / TORN_PAGE_BYTES + 1) * TORN_PAGE_BYTES).min(to);
        if data[start..end].iter().all(|&b| b == 0) {
            return true;
        }
        start = end;
    }
    false
}

/// Whether `data` is all zeros from `from` to the end of its 4 KiB page (or of `data`): a header
/// cut short by a torn write, its tail still the preallocated zeros.
fn zero_to_page_end(data: &[u8], from: usize) -> bool {
    let end = ((from / TORN_PAGE_BYTES + 1) * TORN_PAGE_BYTES).min(data.len());
    from < end && data[from..end].iter().all(|&b| b == 0)
}

/// Reads and verifies one record at `pos`; returns it and the offset after it.
fn read_record_at(
    config: &LogConfig,
    file: &dyn LogFile,
    path: &str,
    pos: u64,
    len: u64,
) -> Result<(Record, u64), StorageError> {
    let corrupt = |reason: String| StorageError::Corrupt {
        file: path.to_owned(),
        offset: pos,
        reason,
    };
    if pos + HEADER_BYTES as u64 > len {
        return Err(corrupt("header past the end".into()));
    }
    let mut hb = [0u8; HEADER_BYTES];
    file.read_at(pos, &mut hb)
        .map_err(|e| StorageError::io(path, &e))?;
    let h = decode_header(&hb).ok_or_else(|| corrupt("header checksum mismatch".into()))?;
    if (h.body_len as usize) < BODY_BYTES_MIN || h.body_len > config.record_bytes_max {
        return Err(corrupt("record length out of range".into()));
    }
    let bstart = pos + HEADER_BYTES as u64;
    if bstart + u64::from(h.body_len) > len {
        return Err(corrupt("record past the end".into()));
    }
    let mut body = vec![0u8; h.body_len as usize];
    file.read_at(bstart, &mut body)
        .map_err(|e| StorageError::io(path, &e))?;
    if crc32c::crc32c(&body) != h.body_crc {
        return Err(corrupt("body checksum mismatch".into()));
    }
    let rec = decode_body(&body).map_err(corrupt)?;
    Ok((rec, bstart + u64::from(h.body_len)))
}

/// Grows the active segment `file` with zeros to the segment size and syncs that once, so the
/// group commit's fdatasyncs write only data, not a new file size each time. Best effort: on an
/// error the file just grows as it is written (as without preallocation). Not with
/// [`SyncPolicy::Never`] (nothing is synced there).
fn preallocate(config: &LogConfig, file: &dyn LogFile) {
    if config.sync == SyncPolicy::Never {
        return;
    }
    if file.preallocate(config.segment_bytes_max).is_ok() {
        let _ = file.sync();
    }
}

fn sync_dir(config: &LogConfig, dir: &Path) -> std::io::Result<()> {
    config.fs.sync_dir(dir)
}

/// The committer thread: waits for waiters (or the interval), syncs everything written so far
/// with one fsync per dirty file, releases the waiters it covered.
fn committer(sh: &Shared) {
    let policy = sh.config.sync;
    loop {
        let mut st = lock(&sh.st);
        loop {
            if st.shutdown {
                break;
            }
            if policy == SyncPolicy::GroupCommit
                && !st.waiters.is_empty()
                && st.written > st.synced
                && st.failed.is_none()
            {
                break;
            }
            st = match policy {
                SyncPolicy::GroupCommit => {
                    // Nobody waiting: still sync written data now and then, so the stable
                    // frontier (which waits for synced writes) keeps moving.
                    let (g, _) = sh
                        .wake
                        .wait_timeout(st, Duration::from_millis(GROUP_COMMIT_IDLE_SYNC_MS))
                        .unwrap_or_else(|e| e.into_inner());
                    if g.written > g.synced && g.failed.is_none() && !g.shutdown {
                        st = g;
                        break;
                    }
                    g
                }
                SyncPolicy::IntervalMs(ms) => {
                    let (g, _) = sh
                        .wake
                        .wait_timeout(st, Duration::from_millis(ms))
                        .unwrap_or_else(|e| e.into_inner());
                    if g.written > g.synced && g.failed.is_none() && !g.shutdown {
                        st = g;
                        break;
                    }
                    g
                }
                _ => sh.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
        let shutdown = st.shutdown;
        let need = st.written > st.synced && st.failed.is_none() && policy != SyncPolicy::Never;
        drop(st);
        let mut released: Vec<(DurableCallback, Result<(), StorageError>)> = Vec::new();
        if need {
            let (target, files, dir_dirty) = {
                let mut w = lock(&sh.w);
                let mut files = std::mem::take(&mut w.to_sync);
                if let Some(s) = w.segs.last() {
                    files.push(s.file.clone());
                }
                let d = std::mem::take(&mut w.dir_dirty);
                (w.next_lsn - 1, files, d)
            };
            let mut res = Ok(());
            for f in &files {
                if let Err(e) = f.sync() {
                    res = Err(format!("fsync failed: {e}"));
                    break;
                }
            }
            if res.is_ok() && dir_dirty {
                if let Err(e) = sync_dir(&sh.config, &sh.config.dir) {
                    res = Err(format!("directory fsync failed: {e}"));
                }
            }
            if let Err(msg) = &res {
                lock(&sh.w).failed = Some(msg.clone());
            }
            let mut st = lock(&sh.st);
            st.fsyncs += 1;
            match res {
                Ok(()) => {
                    st.synced = st.synced.max(target);
                    sh.synced.store(st.synced, Ordering::Release);
                    let rest = st.waiters.split_off(&(target + 1));
                    let done = std::mem::replace(&mut st.waiters, rest);
                    for cb in done.into_values().flatten() {
                        released.push((cb, Ok(())));
                    }
                }
                Err(msg) => {
                    st.failed = Some(msg.clone());
                    for cb in std::mem::take(&mut st.waiters).into_values().flatten() {
                        released.push((cb, Err(StorageError::LogFailed(msg.clone()))));
                    }
                }
            }
        }
        if shutdown {
            let mut st = lock(&sh.st);
            for cb in std::mem::take(&mut st.waiters).into_values().flatten() {
                released.push((cb, Err(StorageError::ShuttingDown)));
            }
        }
        for (cb, r) in released {
            cb(r);
        }
        if need {
            let hook = sh.hook.read().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(h) = hook {
                h();
            }
        }
        if shutdown {
            return;
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        lock(&self.sh.st).shutdown = true;
        self.sh.wake.notify_all();
        if let Some(t) = self.committer.take() {
            let _ = t.join();
        }
    }
}
