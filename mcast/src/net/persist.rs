//! [`FilePersist`]: the durable mode's disk for the [`Driver`](super::Driver), one
//! write-ahead file per member (`<data dir>/mcast.wal`).
//!
//! ## What is written
//! Everything [`Node::restart`](crate::Node::restart) needs after a crash, as records:
//! * `Boot { n }` — the n-th start of this data dir (gives [`Recovered::boot`]); written and
//!   fsynced by [`FilePersist::open`] before the node is created.
//! * `Control(record)` — every `Action::PersistControl` record (Paxos promises, accepts,
//!   decisions), in write order.
//! * `Founded { shard }` — this member holds `shard`'s (empty) state from a founding install
//!   on (bootstrap view, or a new shard started empty); resets the log.
//! * `Snapshot { shard, version, ts, data }` — an installed state transfer; resets the log.
//! * `Entry { delivery }` — one delivered message (shard, version, timestamp, id, payload),
//!   appended as it is delivered.
//!
//! The log's end (the last `Entry`, else the reset record) is [`Recovered::log`]; the
//! application state is the reset record's snapshot (if any) followed by the entries.
//!
//! ## Group commit
//! The driver queues records as the node's actions come out; after each drain it hands the
//! pile to a writer thread ([`FilePersist::submit`]). The writer takes everything waiting
//! (several piles, if they queued up during its previous fsync), writes it as **one frame**
//! (a pile beyond [`FRAME_BODY_MAX`] as several, each synced before the next) and fsyncs once; only then does it report the `Persist`/`PersistControl` requests of the
//! pile as done ([`PersistDone`]), which the driver feeds to the node. A reset record
//! (`Founded`/`Snapshot`) makes the writer rewrite the file instead (the boot record, every
//! control record, the reset record and what follows it) into a temporary file, fsync it,
//! rename it over the old one and fsync the directory: this is the truncate-and-repair of
//! a restart, and it also drops the log before a snapshot.
//!
//! ## Frames and the torn-tail rule
//! A frame is `magic u32 | body length u32 | crc32c(magic, length) u32 | crc32c(body) u32 |
//! body` (little-endian); the body is a sequence of `kind u8 | length u32 | bytes` records.
//! Each fsync covers exactly one frame, and the next frame is written only after it, so a
//! crash can damage only the last frame of the file, and that frame was never confirmed.
//! Recovery reads frames from the start; at the first frame that is incomplete or fails a
//! checksum it looks for any valid frame (magic, header checksum, body checksum) further on:
//! * none: the bad bytes are the remains of the last, unconfirmed write (a **torn tail**).
//!   The file is cut back to the end of the last valid frame (and fsynced); the cut is
//!   reported in [`FileRecovery::torn`].
//! * one: the bad frame had been fsynced (a later frame was written after it), so it was
//!   damaged afterwards: recovery fails with [`Error::Persist`] naming the file and offset.
//!
//! A valid frame whose records do not parse is also an error naming the file and offset.
//! What this rule cannot tell apart: damage to the *last* confirmed frame (e.g. a flipped
//! bit on the medium) looks like a torn tail and that frame is cut.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc as tokio_mpsc;

use crate::action::{ControlRecord, Delivery};
use crate::error::Error;
use crate::hlc::Hlc;
use crate::limits;
use crate::messages::Proposal;
use crate::node::Recovered;
use crate::types::{Ballot, MsgId, NodeId, ShardId, Version};

/// The write-ahead file's name inside the data dir.
pub const WAL_FILE: &str = "mcast.wal";
/// The temporary file a rewrite goes through.
pub const WAL_TMP_FILE: &str = "mcast.wal.tmp";
/// Frame magic ("SQMW").
pub const FRAME_MAGIC: u32 = 0x574d_5153;
/// Frame header bytes.
pub const FRAME_HEADER: usize = 16;
/// Largest frame body; a bigger pile is written as several frames (each its own fsync).
pub const FRAME_BODY_MAX: usize = 512 << 20;
/// Largest single record (a snapshot plus its header).
pub const RECORD_BYTES_MAX: usize = limits::SNAPSHOT_BYTES_MAX + 64;
/// Largest file recovery reads into memory.
pub const WAL_BYTES_MAX: u64 = 16 << 30;
/// Default of [`FilePersist::set_checkpoint_bytes`]: entry bytes after the log's base that
/// make [`FilePersist::wants_checkpoint`] true.
pub const CHECKPOINT_BYTES_DEFAULT: u64 = 64 << 20;

const K_BOOT: u8 = 1;
const K_CONTROL: u8 = 2;
const K_FOUNDED: u8 = 3;
const K_SNAPSHOT: u8 = 4;
const K_ENTRY: u8 = 5;
const K_IDENTITY: u8 = 6;

const C_PROMISED: u8 = 1;
const C_ACCEPTED: u8 = 2;
const C_DECIDED: u8 = 3;

/// What recovery found in a data dir.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileRecovery {
    /// For [`Node::restart`](crate::Node::restart). `boot == 0` means the dir was empty (a
    /// first start: create the node with `new_initial` or `new_joiner`).
    pub recovered: Recovered,
    /// The application state's base: the installed snapshot `(shard, version, data)`, or
    /// `None` when the log starts empty (founding member) or holds no shard.
    pub snapshot: Option<(ShardId, Version, Bytes)>,
    /// Deliveries after the base, in order (apply them to the application after the
    /// snapshot to rebuild its state up to `recovered.log`'s version).
    pub entries: Vec<Delivery>,
    /// A torn tail that was cut: `(offset, bytes)`.
    pub torn: Option<(u64, u64)>,
    /// Bytes of the entries after the base (what a checkpoint would make dead).
    pub live_bytes: u64,
    /// The newest identity record ([`FilePersist::record_identity`]): the full id this data
    /// dir belongs to and whether the group removed that incarnation (then the dir's state
    /// is dead: the member must come back as `id.next_incarnation()`, a joiner).
    pub identity: Option<(NodeId, bool)>,
}

/// Requests a pile of writes made durable; sent back by the writer thread.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistDone {
    /// `PersistControl` tokens now durable (feed to `Node::control_persisted`).
    pub control_tokens: Vec<u64>,
    /// `(shard, upto)` now durable (feed to `Node::persisted`).
    pub persisted: Vec<(ShardId, Version)>,
    /// Set when the write failed: nothing of this pile is durable and the member must stop.
    pub failed: Option<String>,
}

/// One pile of writes.
#[derive(Debug, Default)]
struct Pile {
    /// Encoded records, in order; `true` marks a reset record.
    records: Vec<(bool, Vec<u8>)>,
    done: PersistDone,
}

impl Pile {
    fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.done.control_tokens.is_empty()
            && self.done.persisted.is_empty()
    }
}

/// Deliberate persistence bugs for the fault tests' self-checks (feature `planted-bugs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistBugs {
    /// Confirm `Persist` requests without writing the delivered entries.
    pub drop_entries: bool,
    /// A compacting rewrite (checkpoint) drops the first live entry after the new base.
    pub compaction_drops_live_entry: bool,
}

/// Faults the writer thread injects (tests only; shared with the thread).
#[derive(Debug, Default)]
struct WriterFaults {
    /// `PersistBugs::compaction_drops_live_entry`.
    drop_live_entry: std::sync::atomic::AtomicBool,
    /// A raw OS error code (e.g. ENOSPC) the next write fails with; 0 = none.
    write_error: std::sync::atomic::AtomicI32,
    /// A raw OS error code (e.g. EIO) the next fsync fails with (after its write); 0 = none.
    sync_error: std::sync::atomic::AtomicI32,
}

/// An injected error, once (then cleared).
fn take_fault(slot: &std::sync::atomic::AtomicI32) -> std::io::Result<()> {
    match slot.swap(0, std::sync::atomic::Ordering::Relaxed) {
        0 => Ok(()),
        code => Err(std::io::Error::from_raw_os_error(code)),
    }
}

/// The file-backed persistence of one member. See the module docs.
#[derive(Debug)]
pub struct FilePersist {
    dir: PathBuf,
    pile: Pile,
    tx: Option<std_mpsc::Sender<Pile>>,
    done_rx: tokio_mpsc::UnboundedReceiver<PersistDone>,
    writer: Option<std::thread::JoinHandle<()>>,
    holds: Option<ShardId>,
    log_end: (Version, Hlc),
    /// Bytes of the entries queued or written after the log's base (the reset record).
    live_bytes: u64,
    /// Bytes of the base's snapshot (0 for a founding base).
    base_bytes: u64,
    checkpoint_bytes: u64,
    bugs: PersistBugs,
    /// The writer thread's fault switches (it holds its own clone); only the test hooks
    /// (`plant_bugs`, `inject_io_error`) read this handle.
    #[cfg_attr(not(any(test, feature = "planted-bugs")), allow(dead_code))]
    faults: Arc<WriterFaults>,
}

impl Drop for FilePersist {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn perr(path: &Path, offset: Option<u64>, what: impl std::fmt::Display) -> Error {
    match offset {
        Some(o) => Error::Persist(format!("{}: at offset {o}: {what}", path.display())),
        None => Error::Persist(format!("{}: {what}", path.display())),
    }
}

impl FilePersist {
    /// Opens (creating if needed) the data dir, recovers what it holds (cutting a torn
    /// tail), records this start (`Boot`, fsynced) and starts the writer thread.
    pub fn open(dir: &Path) -> Result<(FilePersist, FileRecovery), Error> {
        fs::create_dir_all(dir).map_err(|e| perr(dir, None, e))?;
        let path = dir.join(WAL_FILE);
        let tmp = dir.join(WAL_TMP_FILE);
        if tmp.exists() {
            // A rewrite that did not reach its rename: the old file is still the state.
            fs::remove_file(&tmp).map_err(|e| perr(&tmp, None, e))?;
        }
        let mut rec = FileRecovery::default();
        let mut control: Vec<Vec<u8>> = Vec::new();
        let mut boots = 0u32;
        let mut holds = None;
        let mut log_end = (Version::default(), Hlc::default());
        let mut base_bytes = 0u64;
        let mut identity: Option<Vec<u8>> = None;
        if path.exists() {
            let len = fs::metadata(&path).map_err(|e| perr(&path, None, e))?.len();
            if len > WAL_BYTES_MAX {
                return Err(perr(
                    &path,
                    None,
                    format!("{len} bytes, more than {WAL_BYTES_MAX}"),
                ));
            }
            let mut buf = Vec::with_capacity(len as usize);
            // At most the length seen (a file that is not a regular one, or grows, must
            // not make recovery read without end).
            File::open(&path)
                .and_then(|f| f.take(len).read_to_end(&mut buf))
                .map_err(|e| perr(&path, None, e))?;
            let (frames, valid_end) = scan_frames(&buf, &path)?;
            if valid_end < buf.len() {
                rec.torn = Some((valid_end as u64, (buf.len() - valid_end) as u64));
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| perr(&path, None, e))?;
                f.set_len(valid_end as u64)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| perr(&path, None, e))?;
            }
            for (off, body) in frames {
                let mut r = Reader::new(&buf[body.clone()]);
                while !r.is_empty() {
                    let at = (off + r.pos) as u64;
                    let bad = |what: &str| perr(&path, Some(at), what);
                    let kind = r.u8().ok_or_else(|| bad("truncated record kind"))?;
                    let len = r.u32().ok_or_else(|| bad("truncated record length"))? as usize;
                    if len > RECORD_BYTES_MAX {
                        return Err(bad("record longer than RECORD_BYTES_MAX"));
                    }
                    let raw = r
                        .bytes(len)
                        .ok_or_else(|| bad("record runs past its frame"))?;
                    let mut b = Reader::new(raw);
                    match kind {
                        K_BOOT => {
                            let n = b.u32().ok_or_else(|| bad("bad boot record"))?;
                            boots = boots.max(n.saturating_add(1));
                        }
                        K_CONTROL => {
                            let c =
                                decode_control(&mut b).ok_or_else(|| bad("bad control record"))?;
                            rec.recovered.records.push(c);
                            control.push(encode_raw(kind, raw));
                        }
                        K_FOUNDED => {
                            let s = b.u32().ok_or_else(|| bad("bad founded record"))?;
                            holds = Some(s);
                            log_end = (Version::default(), Hlc::default());
                            rec.snapshot = None;
                            rec.entries.clear();
                            rec.live_bytes = 0;
                            base_bytes = 0;
                        }
                        K_SNAPSHOT => {
                            let (s, v, ts, data) = decode_snapshot(&mut b)
                                .ok_or_else(|| bad("bad snapshot record"))?;
                            holds = Some(s);
                            log_end = (v, ts);
                            base_bytes = data.len() as u64;
                            rec.snapshot = Some((s, v, data));
                            rec.entries.clear();
                            rec.live_bytes = 0;
                        }
                        K_IDENTITY => {
                            let id = b.u64().ok_or_else(|| bad("bad identity record"))?;
                            let evicted = match b.u8() {
                                Some(0) => false,
                                Some(1) => true,
                                _ => return Err(bad("bad identity record")),
                            };
                            rec.identity = Some((NodeId(id), evicted));
                            identity = Some(encode_raw(kind, raw));
                        }
                        K_ENTRY => {
                            let d = decode_entry(&mut b).ok_or_else(|| bad("bad entry record"))?;
                            if holds != Some(d.shard) {
                                return Err(bad("entry of a shard the log does not hold"));
                            }
                            if d.version <= log_end.0 && log_end.0 != Version::default() {
                                return Err(bad("entry version does not increase"));
                            }
                            log_end = (d.version, d.ts);
                            rec.entries.push(d);
                            rec.live_bytes += (len + 5) as u64;
                        }
                        k => return Err(bad(&format!("unknown record kind {k}"))),
                    }
                    if !b.is_empty() && kind != K_CONTROL {
                        return Err(bad("trailing bytes in record"));
                    }
                }
            }
        }
        rec.recovered.boot = boots;
        rec.recovered.log = holds.map(|s| (s, log_end.0, log_end.1));
        // Record this start before anything else happens.
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| perr(&path, None, e))?;
        let mut body = Vec::new();
        body.extend_from_slice(&encode_raw(K_BOOT, &boots.to_le_bytes()));
        write_frames(&mut file, &body)
            .and_then(|_| file.sync_all())
            .map_err(|e| perr(&path, None, e))?;
        sync_dir(dir).map_err(|e| perr(dir, None, e))?;

        let (tx, rx) = std_mpsc::channel::<Pile>();
        let (done_tx, done_rx) = tokio_mpsc::unbounded_channel();
        let faults = Arc::new(WriterFaults::default());
        let mut w = Writer {
            dir: dir.to_path_buf(),
            path: path.clone(),
            file,
            boot: boots,
            control,
            identity,
            faults: faults.clone(),
        };
        let writer = std::thread::Builder::new()
            .name("mcast-persist".into())
            .spawn(move || w.run(rx, done_tx))
            .map_err(|e| perr(&path, None, format!("starting the writer thread: {e}")))?;
        Ok((
            FilePersist {
                dir: dir.to_path_buf(),
                pile: Pile::default(),
                tx: Some(tx),
                done_rx,
                writer: Some(writer),
                holds,
                log_end,
                live_bytes: rec.live_bytes,
                base_bytes,
                checkpoint_bytes: CHECKPOINT_BYTES_DEFAULT,
                bugs: PersistBugs::default(),
                faults,
            },
            rec,
        ))
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shard whose state the log holds (after recovery and the resets queued since).
    pub fn holds(&self) -> Option<ShardId> {
        self.holds
    }

    /// The version and timestamp the log (as queued) ends at.
    pub fn log_end(&self) -> (Version, Hlc) {
        self.log_end
    }

    /// Turns on deliberate bugs (fault-test self-checks only).
    #[cfg(any(test, feature = "planted-bugs"))]
    pub fn plant_bugs(&mut self, bugs: PersistBugs) {
        self.bugs = bugs;
        self.faults.drop_live_entry.store(
            bugs.compaction_drops_live_entry,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Makes the writer's next write (`on_sync == false`) or next fsync (`true`, after the
    /// write went through) fail with the OS error `code` (e.g. ENOSPC, EIO), as a full or
    /// failing disk would (tests only).
    #[cfg(any(test, feature = "planted-bugs"))]
    pub fn inject_io_error(&self, code: i32, on_sync: bool) {
        let slot = if on_sync {
            &self.faults.sync_error
        } else {
            &self.faults.write_error
        };
        slot.store(code, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets the checkpoint threshold: [`FilePersist::wants_checkpoint`] turns true once the
    /// entries after the log's base take more than `max(bytes, base snapshot bytes)` (so a
    /// checkpoint's rewrite never costs more than the entries it makes dead). At least 1.
    pub fn set_checkpoint_bytes(&mut self, bytes: u64) {
        self.checkpoint_bytes = bytes.max(1);
    }

    /// Bytes of the entries after the log's base (queued or written).
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// True when the log should be compacted: the driver then captures the application's
    /// state at [`FilePersist::log_end`] and hands it to [`FilePersist::checkpoint`].
    pub fn wants_checkpoint(&self) -> bool {
        self.holds.is_some() && self.live_bytes >= self.checkpoint_bytes.max(self.base_bytes)
    }

    /// Queues a checkpoint: `data` is the application's state after every delivery queued
    /// so far (so `version` must be [`FilePersist::log_end`]). The writer then rewrites the
    /// file (temporary file, fsync, rename, directory fsync) as: boot, identity, the live
    /// control records, this snapshot and the entries queued after it. The entries it
    /// replaces are dead: the snapshot holds their effect. Nothing is reported for it (the
    /// deliveries it covers are reported by their own `Persist` requests).
    pub fn checkpoint(
        &mut self,
        shard: ShardId,
        version: Version,
        ts: Hlc,
        data: &[u8],
    ) -> Result<(), Error> {
        if self.holds != Some(shard) || (version, ts) != self.log_end {
            return Err(perr(
                &self.dir,
                None,
                format!(
                    "checkpoint of shard {shard} at {version:?} does not match the log \
                     (shard {:?}, end {:?})",
                    self.holds, self.log_end
                ),
            ));
        }
        let mut b = Vec::with_capacity(data.len() + 40);
        put_u32(&mut b, shard);
        put_version(&mut b, version);
        put_hlc(&mut b, ts);
        put_bytes(&mut b, data);
        self.pile.records.push((true, encode_raw(K_SNAPSHOT, &b)));
        self.live_bytes = 0;
        self.base_bytes = data.len() as u64;
        Ok(())
    }

    /// Queues the identity of this data dir: the member's full id, and whether the group
    /// removed that incarnation (`evicted`: the dir's state is dead, and a restart must come
    /// back as `id.next_incarnation()`). Kept across rewrites; the newest one counts.
    pub fn record_identity(&mut self, id: NodeId, evicted: bool) {
        let mut b = Vec::with_capacity(9);
        put_u64(&mut b, id.0);
        b.push(u8::from(evicted));
        self.pile.records.push((false, encode_raw(K_IDENTITY, &b)));
    }

    /// Queues a delivered message.
    pub fn append_entry(&mut self, d: &Delivery) {
        if self.bugs.drop_entries {
            return;
        }
        let mut b = Vec::with_capacity(d.payload.len() + 64);
        put_u32(&mut b, d.shard);
        put_version(&mut b, d.version);
        put_hlc(&mut b, d.ts);
        put_u64(&mut b, d.id.sender.0);
        put_u64(&mut b, d.id.seq);
        put_bytes(&mut b, &d.payload);
        let r = encode_raw(K_ENTRY, &b);
        self.live_bytes += r.len() as u64;
        self.pile.records.push((false, r));
        self.log_end = (d.version, d.ts);
    }

    /// Queues a control record; `token` is reported done once it is durable.
    pub fn append_control(&mut self, token: u64, r: &ControlRecord) {
        let mut b = Vec::new();
        encode_control(&mut b, r);
        self.pile.records.push((false, encode_raw(K_CONTROL, &b)));
        self.pile.done.control_tokens.push(token);
    }

    /// Queues a founding reset: the log holds `shard`'s empty state from here on.
    pub fn found(&mut self, shard: ShardId) {
        self.pile
            .records
            .push((true, encode_raw(K_FOUNDED, &shard.to_le_bytes())));
        self.holds = Some(shard);
        self.log_end = (Version::default(), Hlc::default());
        self.live_bytes = 0;
        self.base_bytes = 0;
    }

    /// Queues an installed snapshot (resets the log); `(shard, version)` is reported done
    /// once it is durable.
    pub fn install_snapshot(&mut self, shard: ShardId, version: Version, ts: Hlc, data: &[u8]) {
        let mut b = Vec::with_capacity(data.len() + 40);
        put_u32(&mut b, shard);
        put_version(&mut b, version);
        put_hlc(&mut b, ts);
        put_bytes(&mut b, data);
        self.pile.records.push((true, encode_raw(K_SNAPSHOT, &b)));
        self.pile.done.persisted.push((shard, version));
        self.holds = Some(shard);
        self.log_end = (version, ts);
        self.live_bytes = 0;
        self.base_bytes = data.len() as u64;
    }

    /// Asks for `(shard, upto)` to be reported once everything queued so far is durable.
    pub fn request_persisted(&mut self, shard: ShardId, upto: Version) {
        self.pile.done.persisted.push((shard, upto));
    }

    /// Hands everything queued to the writer thread (one group commit, possibly merged
    /// with other piles waiting for it).
    pub fn submit(&mut self) {
        if self.pile.is_empty() {
            return;
        }
        let pile = std::mem::take(&mut self.pile);
        let sent = self.tx.as_ref().map(|t| t.send(pile).is_ok());
        if sent != Some(true) {
            // The writer is gone (it failed and stopped): say so instead of confirming.
            self.pile.done.failed = Some("the persistence writer stopped".into());
        }
    }

    /// Waits for the next group commit to finish.
    pub async fn done(&mut self) -> Option<PersistDone> {
        if let Some(f) = self.pile.done.failed.take() {
            return Some(PersistDone {
                failed: Some(f),
                ..PersistDone::default()
            });
        }
        self.done_rx.recv().await
    }

    /// A finished group commit, if one is ready.
    pub fn try_done(&mut self) -> Option<PersistDone> {
        self.done_rx.try_recv().ok()
    }

    /// Blocks until everything submitted so far is durable and returns what finished (for
    /// shutdown and tests).
    pub fn sync_blocking(&mut self) -> Vec<PersistDone> {
        self.submit();
        // An empty marker pile: its (empty) report comes after every earlier pile's.
        let marker = Pile {
            records: Vec::new(),
            done: PersistDone {
                control_tokens: Vec::new(),
                persisted: Vec::new(),
                failed: Some(String::new()),
            },
        };
        let mut out = Vec::new();
        if let Some(f) = self.pile.done.failed.take() {
            out.push(PersistDone {
                failed: Some(f),
                ..PersistDone::default()
            });
        }
        // If the writer stopped (after a failure), the marker cannot be sent; its reports,
        // the failure among them, are still waiting and the channel ends after them.
        let _ = self.tx.as_ref().map(|t| t.send(marker));
        while let Some(d) = self.done_rx.blocking_recv() {
            if d.failed.as_deref() == Some("") {
                break;
            }
            out.push(d);
        }
        out
    }
}

/// The writer thread's state.
struct Writer {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    boot: u32,
    /// The live control records written (encoded), for rewrites.
    control: Vec<Vec<u8>>,
    /// The newest identity record (encoded), for rewrites.
    identity: Option<Vec<u8>>,
    faults: Arc<WriterFaults>,
}

impl Writer {
    fn run(
        &mut self,
        rx: std_mpsc::Receiver<Pile>,
        done: tokio_mpsc::UnboundedSender<PersistDone>,
    ) {
        while let Ok(first) = rx.recv() {
            // Group commit: everything that piled up while the previous fsync ran.
            let mut piles = vec![first];
            while let Ok(p) = rx.try_recv() {
                piles.push(p);
            }
            // A marker pile (see `sync_blocking`) ends the group.
            let mut group: Vec<Pile> = Vec::new();
            for p in piles {
                let marker = p.done.failed.as_deref() == Some("") && p.records.is_empty();
                if marker {
                    if !group.is_empty() && !self.commit(std::mem::take(&mut group), &done) {
                        return;
                    }
                    let _ = done.send(p.done);
                } else {
                    group.push(p);
                }
            }
            if !group.is_empty() && !self.commit(group, &done) {
                return;
            }
        }
    }

    /// Writes one group, fsyncs, reports. Returns false after a failure (reported).
    fn commit(
        &mut self,
        group: Vec<Pile>,
        done: &tokio_mpsc::UnboundedSender<PersistDone>,
    ) -> bool {
        let mut all = PersistDone::default();
        let mut records = Vec::new();
        for p in group {
            records.extend(p.records);
            all.control_tokens.extend(p.done.control_tokens);
            all.persisted.extend(p.done.persisted);
        }
        let r = match records.iter().rposition(|(reset, _)| *reset) {
            Some(i) => {
                for (_, r) in &records[..i] {
                    self.keep(r);
                }
                // The control records a restart needs (`live_control`), then the new base
                // and what follows it.
                self.control = live_control(std::mem::take(&mut self.control));
                let mut tail = Vec::new();
                let mut drop_one = self
                    .faults
                    .drop_live_entry
                    .load(std::sync::atomic::Ordering::Relaxed);
                for (_, r) in &records[i..] {
                    self.keep(r);
                    if drop_one && r.first() == Some(&K_ENTRY) {
                        // Planted bug: a live entry does not make it into the new file.
                        drop_one = false;
                        continue;
                    }
                    if !matches!(r.first(), Some(&K_CONTROL) | Some(&K_IDENTITY)) {
                        tail.extend_from_slice(r);
                    }
                }
                let mut body = encode_raw(K_BOOT, &self.boot.to_le_bytes());
                if let Some(id) = &self.identity {
                    body.extend_from_slice(id);
                }
                for c in &self.control {
                    body.extend_from_slice(c);
                }
                body.extend_from_slice(&tail);
                self.rewrite(&body)
            }
            None => {
                let mut body = Vec::new();
                for (_, r) in &records {
                    self.keep(r);
                    body.extend_from_slice(r);
                }
                if body.is_empty() {
                    Ok(())
                } else {
                    take_fault(&self.faults.write_error)
                        .and_then(|_| write_frames(&mut self.file, &body))
                        .and_then(|_| take_fault(&self.faults.sync_error))
                        .and_then(|_| self.file.sync_data())
                        .map_err(|e| format!("{}: {e}", self.path.display()))
                }
            }
        };
        if let Err(e) = r {
            // Nothing of this group is reported durable, and the writer stops: after a
            // failed fsync the file's state is unknown, so no later write may be confirmed.
            let _ = done.send(PersistDone {
                failed: Some(e),
                ..PersistDone::default()
            });
            return false;
        }
        let _ = done.send(all);
        true
    }

    /// Tracks a record the file now holds that rewrites must carry over.
    fn keep(&mut self, r: &[u8]) {
        match r.first() {
            Some(&K_CONTROL) => self.control.push(r.to_vec()),
            Some(&K_IDENTITY) => self.identity = Some(r.to_vec()),
            _ => {}
        }
    }

    /// Replaces the file with `body` (temporary file, fsync, rename, directory fsync). An
    /// error names the file it happened on.
    fn rewrite(&mut self, body: &[u8]) -> Result<(), String> {
        let tmp = self.dir.join(WAL_TMP_FILE);
        fn on(p: &Path) -> impl Fn(std::io::Error) -> String + '_ {
            move |e| format!("{}: {e}", p.display())
        }
        {
            let mut f = File::create(&tmp).map_err(on(&tmp))?;
            take_fault(&self.faults.write_error)
                .and_then(|_| write_frames(&mut f, body))
                .and_then(|_| take_fault(&self.faults.sync_error))
                .and_then(|_| f.sync_all())
                .map_err(on(&tmp))?;
        }
        fs::rename(&tmp, &self.path).map_err(on(&self.path))?;
        sync_dir(&self.dir).map_err(on(&self.dir))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(on(&self.path))?;
        Ok(())
    }
}

/// The control records [`Node::restart`](crate::Node::restart) reads, in their order: the
/// newest decision (it gives the view) and the promises and accepts of the epochs after it
/// (the acceptor state of that view's epoch). Older ones are dead. Records that do not
/// parse are kept (they never do: the writer encoded them).
fn live_control(records: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let decoded: Vec<Option<ControlRecord>> = records
        .iter()
        .map(|r| decode_control(&mut Reader::new(r.get(5..)?)))
        .collect();
    let newest = decoded
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Some(ControlRecord::Decided { proposal }) => Some((proposal.epoch, i)),
            _ => None,
        })
        .max();
    let Some((decided, at)) = newest else {
        return records;
    };
    records
        .into_iter()
        .zip(decoded)
        .enumerate()
        .filter(|(i, (_, d))| match d {
            Some(ControlRecord::Decided { .. }) => *i == at,
            Some(ControlRecord::Promised { epoch, .. }) => *epoch > decided,
            Some(ControlRecord::Accepted { proposal, .. }) => proposal.epoch > decided,
            None => true,
        })
        .map(|(_, (r, _))| r)
        .collect()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `body` (whole records) as frames of at most [`FRAME_BODY_MAX`] bytes, splitting
/// only between records. Every frame but the last is synced before the next is written, so
/// the torn-tail rule holds (only the last frame of the file can be unconfirmed); the caller
/// syncs the last.
fn write_frames(f: &mut File, body: &[u8]) -> std::io::Result<()> {
    let mut start = 0;
    while start < body.len() {
        let mut end = start;
        while end < body.len() {
            let len = body
                .get(end + 1..end + 5)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .unwrap_or(0);
            let next = end + 5 + len;
            if next - start > FRAME_BODY_MAX && end > start {
                break;
            }
            end = next.min(body.len());
        }
        if start > 0 {
            f.sync_data()?;
        }
        f.write_all(&frame(&body[start..end]))?;
        start = end;
    }
    Ok(())
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + FRAME_HEADER);
    out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let hcrc = crc32c::crc32c(&out[0..8]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// A valid frame at `off`: its body range.
fn frame_at(buf: &[u8], off: usize) -> Option<std::ops::Range<usize>> {
    let h = buf.get(off..off + FRAME_HEADER)?;
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if word(0) != FRAME_MAGIC || crc32c::crc32c(&h[0..8]) != word(8) {
        return None;
    }
    let len = word(4) as usize;
    if len > FRAME_BODY_MAX {
        return None;
    }
    let body = off + FRAME_HEADER..off + FRAME_HEADER + len;
    let b = buf.get(body.clone())?;
    (crc32c::crc32c(b) == word(12)).then_some(body)
}

/// The valid frames from the start `(offset of the body, body range)` and where they end;
/// applies the torn-tail rule (module docs).
#[allow(clippy::type_complexity)]
fn scan_frames(
    buf: &[u8],
    path: &Path,
) -> Result<(Vec<(usize, std::ops::Range<usize>)>, usize), Error> {
    let mut frames = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        match frame_at(buf, off) {
            Some(body) => {
                frames.push((body.start, body.clone()));
                off = body.end;
            }
            None => {
                let magic = FRAME_MAGIC.to_le_bytes();
                let later = (off + 1..buf.len().saturating_sub(FRAME_HEADER - 1))
                    .find(|&o| buf[o..o + 4] == magic && frame_at(buf, o).is_some());
                if let Some(o) = later {
                    return Err(perr(
                        path,
                        Some(off as u64),
                        format!(
                            "corrupt frame (a valid frame follows at offset {o}, so this one \
                             had been made durable and was damaged later)"
                        ),
                    ));
                }
                return Ok((frames, off));
            }
        }
    }
    Ok((frames, off))
}

fn encode_raw(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(kind);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_version(b: &mut Vec<u8>, v: Version) {
    put_u64(b, v.epoch);
    put_u64(b, v.seq);
}
fn put_hlc(b: &mut Vec<u8>, t: Hlc) {
    put_u64(b, t.phys_us);
    put_u32(b, t.logical);
}
fn put_bytes(b: &mut Vec<u8>, d: &[u8]) {
    put_u32(b, d.len() as u32);
    b.extend_from_slice(d);
}
fn put_ballot(b: &mut Vec<u8>, x: Ballot) {
    put_u32(b, x.round);
    put_u64(b, x.node);
}
fn put_ids(b: &mut Vec<u8>, ids: &[NodeId]) {
    put_u32(b, ids.len() as u32);
    for i in ids {
        put_u64(b, i.0);
    }
}
fn put_proposal(b: &mut Vec<u8>, p: &Proposal) {
    put_u64(b, p.epoch);
    put_ids(b, &p.members);
    put_u32(b, p.shards.len() as u32);
    for s in &p.shards {
        put_ids(b, s);
    }
    put_ids(b, &p.joiners);
    put_u32(b, p.trims.len() as u32);
    for t in &p.trims {
        put_u32(b, t.len() as u32);
        for x in t {
            put_u64(b, *x);
        }
    }
    put_u32(b, p.sources.len() as u32);
    for s in &p.sources {
        match s {
            Some(n) => {
                b.push(1);
                put_u64(b, n.0);
            }
            None => b.push(0),
        }
    }
    b.push(u8::from(p.restart));
}

fn encode_control(b: &mut Vec<u8>, r: &ControlRecord) {
    match r {
        ControlRecord::Promised { epoch, ballot } => {
            b.push(C_PROMISED);
            put_u64(b, *epoch);
            put_ballot(b, *ballot);
        }
        ControlRecord::Accepted { ballot, proposal } => {
            b.push(C_ACCEPTED);
            put_ballot(b, *ballot);
            put_proposal(b, proposal);
        }
        ControlRecord::Decided { proposal } => {
            b.push(C_DECIDED);
            put_proposal(b, proposal);
        }
    }
}

/// Bounds-checked little-endian reader over a record.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
    fn version(&mut self) -> Option<Version> {
        Some(Version {
            epoch: self.u64()?,
            seq: self.u64()?,
        })
    }
    fn hlc(&mut self) -> Option<Hlc> {
        Some(Hlc {
            phys_us: self.u64()?,
            logical: self.u32()?,
        })
    }
    fn blob(&mut self, max: usize) -> Option<Bytes> {
        let n = self.u32()? as usize;
        if n > max {
            return None;
        }
        self.bytes(n).map(Bytes::copy_from_slice)
    }
    fn ballot(&mut self) -> Option<Ballot> {
        Some(Ballot {
            round: self.u32()?,
            node: self.u64()?,
        })
    }
    fn count(&mut self, max: usize) -> Option<usize> {
        let n = self.u32()? as usize;
        (n <= max).then_some(n)
    }
    fn ids(&mut self, max: usize) -> Option<Vec<NodeId>> {
        let n = self.count(max)?;
        (0..n).map(|_| self.u64().map(NodeId)).collect()
    }
    fn proposal(&mut self) -> Option<Proposal> {
        let epoch = self.u64()?;
        let members = self.ids(limits::VIEW_MEMBERS_MAX)?;
        let ns = self.count(limits::SHARDS_MAX)?;
        let shards = (0..ns)
            .map(|_| self.ids(limits::SHARD_MEMBERS_MAX))
            .collect::<Option<Vec<_>>>()?;
        let joiners = self.ids(limits::VIEW_MEMBERS_MAX)?;
        let nt = self.count(limits::SHARDS_MAX)?;
        let trims = (0..nt)
            .map(|_| {
                let n = self.count(limits::SHARD_MEMBERS_MAX)?;
                (0..n).map(|_| self.u64()).collect::<Option<Vec<_>>>()
            })
            .collect::<Option<Vec<_>>>()?;
        let nsrc = self.count(limits::SHARDS_MAX)?;
        let sources = (0..nsrc)
            .map(|_| match self.u8()? {
                0 => Some(None),
                1 => self.u64().map(|n| Some(NodeId(n))),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let restart = match self.u8()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        Some(Proposal {
            epoch,
            members,
            shards,
            joiners,
            trims,
            sources,
            restart,
        })
    }
}

fn decode_control(b: &mut Reader<'_>) -> Option<ControlRecord> {
    let r = match b.u8()? {
        C_PROMISED => ControlRecord::Promised {
            epoch: b.u64()?,
            ballot: b.ballot()?,
        },
        C_ACCEPTED => ControlRecord::Accepted {
            ballot: b.ballot()?,
            proposal: Arc::new(b.proposal()?),
        },
        C_DECIDED => ControlRecord::Decided {
            proposal: Arc::new(b.proposal()?),
        },
        _ => return None,
    };
    b.is_empty().then_some(r)
}

fn decode_snapshot(b: &mut Reader<'_>) -> Option<(ShardId, Version, Hlc, Bytes)> {
    Some((
        b.u32()?,
        b.version()?,
        b.hlc()?,
        b.blob(limits::SNAPSHOT_BYTES_MAX)?,
    ))
}

fn decode_entry(b: &mut Reader<'_>) -> Option<Delivery> {
    Some(Delivery {
        shard: b.u32()?,
        version: b.version()?,
        ts: b.hlc()?,
        id: MsgId {
            sender: NodeId(b.u64()?),
            seq: b.u64()?,
        },
        payload: b.blob(limits::PAYLOAD_BYTES_MAX)?,
    })
}

#[cfg(test)]
mod tests {
    //! The file format and the recovery rule: a full round trip of every record kind, group
    //! commit (one frame per pile group), snapshots resetting the log, a torn tail in several
    //! shapes (cut, reported, and the file usable again), and corruption that must be an
    //! error naming the file instead of a silent cut or a panic.

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TmpDir(PathBuf);
    impl TmpDir {
        fn new(name: &str) -> TmpDir {
            let p = std::env::temp_dir().join(format!(
                "squall-persist-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&p);
            TmpDir(p)
        }
    }
    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn delivery(seq: u64, payload: &str) -> Delivery {
        Delivery {
            shard: 0,
            version: Version { epoch: 1, seq },
            ts: Hlc {
                phys_us: 1000 + seq,
                logical: 0,
            },
            id: MsgId {
                sender: NodeId(seq % 3),
                seq,
            },
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        }
    }

    fn proposal() -> Arc<Proposal> {
        Arc::new(Proposal {
            epoch: 1,
            members: vec![NodeId(1), NodeId(2)],
            shards: vec![vec![NodeId(1), NodeId(2)]],
            joiners: vec![],
            trims: vec![vec![4, 5, 6]],
            sources: vec![Some(NodeId(1)), None],
            restart: true,
        })
    }

    fn controls() -> Vec<ControlRecord> {
        vec![
            ControlRecord::Promised {
                epoch: 1,
                ballot: Ballot { round: 2, node: 1 },
            },
            ControlRecord::Accepted {
                ballot: Ballot { round: 2, node: 1 },
                proposal: proposal(),
            },
            ControlRecord::Decided {
                proposal: proposal(),
            },
        ]
    }

    /// Writes a founding reset, `n` entries and the three control records, synced.
    fn fill(dir: &Path, n: u64) -> Vec<PersistDone> {
        let (mut p, rec) = FilePersist::open(dir).expect("open");
        assert_eq!(rec.recovered.boot, 0);
        p.found(0);
        for i in 1..=n {
            p.append_entry(&delivery(i, &format!("m{i}")));
        }
        for (t, c) in controls().iter().enumerate() {
            p.append_control(t as u64 + 10, c);
        }
        p.request_persisted(0, Version { epoch: 1, seq: n });
        p.sync_blocking()
    }

    #[test]
    fn round_trip_every_record_kind() {
        let d = TmpDir::new("roundtrip");
        let done = fill(&d.0, 5);
        let all: Vec<u64> = done.iter().flat_map(|x| x.control_tokens.clone()).collect();
        assert_eq!(all, vec![10, 11, 12]);
        let per: Vec<_> = done.iter().flat_map(|x| x.persisted.clone()).collect();
        assert_eq!(per, vec![(0, Version { epoch: 1, seq: 5 })]);
        let (_p, rec) = FilePersist::open(&d.0).expect("reopen");
        assert_eq!(rec.recovered.boot, 1);
        assert_eq!(rec.recovered.records, controls());
        assert_eq!(
            rec.recovered.log,
            Some((
                0,
                Version { epoch: 1, seq: 5 },
                Hlc {
                    phys_us: 1005,
                    logical: 0
                }
            ))
        );
        assert_eq!(
            rec.entries,
            (1..=5)
                .map(|i| delivery(i, &format!("m{i}")))
                .collect::<Vec<_>>()
        );
        assert_eq!(rec.snapshot, None);
        assert_eq!(rec.torn, None);
        drop(_p);
        let (_p, rec) = FilePersist::open(&d.0).expect("third open");
        assert_eq!(rec.recovered.boot, 2);
    }

    #[test]
    fn group_commit_writes_one_frame_per_group() {
        let d = TmpDir::new("group");
        let (mut p, _) = FilePersist::open(&d.0).expect("open");
        p.found(0);
        // Three piles submitted back to back before anyone waits: the writer may merge
        // them, and whatever it does every request is reported exactly once, in order.
        for i in 1..=30u64 {
            p.append_entry(&delivery(i, "x"));
            if i % 10 == 0 {
                p.request_persisted(0, Version { epoch: 1, seq: i });
                p.submit();
            }
        }
        let done = p.sync_blocking();
        let per: Vec<u64> = done
            .iter()
            .flat_map(|x| x.persisted.iter().map(|(_, v)| v.seq))
            .collect();
        assert_eq!(per, vec![10, 20, 30]);
        drop(p);
        let buf = fs::read(d.0.join(WAL_FILE)).expect("read");
        let (frames, end) = scan_frames(&buf, &d.0).expect("scan");
        assert_eq!(end, buf.len());
        // The founding reset rewrote the file (boot frame included) as one frame; every
        // later group appended one frame: one frame (one fsync) per report.
        assert!((1..=3).contains(&frames.len()), "{} frames", frames.len());
        assert_eq!(frames.len(), done.len(), "one frame (one fsync) per report");
    }

    #[test]
    fn snapshot_resets_the_log_and_keeps_control_records() {
        let d = TmpDir::new("snapshot");
        fill(&d.0, 3);
        {
            let (mut p, _) = FilePersist::open(&d.0).expect("open");
            p.install_snapshot(
                0,
                Version { epoch: 2, seq: 7 },
                Hlc {
                    phys_us: 9,
                    logical: 1,
                },
                b"state",
            );
            p.append_entry(&Delivery {
                version: Version { epoch: 2, seq: 8 },
                ..delivery(8, "after")
            });
            let done = p.sync_blocking();
            assert_eq!(done[0].persisted, vec![(0, Version { epoch: 2, seq: 7 })]);
        }
        let (_p, rec) = FilePersist::open(&d.0).expect("reopen");
        assert_eq!(rec.recovered.boot, 2);
        // The rewrite kept the control records a restart reads: the decision of epoch 1
        // (the promise and accept of epoch 1 are dead once it is decided).
        assert_eq!(rec.recovered.records, controls()[2..].to_vec());
        assert_eq!(
            rec.snapshot,
            Some((
                0,
                Version { epoch: 2, seq: 7 },
                Bytes::from_static(b"state")
            ))
        );
        assert_eq!(rec.entries.len(), 1);
        assert_eq!(
            rec.recovered.log.map(|l| l.1),
            Some(Version { epoch: 2, seq: 8 })
        );
    }

    /// Appends `bytes` to the WAL (a crash in the middle of the next write).
    fn append_raw(dir: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(WAL_FILE))
            .expect("open wal");
        f.write_all(bytes).expect("append");
    }

    #[test]
    fn torn_tail_is_cut_and_reported() {
        let mut next = Vec::new();
        next.extend_from_slice(&encode_raw(K_ENTRY, b"whatever"));
        let whole = frame(&next);
        // The shapes a write cut short by a crash leaves: part of the header, the header
        // and part of the body, the full length with the body not on disk (zeros), and a
        // header that is itself half zeros.
        let mut zero_body = whole.clone();
        for b in &mut zero_body[FRAME_HEADER..] {
            *b = 0;
        }
        let mut half_header = whole.clone();
        for b in &mut half_header[6..] {
            *b = 0;
        }
        let shapes: Vec<(&str, Vec<u8>)> = vec![
            ("header prefix", whole[..7].to_vec()),
            ("body prefix", whole[..whole.len() - 3].to_vec()),
            ("zero body", zero_body),
            ("half header", half_header),
            ("zeros", vec![0u8; 4096]),
        ];
        for (name, tail) in shapes {
            let d = TmpDir::new(&format!("torn-{}", name.replace(' ', "-")));
            fill(&d.0, 4);
            let good = fs::metadata(d.0.join(WAL_FILE)).expect("meta").len();
            append_raw(&d.0, &tail);
            let (p, rec) = FilePersist::open(&d.0).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(rec.torn, Some((good, tail.len() as u64)), "{name}");
            assert_eq!(rec.entries.len(), 4, "{name}");
            assert_eq!(rec.recovered.records, controls(), "{name}");
            drop(p);
            // The cut file is clean: the next open finds no tail and one more boot.
            let (_p, rec) = FilePersist::open(&d.0).expect("reopen");
            assert_eq!(rec.torn, None, "{name}");
            assert_eq!(rec.recovered.boot, 2, "{name}");
            assert_eq!(rec.entries.len(), 4, "{name}");
        }
    }

    #[test]
    fn corrupt_frame_followed_by_a_valid_one_is_an_error_naming_the_file() {
        let d = TmpDir::new("corrupt");
        fill(&d.0, 4);
        // One more valid frame after the data, then flip a byte inside an earlier frame.
        {
            let (mut p, _) = FilePersist::open(&d.0).expect("open");
            p.append_entry(&delivery(5, "m5"));
            p.request_persisted(0, Version { epoch: 1, seq: 5 });
            p.sync_blocking();
        }
        let path = d.0.join(WAL_FILE);
        let mut buf = fs::read(&path).expect("read");
        let (frames, _) = scan_frames(&buf, &path).expect("scan");
        assert!(frames.len() >= 3);
        let victim = frames[1].1.start + 3;
        buf[victim] ^= 0x40;
        fs::write(&path, &buf).expect("write");
        let err = FilePersist::open(&d.0).expect_err("corruption must not be cut silently");
        let msg = err.to_string();
        assert!(msg.contains(WAL_FILE), "{msg}");
        assert!(msg.contains("corrupt frame"), "{msg}");
        assert!(
            msg.contains(&format!("offset {}", frames[1].0 - FRAME_HEADER)),
            "{msg}"
        );
    }

    #[test]
    fn valid_frame_with_garbage_records_is_an_error_not_a_panic() {
        for (name, body) in [
            ("unknown kind", encode_raw(99, b"")),
            ("short entry", encode_raw(K_ENTRY, &[1, 2, 3])),
            ("huge blob length", {
                let mut b = Vec::new();
                put_u32(&mut b, 0);
                put_version(&mut b, Version { epoch: 1, seq: 1 });
                put_hlc(&mut b, Hlc::default());
                put_u64(&mut b, 1);
                put_u64(&mut b, 1);
                put_u32(&mut b, u32::MAX);
                encode_raw(K_ENTRY, &b)
            }),
            ("record past frame", {
                let mut b = encode_raw(K_BOOT, &[0, 0, 0, 0]);
                b[1] = 200;
                b
            }),
            ("bad control", encode_raw(K_CONTROL, &[7, 1, 2])),
            ("entry without shard", {
                let mut b = Vec::new();
                put_u32(&mut b, 0);
                put_version(&mut b, Version { epoch: 1, seq: 1 });
                put_hlc(&mut b, Hlc::default());
                put_u64(&mut b, 1);
                put_u64(&mut b, 1);
                put_bytes(&mut b, b"p");
                encode_raw(K_ENTRY, &b)
            }),
        ] {
            let d = TmpDir::new(&format!("garbage-{}", name.replace(' ', "-")));
            fs::create_dir_all(&d.0).expect("mkdir");
            fs::write(d.0.join(WAL_FILE), frame(&body)).expect("write");
            let err = FilePersist::open(&d.0).expect_err(name);
            let msg = err.to_string();
            assert!(
                msg.contains(WAL_FILE) && msg.contains("offset"),
                "{name}: {msg}"
            );
        }
    }

    #[test]
    fn planted_drop_entries_loses_confirmed_deliveries() {
        // The planted bug the fault tests use: confirmed, yet the entries are not on disk.
        let d = TmpDir::new("planted");
        {
            let (mut p, _) = FilePersist::open(&d.0).expect("open");
            p.plant_bugs(PersistBugs {
                drop_entries: true,
                ..PersistBugs::default()
            });
            p.found(0);
            p.append_entry(&delivery(1, "lost"));
            p.request_persisted(0, Version { epoch: 1, seq: 1 });
            let done = p.sync_blocking();
            assert_eq!(done[0].persisted, vec![(0, Version { epoch: 1, seq: 1 })]);
        }
        let (_p, rec) = FilePersist::open(&d.0).expect("reopen");
        assert!(rec.entries.is_empty());
    }

    /// The test's own record of a checkpointing run: every delivery and the state
    /// (count, chained digest) after each, as the application would hold it.
    #[derive(Default)]
    struct Model {
        all: Vec<Delivery>,
        /// `digests[c]`: the digest after the first `c` deliveries.
        digests: Vec<u64>,
    }

    impl Model {
        fn chain(digest: u64, d: &Delivery) -> u64 {
            let mut b = Vec::new();
            put_u64(&mut b, digest);
            put_version(&mut b, d.version);
            put_u64(&mut b, d.id.seq);
            b.extend_from_slice(&d.payload);
            u64::from(crc32c::crc32c(&b)) << 32 | (digest.rotate_left(7) & 0xffff_ffff)
        }
        fn apply(&mut self, d: Delivery) {
            if self.digests.is_empty() {
                self.digests.push(0);
            }
            let g = Self::chain(*self.digests.last().unwrap_or(&0), &d);
            self.digests.push(g);
            self.all.push(d);
        }
        fn snapshot(&self) -> Vec<u8> {
            let mut b = Vec::new();
            put_u64(&mut b, self.all.len() as u64);
            put_u64(&mut b, *self.digests.last().unwrap_or(&0));
            b
        }
        /// Recovery must give back exactly the delivered sequence: a base that is the
        /// state after some prefix of it, then every later delivery, in order.
        fn check(&self, rec: &FileRecovery) -> Result<(), String> {
            let (base, digest) = match &rec.snapshot {
                None => (0u64, 0u64),
                Some((_, v, data)) => {
                    let mut r = Reader::new(data);
                    let (c, g) = (r.u64().ok_or("short")?, r.u64().ok_or("short")?);
                    if c > 0 && self.all[c as usize - 1].version != *v {
                        return Err(format!("snapshot version {v:?} is not delivery {c}'s"));
                    }
                    (c, g)
                }
            };
            if self.digests.get(base as usize).copied().unwrap_or(0) != digest {
                return Err(format!("snapshot state at {base} is not the delivered one"));
            }
            let tail = &self.all[base as usize..];
            if rec.entries.as_slice() != tail {
                return Err(format!(
                    "entries after the base differ: recovered {} expected {}",
                    rec.entries.len(),
                    tail.len()
                ));
            }
            Ok(())
        }
    }

    fn epoch_proposal(epoch: u64) -> Arc<Proposal> {
        Arc::new(Proposal {
            epoch,
            ..(*proposal()).clone()
        })
    }

    /// A long durable run with a small checkpoint threshold: 3 000 deliveries, a group
    /// commit every 5, a checkpoint whenever the persist layer asks (its pile then carries
    /// live entries after the new base), a view change's control records every 500, and a
    /// restart from the file every 750. Returns the largest file seen at a sync point, or
    /// the first recovery that did not give back the delivered sequence.
    fn checkpointing_run(dir: &Path, bugs: PersistBugs) -> Result<u64, String> {
        const THRESHOLD: u64 = 4096;
        let open = || {
            let (mut p, rec) = FilePersist::open(dir).map_err(|e| e.to_string())?;
            p.set_checkpoint_bytes(THRESHOLD);
            p.plant_bugs(bugs);
            Ok::<_, String>((p, rec))
        };
        let (mut p, _) = open()?;
        p.found(0);
        let mut m = Model::default();
        let mut max_len = 0u64;
        let mut epoch = 1u64;
        let mut checkpoints = 0;
        for i in 1..=3000u64 {
            if i % 500 == 0 {
                p.append_control(
                    i,
                    &ControlRecord::Promised {
                        epoch,
                        ballot: Ballot { round: 1, node: 1 },
                    },
                );
                p.append_control(
                    i + 1,
                    &ControlRecord::Accepted {
                        ballot: Ballot { round: 1, node: 1 },
                        proposal: epoch_proposal(epoch),
                    },
                );
                p.append_control(
                    i + 2,
                    &ControlRecord::Decided {
                        proposal: epoch_proposal(epoch),
                    },
                );
                epoch += 1;
                p.append_control(
                    i + 3,
                    &ControlRecord::Promised {
                        epoch,
                        ballot: Ballot { round: 2, node: 2 },
                    },
                );
            }
            let d = Delivery {
                version: Version { epoch, seq: i },
                ..delivery(i, &format!("payload {i:032}"))
            };
            p.append_entry(&d);
            m.apply(d);
            if i % 5 == 0 {
                p.request_persisted(0, Version { epoch, seq: i });
                p.submit();
                if p.wants_checkpoint() {
                    let (v, ts) = p.log_end();
                    p.checkpoint(0, v, ts, &m.snapshot())
                        .map_err(|e| e.to_string())?;
                    checkpoints += 1;
                }
            }
            if i % 250 == 0 {
                let done = p.sync_blocking();
                if let Some(f) = done.iter().find_map(|d| d.failed.clone()) {
                    return Err(f);
                }
                let len = fs::metadata(dir.join(WAL_FILE)).map_err(|e| e.to_string())?;
                max_len = max_len.max(len.len());
            }
            if i % 750 == 0 {
                drop(p);
                let (q, rec) = open()?;
                m.check(&rec)?;
                // What `Node::restart` reads survived the compaction of control records:
                // the newest decision and the promise of the epoch after it.
                let newest = rec.recovered.records.iter().filter_map(|r| match r {
                    ControlRecord::Decided { proposal } => Some(proposal.epoch),
                    _ => None,
                });
                if i >= 500 && newest.max() != Some(epoch - 1) {
                    return Err(format!("newest decision lost: {:?}", rec.recovered.records));
                }
                if i >= 500
                    && !rec.recovered.records.contains(&ControlRecord::Promised {
                        epoch,
                        ballot: Ballot { round: 2, node: 2 },
                    })
                {
                    return Err("the live promise was dropped".into());
                }
                if rec.recovered.records.len() > 8 {
                    return Err(format!("{} control records", rec.recovered.records.len()));
                }
                p = q;
            }
        }
        drop(p);
        let (_p, rec) = open()?;
        m.check(&rec)?;
        assert!(checkpoints >= 20, "only {checkpoints} checkpoints");
        Ok(max_len)
    }

    #[test]
    fn checkpoints_keep_the_file_bounded_and_recovery_exact() {
        let d = TmpDir::new("checkpoint");
        let max_len = checkpointing_run(&d.0, PersistBugs::default()).expect("run");
        // 3 000 entries of ~100 bytes (~300 KB without compaction); with a 4 KiB threshold
        // the file holds at most the base, the live control records and a threshold's worth
        // of entries plus one pile.
        assert!(max_len < 3 * 4096, "file grew to {max_len} bytes");
    }

    #[test]
    fn planted_compaction_bug_fails_the_recovery_check() {
        let d = TmpDir::new("checkpoint-planted");
        let r = checkpointing_run(
            &d.0,
            PersistBugs {
                compaction_drops_live_entry: true,
                ..PersistBugs::default()
            },
        );
        let e = r.expect_err("a dropped live entry must fail the check");
        assert!(e.contains("entries after the base differ"), "{e}");
    }

    #[test]
    fn checkpoint_must_match_the_log_end() {
        let d = TmpDir::new("checkpoint-mismatch");
        let (mut p, _) = FilePersist::open(&d.0).expect("open");
        p.found(0);
        p.append_entry(&delivery(1, "a"));
        let (v, ts) = p.log_end();
        assert!(p.checkpoint(1, v, ts, b"x").is_err(), "wrong shard");
        assert!(p
            .checkpoint(0, Version { epoch: 1, seq: 0 }, ts, b"x")
            .is_err());
        assert!(p.checkpoint(0, v, ts, b"x").is_ok());
    }

    /// The reports of a sync: the failure (if any) and every `(shard, version)` confirmed.
    fn outcome(done: &[PersistDone]) -> (Option<String>, Vec<(ShardId, Version)>) {
        (
            done.iter().find_map(|d| d.failed.clone()),
            done.iter().flat_map(|d| d.persisted.clone()).collect(),
        )
    }

    /// Linux error codes (the crate does not depend on `libc`).
    const ENOSPC: i32 = 28;
    const EIO: i32 = 5;

    #[test]
    fn full_or_failing_disk_is_a_clear_error_never_a_confirmation() {
        // (error code, on fsync rather than write, a checkpoint rewrite rather than an append)
        for (code, on_sync, rewrite) in [
            (ENOSPC, false, false),
            (EIO, true, false),
            (ENOSPC, false, true),
            (EIO, true, true),
        ] {
            let name = format!("disk-{code}-{on_sync}-{rewrite}");
            let d = TmpDir::new(&name);
            {
                let (mut p, _) = FilePersist::open(&d.0).expect("open");
                p.found(0);
                p.append_entry(&delivery(1, "kept"));
                p.request_persisted(0, Version { epoch: 1, seq: 1 });
                let (failed, ok) = outcome(&p.sync_blocking());
                assert_eq!((failed, ok.len()), (None, 1), "{name}");
                p.append_entry(&delivery(2, "not on disk"));
                if rewrite {
                    let (v, ts) = p.log_end();
                    p.checkpoint(0, v, ts, b"state").expect("checkpoint");
                }
                p.request_persisted(0, Version { epoch: 1, seq: 2 });
                p.inject_io_error(code, on_sync);
                let (failed, ok) = outcome(&p.sync_blocking());
                let msg = failed.unwrap_or_else(|| panic!("{name}: no failure reported ({ok:?})"));
                assert!(
                    ok.is_empty(),
                    "{name}: confirmed {ok:?} after a failed write"
                );
                let file = if rewrite { WAL_TMP_FILE } else { WAL_FILE };
                assert!(msg.contains(file), "{name}: {msg}");
                let os = std::io::Error::from_raw_os_error(code).to_string();
                assert!(msg.contains(&os), "{name}: {msg}");
                // The writer stopped: nothing later is ever confirmed.
                p.append_entry(&delivery(3, "later"));
                p.request_persisted(0, Version { epoch: 1, seq: 3 });
                p.submit();
                let next = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("rt")
                    .block_on(p.done());
                assert!(
                    next.as_ref().is_none_or(|n| n.persisted.is_empty()),
                    "{name}: {next:?}"
                );
            }
            // What was confirmed is still there.
            let (_p, rec) = FilePersist::open(&d.0).expect("reopen");
            assert_eq!(rec.entries.first(), Some(&delivery(1, "kept")), "{name}");
        }
    }

    #[test]
    fn full_disk_at_open_is_an_error_naming_the_file() {
        let d = TmpDir::new("devfull");
        fs::create_dir_all(&d.0).expect("mkdir");
        std::os::unix::fs::symlink("/dev/full", d.0.join(WAL_FILE)).expect("symlink");
        let err = FilePersist::open(&d.0).expect_err("a full disk must fail the open");
        let msg = err.to_string();
        assert!(
            msg.contains(WAL_FILE) && msg.contains("No space left"),
            "{msg}"
        );
    }
}
