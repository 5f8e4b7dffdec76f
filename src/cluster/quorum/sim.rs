//! Deterministic simulation of the quorum (filled in below).
