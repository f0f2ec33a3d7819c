//! EXCLUSIVE ownership, decided in the store. Sans-IO: the record format and the rule.
//!
//! Each instance of an EXCLUSIVE topic has an ownership record: a `latest` key in the pool
//! `<pool>.owners`, named like the instance. It is only ever changed by a conditional put on its
//! own version, so two claimants (two faces, two replicas' faces) cannot both win: the store's
//! order decides, and every face reads the same winner.
//!
//! The rule ([`arbitrate`]): the owner keeps the instance while it is alive; a stronger writer
//! takes it over; when the owner is gone (disposed, unregistered, lost its lease, or its record
//! was released) the next writer to write takes it. Equal strength: the incumbent keeps it (DDS
//! leaves ties to the implementation; keeping the incumbent avoids flapping).

use serde::{Deserialize, Serialize};

/// Who owns an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// `dds:<writer guid>` for a DDS writer, `editor` for edits from other faces; `None` once
    /// released (disposed, unregistered, writer lost).
    pub owner: Option<String>,
    /// The owner's strength.
    pub strength: i32,
    /// For editors: platform time (µs) after which the claim lapses.
    pub lease_until_us: Option<u64>,
}

impl OwnerRecord {
    /// A claim by `owner` with `strength`.
    pub fn claim(owner: &str, strength: i32, lease_until_us: Option<u64>) -> Self {
        OwnerRecord {
            owner: Some(owner.to_owned()),
            strength,
            lease_until_us,
        }
    }

    /// The record after a release.
    pub fn released() -> Self {
        OwnerRecord {
            owner: None,
            strength: i32::MIN,
            lease_until_us: None,
        }
    }

    /// JSON bytes, the stored form (readable over HTTP).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses the stored form; an unreadable record counts as released.
    pub fn from_bytes(b: &[u8]) -> Self {
        serde_json::from_slice(b).unwrap_or_else(|_| OwnerRecord::released())
    }
}

/// What to do with a claimant's write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The claimant is the owner: store the write.
    Accept,
    /// The claimant becomes the owner (conditional put of the record), then store the write.
    TakeOver,
    /// Someone else owns the instance: drop the write.
    Reject,
}

/// The ownership rule. `owner_alive` tells whether the current owner (if any) is still alive.
pub fn arbitrate(
    current: Option<&OwnerRecord>,
    claimant: &str,
    strength: i32,
    owner_alive: bool,
) -> Claim {
    let Some(rec) = current else {
        return Claim::TakeOver;
    };
    let Some(owner) = rec.owner.as_deref() else {
        return Claim::TakeOver;
    };
    if owner == claimant {
        return Claim::Accept;
    }
    if !owner_alive || strength > rec.strength {
        return Claim::TakeOver;
    }
    Claim::Reject
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strongest_alive_writer_owns() {
        let a = OwnerRecord::claim("dds:a", 10, None);
        assert_eq!(arbitrate(None, "dds:a", 10, true), Claim::TakeOver);
        assert_eq!(arbitrate(Some(&a), "dds:a", 10, true), Claim::Accept);
        assert_eq!(arbitrate(Some(&a), "dds:b", 5, true), Claim::Reject);
        assert_eq!(
            arbitrate(Some(&a), "dds:b", 10, true),
            Claim::Reject,
            "tie keeps incumbent"
        );
        assert_eq!(arbitrate(Some(&a), "dds:c", 20, true), Claim::TakeOver);
        assert_eq!(
            arbitrate(Some(&a), "dds:b", 5, false),
            Claim::TakeOver,
            "owner lost"
        );
        let r = OwnerRecord::released();
        assert_eq!(arbitrate(Some(&r), "dds:b", 1, false), Claim::TakeOver);
    }

    #[test]
    fn record_round_trips_and_garbage_reads_as_released() {
        let a = OwnerRecord::claim("editor", 7, Some(99));
        assert_eq!(OwnerRecord::from_bytes(&a.to_bytes()), a);
        assert_eq!(OwnerRecord::from_bytes(b"\xff"), OwnerRecord::released());
    }
}
