//! Producers: idempotent-producer state per partition and producer id allocation. The
//! transaction coordinator will live here too.

pub mod producer_state;
