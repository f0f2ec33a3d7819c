//! The oracle: global knowledge the simulator has and no node has, used to check the
//! invariants of `shared/research/derecho.md` §7 after every step.

use std::collections::{BTreeMap, BTreeSet};

use squall_mcast::{
    ControlRecord, Delivery, Epoch, Hlc, MsgId, NodeId, ShardId, Version, ViewInfo,
};

/// One entry of a shard's agreed sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    version: Version,
    ts: Hlc,
    id: MsgId,
    hash_after: u64,
    /// (key, expected) of a successful cput, to undo its win if a restart drops it.
    cput_win: Option<(u8, u64)>,
}

#[derive(Clone, Debug, Default)]
struct ShardLog {
    entries: Vec<Entry>,
    ids: BTreeSet<MsgId>,
    last_seq_by_sender: BTreeMap<NodeId, u64>,
    max_frontier: Hlc,
}

/// What the checker knows. Each `on_*` hook checks one kind of event; violations are
/// collected as strings naming the invariant (§7 number) that broke.
#[derive(Debug, Default)]
pub struct Checker {
    shards: BTreeMap<ShardId, ShardLog>,
    /// The one view per epoch: members and shards.
    views: BTreeMap<Epoch, (Vec<NodeId>, Vec<Vec<NodeId>>)>,
    /// Decided trim closing epoch e, per shard.
    trims: BTreeMap<(Epoch, ShardId), Vec<u64>>,
    /// Sequence length of a shard at the end of epoch e (after the trim).
    final_len: BTreeMap<(Epoch, ShardId), usize>,
    /// Largest sequence index delivered in epoch e anywhere.
    max_idx: BTreeMap<(Epoch, ShardId), usize>,
    /// Largest index k per sender rank delivered on the normal path in epoch e.
    max_normal: BTreeMap<(Epoch, ShardId), Vec<Option<u64>>>,
    /// Highest received counters each node ever had in each epoch.
    pub recv_hist: BTreeMap<(NodeId, Epoch), Vec<u64>>,
    cput_outcomes: BTreeMap<MsgId, bool>,
    cput_winner: BTreeMap<(ShardId, u8, u64), MsgId>,
    /// Every id admitted by `send`.
    pub admitted: BTreeSet<MsgId>,
    stab_by_node: BTreeMap<NodeId, Hlc>,
    pers_by_node: BTreeMap<NodeId, Version>,
    /// Per shard, the highest persistence frontier any member published (durable-delivered).
    durable: BTreeMap<ShardId, Version>,
    /// Per shard, the highest T of a cut read taken so far.
    cut_ts: BTreeMap<ShardId, Hlc>,
    /// Cross-shard cut reads checked (for the summary).
    pub cuts: u64,
    /// Restarts from disk checked (for the summary).
    pub restarts: u64,
    /// Violations found so far.
    pub violations: Vec<String>,
    /// Deliveries checked (for the summary).
    pub deliveries: u64,
    /// View installs seen.
    pub installs: u64,
}

fn kr(q: u64, n: usize) -> (u64, usize) {
    let n = n.max(1) as u64;
    (q / n, (q % n) as usize)
}

impl Checker {
    fn fail(&mut self, s: String) {
        if self.violations.len() < 20 {
            self.violations.push(s);
        }
    }

    /// Bootstrap view.
    pub fn set_initial_view(&mut self, members: Vec<NodeId>, shards: Vec<Vec<NodeId>>) {
        self.views.insert(1, (members, shards));
    }

    /// The view of epoch e, if known.
    pub fn view(&self, e: Epoch) -> Option<&(Vec<NodeId>, Vec<Vec<NodeId>>)> {
        self.views.get(&e)
    }

    /// The newest known epoch.
    pub fn latest_epoch(&self) -> Epoch {
        self.views.keys().next_back().copied().unwrap_or(0)
    }

    /// A delivery at `node`. `len_before` is the node's sequence length before it, `hash_after`
    /// its state hash after; `trim` is `Some` when this delivery is part of closing its epoch.
    #[allow(clippy::too_many_arguments)]
    pub fn on_deliver(
        &mut self,
        node: NodeId,
        d: &Delivery,
        len_before: usize,
        hash_after: u64,
        trim: Option<&[u64]>,
        cput: Option<(u8, u64, bool)>,
    ) {
        self.deliveries += 1;
        let shard = d.shard;
        let e = d.version.epoch;
        let entry = Entry {
            version: d.version,
            ts: d.ts,
            id: d.id,
            hash_after,
            cput_win: cput.and_then(|(k, e, ok)| ok.then_some((k, e))),
        };
        let cut = self.cut_ts.get(&shard).copied();
        let log = self.shards.entry(shard).or_default();
        let mut errs = Vec::new();
        if len_before < log.entries.len() {
            if log.entries[len_before] != entry {
                errs.push(format!(
                    "inv1/5 same sequence: {node} delivered {:?} at index {len_before} of shard {shard}, others {:?}",
                    entry, log.entries[len_before]
                ));
            }
        } else if len_before == log.entries.len() {
            if log.ids.contains(&d.id) {
                errs.push(format!(
                    "inv3 exactly once: {:?} delivered twice in shard {shard} (at {node})",
                    d.id
                ));
            }
            if let Some(last) = log.entries.last() {
                if d.version <= last.version {
                    errs.push(format!(
                        "inv5 versions: {} not above {} (at {node})",
                        d.version, last.version
                    ));
                }
                if d.ts <= last.ts {
                    errs.push(format!(
                        "inv5/7 timestamps: {:?} not above {:?} (at {node})",
                        d.ts, last.ts
                    ));
                }
            }
            if let Some(s) = log.last_seq_by_sender.get(&d.id.sender) {
                if d.id.seq <= *s {
                    errs.push(format!(
                        "inv3 FIFO: {:?} after seq {s} of the same sender",
                        d.id
                    ));
                }
            }
            if d.ts < log.max_frontier {
                errs.push(format!(
                    "inv7 frontier: new message at {:?} below a published stability frontier {:?}",
                    d.ts, log.max_frontier
                ));
            }
            if let Some(t) = cut {
                if d.ts <= t {
                    errs.push(format!(
                        "inv8 cut: {:?} stamped {:?} reached shard {shard} after a cut read at {t:?} (at {node})",
                        d.id, d.ts
                    ));
                }
            }
            if !self.admitted.contains(&d.id) {
                errs.push(format!(
                    "inv5 no invented messages: {:?} was never sent",
                    d.id
                ));
            }
            log.ids.insert(d.id);
            log.last_seq_by_sender.insert(d.id.sender, d.id.seq);
            log.entries.push(entry);
        } else {
            errs.push(format!(
                "sequence gap at {node}: index {len_before} > {}",
                log.entries.len()
            ));
        }
        // Which epoch-local slot it was.
        let n = self
            .views
            .get(&e)
            .and_then(|v| v.1.get(shard as usize))
            .map(|m| m.len())
            .unwrap_or(1);
        let (k, r) = kr(d.version.seq, n);
        if let Some(fl) = self.final_len.get(&(e, shard)) {
            if len_before >= *fl {
                errs.push(format!(
                    "inv3 trim: {node} delivered index {len_before} in epoch {e} but survivors ended it at {fl}"
                ));
            }
        }
        let mi = self.max_idx.entry((e, shard)).or_insert(0);
        *mi = (*mi).max(len_before + 1);
        match trim {
            Some(t) => {
                if k >= t.get(r).copied().unwrap_or(0) {
                    errs.push(format!(
                        "inv3/4 trim: {node} delivered ({k},{r}) beyond its trim {t:?}"
                    ));
                }
            }
            None => {
                // Stability: every shard member of the epoch has received it.
                let members = self
                    .views
                    .get(&e)
                    .and_then(|v| v.1.get(shard as usize))
                    .cloned()
                    .unwrap_or_default();
                for m in members {
                    let got = self
                        .recv_hist
                        .get(&(m, e))
                        .and_then(|c| c.get(r).copied())
                        .unwrap_or(0);
                    if got <= k {
                        errs.push(format!(
                            "inv2 stability: {node} delivered ({k},{r}) of epoch {e} before {m} received it ({got})"
                        ));
                    }
                }
                let mn = self
                    .max_normal
                    .entry((e, shard))
                    .or_insert_with(|| vec![None; n]);
                if r < mn.len() {
                    mn[r] = Some(mn[r].map_or(k, |x| x.max(k)));
                }
                if let Some(t) = self.trims.get(&(e, shard)) {
                    if k >= t.get(r).copied().unwrap_or(0) {
                        errs.push(format!("inv3 trim: ({k},{r}) delivered normally in {e} outside decided trim {t:?}"));
                    }
                }
            }
        }
        if let Some((key, expected, ok)) = cput {
            match self.cput_outcomes.get(&d.id) {
                Some(prev) if *prev != ok => errs.push(format!(
                    "inv12 cput: {:?} outcome {ok} at {node}, {prev} elsewhere",
                    d.id
                )),
                None => {
                    self.cput_outcomes.insert(d.id, ok);
                }
                _ => {}
            }
            if ok {
                let w = self
                    .cput_winner
                    .entry((shard, key, expected))
                    .or_insert(d.id);
                if *w != d.id {
                    errs.push(format!(
                        "inv12 cput: two winners for key {key} at version {expected}"
                    ));
                }
            }
        }
        for e in errs {
            self.fail(e);
        }
    }

    /// `node` installed a view. `app_len` is its sequence length, `old_shard` its shard in
    /// the epoch it closed (None for joiners), `disks` every node's durable control records.
    pub fn on_install(
        &mut self,
        node: NodeId,
        info: &ViewInfo,
        old_shard: Option<ShardId>,
        app_len: usize,
        own_disk: &[ControlRecord],
        accepted_by: usize,
    ) {
        self.installs += 1;
        let e = info.epoch;
        let v = (info.members.clone(), info.shards.clone());
        match self.views.get(&e) {
            Some(prev) if *prev != v => self.fail(format!(
                "inv9 split brain: two views for epoch {e}: {prev:?} and {v:?} (at {node})"
            )),
            Some(_) => {}
            None => {
                let old_n = self.views.get(&(e - 1)).map(|v| v.0.len()).unwrap_or(0);
                if accepted_by * 2 <= old_n {
                    self.fail(format!(
                        "inv9 majority: view {e} installed with {accepted_by} durable accepts of {old_n} members"
                    ));
                }
                self.views.insert(e, v);
            }
        }
        let Some(s) = old_shard else { return };
        if info.applied_trim.is_empty() {
            return;
        }
        let closed = e - 1;
        let on_disk = own_disk.iter().any(|r| match r {
            ControlRecord::Accepted { proposal, .. } | ControlRecord::Decided { proposal } => {
                proposal.epoch == closed && proposal.members == info.members
            }
            ControlRecord::Promised { .. } => false,
        });
        if !on_disk {
            self.fail(format!("inv4 trim durable: {node} applied the trim of epoch {closed} before it was on disk"));
        }
        match self.trims.get(&(closed, s)) {
            Some(t) if *t != info.applied_trim => self.fail(format!(
                "inv4 trim agreement: {node} applied {:?} for epoch {closed} shard {s}, another {:?}",
                info.applied_trim, t
            )),
            Some(_) => {}
            None => {
                if let Some(mn) = self.max_normal.get(&(closed, s)).cloned() {
                    for (r, m) in mn.iter().enumerate() {
                        if let Some(k) = m {
                            if *k >= info.applied_trim.get(r).copied().unwrap_or(0) {
                                self.fail(format!(
                                    "inv3/4 trim covers deliveries: ({k},{r}) was delivered in epoch {closed} but trim is {:?}",
                                    info.applied_trim
                                ));
                            }
                        }
                    }
                }
                self.trims.insert((closed, s), info.applied_trim.clone());
            }
        }
        match self.final_len.get(&(closed, s)) {
            Some(l) if *l != app_len => self.fail(format!(
                "inv1 identical after trim: {node} ends epoch {closed} shard {s} at {app_len}, another at {l}"
            )),
            Some(_) => {}
            None => {
                let mi = self.max_idx.get(&(closed, s)).copied().unwrap_or(0);
                if mi > app_len {
                    self.fail(format!(
                        "inv3 lost delivery: index {} delivered in epoch {closed} but {node} ends it at {app_len}",
                        mi - 1
                    ));
                }
                self.final_len.insert((closed, s), app_len);
            }
        }
    }

    /// A joiner installed a snapshot for `epoch`; its state must be the agreed state at the
    /// end of the previous epoch.
    pub fn on_snapshot(
        &mut self,
        node: NodeId,
        epoch: Epoch,
        shard: ShardId,
        app_len: usize,
        app_hash: u64,
    ) {
        let closed = epoch - 1;
        let Some(fl) = self.final_len.get(&(closed, shard)).copied() else {
            self.fail(format!("inv11 state transfer: {node} got state for {epoch} before any survivor closed {closed}"));
            return;
        };
        if app_len != fl {
            self.fail(format!(
                "inv11 state transfer: {node} got {app_len} messages of shard {shard}, epoch {closed} ended at {fl}"
            ));
            return;
        }
        let want = if fl == 0 {
            0
        } else {
            self.shards
                .get(&shard)
                .and_then(|l| l.entries.get(fl - 1))
                .map(|e| e.hash_after)
                .unwrap_or(0)
        };
        if want != app_hash {
            self.fail(format!(
                "inv11 state transfer: {node}'s state hash differs from the source's"
            ));
        }
    }

    /// A stability frontier published by `node`, whose sequence has length `app_len`.
    pub fn on_stability(&mut self, node: NodeId, shard: ShardId, ts: Hlc, app_len: usize) {
        let prev = self.stab_by_node.insert(node, ts).unwrap_or_default();
        if ts < prev {
            self.fail(format!("inv7 frontier monotone: {node} moved it back"));
        }
        let log = self.shards.entry(shard).or_default();
        if let Some(next) = log.entries.get(app_len) {
            if next.ts < ts {
                let msg = format!(
                    "inv7 frontier: {node} published {ts:?} but has not delivered {:?} stamped {:?}",
                    next.id, next.ts
                );
                self.fail(msg);
                return;
            }
        }
        let log = self.shards.entry(shard).or_default();
        if ts > log.max_frontier {
            log.max_frontier = ts;
        }
    }

    /// A persistence frontier published by `node` for `shard`; `flushed` is each current
    /// shard member's flushed log end.
    pub fn on_persistence(
        &mut self,
        node: NodeId,
        shard: ShardId,
        version: Version,
        flushed: &[(NodeId, Version)],
    ) {
        let d = self.durable.entry(shard).or_default();
        *d = (*d).max(version);
        let prev = self.pers_by_node.insert(node, version).unwrap_or_default();
        if version < prev {
            self.fail(format!(
                "inv6 frontier monotone: {node} moved the persistence frontier back"
            ));
        }
        for (m, f) in flushed {
            if *f < version {
                self.fail(format!(
                    "inv6 durability: {node} published {version} but {m} flushed only {f}"
                ));
            }
        }
    }

    /// Flow control: `sender` admitted `admitted` messages; `member` (same shard and epoch,
    /// state ready) applied `applied` of them.
    pub fn on_window(
        &mut self,
        sender: NodeId,
        member: NodeId,
        admitted: u64,
        applied: u64,
        window: usize,
    ) {
        if admitted > applied + window as u64 {
            self.fail(format!(
                "inv10 window: {sender} has {} messages not delivered at {member} (W={window})",
                admitted - applied
            ));
        }
    }

    /// A cross-shard read at `t` (§7 inv 8): for each shard, a member whose published
    /// stability frontier is above `t` answered from its local state with `count` updates
    /// stamped ≤ `t` and state hash `hash` after them. The answer must be exactly the agreed
    /// updates stamped ≤ `t`, and no update stamped ≤ `t` may reach the shard later.
    pub fn on_cut(&mut self, t: Hlc, reads: &[(ShardId, NodeId, usize, u64)]) {
        self.cuts += 1;
        let mut errs = Vec::new();
        for (shard, node, count, hash) in reads {
            let log = self.shards.entry(*shard).or_default();
            let want = log.entries.partition_point(|e| e.ts <= t);
            if *count != want {
                errs.push(format!(
                    "inv8 cut: read of shard {shard} at {t:?} from {node} has {count} updates, the agreed sequence has {want} stamped ≤ T"
                ));
                continue;
            }
            let want_hash = if want == 0 {
                None
            } else {
                log.entries.get(want - 1).map(|e| e.hash_after)
            };
            if want_hash.is_some_and(|h| h != *hash) {
                errs.push(format!(
                    "inv8 cut: read of shard {shard} at {t:?} from {node} has other contents than the agreed sequence"
                ));
            }
            let c = self.cut_ts.entry(*shard).or_default();
            *c = (*c).max(t);
        }
        for e in errs {
            self.fail(e);
        }
    }

    /// A member restarted from disk became the source of `shard` in the restart view
    /// `epoch`, with `app_len` updates and state hash `app_hash` (its durable log);
    /// `best_log` is the most advanced durable log (length, owner) among the restarted
    /// members of the shard in that view. Checks §7 inv 6 for the restart (nothing
    /// durable-delivered lost, the source is the highest log, the state is a prefix of the
    /// agreed sequence) and cuts the agreed sequence back to it: what was delivered beyond
    /// it was on no disk that came back, and must not be below a stability frontier or a cut.
    pub fn on_restart_source(
        &mut self,
        node: NodeId,
        epoch: Epoch,
        shard: ShardId,
        app_len: usize,
        app_hash: u64,
        best_log: (usize, NodeId),
    ) {
        self.restarts += 1;
        let closed = epoch - 1;
        let mut errs = Vec::new();
        let durable = self.durable.get(&shard).copied().unwrap_or_default();
        let cut = self.cut_ts.get(&shard).copied();
        let log = self.shards.entry(shard).or_default();
        if app_len > log.entries.len() {
            errs.push(format!(
                "inv6 restart: {node} restarts shard {shard} with {app_len} updates, only {} were ever delivered",
                log.entries.len()
            ));
        } else {
            if app_len > 0 && log.entries[app_len - 1].hash_after != app_hash {
                errs.push(format!(
                    "inv1/6 restart: {node}'s durable state of shard {shard} is not a prefix of the agreed sequence"
                ));
            }
            let last = if app_len == 0 {
                Version::default()
            } else {
                log.entries[app_len - 1].version
            };
            if last < durable {
                errs.push(format!(
                    "inv6 restart lost durable updates: shard {shard} restarts at {last} (from {node}) but the persistence frontier reached {durable}"
                ));
            }
            if app_len < best_log.0 {
                errs.push(format!(
                    "inv6 restart source: shard {shard} restarts from {node}'s log of {app_len} updates but {} had {}",
                    best_log.1, best_log.0
                ));
            }
            // Truncate the agreed sequence to the restart point.
            let dropped: Vec<Entry> = log.entries.drain(app_len..).collect();
            for e in &dropped {
                if e.ts < log.max_frontier {
                    errs.push(format!(
                        "inv7 restart: {:?} stamped {:?} dropped by the restart of shard {shard}, below the published stability frontier {:?}",
                        e.id, e.ts, log.max_frontier
                    ));
                }
                if cut.is_some_and(|t| e.ts <= t) {
                    errs.push(format!(
                        "inv8 cut: {:?} stamped {:?} dropped by the restart of shard {shard} after a cut read included it",
                        e.id, e.ts
                    ));
                }
                log.ids.remove(&e.id);
                self.cput_outcomes.remove(&e.id);
                if let Some((k, x)) = e.cput_win {
                    if self.cput_winner.get(&(shard, k, x)) == Some(&e.id) {
                        self.cput_winner.remove(&(shard, k, x));
                    }
                }
            }
            log.last_seq_by_sender.clear();
            for e in &log.entries {
                log.last_seq_by_sender.insert(e.id.sender, e.id.seq);
            }
        }
        match self.final_len.get(&(closed, shard)) {
            Some(l) if *l != app_len => errs.push(format!(
                "inv1 restart agreement: shard {shard} restarted at {app_len} (at {node}) and at {l}"
            )),
            Some(_) => {}
            None => {
                self.final_len.insert((closed, shard), app_len);
            }
        }
        for e in errs {
            self.fail(e);
        }
    }

    /// Agreed sequence length of a shard.
    pub fn agreed_len(&self, shard: ShardId) -> usize {
        self.shards
            .get(&shard)
            .map(|l| l.entries.len())
            .unwrap_or(0)
    }

    /// True if `id` is in the agreed sequence of `shard`.
    pub fn is_delivered(&self, shard: ShardId, id: &MsgId) -> bool {
        self.shards.get(&shard).is_some_and(|l| l.ids.contains(id))
    }

    /// Records a liveness failure.
    pub fn liveness(&mut self, s: String) {
        self.fail(format!("liveness: {s}"));
    }
}
