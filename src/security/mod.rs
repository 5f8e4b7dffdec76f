//! Authentication: SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) on listeners whose security
//! protocol asks for it, against SCRAM credentials kept salted in the replicated metadata.
//! Authorization: Kafka ACLs ([`acl`]), also kept in the replicated metadata. Brokers dial each
//! other as [`inter_broker`] says.
//! Client quotas ([`quota`]): per-user and per-client-id byte rates, Kafka's semantics.

pub mod acl;
pub mod inter_broker;
pub mod quota;
pub mod scram;
pub mod session;
pub mod tls;
