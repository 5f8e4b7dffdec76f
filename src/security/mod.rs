//! Authentication: SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) on listeners whose security
//! protocol asks for it, against SCRAM credentials kept salted in the replicated metadata.
//! Authorization: Kafka ACLs ([`acl`]), also kept in the replicated metadata. Brokers dial each
//! other as [`inter_broker`] says.

pub mod acl;
pub mod inter_broker;
pub mod scram;
pub mod session;
pub mod tls;
