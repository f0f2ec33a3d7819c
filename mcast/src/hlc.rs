//! Hybrid logical clock: physical microseconds plus a logical counter.

/// A hybrid timestamp. Ordered by physical time, then by the logical counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hlc {
    /// Physical part: microseconds of the driver's wall clock.
    pub phys_us: u64,
    /// Logical part: breaks ties between events in the same microsecond.
    pub logical: u32,
}

impl Hlc {
    /// The smallest timestamp strictly greater than `self`.
    pub fn succ(self) -> Hlc {
        match self.logical.checked_add(1) {
            Some(l) => Hlc {
                phys_us: self.phys_us,
                logical: l,
            },
            None => Hlc {
                phys_us: self.phys_us + 1,
                logical: 0,
            },
        }
    }
}

/// A node's clock. Local events tick it, received timestamps are merged into it, so it
/// never goes backwards and is always ahead of everything this node has seen.
#[derive(Clone, Copy, Debug, Default)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A local event at physical time `now_us`: returns a timestamp greater than every one
    /// returned or observed before.
    pub fn tick(&mut self, now_us: u64) -> Hlc {
        let next = if now_us > self.last.phys_us {
            Hlc {
                phys_us: now_us,
                logical: 0,
            }
        } else {
            self.last.succ()
        };
        self.last = next;
        next
    }
    /// Merges a timestamp seen in a message.
    pub fn observe(&mut self, seen: Hlc) {
        if seen > self.last {
            self.last = seen;
        }
    }
    /// The last timestamp issued or observed.
    pub fn last(&self) -> Hlc {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn ticks_are_strictly_increasing_even_when_the_clock_stalls_or_lags() {
        let mut c = HlcClock::default();
        let a = c.tick(100);
        let b = c.tick(100);
        c.observe(Hlc {
            phys_us: 500,
            logical: 3,
        });
        let d = c.tick(200);
        assert!(a < b && b < d);
        assert_eq!(
            d,
            Hlc {
                phys_us: 500,
                logical: 4
            }
        );
        assert_eq!(
            c.tick(600),
            Hlc {
                phys_us: 600,
                logical: 0
            }
        );
    }
}
