//! One key's kept history inside a shard: its dense counters, its versions in order, and the
//! lookups by version, platform time and sensor time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::types::{Entry, Version};

/// `lsn` of an entry that was never logged (volatile pool).
pub(crate) const NO_LSN: u64 = u64::MAX;
/// `lsn` of an entry that lives in the checkpoint (installed by a state transfer).
pub(crate) const CHECKPOINT_LSN: u64 = 0;

/// Compaction sweeps dead placeholders once more than this many have piled up (and they are
/// at least half of the entries), so a removal is amortised O(1).
const DEAD_SWEEP_MIN: usize = 64;

/// One kept version.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub version: Version,
    pub value: Bytes,
    pub tombstone: bool,
    pub compaction_key: Option<Bytes>,
    /// Log sequence number of the record that holds it, or [`NO_LSN`].
    pub lsn: u64,
    /// Removed by compaction; kept as a placeholder until the next sweep so indexes stay sorted.
    pub dead: bool,
}

impl Stored {
    pub fn to_entry(&self, key: &str) -> Entry {
        Entry {
            key: key.to_owned(),
            version: self.version,
            value: self.value.clone(),
            tombstone: self.tombstone,
            compaction_key: self.compaction_key.clone(),
        }
    }

    /// The time sensor reads order this entry by: its sensor time, or its platform time when
    /// the producer gave none.
    pub fn sensor_key(&self) -> u64 {
        self.version
            .sensor_time_us
            .unwrap_or(self.version.time.physical_us)
    }
}

/// A key's state.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyState {
    /// First key_version still kept.
    pub start: u64,
    /// key_version of the next put.
    pub next: u64,
    /// The newest version ever applied (key_version, tombstone): what a cput compares with.
    pub newest: Option<(u64, bool)>,
    /// Kept versions, ascending key_version (and shard_seq, and platform time).
    pub entries: VecDeque<Stored>,
    /// Value bytes of the live kept entries.
    pub live_bytes: u64,
    /// Dead placeholders in `entries`.
    pub dead: usize,
    /// compact pools: compaction key → key_version of its newest entry.
    pub compaction: BTreeMap<Bytes, u64>,
    /// Sensor index of live, non-late entries: (sensor time, key_version). Built when the first
    /// entry with a sensor time arrives; until then sensor reads use platform time.
    pub sensor: Option<BTreeSet<(u64, u64)>>,
    /// The key's owner, if a guarded put claimed it (logged with the put that changed it).
    pub owner: Option<crate::owner::Owner>,
}

/// The number of leading entries whose `key` is ≤ `target` (`key` must not decrease along
/// `entries`). An interpolation guess followed by an exponential search around it and a binary
/// search in the bracket found: dense counters and steady clocks make the guess land within a
/// few entries, so a lookup in a million versions touches a handful of cache lines instead of
/// twenty; any distribution still costs O(log n).
fn count_le(entries: &VecDeque<Stored>, key: impl Fn(&Stored) -> u64, target: u64) -> usize {
    let n = entries.len();
    if n < 32 {
        return entries.partition_point(|e| key(e) <= target);
    }
    let (first, last) = (key(&entries[0]), key(&entries[n - 1]));
    if target < first {
        return 0;
    }
    if target >= last {
        return n;
    }
    // first ≤ target < last, so last > first.
    let frac = (target - first) as f64 / (last - first) as f64;
    let g = ((frac * (n - 1) as f64) as usize).min(n - 1);
    // Invariant: entries[..lo] are ≤ target, entries[hi..] are > target.
    let (mut lo, mut hi) = (0usize, n);
    if key(&entries[g]) <= target {
        let (mut prev, mut step) = (g, 1usize);
        loop {
            let p = g + step;
            if p >= n {
                lo = prev + 1;
                break;
            }
            if key(&entries[p]) <= target {
                prev = p;
                step *= 2;
            } else {
                lo = prev + 1;
                hi = p;
                break;
            }
        }
    } else {
        let (mut prev, mut step) = (g, 1usize);
        loop {
            if step > g {
                hi = prev;
                break;
            }
            let p = g - step;
            if key(&entries[p]) > target {
                prev = p;
                step *= 2;
            } else {
                lo = p + 1;
                hi = prev;
                break;
            }
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if key(&entries[mid]) <= target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

impl KeyState {
    /// Position of the kept entry whose dense range covers `v` (dead or alive).
    pub fn position_covering(&self, v: u64) -> Option<usize> {
        let idx = count_le(&self.entries, |e| e.version.next_key_version(), v);
        let e = self.entries.get(idx)?;
        (e.version.key_version <= v).then_some(idx)
    }

    /// How many leading entries a reader may see: those whose log position is ≤ `synced`
    /// (`u64::MAX` for a volatile pool, whose entries carry [`NO_LSN`]). A key's log positions
    /// grow with its versions (appends happen under the shard lock, in key order; replay and
    /// checkpoints keep the order, and checkpoint entries carry [`CHECKPOINT_LSN`] = 0), so the
    /// unsynced entries are a suffix. Cost: one comparison unless a write is in flight.
    pub fn visible_len(&self, synced: u64) -> usize {
        match self.entries.back() {
            None => 0,
            Some(b) if b.lsn <= synced => self.entries.len(),
            Some(_) => self.entries.partition_point(|e| e.lsn <= synced),
        }
    }

    /// `(start, next)` as a reader sees them: `next` ends at the first unsynced entry (its
    /// key_version is where the durable counters stood when it was written).
    pub fn visible_bounds(&self, synced: u64) -> (u64, u64) {
        match self.entries.get(self.visible_len(synced)) {
            None => (self.start, self.next),
            Some(e) => {
                let next = e.version.key_version;
                (self.start.min(next), next)
            }
        }
    }

    /// The newest visible live entry (see [`KeyState::visible_len`]).
    pub fn newest_visible(&self, synced: u64) -> Option<&Stored> {
        let n = self.visible_len(synced);
        self.entries.range(..n).rev().find(|e| !e.dead)
    }

    /// What a latest read shows: the newest visible live entry; or, when nothing is visible
    /// but the key had versions before its first kept one (a `latest` pool, or retention
    /// keeping only the newest, replaced the durable value in memory), the newest applied live
    /// entry: the durable value it replaced is gone, and "no value" would be false for a key
    /// that durably has one. A key whose every version is unsynced (start 0) has no value yet.
    pub fn newest_for_get(&self, synced: u64) -> Option<&Stored> {
        self.newest_visible(synced).or_else(|| {
            if self.start > 0 {
                self.entries.iter().rev().find(|e| !e.dead)
            } else {
                None
            }
        })
    }

    /// The visible live entry covering `v`.
    pub fn covering_visible(&self, v: u64, synced: u64) -> Option<&Stored> {
        if v < self.start {
            return None;
        }
        let pos = self.position_covering(v)?;
        let e = &self.entries[pos];
        (!e.dead && e.lsn <= synced).then_some(e)
    }

    /// Live entries from the one covering `from` on.
    pub fn iter_from(&self, from: u64) -> impl Iterator<Item = &Stored> {
        let from = from.max(self.start);
        let idx = count_le(&self.entries, |e| e.version.next_key_version(), from);
        self.entries.range(idx..).filter(|e| !e.dead)
    }

    /// The newest live entry with platform time ≤ `at_us`.
    pub fn at_platform(&self, at_us: u64) -> Option<&Stored> {
        let idx = count_le(&self.entries, |e| e.version.time.physical_us, at_us);
        self.entries.range(..idx).rev().find(|e| !e.dead)
    }

    /// The live, non-late entry with the greatest sensor time ≤ `at_us` (ties: the later one).
    pub fn at_sensor(&self, at_us: u64) -> Option<&Stored> {
        match &self.sensor {
            None => self.at_platform(at_us),
            Some(idx) => {
                let &(_, kv) = idx.range(..=(at_us, u64::MAX)).next_back()?;
                // By position, not `covering`: an entry straddling a truncation point is kept
                // and readable by time (as platform reads do).
                let e = &self.entries[self.position_covering(kv)?];
                (!e.dead).then_some(e)
            }
        }
    }

    /// The first live key_version with platform time ≥ `t_us`.
    pub fn first_platform_at_or_after(&self, t_us: u64) -> Option<u64> {
        let idx = match t_us.checked_sub(1) {
            None => 0,
            Some(t) => count_le(&self.entries, |e| e.version.time.physical_us, t),
        };
        self.entries
            .range(idx..)
            .find(|e| !e.dead)
            .map(|e| e.version.key_version)
    }

    /// The first live key_version with log position ≤ `synced` whose sensor time is ≥ `t_us`
    /// (a scan: sensor times are not ordered by arrival).
    pub fn first_sensor_at_or_after(&self, t_us: u64, synced: u64) -> Option<u64> {
        self.entries
            .range(..self.visible_len(synced))
            .filter(|e| !e.dead && e.sensor_key() >= t_us)
            .map(|e| e.version.key_version)
            .min()
    }

    /// Appends a new newest entry (versioned mode); an entry with a compaction key (stored
    /// only while its pool compacts) kills the previous entry with the same key.
    pub fn push(&mut self, stored: Stored) {
        let v = stored.version;
        let fresh = self.entries.is_empty() && self.newest.is_none() && self.next == 0;
        // `max`: recovery may replay entries under counters a checkpoint already set.
        self.next = self.next.max(v.next_key_version());
        if self.newest.is_none_or(|(kv, _)| kv <= v.key_version) {
            self.newest = Some((v.key_version, stored.tombstone));
        }
        if fresh {
            // A key never written: normally v.key_version is 0; in recovery after log
            // retention (a key the checkpoint did not need to mark) the first replayed entry
            // is where the kept history starts. A key with counters (written before, or
            // marked by a checkpoint or an image) keeps its start: compaction gaps must not
            // move it.
            self.start = v.key_version;
        }
        if let Some(ck) = &stored.compaction_key {
            if let Some(old) = self.compaction.insert(ck.clone(), v.key_version) {
                self.kill(old);
            }
        }
        if stored.version.sensor_time_us.is_some() && self.sensor.is_none() {
            let mut idx = BTreeSet::new();
            for e in self.entries.iter().filter(|e| !e.dead && !e.version.late) {
                idx.insert((e.sensor_key(), e.version.key_version));
            }
            self.sensor = Some(idx);
        }
        if !v.late {
            if let Some(idx) = &mut self.sensor {
                idx.insert((stored.sensor_key(), v.key_version));
            }
        }
        self.live_bytes += stored.value.len() as u64;
        self.entries.push_back(stored);
        self.sweep();
    }

    /// Replaces everything with `stored` (latest mode).
    pub fn replace(&mut self, stored: Stored) {
        let v = stored.version;
        self.entries.clear();
        self.compaction.clear();
        self.sensor = None;
        self.dead = 0;
        self.next = v.next_key_version();
        self.newest = Some((v.key_version, stored.tombstone));
        self.start = v.key_version;
        self.live_bytes = stored.value.len() as u64;
        self.entries.push_back(stored);
    }

    /// Records a notified-only version (stateless mode): counters move, nothing is kept.
    pub fn count_only(&mut self, v: &Version, tombstone: bool) {
        self.next = v.next_key_version();
        self.newest = Some((v.key_version, tombstone));
        self.start = self.next;
    }

    /// Marks the entry at key_version `kv` dead (compaction).
    fn kill(&mut self, kv: u64) {
        let Some(pos) = self.position_covering(kv) else {
            return;
        };
        let e = &mut self.entries[pos];
        if e.dead || e.version.key_version != kv {
            return;
        }
        e.dead = true;
        self.live_bytes -= e.value.len() as u64;
        e.value = Bytes::new();
        if let Some(idx) = &mut self.sensor {
            idx.remove(&(e.sensor_key(), kv));
        }
        self.dead += 1;
    }

    /// Drops dead placeholders at the front at once (they move nothing: compaction never
    /// moves `start`, as Kafka's compaction never moves the log start offset) and the others
    /// when they pile up.
    fn sweep(&mut self) {
        while self.entries.front().is_some_and(|e| e.dead) {
            self.pop_front();
        }
        if self.dead > DEAD_SWEEP_MIN && self.dead * 2 > self.entries.len() {
            self.entries.retain(|e| !e.dead);
            self.dead = 0;
        }
    }

    /// Removes the oldest kept entry. Only a live entry (removed by retention or truncation)
    /// moves `start`, to just past itself: a dead placeholder's removal is compaction's, and
    /// `start` stays where it is, possibly in a gap. So `start` depends only on truncations
    /// and live removals, never on when placeholders are swept (which recovery does not
    /// reproduce).
    fn pop_front(&mut self) -> Option<Stored> {
        let e = self.entries.pop_front()?;
        if e.dead {
            self.dead -= 1;
        } else {
            self.start = self.start.max(e.version.next_key_version());
            self.live_bytes -= e.value.len() as u64;
            if let Some(idx) = &mut self.sensor {
                idx.remove(&(e.sensor_key(), e.version.key_version));
            }
            if let Some(ck) = &e.compaction_key {
                if self.compaction.get(ck) == Some(&e.version.key_version) {
                    self.compaction.remove(ck);
                }
            }
        }
        Some(e)
    }

    /// Removes every version entirely below `before` (clamped to `next`); `start` becomes
    /// `before`. An entry whose range straddles `before` is kept.
    pub fn truncate(&mut self, before: u64) {
        let before = before.min(self.next);
        while self
            .entries
            .front()
            .is_some_and(|e| e.version.next_key_version() <= before)
        {
            self.pop_front();
        }
        self.start = self.start.max(before);
        self.sweep();
    }

    /// Where retention would move `start` (bytes above `bytes_max`, or platform time below
    /// `age_floor_us`), without changing anything. `incoming` is a version about to be pushed
    /// (its value bytes and compaction key), which counts as the newest; without it the newest
    /// kept entry is the one always kept. Oldest entries go first and a dead placeholder never
    /// stops the scan; the newest entry always stays, so the counters survive.
    ///
    /// The log records this result (not the config), so replay removes exactly what the
    /// original run removed even after the pool's retention was altered.
    pub fn retention_start(
        &self,
        incoming: Option<(u64, Option<&Bytes>)>,
        bytes_max: Option<u64>,
        age_floor_us: Option<u64>,
    ) -> u64 {
        let mut start = self.start;
        if bytes_max.is_none() && age_floor_us.is_none() {
            return start;
        }
        let (mut bytes, killed, candidates) = match incoming {
            Some((len, ck)) => {
                let killed = ck.and_then(|ck| self.compaction.get(ck)).copied();
                let killed_len = killed
                    .and_then(|kv| self.position_covering(kv))
                    .map(|p| &self.entries[p])
                    .filter(|e| !e.dead)
                    .map_or(0, |e| e.value.len() as u64);
                (
                    self.live_bytes + len - killed_len,
                    killed,
                    self.entries.len(),
                )
            }
            None => (self.live_bytes, None, self.entries.len().saturating_sub(1)),
        };
        for e in self.entries.range(..candidates) {
            let dead = e.dead || killed == Some(e.version.key_version);
            let too_big = bytes_max.is_some_and(|m| bytes > m);
            let too_old = age_floor_us.is_some_and(|f| e.version.time.physical_us < f);
            if !(dead || too_big || too_old) {
                break;
            }
            if !dead {
                bytes -= e.value.len() as u64;
                start = start.max(e.version.next_key_version());
            }
        }
        start
    }

    /// Removes what retention removed: every entry wholly below `start_after` (the newest
    /// always stays) and the dead placeholders before the first survivor; `start` becomes at
    /// least `start_after` (a value from [`KeyState::retention_start`]).
    pub fn retain_to(&mut self, start_after: u64) {
        let start_after = start_after.min(self.next);
        while self.entries.len() > 1
            && self
                .entries
                .front()
                .is_some_and(|e| e.dead || e.version.next_key_version() <= start_after)
        {
            self.pop_front();
        }
        // Never past the newest kept entry (retention_start never goes past it).
        let cap = self
            .entries
            .back()
            .map_or(self.next, |b| b.version.key_version.max(self.start));
        self.start = self.start.max(start_after.min(cap));
        self.sweep();
    }

    /// Smallest log position among kept entries ([`NO_LSN`] if none; entries living in the
    /// checkpoint do not count).
    pub fn min_lsn(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| !e.dead && e.lsn != CHECKPOINT_LSN)
            .map(|e| e.lsn)
            .min()
            .unwrap_or(NO_LSN)
    }

    /// Checks this key's own rules; `Err` names the broken one.
    pub fn check(&self) -> Result<(), String> {
        if self.start > self.next {
            return Err(format!("start {} > next {}", self.start, self.next));
        }
        let mut prev: Option<&Stored> = None;
        let mut live_bytes = 0u64;
        let mut dead = 0usize;
        for e in &self.entries {
            let v = &e.version;
            if v.span == 0 {
                return Err(format!("entry {} has span 0", v.key_version));
            }
            if let Some(p) = prev {
                if v.key_version < p.version.next_key_version() {
                    return Err(format!(
                        "entry {} overlaps previous {}+{}",
                        v.key_version, p.version.key_version, p.version.span
                    ));
                }
                if e.lsn < p.lsn {
                    // Durable reads rely on it: a key's unsynced versions are a suffix.
                    return Err(format!(
                        "entry {}: log position {} below the previous entry's {}",
                        v.key_version, e.lsn, p.lsn
                    ));
                }
                if v.shard_seq <= p.version.shard_seq || v.time <= p.version.time {
                    return Err(format!(
                        "entry {}: HLC not strictly increasing in key order",
                        v.key_version
                    ));
                }
            }
            if e.dead {
                dead += 1;
            } else {
                live_bytes += e.value.len() as u64;
            }
            prev = Some(e);
        }
        if let Some(last) = self.entries.back() {
            if last.version.next_key_version() != self.next {
                return Err(format!(
                    "newest entry ends at {} but next is {}",
                    last.version.next_key_version(),
                    self.next
                ));
            }
            if last.dead {
                return Err("newest entry is dead".into());
            }
        }
        if let Some(first) = self.entries.front() {
            if first.version.next_key_version() <= self.start {
                return Err(format!(
                    "entry {} kept below start {}",
                    first.version.key_version, self.start
                ));
            }
        }
        if live_bytes != self.live_bytes {
            return Err(format!(
                "live_bytes {} but entries hold {}",
                self.live_bytes, live_bytes
            ));
        }
        if dead != self.dead {
            return Err(format!("dead count {} but {} dead", self.dead, dead));
        }
        if let Some(idx) = &self.sensor {
            let want: BTreeSet<(u64, u64)> = self
                .entries
                .iter()
                .filter(|e| !e.dead && !e.version.late)
                .map(|e| (e.sensor_key(), e.version.key_version))
                .collect();
            if &want != idx {
                return Err("sensor index does not match kept entries".into());
            }
        }
        for (ck, kv) in &self.compaction {
            match self.position_covering(*kv).map(|p| &self.entries[p]) {
                Some(e) if !e.dead && e.compaction_key.as_ref() == Some(ck) => {}
                _ => return Err(format!("compaction index points at missing entry {kv}")),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Hlc;

    fn entries(keys: &[u64]) -> VecDeque<Stored> {
        keys.iter()
            .map(|&k| Stored {
                version: Version {
                    key_version: k,
                    span: 1,
                    shard_seq: 0,
                    time: Hlc::default(),
                    sensor_time_us: None,
                    late: false,
                },
                value: Bytes::new(),
                tombstone: false,
                compaction_key: None,
                lsn: NO_LSN,
                dead: false,
            })
            .collect()
    }

    /// The checker catches a key whose log positions go backwards (durable reads assume a
    /// key's unsynced versions are a suffix), and the visible prefix ends at the first
    /// unsynced entry.
    #[test]
    fn checker_catches_log_positions_out_of_order() {
        let mut ks = KeyState {
            next: 3,
            entries: entries(&[0, 1, 2]),
            ..KeyState::default()
        };
        for (i, e) in ks.entries.iter_mut().enumerate() {
            e.version.shard_seq = i as u64 + 1;
            e.version.time.physical_us = i as u64 + 1;
            e.lsn = 10 + i as u64;
        }
        ks.check().expect("increasing lsns pass");
        assert_eq!(ks.visible_len(10), 1);
        assert_eq!(ks.visible_bounds(10), (0, 1));
        assert_eq!(ks.visible_bounds(u64::MAX), (0, 3));
        assert!(ks.covering_visible(1, 10).is_none());
        assert!(ks.covering_visible(1, 11).is_some());
        ks.entries[2].lsn = 5; // planted: a later version logged before an earlier one
        let err = ks.check().expect_err("planted bug must be caught");
        assert!(err.contains("log position"), "{err}");
    }

    /// count_le agrees with a plain partition_point on skewed, clustered and uniform inputs.
    #[test]
    fn count_le_matches_partition_point() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for shape in 0..4 {
            let mut keys = Vec::new();
            let mut k = 0u64;
            for i in 0..2000u64 {
                k += match shape {
                    0 => 1,
                    1 => rnd() % 3,
                    2 => {
                        if i % 500 == 0 {
                            1_000_000
                        } else {
                            rnd() % 2
                        }
                    }
                    _ => (rnd() % 1000).pow(2),
                };
                keys.push(k);
            }
            let e = entries(&keys);
            for _ in 0..3000 {
                let t = rnd() % (k + 10);
                let want = e.partition_point(|x| x.version.key_version <= t);
                assert_eq!(
                    count_le(&e, |x| x.version.key_version, t),
                    want,
                    "shape {shape} t {t}"
                );
            }
            for t in [0, 1, k, k + 1, u64::MAX] {
                let want = e.partition_point(|x| x.version.key_version <= t);
                assert_eq!(count_le(&e, |x| x.version.key_version, t), want);
            }
        }
    }
}

#[cfg(test)]
mod size_tests {
    /// Prints (and bounds) the in-memory size of one kept version, for docs/BENCHMARKS.md.
    #[test]
    fn stored_version_size() {
        let stored = std::mem::size_of::<super::Stored>();
        println!(
            "Stored {stored} B (Version {} B, Bytes {} B)",
            std::mem::size_of::<crate::types::Version>(),
            std::mem::size_of::<bytes::Bytes>()
        );
        assert!(
            stored <= 160,
            "a kept version's bookkeeping grew to {stored} B"
        );
    }
}
