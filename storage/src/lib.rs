//! squall-storage: the versioned, time-indexed object store and its durable log.
//! (Filled in by issue 2.)
