//! Key → shard mapping and the shard allocation rule.

use crate::config::Layout;
use crate::types::NodeId;

/// FNV-1a, 64 bit, standard offset basis and prime. Fixed forever: the key → shard map
/// must not change across platforms, versions or restarts.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shard of `key` among `n_shards`: `fnv1a64(key) % n_shards`.
pub fn key_to_shard(key: &[u8], n_shards: u32) -> u32 {
    assert!(n_shards > 0, "a layout has at least one shard");
    (fnv1a64(key) % u64::from(n_shards)) as u32
}

/// Computes the next shard assignment (sticky, like Derecho's default allocator).
///
/// * `old`: each shard's members in the previous view, in sender-rank order.
/// * `survivors`: the next view's members that were in the previous view (rank order).
/// * `joiners`: new members (in the order they will be ranked).
///
/// Survivors stay in their old shard (keeping their relative order). Then unassigned nodes
/// (survivors without a shard first, then joiners) are handed out one at a time to the
/// shards in index order while a shard is below its `max_members`, first raising every
/// shard to `min_members`. Returns `None` when some shard would stay below `min_members`
/// (the view is inadequate).
pub fn allocate(
    layout: &Layout,
    old: &[Vec<NodeId>],
    survivors: &[NodeId],
    joiners: &[NodeId],
) -> Option<Vec<Vec<NodeId>>> {
    let n = layout.shards.len();
    let mut shards: Vec<Vec<NodeId>> = vec![Vec::new(); n];
    let mut assigned = std::collections::BTreeSet::new();
    for (s, members) in old.iter().enumerate().take(n) {
        for m in members {
            if survivors.contains(m) {
                shards[s].push(*m);
                assigned.insert(*m);
            }
        }
    }
    let mut free: std::collections::VecDeque<NodeId> = survivors
        .iter()
        .chain(joiners.iter())
        .filter(|m| !assigned.contains(*m))
        .copied()
        .collect();
    // Pass 1: bring every shard to its minimum, pass 2: fill towards the maximum.
    for pass in 0..2 {
        loop {
            let mut progressed = false;
            for (s, spec) in layout.shards.iter().enumerate() {
                let target = if pass == 0 {
                    spec.min_members
                } else {
                    spec.max_members
                };
                if shards[s].len() < target {
                    if let Some(m) = free.pop_front() {
                        shards[s].push(m);
                        progressed = true;
                    }
                }
            }
            if !progressed {
                break;
            }
        }
    }
    if shards
        .iter()
        .zip(&layout.shards)
        .any(|(m, spec)| m.len() < spec.min_members)
    {
        return None;
    }
    Some(shards)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ShardSpec;

    #[test]
    fn fnv_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            key_to_shard(b"foobar", 7),
            (0x8594_4171_f739_67e8u64 % 7) as u32
        );
    }

    #[test]
    fn allocation_is_sticky_and_fills_min_first() {
        let layout = Layout {
            shards: vec![
                ShardSpec {
                    min_members: 2,
                    max_members: 3
                };
                2
            ],
        };
        let ids: Vec<NodeId> = (1..=6).map(NodeId).collect();
        let first = allocate(&layout, &[vec![], vec![]], &[], &ids[..5]).unwrap();
        assert_eq!(
            first,
            vec![vec![ids[0], ids[2], ids[4]], vec![ids[1], ids[3]]]
        );
        // n1 leaves, n6 joins: survivors keep their shard, the joiner tops up shard 0.
        let surv = vec![ids[1], ids[2], ids[3], ids[4]];
        let next = allocate(&layout, &first, &surv, &[ids[5]]).unwrap();
        assert_eq!(
            next,
            vec![vec![ids[2], ids[4], ids[5]], vec![ids[1], ids[3]]]
        );
        // Too few nodes for two shards of two: inadequate.
        assert!(allocate(&layout, &[vec![], vec![]], &[], &ids[..3]).is_none());
    }
}
