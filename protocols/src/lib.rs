//! squall-protocols: the Kafka, DDS and HTTP faces (translate, never store).
//! (Filled in by issues 4 and 5.)
