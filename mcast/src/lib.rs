//! squall-mcast: Derecho-style ordered multicast with managed membership.
//! (Filled in by issue 3.)
