//! Kafka's `max.connections.per.ip` and `max.connections.per.ip.overrides`: open client
//! connections per source address, counted over all shards of the broker. Only accepting and
//! closing a connection touch the count (a mutex held for a map update), never its requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections open per client address, and each address's limit.
pub struct ConnectionsPerIp {
    default_limit: usize,
    overrides: HashMap<IpAddr, usize>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted when dropped (the connection closed).
pub struct IpConnection {
    counter: Arc<ConnectionsPerIp>,
    ip: IpAddr,
}

impl ConnectionsPerIp {
    /// The broker's counter, or `None` when no address has a limit (nothing to count).
    pub fn from_config(
        config: &crate::config::BrokerConfig,
    ) -> anyhow::Result<Option<Arc<ConnectionsPerIp>>> {
        let overrides = config.connections_per_ip_overrides()?;
        if config.max_connections_per_ip >= crate::config::UNLIMITED_CONNECTIONS_PER_IP
            && overrides.is_empty()
        {
            return Ok(None);
        }
        Ok(Some(Arc::new(ConnectionsPerIp::new(
            config.max_connections_per_ip,
            overrides,
        ))))
    }

    pub fn new(default_limit: usize, overrides: Vec<(IpAddr, usize)>) -> ConnectionsPerIp {
        ConnectionsPerIp {
            default_limit,
            overrides: overrides
                .into_iter()
                .map(|(ip, limit)| (ip.to_canonical(), limit))
                .collect(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The most connections `ip` may have open.
    pub fn limit(&self, ip: IpAddr) -> usize {
        let ip = ip.to_canonical();
        self.overrides
            .get(&ip)
            .copied()
            .unwrap_or(self.default_limit)
    }

    /// Counts a new connection from `ip`, or returns the limit it would exceed.
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> Result<IpConnection, usize> {
        // An IPv4 client of a dual-stack listener is the same client as on an IPv4 listener.
        let ip = ip.to_canonical();
        let limit = self.limit(ip);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if open.get(&ip).copied().unwrap_or(0) >= limit {
            return Err(limit);
        }
        *open.entry(ip).or_insert(0) += 1;
        Ok(IpConnection {
            counter: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for IpConnection {
    fn drop(&mut self) {
        let mut open = self
            .counter
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                // Addresses with nothing open take no memory.
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn limits_each_address_with_its_override() {
        let counter = Arc::new(ConnectionsPerIp::new(
            2,
            vec![(ip("127.0.0.2"), 3), (ip("10.0.0.9"), 0)],
        ));
        let first = counter.open(ip("127.0.0.1")).expect("under the limit");
        let _second = counter.open(ip("127.0.0.1")).expect("at the limit");
        assert_eq!(counter.open(ip("127.0.0.1")).err(), Some(2));
        let others: Vec<_> = (0..3)
            .map(|_| counter.open(ip("127.0.0.2")).expect("the override"))
            .collect();
        assert_eq!(counter.open(ip("127.0.0.2")).err(), Some(3));
        assert_eq!(
            counter.open(ip("10.0.0.9")).err(),
            Some(0),
            "a blocked address"
        );
        assert_eq!(counter.open_from(ip("10.0.0.9")), 0);
        drop(first);
        assert_eq!(counter.open_from(ip("127.0.0.1")), 1);
        counter
            .open(ip("127.0.0.1"))
            .expect("room again once one closed");
        drop(others);
        assert_eq!(counter.open_from(ip("127.0.0.2")), 0);
        assert!(counter
            .open
            .lock()
            .expect("not poisoned")
            .get(&ip("127.0.0.2"))
            .is_none());
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let counter = Arc::new(ConnectionsPerIp::new(1, vec![(ip("127.0.0.2"), 2)]));
        let _v4 = counter.open(ip("127.0.0.1")).expect("under the limit");
        assert_eq!(counter.open(ip("::ffff:127.0.0.1")).err(), Some(1));
        assert_eq!(counter.limit(ip("::ffff:127.0.0.2")), 2);
    }
}
