//! Client quotas, with the semantics of Kafka's `ClientQuotaManager`.
//!
//! **Entities.** A quota is set on an entity made of a `user` (the principal's name, without
//! `User:`), a `client-id`, or both; either part may be the default entity (`<default>`, a
//! null name on the wire). The values live in the replicated metadata image
//! ([`QuotaStore`], written by the controller), so every node enforces the same quotas and
//! they survive restarts.
//!
//! **Resolution.** For each quota type, a request's (user, client-id) is resolved as Kafka
//! does ([`QuotaStore::resolve`]): the most specific entity that sets the type's key decides
//! both the limit and who shares it — `user+client-id`, `user+<default> client-id`, `user`,
//! `<default> user+client-id`, `<default> user+<default> client-id`, `<default> user`,
//! `client-id`, `<default> client-id`. A quota on `user=alice` is shared by all of alice's
//! clients; one on `<default>` client-id applies to each client-id on its own.
//!
//! **Measurement.** Each (quota type, sharing group) has a [`RateWindow`]: Kafka's sampled
//! rate over `quota_window_num` samples of `quota_window_size_ms` (11 × 1 s by default),
//! including its rule that a young window counts as `num - 1` full samples, so a new client
//! is not throttled for its first burst alone. A request that takes the rate over the bound
//! is throttled for `(rate - bound) / bound × window` (Kafka's formula): the time after which
//! the rate is back at the bound.
//!
//! **Per broker, not per shard.** Kafka's quotas are per broker. A client's connections may
//! land on different shards, so each shard measures its own traffic and, once per
//! `quota_window_size_ms`, sends what it recorded since to every other shard
//! ([`take_unshared`], [`record_shared`]), which adds it to the same sharing group's window.
//! A shard thus sees the broker's total, late by at most one sample window (the quota window
//! is eleven of them), for one cross-shard message per shard pair per window, and only while
//! a quota is active. Measurement state is thread-local (shards are threads): no locks.
//!
//! **Cost.** Without any quota in the image the request path checks `QuotaStore::is_empty`
//! and nothing else.
//!
//! Enforced: `producer_byte_rate` (Produce request bytes), `consumer_byte_rate` (Fetch
//! response bytes of consumers), `request_percentage` (the time the connection's shard
//! spends polling the request's handler, as a percentage of one core; Kafka counts request
//! handler thread time). Stored and described but not enforced: `controller_mutation_rate`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::Instant;

/// Entity types of the wire protocol.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// Longest user or client-id name of a quota entity (keeps the image's snapshot small).
pub const MAX_ENTITY_NAME_BYTES: usize = 255;

/// Sharing groups one shard measures at once; past it new groups go unmeasured (and
/// unthrottled) until idle ones expire, rather than memory growing without bound.
pub const MAX_SENSORS_PER_SHARD: usize = 65_536;

/// A part of an entity: the default entity or a name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Named(String),
}

impl EntityName {
    /// From the wire: a null name is the default entity.
    pub fn from_wire(name: Option<&str>) -> EntityName {
        match name {
            None => EntityName::Default,
            Some(name) => EntityName::Named(name.to_string()),
        }
    }

    /// To the wire: the default entity is a null name.
    pub fn wire_name(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(name) => Some(name),
        }
    }

    /// As Kafka's tools print it.
    pub fn display(&self) -> &str {
        self.wire_name().unwrap_or("<default>")
    }
}

/// Kafka's `ClientQuotaEntity` for user and client-id: `None` = the type is not part of it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client_id: Option<EntityName>,
}

impl QuotaEntity {
    /// Kafka's checks of an AlterClientQuotas entity, from its (type, name) pairs; the
    /// messages are Kafka's.
    pub fn from_wire<'a>(
        parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<QuotaEntity, String> {
        let mut entity = QuotaEntity {
            user: None,
            client_id: None,
        };
        let mut has_ip = false;
        let mut empty = true;
        for (entity_type, name) in parts {
            empty = false;
            let slot = match entity_type {
                USER => &mut entity.user,
                CLIENT_ID => &mut entity.client_id,
                IP => {
                    // Kafka's IP quotas only carry connection_creation_rate, which needs the
                    // accept path; not served here.
                    if has_ip {
                        return Err(format!("duplicate entity entry {IP}"));
                    }
                    has_ip = true;
                    continue;
                }
                other => return Err(format!("Unhandled client quota entity type: {other}")),
            };
            if slot.is_some() {
                return Err(format!("duplicate entity entry {entity_type}"));
            }
            if name.is_some_and(str::is_empty) {
                return Err(format!("Empty {entity_type} not supported"));
            }
            if name.is_some_and(|name| name.len() > MAX_ENTITY_NAME_BYTES) {
                return Err(format!(
                    "{entity_type} names are at most {MAX_ENTITY_NAME_BYTES} bytes"
                ));
            }
            *slot = Some(EntityName::from_wire(name));
        }
        if empty {
            return Err("Invalid empty client quota entity".into());
        }
        if has_ip {
            if entity.user.is_some() || entity.client_id.is_some() {
                return Err(
                    "Invalid quota entity combination, IP entity should not be used \
                            with user/client ID entity."
                        .into(),
                );
            }
            return Err("ip quota entities (connection_creation_rate) are not supported".into());
        }
        Ok(entity)
    }

    /// (type, name) pairs for the wire, user first.
    pub fn wire_parts(&self) -> Vec<(&'static str, Option<&str>)> {
        let mut parts = Vec::with_capacity(2);
        if let Some(user) = &self.user {
            parts.push((USER, user.wire_name()));
        }
        if let Some(client_id) = &self.client_id {
            parts.push((CLIENT_ID, client_id.wire_name()));
        }
        parts
    }

    fn parts(&self) -> usize {
        usize::from(self.user.is_some()) + usize::from(self.client_id.is_some())
    }
}

/// The quota keys of user and client-id entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKey {
    ProducerByteRate,
    ConsumerByteRate,
    RequestPercentage,
    ControllerMutationRate,
}

impl QuotaKey {
    pub const ALL: [QuotaKey; 4] = [
        QuotaKey::ProducerByteRate,
        QuotaKey::ConsumerByteRate,
        QuotaKey::RequestPercentage,
        QuotaKey::ControllerMutationRate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuotaKey::ProducerByteRate => "producer_byte_rate",
            QuotaKey::ConsumerByteRate => "consumer_byte_rate",
            QuotaKey::RequestPercentage => "request_percentage",
            QuotaKey::ControllerMutationRate => "controller_mutation_rate",
        }
    }

    pub fn from_name(name: &str) -> Option<QuotaKey> {
        QuotaKey::ALL.into_iter().find(|key| key.name() == name)
    }

    /// Kafka types the byte rates as LONG, the others as DOUBLE.
    fn is_integral(self) -> bool {
        matches!(
            self,
            QuotaKey::ProducerByteRate | QuotaKey::ConsumerByteRate
        )
    }
}

/// Kafka's check of a quota value (`validateQuotaKeyValue`), with Kafka's messages; also
/// refuses values that are not finite (JSON, the metadata log's encoding, has no NaN).
pub fn validate_value(key: &str, value: f64) -> Result<QuotaKey, String> {
    let quota_key =
        QuotaKey::from_name(key).ok_or_else(|| format!("Invalid configuration key {key}"))?;
    if !value.is_finite() {
        return Err(format!("Quota {key} must be a finite number"));
    }
    if value <= 0.0 {
        return Err(format!("Quota {key} must be greater than 0"));
    }
    if quota_key.is_integral() {
        if value > i64::MAX as f64 {
            return Err(format!("Proposed value for {key} is too large for a LONG."));
        }
        if (value % 1.0).abs() > 1e-6 {
            return Err(format!("{key} cannot be a fractional value."));
        }
    }
    Ok(quota_key)
}

/// An entity's quota values by key.
pub type QuotaValues = BTreeMap<String, f64>;

/// One level of the index: the entities that lack this type, its default, and its names.
#[derive(Debug, Clone, Default, PartialEq)]
struct Level<T> {
    absent: Option<T>,
    default: Option<T>,
    named: BTreeMap<String, T>,
}

impl<T> Level<T> {
    fn get(&self, name: Option<Lookup<'_>>) -> Option<&T> {
        match name {
            None => self.absent.as_ref(),
            Some(Lookup::Default) => self.default.as_ref(),
            Some(Lookup::Named(name)) => self.named.get(name),
        }
    }

    fn slot(&mut self, name: &Option<EntityName>) -> Option<&mut T>
    where
        T: Default,
    {
        Some(match name {
            None => self.absent.get_or_insert_with(T::default),
            Some(EntityName::Default) => self.default.get_or_insert_with(T::default),
            Some(EntityName::Named(name)) => self.named.entry(name.clone()).or_default(),
        })
    }

    fn remove(&mut self, name: &Option<EntityName>) {
        match name {
            None => self.absent = None,
            Some(EntityName::Default) => self.default = None,
            Some(EntityName::Named(name)) => {
                self.named.remove(name);
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (Option<EntityName>, &T)> {
        let absent = self.absent.iter().map(|t| (None, t));
        let default = self.default.iter().map(|t| (Some(EntityName::Default), t));
        let named = self
            .named
            .iter()
            .map(|(name, t)| (Some(EntityName::Named(name.clone())), t));
        absent.chain(default).chain(named)
    }
}

/// A borrowed entity part for lookups (no allocation on the request path).
#[derive(Debug, Clone, Copy)]
enum Lookup<'a> {
    Default,
    Named(&'a str),
}

/// Every quota of the cluster, indexed by user then client-id so the per-request lookups
/// borrow the request's names. Part of the metadata image; serialised as a list of entities.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaStore {
    by_user: Level<Level<QuotaValues>>,
    entities: usize,
}

/// Which parts of (user, client-id) a sharing group keeps: Kafka's quota metric tags, where
/// an empty tag means "any".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuotaTags {
    pub user: String,
    pub client_id: String,
}

impl QuotaStore {
    /// Entities holding at least one value.
    pub fn len(&self) -> usize {
        self.entities
    }

    pub fn is_empty(&self) -> bool {
        self.entities == 0
    }

    pub fn get(&self, entity: &QuotaEntity) -> Option<&QuotaValues> {
        fn lookup(name: &Option<EntityName>) -> Option<Lookup<'_>> {
            name.as_ref().map(|name| match name {
                EntityName::Default => Lookup::Default,
                EntityName::Named(name) => Lookup::Named(name),
            })
        }
        self.by_user
            .get(lookup(&entity.user))?
            .get(lookup(&entity.client_id))
    }

    /// Sets (`Some`) or removes (`None`) one key of an entity; an entity without keys is gone.
    pub fn set(&mut self, entity: &QuotaEntity, key: &str, value: Option<f64>) {
        assert!(
            entity.parts() > 0,
            "a quota entity has a user or a client-id"
        );
        let existed = self.get(entity).is_some();
        match value {
            Some(value) => {
                let clients = self.by_user.slot(&entity.user).expect("slots always exist");
                let values = clients.slot(&entity.client_id).expect("slots always exist");
                values.insert(key.to_string(), value);
            }
            None => {
                if !existed {
                    return;
                }
                let clients = self.by_user.slot(&entity.user).expect("slots exist");
                let values = clients.slot(&entity.client_id).expect("slots exist");
                values.remove(key);
                if values.is_empty() {
                    clients.remove(&entity.client_id);
                }
                let clients_empty = clients.absent.is_none()
                    && clients.default.is_none()
                    && clients.named.is_empty();
                if clients_empty {
                    self.by_user.remove(&entity.user);
                }
            }
        }
        let exists = self.get(entity).is_some();
        match (existed, exists) {
            (false, true) => self.entities += 1,
            (true, false) => self.entities -= 1,
            _ => {}
        }
    }

    /// Every entity with its values, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (QuotaEntity, &QuotaValues)> {
        self.by_user.iter().flat_map(|(user, clients)| {
            clients.iter().map(move |(client_id, values)| {
                (
                    QuotaEntity {
                        user: user.clone(),
                        client_id,
                    },
                    values,
                )
            })
        })
    }

    fn limit(
        &self,
        user: Option<Lookup<'_>>,
        client: Option<Lookup<'_>>,
        key: QuotaKey,
    ) -> Option<f64> {
        self.by_user
            .get(user)?
            .get(client)?
            .get(key.name())
            .copied()
    }

    /// The quota of `key` that applies to a request of `user` (the principal's name) and
    /// `client_id`, and the group that shares it: Kafka's `DefaultQuotaCallback`
    /// (`quotaMetricTags`, then `quotaLimit`). `None` when no entity sets the key.
    pub fn resolve(&self, key: QuotaKey, user: &str, client_id: &str) -> Option<(QuotaTags, f64)> {
        if self.is_empty() {
            return None;
        }
        use Lookup::{Default as D, Named as N};
        let has = |u: Option<Lookup<'_>>, c: Option<Lookup<'_>>| self.limit(u, c, key).is_some();
        let (u, c) = (N(user), N(client_id));
        // quotaMetricTags: the most specific entity with the key picks the sharing group.
        let (tag_user, tag_client) = if has(Some(u), Some(c)) || has(Some(u), Some(D)) {
            (user, client_id)
        } else if has(Some(u), None) {
            (user, "")
        } else if has(Some(D), Some(c)) || has(Some(D), Some(D)) {
            (user, client_id)
        } else if has(Some(D), None) {
            (user, "")
        } else {
            ("", client_id)
        };
        // quotaLimit: the limit of that group, by the same precedence within its shape.
        let limit = if !tag_user.is_empty() && !tag_client.is_empty() {
            self.limit(Some(u), Some(c), key)
                .or_else(|| self.limit(Some(u), Some(D), key))
                .or_else(|| self.limit(Some(D), Some(c), key))
                .or_else(|| self.limit(Some(D), Some(D), key))
        } else if !tag_user.is_empty() {
            self.limit(Some(u), None, key)
                .or_else(|| self.limit(Some(D), None, key))
        } else if !tag_client.is_empty() {
            self.limit(None, Some(c), key)
                .or_else(|| self.limit(None, Some(D), key))
        } else {
            // Kafka: a request without user and client-id tags has no quota.
            None
        }?;
        Some((
            QuotaTags {
                user: tag_user.to_string(),
                client_id: tag_client.to_string(),
            },
            limit,
        ))
    }
}

impl Serialize for QuotaStore {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let list: Vec<(QuotaEntity, &QuotaValues)> = self.iter().collect();
        list.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for QuotaStore {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<QuotaStore, D::Error> {
        let list: Vec<(QuotaEntity, QuotaValues)> = Vec::deserialize(deserializer)?;
        let mut store = QuotaStore::default();
        for (entity, values) in list {
            if entity.parts() == 0 {
                return Err(serde::de::Error::custom("a quota entity without parts"));
            }
            for (key, value) in values {
                store.set(&entity, &key, Some(value));
            }
        }
        Ok(store)
    }
}

/// The user part of a quota entity for a principal (`User:alice` → `alice`).
pub fn user_of_principal(principal: &str) -> &str {
    principal.strip_prefix("User:").unwrap_or(principal)
}

/// Kafka's sampled rate (`SampledStat` + `Rate`): `samples` windows of `window_size_ms`,
/// reused round robin; a window older than all of them together counts for nothing.
#[derive(Debug, Clone)]
pub struct RateWindow {
    window_size_ms: u64,
    /// (start of the window, value recorded in it); at most `capacity` of them.
    samples: Vec<(u64, f64)>,
    capacity: usize,
    current: usize,
}

impl RateWindow {
    pub fn new(samples: usize, window_size_ms: u64) -> RateWindow {
        assert!(samples >= 2, "a quota window has at least two samples");
        assert!(
            window_size_ms >= 1,
            "a quota sample window lasts at least 1 ms"
        );
        RateWindow {
            window_size_ms,
            samples: Vec::with_capacity(samples),
            capacity: samples,
            current: 0,
        }
    }

    /// Adds `value` at `now_ms` (negative: Kafka's unrecord).
    pub fn record(&mut self, value: f64, now_ms: u64) {
        if self.samples.is_empty() {
            self.samples.push((now_ms, 0.0));
            self.current = 0;
        }
        let (start, _) = self.samples[self.current];
        if now_ms.saturating_sub(start) >= self.window_size_ms {
            self.current = (self.current + 1) % self.capacity;
            if self.current >= self.samples.len() {
                self.samples.push((now_ms, 0.0));
            } else {
                self.samples[self.current] = (now_ms, 0.0);
            }
        }
        self.samples[self.current].1 += value;
    }

    /// Samples older than all windows together are reset (Kafka's `purgeObsoleteSamples`).
    fn purge(&mut self, now_ms: u64) {
        let expire_after_ms = self.window_size_ms * self.capacity as u64;
        for sample in &mut self.samples {
            if now_ms.saturating_sub(sample.0) >= expire_after_ms {
                *sample = (now_ms, 0.0);
            }
        }
    }

    /// The span the rate divides by, in ms (Kafka's `Rate.windowSize`): from the oldest
    /// sample to now, but never less than `samples - 1` full windows, nor 1 ms.
    pub fn window_ms(&mut self, now_ms: u64) -> u64 {
        self.purge(now_ms);
        let oldest = self
            .samples
            .iter()
            .map(|&(start, _)| start)
            .min()
            .unwrap_or(now_ms);
        let mut elapsed_ms = now_ms.saturating_sub(oldest);
        let full_windows = elapsed_ms / self.window_size_ms;
        let min_full_windows = self.capacity as u64 - 1;
        if full_windows < min_full_windows {
            elapsed_ms += (min_full_windows - full_windows) * self.window_size_ms;
        }
        elapsed_ms.max(1)
    }

    /// Units per second over the window.
    pub fn rate(&mut self, now_ms: u64) -> f64 {
        let window_ms = self.window_ms(now_ms);
        let total: f64 = self.samples.iter().map(|&(_, value)| value).sum();
        total * 1000.0 / window_ms as f64
    }

    /// Kafka's throttle time for a rate over `bound`: `(rate - bound) / bound × window`, the
    /// time after which the rate is back at the bound; 0 within it. At most `max_ms`.
    pub fn throttle_ms(&mut self, bound: f64, now_ms: u64, max_ms: u64) -> u64 {
        assert!(bound > 0.0, "quota bounds are positive");
        let rate = self.rate(now_ms);
        if rate <= bound {
            return 0;
        }
        let window_ms = self.window_ms(now_ms) as f64;
        let throttle_ms = ((rate - bound) / bound * window_ms).round();
        (throttle_ms as u64).min(max_ms)
    }
}

/// The quota types a request is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// `producer_byte_rate`: bytes of Produce requests.
    Produce,
    /// `consumer_byte_rate`: bytes of Fetch responses to consumers.
    Fetch,
    /// `request_percentage`: percent of one core the connection's shard spends running the
    /// client's requests (Kafka: of one request handler thread).
    Request,
}

impl QuotaKind {
    pub const COUNT: usize = 3;
    pub const ALL: [QuotaKind; Self::COUNT] =
        [QuotaKind::Produce, QuotaKind::Fetch, QuotaKind::Request];

    pub fn key(self) -> QuotaKey {
        match self {
            QuotaKind::Produce => QuotaKey::ProducerByteRate,
            QuotaKind::Fetch => QuotaKey::ConsumerByteRate,
            QuotaKind::Request => QuotaKey::RequestPercentage,
        }
    }

    /// Label in metrics.
    pub fn label(self) -> &'static str {
        match self {
            QuotaKind::Produce => "produce",
            QuotaKind::Fetch => "fetch",
            QuotaKind::Request => "request",
        }
    }

    /// Longest throttle of this kind: Kafka bounds the request quota's by one sample window;
    /// the byte rates' by the whole window here (Kafka leaves them unbounded).
    fn max_throttle_ms(self, window: QuotaWindow) -> u64 {
        match self {
            QuotaKind::Request => window.window_size_ms,
            QuotaKind::Produce | QuotaKind::Fetch => window.max_throttle_ms(),
        }
    }
}

/// The broker's quota window settings.
#[derive(Debug, Clone, Copy)]
pub struct QuotaWindow {
    /// Kafka's `quota.window.num`.
    pub samples: usize,
    /// Kafka's `quota.window.size.seconds`, in ms.
    pub window_size_ms: u64,
}

impl QuotaWindow {
    /// The longest throttle the broker hands out: the whole quota window (Kafka's byte-rate
    /// throttle has no cap; a bound keeps a tiny quota from muting a connection for hours).
    pub fn max_throttle_ms(&self) -> u64 {
        self.window_size_ms * self.samples as u64
    }

    /// Kafka's `getMaxValueInQuotaWindow`: what fits in the window at the bound, so a Fetch
    /// under a consumer quota asks for no more than could ever pass.
    pub fn max_value_in_window(&self, bound: f64) -> f64 {
        bound * (self.samples as f64 - 1.0) * self.window_size_ms as f64 / 1000.0
    }
}

/// Milliseconds on a clock shared by every shard of the process (shares carry times).
pub fn now_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// One sharing group's measurement on this shard.
#[derive(Debug)]
struct Sensor {
    window: RateWindow,
    /// Recorded here since the last share with the other shards.
    unshared: f64,
    last_used_ms: u64,
}

thread_local! {
    /// This shard's sensors by (quota type, sharing group).
    static SENSORS: RefCell<HashMap<(QuotaKind, QuotaTags), Sensor>> = RefCell::new(HashMap::new());
}

fn with_sensor<R>(
    kind: QuotaKind,
    tags: QuotaTags,
    window: QuotaWindow,
    now_ms: u64,
    f: impl FnOnce(&mut Sensor) -> R,
) -> Option<R> {
    SENSORS.with(|sensors| {
        let mut sensors = sensors.borrow_mut();
        if sensors.len() >= MAX_SENSORS_PER_SHARD && !sensors.contains_key(&(kind, tags.clone())) {
            let idle_ms = window.max_throttle_ms();
            sensors.retain(|_, sensor| now_ms.saturating_sub(sensor.last_used_ms) < idle_ms);
            if sensors.len() >= MAX_SENSORS_PER_SHARD {
                return None;
            }
        }
        let sensor = sensors.entry((kind, tags)).or_insert_with(|| Sensor {
            window: RateWindow::new(window.samples, window.window_size_ms),
            unshared: 0.0,
            last_used_ms: now_ms,
        });
        sensor.last_used_ms = now_ms;
        Some(f(sensor))
    })
}

/// Records `value` against the group of `tags` and returns the throttle time, in ms, that
/// the rate now calls for (0: within the quota).
pub fn record_and_throttle(
    kind: QuotaKind,
    tags: QuotaTags,
    bound: f64,
    value: f64,
    window: QuotaWindow,
) -> u64 {
    let now = now_ms();
    with_sensor(kind, tags, window, now, |sensor| {
        sensor.window.record(value, now);
        sensor.unshared += value;
        sensor
            .window
            .throttle_ms(bound, now, kind.max_throttle_ms(window))
    })
    .unwrap_or(0)
}

/// Takes back `value` (a throttled Fetch answers without its records: Kafka's unrecord).
pub fn unrecord(kind: QuotaKind, tags: QuotaTags, value: f64, window: QuotaWindow) {
    let now = now_ms();
    with_sensor(kind, tags, window, now, |sensor| {
        sensor.window.record(-value, now);
        sensor.unshared -= value;
    });
}

/// What this shard recorded since the last call, per group, to send to the other shards;
/// also forgets groups idle for a whole quota window.
pub fn take_unshared(window: QuotaWindow) -> Vec<(QuotaKind, QuotaTags, f64)> {
    let now = now_ms();
    SENSORS.with(|sensors| {
        let mut sensors = sensors.borrow_mut();
        sensors
            .retain(|_, sensor| now.saturating_sub(sensor.last_used_ms) < window.max_throttle_ms());
        sensors
            .iter_mut()
            .filter(|(_, sensor)| sensor.unshared != 0.0)
            .map(|((kind, tags), sensor)| {
                let value = std::mem::take(&mut sensor.unshared);
                (*kind, tags.clone(), value)
            })
            .collect()
    })
}

/// Adds what other shards recorded to this shard's groups (no throttle: those requests were
/// answered there).
pub fn record_shared(shares: &[(QuotaKind, QuotaTags, f64)], window: QuotaWindow) {
    let now = now_ms();
    for (kind, tags, value) in shares {
        with_sensor(*kind, tags.clone(), window, now, |sensor| {
            sensor.window.record(*value, now);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(user: Option<Option<&str>>, client_id: Option<Option<&str>>) -> QuotaEntity {
        QuotaEntity {
            user: user.map(EntityName::from_wire),
            client_id: client_id.map(EntityName::from_wire),
        }
    }

    const KEY: QuotaKey = QuotaKey::ProducerByteRate;

    fn tags(user: &str, client_id: &str) -> QuotaTags {
        QuotaTags {
            user: user.into(),
            client_id: client_id.into(),
        }
    }

    #[test]
    fn resolution_follows_kafkas_precedence() {
        let mut store = QuotaStore::default();
        assert_eq!(store.resolve(KEY, "alice", "app"), None);
        // Added least specific first; each step must take over.
        let steps: [(QuotaEntity, f64, (&str, &str)); 8] = [
            (entity(None, Some(None)), 8.0, ("", "app")),
            (entity(None, Some(Some("app"))), 7.0, ("", "app")),
            (entity(Some(None), None), 6.0, ("alice", "")),
            (entity(Some(None), Some(None)), 5.0, ("alice", "app")),
            (entity(Some(None), Some(Some("app"))), 4.0, ("alice", "app")),
            (entity(Some(Some("alice")), None), 3.0, ("alice", "")),
            (
                entity(Some(Some("alice")), Some(None)),
                2.0,
                ("alice", "app"),
            ),
            (
                entity(Some(Some("alice")), Some(Some("app"))),
                1.0,
                ("alice", "app"),
            ),
        ];
        for (entity, value, (user, client_id)) in steps {
            store.set(&entity, KEY.name(), Some(value));
            assert_eq!(
                store.resolve(KEY, "alice", "app"),
                Some((tags(user, client_id), value)),
                "after setting {entity:?}"
            );
        }
        assert_eq!(store.len(), 8);
        // Another key resolves on its own.
        assert_eq!(
            store.resolve(QuotaKey::ConsumerByteRate, "alice", "app"),
            None
        );
        // bob and another client fall to the defaults.
        assert_eq!(
            store.resolve(KEY, "bob", "other"),
            Some((tags("bob", "other"), 5.0))
        );
    }

    #[test]
    fn a_user_quota_is_shared_by_its_clients_and_a_default_client_quota_is_not() {
        let mut store = QuotaStore::default();
        store.set(&entity(Some(Some("alice")), None), KEY.name(), Some(100.0));
        store.set(&entity(None, Some(None)), KEY.name(), Some(50.0));
        assert_eq!(
            store.resolve(KEY, "alice", "a"),
            Some((tags("alice", ""), 100.0))
        );
        assert_eq!(
            store.resolve(KEY, "alice", "b"),
            Some((tags("alice", ""), 100.0))
        );
        assert_eq!(store.resolve(KEY, "bob", "a"), Some((tags("", "a"), 50.0)));
        assert_eq!(store.resolve(KEY, "bob", "b"), Some((tags("", "b"), 50.0)));
        // A user+client quota without a <default> client falls through for other clients.
        let mut store = QuotaStore::default();
        store.set(
            &entity(Some(Some("alice")), Some(Some("a"))),
            KEY.name(),
            Some(9.0),
        );
        assert_eq!(store.resolve(KEY, "alice", "b"), None);
    }

    #[test]
    fn set_and_remove_keep_the_entity_count_and_survive_serde() {
        let mut store = QuotaStore::default();
        let alice = entity(Some(Some("alice")), Some(None));
        store.set(&alice, "producer_byte_rate", Some(1.0));
        store.set(&alice, "consumer_byte_rate", Some(2.0));
        store.set(
            &entity(None, Some(Some("x"))),
            "request_percentage",
            Some(50.0),
        );
        assert_eq!(store.len(), 2);
        let text = serde_json::to_string(&store).unwrap();
        let back: QuotaStore = serde_json::from_str(&text).unwrap();
        assert_eq!(back, store);
        store.set(&alice, "producer_byte_rate", None);
        assert_eq!(store.len(), 2);
        store.set(&alice, "consumer_byte_rate", None);
        store.set(&alice, "consumer_byte_rate", None);
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(&alice), None);
        let entities: Vec<QuotaEntity> = store.iter().map(|(e, _)| e).collect();
        assert_eq!(entities, vec![entity(None, Some(Some("x")))]);
    }

    #[test]
    fn entities_and_values_are_checked_as_kafka_does() {
        assert_eq!(
            QuotaEntity::from_wire([(USER, Some("a")), (CLIENT_ID, None)]),
            Ok(entity(Some(Some("a")), Some(None)))
        );
        assert!(QuotaEntity::from_wire([]).is_err());
        assert!(QuotaEntity::from_wire([(USER, Some("a")), (USER, Some("b"))]).is_err());
        assert!(QuotaEntity::from_wire([(USER, Some(""))]).is_err());
        assert!(QuotaEntity::from_wire([("group", Some("g"))]).is_err());
        assert!(QuotaEntity::from_wire([(IP, Some("1.2.3.4")), (USER, None)]).is_err());
        assert_eq!(
            validate_value("producer_byte_rate", 1024.0),
            Ok(QuotaKey::ProducerByteRate)
        );
        assert_eq!(
            validate_value("request_percentage", 12.5),
            Ok(QuotaKey::RequestPercentage)
        );
        assert!(validate_value("producer_byte_rate", 10.5).is_err());
        assert!(validate_value("producer_byte_rate", 0.0).is_err());
        assert!(validate_value("producer_byte_rate", f64::NAN).is_err());
        assert!(validate_value("consumer_byte_rate", f64::INFINITY).is_err());
        assert!(validate_value("producer_byte_rate", 1e300).is_err());
        assert_eq!(
            validate_value("bogus", 1.0),
            Err("Invalid configuration key bogus".to_string())
        );
    }

    #[test]
    fn rate_counts_a_young_window_as_num_minus_one_samples() {
        let mut window = RateWindow::new(11, 1000);
        window.record(1000.0, 0);
        // 1000 bytes over at least 10 full windows.
        assert_eq!(window.window_ms(0), 10_000);
        assert!((window.rate(0) - 100.0).abs() < 1e-9);
        // Past 10 s the real span counts.
        window.record(1000.0, 10_500);
        assert_eq!(window.window_ms(10_500), 10_500);
        assert!((window.rate(10_500) - 2000.0 * 1000.0 / 10_500.0).abs() < 1e-9);
        // Samples older than 11 windows are forgotten.
        assert_eq!(window.rate(30_000), 0.0);
    }

    #[test]
    fn throttle_is_the_time_until_the_rate_is_back_at_the_bound() {
        let mut window = RateWindow::new(11, 1000);
        window.record(2000.0, 0);
        // rate 200/s over 10 s against 100/s: (200 - 100) / 100 × 10 s = 10 s.
        assert_eq!(window.throttle_ms(100.0, 0, u64::MAX), 10_000);
        assert_eq!(window.throttle_ms(100.0, 0, 11_000), 10_000);
        assert_eq!(window.throttle_ms(100.0, 0, 500), 500);
        assert_eq!(window.throttle_ms(200.0, 0, u64::MAX), 0);
        // After the throttle, the rate over the window is at the bound.
        assert!(window.rate(10_000 + 10_000) <= 100.0 + 1e-9);
        // Unrecording takes the bytes back.
        let mut window = RateWindow::new(3, 1000);
        window.record(5000.0, 0);
        window.record(-5000.0, 0);
        assert_eq!(window.throttle_ms(1.0, 0, u64::MAX), 0);
    }

    #[test]
    fn samples_rotate_round_robin() {
        let mut window = RateWindow::new(3, 100);
        for step in 0..10u64 {
            window.record(1.0, step * 100);
        }
        assert_eq!(window.samples.len(), 3);
        // The three newest samples (starting 700, 800, 900) hold one each; span 200 ms
        // stretched to two full windows.
        assert_eq!(window.window_ms(900), 200);
        assert!((window.rate(900) - 3.0 * 1000.0 / 200.0).abs() < 1e-9);
    }

    #[test]
    fn shared_records_reach_other_groups_windows_and_sensors_stay_bounded() {
        let window = QuotaWindow {
            samples: 3,
            window_size_ms: 1000,
        };
        let group = tags("", "shared-test");
        assert_eq!(
            record_and_throttle(QuotaKind::Produce, group.clone(), 1000.0, 10.0, window),
            0
        );
        let shares = take_unshared(window);
        assert_eq!(shares, vec![(QuotaKind::Produce, group.clone(), 10.0)]);
        assert!(take_unshared(window).is_empty());
        // Another shard's bytes count toward this shard's throttle.
        record_shared(&[(QuotaKind::Produce, group.clone(), 100_000.0)], window);
        assert!(record_and_throttle(QuotaKind::Produce, group, 1000.0, 1.0, window) > 0);
    }
}
