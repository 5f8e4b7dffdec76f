//! Authentication: SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) on listeners whose security
//! protocol asks for it, against SCRAM credentials kept salted in the replicated metadata.

pub mod scram;
pub mod session;
pub mod tls;
