//! Exclusive ownership of a key, decided where ops are ordered (DDS EXCLUSIVE ownership, issue 5).
//!
//! A key may have an owner: a writer id, its strength and, optionally, a lease. The owner is
//! part of the key's state in its shard and changes only by ordered ops, so every replica that
//! applies the same ops reaches the same owner. A put that carries a [`Claim`]
//! (`Expect::Owned`) is arbitrated by [`arbitrate`]: the owner's writes pass, a stronger writer
//! takes the key over, anyone may take it once it has no live owner, and every other write is
//! refused with `StorageError::NotOwner`. A put *without* a claim is refused while the key has a
//! live owner (so a face that knows nothing of ownership cannot slip an edit in). A tombstone
//! written by the owner (a DDS dispose) releases the key; `Op::Release` releases it without a
//! version (a DDS unregister, a lost writer). Leases are measured against the op's stamp time,
//! so expiry is deterministic too.
//!
//! Owners are part of the key's state like its versions: in durable pools a put that changes the
//! owner logs the owner after it in the same record (`RecordBody::Put::owner`), a release logs a
//! `RecordBody::Owner` record, checkpoints keep every owned key, and state-transfer images carry
//! them. A restart (replay) or a joiner thus ends with the owners every replica computed,
//! leases included: a lease ends at an absolute platform time (`until_us`), so a lease that has
//! not run out before the restart still holds after it. Owners of volatile and stateless pools
//! are not logged (nothing of those keys is) and start empty after a restart.

use serde::{Deserialize, Serialize};

use crate::error::StorageError;

/// A writer's claim, carried by a guarded put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Claim {
    /// The writer's id (the faces derive it from a name, e.g. with [`writer_id`]).
    pub writer: u64,
    /// Its strength: the strongest live writer owns the key.
    pub strength: i32,
    /// How long the claim lasts after this put, in µs of platform time; 0 = until released.
    pub lease_us: u64,
}

/// The owner of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The owning writer's id.
    pub writer: u64,
    /// Its strength.
    pub strength: i32,
    /// Platform time (µs) from which the claim has lapsed; `None` = until released.
    pub until_us: Option<u64>,
}

impl Owner {
    /// Whether the claim still holds at `now_us`.
    pub fn alive_at(&self, now_us: u64) -> bool {
        self.until_us.is_none_or(|u| now_us < u)
    }
}

/// A stable writer id for a name (FNV-1a 64; the same on every node and build).
pub fn writer_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Decides a write at `now_us` (the op's stamp time) given the key's current owner: returns
/// the owner after the write, or `NotOwner` when the write must be refused. `claim` is `None`
/// for a put without a claim; `tombstone` tells whether the write is a delete (an owner's
/// delete releases the key).
pub fn arbitrate(
    current: Option<Owner>,
    claim: Option<Claim>,
    tombstone: bool,
    now_us: u64,
) -> Result<Option<Owner>, StorageError> {
    let live = current.filter(|o| o.alive_at(now_us));
    let Some(claim) = claim else {
        return match live {
            None => Ok(None),
            Some(o) => Err(StorageError::NotOwner {
                owner: o.writer,
                strength: o.strength,
                claimed: None,
            }),
        };
    };
    if let Some(o) = live {
        if o.writer != claim.writer && claim.strength <= o.strength {
            // Equal strength keeps the incumbent (DDS leaves ties open; this avoids flapping).
            return Err(StorageError::NotOwner {
                owner: o.writer,
                strength: o.strength,
                claimed: Some(claim.strength),
            });
        }
    }
    if tombstone {
        return Ok(None);
    }
    Ok(Some(Owner {
        writer: claim.writer,
        strength: claim.strength,
        until_us: (claim.lease_us > 0).then(|| now_us.saturating_add(claim.lease_us)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(writer: u64, strength: i32, lease_us: u64) -> Option<Claim> {
        Some(Claim {
            writer,
            strength,
            lease_us,
        })
    }

    #[test]
    fn strongest_live_writer_owns() {
        let a = arbitrate(None, claim(1, 10, 0), false, 100).unwrap();
        assert_eq!(
            a,
            Some(Owner {
                writer: 1,
                strength: 10,
                until_us: None
            })
        );
        // The owner keeps writing; weaker and equal writers are refused; a stronger one wins.
        assert_eq!(arbitrate(a, claim(1, 10, 0), false, 200).unwrap(), a);
        assert!(matches!(
            arbitrate(a, claim(2, 5, 0), false, 200),
            Err(StorageError::NotOwner {
                owner: 1,
                strength: 10,
                claimed: Some(5)
            })
        ));
        assert!(arbitrate(a, claim(2, 10, 0), false, 200).is_err(), "tie");
        assert_eq!(
            arbitrate(a, claim(3, 20, 0), false, 200)
                .unwrap()
                .map(|o| o.writer),
            Some(3)
        );
        // A put without a claim is refused while there is a live owner.
        assert!(matches!(
            arbitrate(a, None, false, 200),
            Err(StorageError::NotOwner { claimed: None, .. })
        ));
        assert_eq!(arbitrate(None, None, false, 200).unwrap(), None);
    }

    #[test]
    fn owner_delete_releases_and_leases_lapse() {
        let a = arbitrate(None, claim(1, 10, 0), false, 100).unwrap();
        assert_eq!(arbitrate(a, claim(1, 10, 0), true, 200).unwrap(), None);
        // A weaker writer cannot delete the owner's key.
        assert!(arbitrate(a, claim(2, 1, 0), true, 200).is_err());
        // An editor's lease: held until 100 + 50, free from then on.
        let e = arbitrate(None, claim(7, 15, 50), false, 100).unwrap();
        assert_eq!(e.and_then(|o| o.until_us), Some(150));
        assert!(arbitrate(e, claim(2, 1, 0), false, 149).is_err());
        assert_eq!(
            arbitrate(e, claim(2, 1, 0), false, 150)
                .unwrap()
                .map(|o| o.writer),
            Some(2)
        );
        assert_eq!(arbitrate(e, None, false, 150).unwrap(), None);
    }

    #[test]
    fn writer_ids_are_stable() {
        assert_eq!(writer_id(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(writer_id("editor"), writer_id("dds:1"));
    }

    /// Through the store: the check runs where ops are ordered, so two stores applying the same
    /// stamped ops (two replicas) refuse and accept the same writes and agree on the owner.
    #[test]
    fn the_store_refuses_non_owners_the_same_way_on_every_replica() {
        use crate::tests::{pool, put_op};
        use crate::{Expect, Hlc, Mode, Op, Outcome, Stamp, Store, StoreConfig};
        let guarded = |writer: u64, strength: i32, lease_us: u64, v: &[u8], version| {
            let mut op = put_op("fp", "AF1", v);
            if let Op::Put { expect, .. } = &mut op {
                *expect = Expect::Owned {
                    claim: Claim {
                        writer,
                        strength,
                        lease_us,
                    },
                    version,
                };
            }
            op
        };
        let release = |writer| Op::Release {
            pool: "fp".into(),
            key: "AF1".into(),
            writer,
        };
        let ops: Vec<(u64, Op)> = vec![
            (1, Op::CreatePool(pool("fp", Mode::Latest))),
            (10, guarded(1, 20, 0, b"strong-0", None)), // claims
            (11, guarded(2, 10, 0, b"weak-0", None)),   // refused
            (12, put_op("fp", "AF1", b"plain")),        // refused: no claim
            (13, guarded(1, 20, 0, b"strong-1", Some(0))), // owner's cput
            (14, guarded(1, 20, 0, b"stale", Some(0))), // stale cput: conflict
            (15, guarded(3, 30, 100, b"editor", None)), // stronger editor takes over, lease 100
            (16, guarded(1, 20, 0, b"strong-2", None)), // refused (editor holds the lease)
            (116, guarded(1, 20, 0, b"strong-3", None)), // the editor's lease lapsed
            (117, release(2)),                          // not the owner: no-op
            (118, release(1)),                          // released
            (119, guarded(2, 10, 0, b"weak-1", None)),  // free: the weak writer claims
            (120, guarded(2, 10, 0, b"", None)),        // (as a delete below)
        ];
        let a = Store::new(StoreConfig::default()).unwrap();
        let b = Store::new(StoreConfig::default()).unwrap();
        let mut results = Vec::new();
        for (store, out) in [(&a, &mut Vec::new()), (&b, &mut Vec::new())] {
            for (i, (t, op)) in ops.iter().enumerate() {
                let mut op = op.clone();
                if i == ops.len() - 1 {
                    if let Op::Put { tombstone, .. } = &mut op {
                        *tombstone = true;
                    }
                }
                let shard = store.shard_for(&op);
                let stamp = Stamp {
                    shard_seq: store.last_stamp(shard).shard_seq + 1,
                    time: Hlc {
                        physical_us: *t,
                        logical: 0,
                    },
                };
                let r = store.apply(shard, stamp, op).map(|a| a.outcome);
                store.check_invariants().unwrap();
                out.push((r, store.owner("fp", "AF1", *t).unwrap()));
            }
            results.push(out.clone());
        }
        assert_eq!(results[0], results[1], "replicas agree");
        let r = &results[0];
        let owner_of = |i: usize| r[i].1.map(|o| o.writer);
        assert_eq!(owner_of(1), Some(1));
        assert!(matches!(
            r[2].0,
            Err(StorageError::NotOwner {
                owner: 1,
                strength: 20,
                claimed: Some(10)
            })
        ));
        assert!(matches!(
            r[3].0,
            Err(StorageError::NotOwner { claimed: None, .. })
        ));
        assert!(matches!(r[4].0, Ok(Outcome::Put(_))));
        assert_eq!(r[5].0, Err(StorageError::Conflict { current: Some(1) }));
        assert_eq!(owner_of(6), Some(3));
        assert!(r[7].0.is_err());
        assert!(matches!(r[8].0, Ok(Outcome::Put(_))));
        assert_eq!(owner_of(8), Some(1));
        assert_eq!(r[9].0, Ok(Outcome::Released(false)));
        assert_eq!(owner_of(9), Some(1));
        assert_eq!(r[10].0, Ok(Outcome::Released(true)));
        assert_eq!(owner_of(10), None);
        assert_eq!(owner_of(11), Some(2));
        assert_eq!(owner_of(12), None, "the owner's delete releases");
        // Only accepted writes were stored: strong-0, strong-1, editor, strong-3, weak-1, delete.
        assert_eq!(a.bounds("fp", "AF1").unwrap().next, 6);
    }

    /// Owners survive a crash and reopen (log replay), a checkpoint that covers deleted
    /// segments, and a state transfer: each path ends with the owners (and leases) the original
    /// store computed, so a weaker writer is still refused after a restart.
    #[test]
    fn owners_survive_replay_checkpoint_and_state_transfer() {
        use crate::log::{LogConfig, SimFs};
        use crate::tests::{pool, put_op};
        use crate::{Expect, LocalSequencer, Mode, Op, Sequencer, Store, StoreConfig};
        let fs = SimFs::new();
        let lc = || LogConfig {
            fs: std::sync::Arc::new(fs.clone()),
            segment_bytes_max: 4096,
            ..LogConfig::new("/log")
        };
        let guarded = |p: &str, k: &str, writer: u64, strength: i32, lease_us: u64| {
            let mut op = put_op(p, k, &[0u8; 200]);
            if let Op::Put { expect, .. } = &mut op {
                *expect = Expect::Owned {
                    claim: Claim {
                        writer,
                        strength,
                        lease_us,
                    },
                    version: None,
                };
            }
            op
        };
        let submit = |s: &Store, op: Op, t: u64| {
            let r = LocalSequencer.submit(s, op, t);
            s.check_invariants().unwrap();
            r
        };
        let keys: Vec<(&str, String)> = ["fp", "fl", "vol"]
            .iter()
            .flat_map(|p| (0..6).map(move |k| (*p, format!("FP{k}"))))
            .collect();
        let owners = |s: &Store, t: u64| -> Vec<Option<Owner>> {
            keys.iter()
                .map(|(p, k)| s.owner(p, k, t).ok().flatten())
                .collect()
        };
        let (before, last_t) = {
            let s = Store::open(StoreConfig::default(), lc()).unwrap();
            for (name, mode, durable) in [
                ("fp", Mode::Versioned, true),
                ("fl", Mode::Latest, true),
                ("vol", Mode::Versioned, false),
            ] {
                let mut c = pool(name, mode);
                c.durable = durable;
                submit(&s, Op::CreatePool(c), 1).unwrap();
            }
            let mut t = 10;
            let mut last = 0;
            for round in 0..20u64 {
                for (p, k) in &keys {
                    t += 1;
                    let kn = u64::from(k.as_bytes()[2] - b'0');
                    // FP0: writer 1 (20) owns, writer 2 (10) is refused every round.
                    // FP1: an editor with a long lease; FP2: an editor whose lease ran out;
                    // FP3: owned, then released; FP4: owned, then disposed; FP5: taken over.
                    let op = match (kn, round) {
                        (0, r) => guarded(p, k, 1 + r % 2, if r % 2 == 0 { 20 } else { 10 }, 0),
                        (1, _) => guarded(p, k, 7, 15, 1_000_000_000),
                        (2, _) => guarded(p, k, 8, 15, 5),
                        (3, 19) => Op::Release {
                            pool: (*p).into(),
                            key: k.clone(),
                            writer: 3,
                        },
                        (3, _) => guarded(p, k, 3, 5, 0),
                        (4, 19) => {
                            let mut op = guarded(p, k, 4, 5, 0);
                            if let Op::Put { tombstone, .. } = &mut op {
                                *tombstone = true;
                            }
                            op
                        }
                        (4, _) => guarded(p, k, 4, 5, 0),
                        (5, r) if r < 10 => guarded(p, k, 5, 5, 0),
                        (5, _) => guarded(p, k, 6, 30, 0),
                        _ => unreachable!(),
                    };
                    if let Ok(a) = submit(&s, op, t) {
                        last = last.max(a.lsn.unwrap_or(0));
                    }
                }
            }
            s.wait_durable(last).unwrap();
            (owners(&s, t + 10), t + 10)
        };
        // The owners we expect (durable pools, and the volatile pool before the crash).
        for (i, (p, k)) in keys.iter().enumerate() {
            let want = match &k[..] {
                "FP0" => Some((1, 20)),
                "FP1" => Some((7, 15)),
                "FP5" => Some((6, 30)),
                _ => None,
            };
            assert_eq!(
                before[i].map(|o| (o.writer, o.strength)),
                want,
                "{p}/{k} before the restart"
            );
        }
        fs.crash(0);
        let s = Store::open(StoreConfig::default(), lc()).unwrap();
        s.check_invariants().unwrap();
        let after = owners(&s, last_t);
        for (i, (p, _)) in keys.iter().enumerate() {
            if *p == "vol" {
                assert_eq!(
                    after[i], None,
                    "volatile pools (and their owners) are not kept"
                );
            } else {
                assert_eq!(after[i], before[i], "{:?} after replay", keys[i]);
            }
        }
        // A weaker writer is still refused; the editor's lease still holds, and ends on time.
        let t = last_t + 1;
        assert!(matches!(
            submit(&s, guarded("fp", "FP0", 2, 10, 0), t),
            Err(StorageError::NotOwner { owner: 1, .. })
        ));
        assert!(submit(&s, guarded("fl", "FP1", 2, 10, 0), t + 1).is_err());
        // Log retention with a checkpoint: the owners' records may go, the owners stay (even
        // of keys truncated to nothing).
        for (i, (p, k)) in keys.iter().enumerate().filter(|(_, (p, _))| *p == "fp") {
            let before = s.bounds(p, k).unwrap().next;
            let op = Op::Truncate {
                pool: (*p).into(),
                key: k.clone(),
                before,
            };
            submit(&s, op, t + 2 + i as u64).unwrap();
        }
        let t = t + 100;
        let deleted = s.compact_log().unwrap();
        assert!(deleted > 0, "segments deleted");
        let digests_now: Vec<u64> = (0..s.shard_count()).map(|i| s.digest(i).unwrap()).collect();
        let owners_now = owners(&s, t + 2);
        drop(s);
        fs.crash(0);
        let s = Store::open(StoreConfig::default(), lc()).unwrap();
        s.check_invariants().unwrap();
        assert_eq!(owners(&s, t + 2), owners_now, "after a checkpoint");
        let ds: Vec<u64> = (0..s.shard_count()).map(|i| s.digest(i).unwrap()).collect();
        assert_eq!(ds, digests_now);
        // A joiner gets the owners with the state.
        let b = Store::new(StoreConfig::default()).unwrap();
        for sh in 0..s.shard_count() {
            b.import_shard(sh, &s.export_shard(sh).unwrap()).unwrap();
            assert_eq!(b.digest(sh).unwrap(), s.digest(sh).unwrap());
        }
        assert_eq!(owners(&b, t + 2), owners_now, "after a state transfer");
        assert!(matches!(
            LocalSequencer.submit(&b, guarded("fp", "FP0", 2, 10, 0), t + 3),
            Err(StorageError::NotOwner { owner: 1, .. })
        ));
    }
}
