//! The classic consumer group coordinator: membership, generations and the join/sync barrier.
//!
//! States as in Kafka: `Empty` → (a join) → `PreparingRebalance` → (every member rejoined, or the
//! rebalance timeout passed) → `CompletingRebalance` → (the leader's SyncGroup) → `Stable`. A
//! join, a leave or a session timeout moves a group back to `PreparingRebalance`. Requests that
//! must wait for the barrier get a oneshot receiver; the coordinator answers them when the
//! barrier completes. Time is passed in (`now`) and [`Coordinator::tick`] runs the timeouts, so
//! tests drive it deterministically. Static members (`group.instance.id`) keep their assignment
//! across a restart: a known instance that rejoins a stable group without a member id gets a new
//! member id and the current generation without a rebalance (unless it was the leader).
//!
//! Persistence: a group's generation, protocol, leader, members and assignments form a
//! [`GroupRecord`]. Operations mark the groups they touch; [`Coordinator::take_changed`] hands
//! out the records that differ from the last ones stored, and the broker writes them to the
//! internal pool before it answers the request that changed them (so no client learns a
//! generation that a restart could forget). [`Coordinator::restore`] loads them after a
//! restart: a stable group stays stable with the same generation (its members keep
//! heartbeating and committing; a zombie with an older generation still gets
//! ILLEGAL_GENERATION), a group caught mid-rebalance waits for its members to rejoin.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::broker::code;

/// Most protocols one member may offer.
pub const MEMBER_PROTOCOLS_MAX: usize = 32;
/// Longest group id accepted.
pub const GROUP_ID_BYTES_MAX: usize = 255;

/// The state of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignment.
    CompletingRebalance,
    /// Members have their assignment.
    Stable,
}

impl GroupState {
    /// Kafka's name for the state.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// The answer to a JoinGroup.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    /// Kafka error code.
    pub error: i16,
    /// The new generation.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen protocol (assignor).
    pub protocol: Option<String>,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader: every member (id, instance id, metadata for the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// The answer to a SyncGroup.
#[derive(Debug, Clone, Default)]
pub struct SyncResult {
    /// Kafka error code.
    pub error: i16,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen protocol.
    pub protocol: Option<String>,
    /// This member's assignment.
    pub assignment: Bytes,
}

/// A JoinGroup as the coordinator sees it.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Group id.
    pub group: String,
    /// Member id ("" for a new member).
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Session timeout.
    pub session_timeout_ms: i32,
    /// Rebalance timeout.
    pub rebalance_timeout_ms: i32,
    /// Protocol type ("consumer").
    pub protocol_type: String,
    /// Protocols offered, in preference order: (name, metadata).
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member must rejoin with the id handed out (MEMBER_ID_REQUIRED).
    pub require_known_member_id: bool,
}

/// A member as described by DescribeGroups.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Current assignment.
    pub assignment: Bytes,
}

/// A group as described by DescribeGroups.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    /// State name.
    pub state: &'static str,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol.
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_seen: Instant,
    join: Option<oneshot::Sender<JoinResult>>,
    sync: Option<oneshot::Sender<SyncResult>>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with their expiry.
    pending: BTreeMap<String, Instant>,
    /// Static instance id → member id.
    statics: BTreeMap<String, String>,
    rebalance_deadline: Option<Instant>,
    /// Touched since the last [`Coordinator::take_changed`].
    dirty: bool,
    /// The record last handed out for storing (`None`: nothing stored yet).
    stored: Option<GroupRecord>,
}

/// A group's persistent state, as stored in the internal groups pool (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The generation.
    pub generation: i32,
    /// `Empty`, `Stable`, or `Rebalancing` (preparing or completing a rebalance).
    pub state: String,
    /// Protocol type ("consumer").
    pub protocol_type: Option<String>,
    /// Chosen protocol (assignor).
    pub protocol: Option<String>,
    /// Leader's member id.
    pub leader: Option<String>,
    /// Members, by id.
    pub members: Vec<MemberRecord>,
}

/// One member in a [`GroupRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Member id.
    pub id: String,
    /// Static id.
    pub instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Session timeout, ms.
    pub session_timeout_ms: u64,
    /// Rebalance timeout, ms.
    pub rebalance_timeout_ms: u64,
    /// Protocols offered: (name, metadata).
    pub protocols: Vec<(String, Vec<u8>)>,
    /// Current assignment.
    pub assignment: Vec<u8>,
}

const STATE_REBALANCING: &str = "Rebalancing";

impl Group {
    fn record(&self) -> GroupRecord {
        GroupRecord {
            generation: self.generation,
            state: match self.state {
                GroupState::Empty | GroupState::Stable => self.state.name().to_string(),
                _ => STATE_REBALANCING.to_string(),
            },
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberRecord {
                    id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout.as_millis() as u64,
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as u64,
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, b)| (n.clone(), b.to_vec()))
                        .collect(),
                    assignment: m.assignment.to_vec(),
                })
                .collect(),
        }
    }

    /// A group from its stored record, as of `now` (members' sessions start again).
    fn from_record(r: &GroupRecord, now: Instant) -> Group {
        let mut g = Group::new();
        g.generation = r.generation;
        g.protocol_type = r.protocol_type.clone();
        g.protocol = r.protocol.clone();
        g.leader = r.leader.clone();
        for m in &r.members {
            if let Some(iid) = &m.instance_id {
                g.statics.insert(iid.clone(), m.id.clone());
            }
            g.members.insert(
                m.id.clone(),
                Member {
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout: Duration::from_millis(m.session_timeout_ms),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms),
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(n, b)| (n.clone(), Bytes::from(b.clone())))
                        .collect(),
                    assignment: Bytes::from(m.assignment.clone()),
                    last_seen: now,
                    join: None,
                    sync: None,
                },
            );
        }
        if g.members.is_empty() {
            g.state = GroupState::Empty;
            g.protocol = None;
            g.leader = None;
        } else if r.state == GroupState::Stable.name()
            && g.leader.as_ref().is_some_and(|l| g.members.contains_key(l))
        {
            g.state = GroupState::Stable;
        } else {
            // Caught mid-rebalance: every member has to rejoin (the deadline drops the rest).
            g.state = GroupState::Stable;
            g.start_rebalance(now);
        }
        g.stored = Some(r.clone());
        g
    }

    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            statics: BTreeMap::new(),
            rebalance_deadline: None,
            dirty: true,
            stored: None,
        }
    }

    fn start_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        // Members waiting for an assignment of the old generation must rejoin.
        for m in self.members.values_mut() {
            if let Some(tx) = m.sync.take() {
                let _ = tx.send(SyncResult {
                    error: code::REBALANCE_IN_PROGRESS,
                    ..SyncResult::default()
                });
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(5));
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
    }

    /// Completes the join phase if every member has rejoined (or `force`, at the deadline).
    fn maybe_complete_join(&mut self, now: Instant, force: bool) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all = self.members.values().all(|m| m.join.is_some());
        if !all && !force {
            return;
        }
        // Members that did not rejoin in time are removed.
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| m.join.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.generation = self.generation.wrapping_add(1);
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().unwrap_or_default();
        // The first protocol of the leader's list that every member supports.
        let protocol = self.members.get(&leader).and_then(|lm| {
            lm.protocols.iter().map(|(n, _)| n.clone()).find(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == n))
            })
        });
        self.protocol = protocol.clone();
        let proto = protocol.unwrap_or_default();
        let members: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let md = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == proto)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (id.clone(), m.instance_id.clone(), md)
            })
            .collect();
        self.state = GroupState::CompletingRebalance;
        let generation = self.generation;
        let protocol_type = self.protocol_type.clone();
        for (id, m) in self.members.iter_mut() {
            m.last_seen = now;
            if let Some(tx) = m.join.take() {
                let _ = tx.send(JoinResult {
                    error: code::NONE,
                    generation,
                    protocol_type: protocol_type.clone(),
                    protocol: Some(proto.clone()),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        members.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    fn remove_member(&mut self, id: &str) -> bool {
        let Some(m) = self.members.remove(id) else {
            return false;
        };
        if let Some(iid) = &m.instance_id {
            if self.statics.get(iid).is_some_and(|x| x == id) {
                self.statics.remove(iid);
            }
        }
        if let Some(tx) = m.join {
            let _ = tx.send(JoinResult {
                error: code::UNKNOWN_MEMBER_ID,
                member_id: id.to_string(),
                ..JoinResult::default()
            });
        }
        if let Some(tx) = m.sync {
            let _ = tx.send(SyncResult {
                error: code::UNKNOWN_MEMBER_ID,
                ..SyncResult::default()
            });
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        true
    }

    /// After members left: rebalance the rest, or become Empty.
    fn after_removal(&mut self, now: Instant) {
        if self.members.is_empty() {
            if self.state == GroupState::PreparingRebalance {
                self.maybe_complete_join(now, true);
            } else {
                self.generation = self.generation.wrapping_add(1);
            }
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            self.rebalance_deadline = None;
        } else {
            self.start_rebalance(now);
            self.maybe_complete_join(now, false);
        }
    }
}

/// Outcome of a join or sync: answered now, or a receiver answered at the barrier.
#[derive(Debug)]
pub enum Pending<T> {
    /// The answer.
    Now(T),
    /// Wait for this.
    Wait(oneshot::Receiver<T>),
}

fn lock_set(m: &Mutex<BTreeSet<String>>) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The coordinator of every group on this node.
#[derive(Debug)]
pub struct Coordinator {
    groups: Mutex<BTreeMap<String, Group>>,
    /// Groups deleted since the last [`Coordinator::take_changed`].
    deleted: Mutex<BTreeSet<String>>,
    groups_max: usize,
    members_max: usize,
    session_ms_min: i32,
    session_ms_max: i32,
    next_id: Mutex<u64>,
}

impl Coordinator {
    /// A coordinator with these limits.
    pub fn new(
        groups_max: usize,
        members_max: usize,
        session_ms_min: i32,
        session_ms_max: i32,
    ) -> Self {
        Coordinator {
            groups: Mutex::new(BTreeMap::new()),
            deleted: Mutex::new(BTreeSet::new()),
            groups_max,
            members_max,
            session_ms_min,
            session_ms_max,
            next_id: Mutex::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Group>> {
        match self.groups.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let mut n = match self.next_id.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *n += 1;
        let prefix: String = client_id.chars().take(64).collect();
        format!(
            "{}-{:016x}",
            if prefix.is_empty() { "member" } else { &prefix },
            *n
        )
    }

    /// JoinGroup.
    pub fn join(&self, req: JoinRequest, now: Instant) -> Pending<JoinResult> {
        let fail = |error: i16, member_id: &str| {
            Pending::Now(JoinResult {
                error,
                generation: -1,
                member_id: member_id.to_string(),
                ..JoinResult::default()
            })
        };
        if req.group.is_empty() || req.group.len() > GROUP_ID_BYTES_MAX {
            return fail(code::INVALID_GROUP_ID, &req.member_id);
        }
        if req.session_timeout_ms < self.session_ms_min
            || req.session_timeout_ms > self.session_ms_max
        {
            return fail(code::INVALID_SESSION_TIMEOUT, &req.member_id);
        }
        if req.protocol_type.is_empty()
            || req.protocols.is_empty()
            || req.protocols.len() > MEMBER_PROTOCOLS_MAX
        {
            return fail(code::INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
        }
        let mut groups = self.lock();
        if !groups.contains_key(&req.group) && groups.len() >= self.groups_max {
            return fail(code::COORDINATOR_NOT_AVAILABLE, &req.member_id);
        }
        let g = groups.entry(req.group.clone()).or_insert_with(Group::new);
        g.dirty = true;
        if !g.members.is_empty() {
            if g.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
                return fail(code::INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
            }
            let shares = req.protocols.iter().any(|(n, _)| {
                g.members
                    .iter()
                    .filter(|(id, _)| **id != req.member_id)
                    .all(|(_, m)| m.protocols.iter().any(|(x, _)| x == n))
            });
            if !shares {
                return fail(code::INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
            }
        }
        g.protocol_type = Some(req.protocol_type.clone());
        let session_timeout = Duration::from_millis(req.session_timeout_ms as u64);
        let rebalance_ms = if req.rebalance_timeout_ms > 0 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        };
        let rebalance_timeout = Duration::from_millis(rebalance_ms as u64);

        let mut member_id = req.member_id.clone();
        if member_id.is_empty() {
            if let Some(iid) = &req.instance_id {
                if let Some(old) = g.statics.get(iid).cloned() {
                    // A static member restarted: move its state to a fresh member id.
                    let new_id = self.new_member_id(&req.client_id);
                    if let Some(mut m) = g.members.remove(&old) {
                        if let Some(tx) = m.join.take() {
                            let _ = tx.send(JoinResult {
                                error: code::FENCED_INSTANCE_ID,
                                ..JoinResult::default()
                            });
                        }
                        if let Some(tx) = m.sync.take() {
                            let _ = tx.send(SyncResult {
                                error: code::FENCED_INSTANCE_ID,
                                ..SyncResult::default()
                            });
                        }
                        let same_protocols = m.protocols == req.protocols;
                        m.protocols = req.protocols.clone();
                        m.session_timeout = session_timeout;
                        m.rebalance_timeout = rebalance_timeout;
                        m.last_seen = now;
                        m.client_id = req.client_id.clone();
                        m.client_host = req.client_host.clone();
                        let was_leader = g.leader.as_deref() == Some(old.as_str());
                        g.members.insert(new_id.clone(), m);
                        g.statics.insert(iid.clone(), new_id.clone());
                        if was_leader {
                            g.leader = Some(new_id.clone());
                        }
                        if g.state == GroupState::Stable && same_protocols && !was_leader {
                            return Pending::Now(JoinResult {
                                error: code::NONE,
                                generation: g.generation,
                                protocol_type: g.protocol_type.clone(),
                                protocol: g.protocol.clone(),
                                leader: g.leader.clone().unwrap_or_default(),
                                member_id: new_id,
                                members: Vec::new(),
                            });
                        }
                        member_id = new_id;
                    }
                }
            }
        }
        if member_id.is_empty() {
            if g.members.len() + g.pending.len() >= self.members_max {
                return fail(code::COORDINATOR_NOT_AVAILABLE, "");
            }
            let new_id = self.new_member_id(&req.client_id);
            if req.require_known_member_id && req.instance_id.is_none() {
                g.pending.insert(new_id.clone(), now + session_timeout);
                return fail(code::MEMBER_ID_REQUIRED, &new_id);
            }
            member_id = new_id;
        } else if let Some(iid) = &req.instance_id {
            if g.statics.get(iid).is_some_and(|m| *m != member_id) {
                return fail(code::FENCED_INSTANCE_ID, &member_id);
            }
        }
        let known = g.members.contains_key(&member_id);
        if !known && g.pending.remove(&member_id).is_none() && !req.member_id.is_empty() {
            return fail(code::UNKNOWN_MEMBER_ID, &member_id);
        }
        let (tx, rx) = oneshot::channel();
        match g.members.get_mut(&member_id) {
            Some(m) => {
                m.protocols = req.protocols.clone();
                m.session_timeout = session_timeout;
                m.rebalance_timeout = rebalance_timeout;
                m.last_seen = now;
                if let Some(old) = m.join.replace(tx) {
                    let _ = old.send(JoinResult {
                        error: code::UNKNOWN_MEMBER_ID,
                        ..JoinResult::default()
                    });
                }
            }
            None => {
                if let Some(iid) = &req.instance_id {
                    g.statics.insert(iid.clone(), member_id.clone());
                }
                g.members.insert(
                    member_id.clone(),
                    Member {
                        instance_id: req.instance_id.clone(),
                        client_id: req.client_id.clone(),
                        client_host: req.client_host.clone(),
                        session_timeout,
                        rebalance_timeout,
                        protocols: req.protocols.clone(),
                        assignment: Bytes::new(),
                        last_seen: now,
                        join: Some(tx),
                        sync: None,
                    },
                );
            }
        }
        g.start_rebalance(now);
        g.maybe_complete_join(now, false);
        Pending::Wait(rx)
    }

    /// SyncGroup: `assignments` is non-empty only from the leader.
    pub fn sync(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Pending<SyncResult> {
        let fail = |error: i16| {
            Pending::Now(SyncResult {
                error,
                ..SyncResult::default()
            })
        };
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return fail(code::UNKNOWN_MEMBER_ID);
        };
        g.dirty = true;
        if let Some(iid) = instance_id {
            if g.statics.get(iid).is_some_and(|m| m != member_id) {
                return fail(code::FENCED_INSTANCE_ID);
            }
        }
        if !g.members.contains_key(member_id) {
            return fail(code::UNKNOWN_MEMBER_ID);
        }
        if generation != g.generation {
            return fail(code::ILLEGAL_GENERATION);
        }
        match g.state {
            GroupState::PreparingRebalance => fail(code::REBALANCE_IN_PROGRESS),
            GroupState::Empty => fail(code::UNKNOWN_MEMBER_ID),
            GroupState::Stable => {
                let m = &g.members[member_id];
                Pending::Now(SyncResult {
                    error: code::NONE,
                    protocol_type: g.protocol_type.clone(),
                    protocol: g.protocol.clone(),
                    assignment: m.assignment.clone(),
                })
            }
            GroupState::CompletingRebalance => {
                let is_leader = g.leader.as_deref() == Some(member_id);
                let (tx, rx) = oneshot::channel();
                if let Some(m) = g.members.get_mut(member_id) {
                    m.last_seen = now;
                    m.sync = Some(tx);
                }
                if is_leader {
                    let mut by_member: BTreeMap<String, Bytes> = assignments.into_iter().collect();
                    g.state = GroupState::Stable;
                    let protocol_type = g.protocol_type.clone();
                    let protocol = g.protocol.clone();
                    for (id, m) in g.members.iter_mut() {
                        m.assignment = by_member.remove(id).unwrap_or_default();
                        if let Some(tx) = m.sync.take() {
                            let _ = tx.send(SyncResult {
                                error: code::NONE,
                                protocol_type: protocol_type.clone(),
                                protocol: protocol.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                }
                Pending::Wait(rx)
            }
        }
    }

    /// Heartbeat: a Kafka error code.
    pub fn heartbeat(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> i16 {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        if let Some(iid) = instance_id {
            if g.statics.get(iid).is_some_and(|m| m != member_id) {
                return code::FENCED_INSTANCE_ID;
            }
        }
        let state = g.state;
        let current = g.generation;
        let Some(m) = g.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_seen = now;
        if state == GroupState::PreparingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        if generation != current {
            return code::ILLEGAL_GENERATION;
        }
        code::NONE
    }

    /// LeaveGroup for each (member id, instance id): per-member error codes.
    pub fn leave(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
        now: Instant,
    ) -> Vec<i16> {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return vec![code::UNKNOWN_MEMBER_ID; members.len()];
        };
        g.dirty = true;
        let mut out = Vec::with_capacity(members.len());
        let mut removed = false;
        for (mid, iid) in members {
            let id = match iid {
                Some(i) => match g.statics.get(i) {
                    Some(m) if mid.is_empty() || m == mid => Some(m.clone()),
                    Some(_) => {
                        out.push(code::FENCED_INSTANCE_ID);
                        continue;
                    }
                    None => None,
                },
                None => Some(mid.clone()),
            };
            match id {
                Some(id) if g.remove_member(&id) => {
                    removed = true;
                    out.push(code::NONE);
                }
                _ => out.push(code::UNKNOWN_MEMBER_ID),
            }
        }
        if removed {
            g.after_removal(now);
        }
        out
    }

    /// Whether a commit by this member at this generation may go ahead (a Kafka error code).
    /// A commit with generation −1 and no member id is a standalone commit: allowed while the
    /// group has no members.
    pub fn check_commit(&self, group: &str, generation: i32, member_id: &str, now: Instant) -> i16 {
        let mut groups = self.lock();
        let Some(g) = groups.get_mut(group) else {
            return if generation < 0 {
                code::NONE
            } else {
                code::ILLEGAL_GENERATION
            };
        };
        if generation < 0 && member_id.is_empty() {
            return if g.members.is_empty() {
                code::NONE
            } else {
                code::ILLEGAL_GENERATION
            };
        }
        let state = g.state;
        let current = g.generation;
        let Some(m) = g.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_seen = now;
        if generation != current {
            return code::ILLEGAL_GENERATION;
        }
        if state == GroupState::PreparingRebalance {
            return code::REBALANCE_IN_PROGRESS;
        }
        code::NONE
    }

    /// Session and rebalance timeouts.
    pub fn tick(&self, now: Instant) {
        let mut groups = self.lock();
        for g in groups.values_mut() {
            g.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| {
                    m.join.is_none()
                        && m.sync.is_none()
                        && now.saturating_duration_since(m.last_seen) > m.session_timeout
                })
                .map(|(id, _)| id.clone())
                .collect();
            // During PreparingRebalance members are not expected to heartbeat: the deadline
            // handles the ones that never rejoin.
            if g.state != GroupState::PreparingRebalance && !expired.is_empty() {
                for id in &expired {
                    g.remove_member(id);
                }
                g.after_removal(now);
                g.dirty = true;
            }
            if g.state == GroupState::PreparingRebalance
                && g.rebalance_deadline.is_some_and(|d| now >= d)
            {
                g.maybe_complete_join(now, true);
                g.dirty = true;
            }
        }
    }

    /// Every group: (id, protocol type, state).
    pub fn list(&self) -> Vec<(String, String, &'static str)> {
        self.lock()
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name(),
                )
            })
            .collect()
    }

    /// One group, if the coordinator knows it.
    pub fn describe(&self, group: &str) -> Option<GroupDescription> {
        let groups = self.lock();
        let g = groups.get(group)?;
        let proto = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: proto.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == proto)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Forgets an empty group: NONE, NON_EMPTY_GROUP, or GROUP_ID_NOT_FOUND.
    pub fn delete(&self, group: &str) -> i16 {
        let mut groups = self.lock();
        match groups.get(group) {
            None => code::GROUP_ID_NOT_FOUND,
            Some(g) if !g.members.is_empty() => code::NON_EMPTY_GROUP,
            Some(_) => {
                groups.remove(group);
                lock_set(&self.deleted).insert(group.to_string());
                code::NONE
            }
        }
    }

    /// The groups whose persistent state changed since the last call: (group, record), or
    /// (group, `None`) for a deleted group. Each is remembered as stored; if storing it fails,
    /// call [`Coordinator::store_failed`] so the next call hands it out again.
    pub fn take_changed(&self) -> Vec<(String, Option<GroupRecord>)> {
        let mut groups = self.lock();
        let mut out: Vec<(String, Option<GroupRecord>)> =
            std::mem::take(&mut *lock_set(&self.deleted))
                .into_iter()
                .filter(|g| !groups.contains_key(g))
                .map(|g| (g, None))
                .collect();
        for (id, g) in groups.iter_mut() {
            if !g.dirty {
                continue;
            }
            g.dirty = false;
            let r = g.record();
            if g.stored.as_ref() != Some(&r) {
                g.stored = Some(r.clone());
                out.push((id.clone(), Some(r)));
            }
        }
        out
    }

    /// Storing `group`'s state failed: hand it out again from the next
    /// [`Coordinator::take_changed`]. A group that completed a join or a sync whose record
    /// could not be stored starts a rebalance, as Kafka's coordinator does when storing an
    /// assignment fails: its members were told of an error (or will be, at their next
    /// heartbeat) and rejoin, so nobody keeps consuming under a generation or assignment
    /// that a restart would not know; every member's assignment is cleared.
    pub fn store_failed(&self, group: &str, now: Instant) {
        match self.lock().get_mut(group) {
            Some(g) => {
                g.stored = None;
                g.dirty = true;
                if matches!(
                    g.state,
                    GroupState::Stable | GroupState::CompletingRebalance
                ) {
                    for m in g.members.values_mut() {
                        m.assignment = Bytes::new();
                    }
                    g.start_rebalance(now);
                }
            }
            None => {
                lock_set(&self.deleted).insert(group.to_string());
            }
        }
    }

    /// Loads stored groups after a restart (before any request; a group the coordinator
    /// already holds is left alone). Member ids handed out later never repeat a restored one.
    pub fn restore(&self, records: Vec<(String, GroupRecord)>, now: Instant) {
        let mut groups = self.lock();
        let mut next = match self.next_id.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for (id, r) in records {
            if groups.contains_key(&id) || groups.len() >= self.groups_max {
                continue;
            }
            for m in &r.members {
                if let Some(n) =
                    m.id.rsplit_once('-')
                        .and_then(|(_, h)| u64::from_str_radix(h, 16).ok())
                {
                    *next = (*next).max(n);
                }
            }
            groups.insert(id, Group::from_record(&r, now));
        }
    }

    /// Test and invariant helper: (state, generation, member count).
    pub fn state(&self, group: &str) -> Option<(GroupState, i32, usize)> {
        self.lock()
            .get(group)
            .map(|g| (g.state, g.generation, g.members.len()))
    }

    /// Test-only switch: breaks the static-membership mapping on purpose, so the invariant
    /// checker's test can show it fails.
    #[cfg(test)]
    pub fn plant_bad_static(&self, group: &str, instance_id: &str) {
        if let Some(g) = self.lock().get_mut(group) {
            g.statics
                .insert(instance_id.to_string(), "planted-nobody".to_string());
        }
    }

    /// Checks the coordinator's invariants (tests call it after every step): a stable group has
    /// a leader that is a member; an empty group has no members; every static id maps to a
    /// member carrying that id.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, g) in self.lock().iter() {
            match g.state {
                GroupState::Empty if !g.members.is_empty() => {
                    return Err(format!("{id}: Empty with members"))
                }
                GroupState::Stable | GroupState::CompletingRebalance
                    if !g.leader.as_ref().is_some_and(|l| g.members.contains_key(l)) =>
                {
                    return Err(format!("{id}: {} without a member leader", g.state.name()));
                }
                _ => {}
            }
            for (iid, mid) in &g.statics {
                let carries = g
                    .members
                    .get(mid)
                    .is_some_and(|m| m.instance_id.as_deref() == Some(iid.as_str()));
                if !carries {
                    return Err(format!(
                        "{id}: static {iid} maps to {mid}, which is not that member"
                    ));
                }
            }
        }
        Ok(())
    }
}
