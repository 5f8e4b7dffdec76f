//! Shards: one glommio executor per core, pinned, each owning its connections and partitions.
//!
//! Work for a partition owned by another shard crosses over with [`Shard::invoke_on`]: a closure is
//! sent over the shard-to-shard channel and runs on the owner with the owner's state, and the
//! result comes back through a oneshot. Every hop is visible at the call site.

mod barrier;
mod memlock;
mod nofile;
mod sched_slice;

pub use barrier::ShardBarrier;

use crate::cluster::{self, metadata::MetadataImage, PartitionTable};
use crate::config::BrokerConfig;
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender};
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Work sent to another shard: runs there with that shard's state.
pub type ShardTask = Box<dyn FnOnce(Rc<Shard>) -> LocalBoxFuture<'static, ()> + Send>;

/// How often a shard looks at the process-wide stop flag set by the signal thread.
const STOP_POLL_INTERVAL_MS: u64 = 50;
/// How long connections get to finish in-flight requests after SIGTERM.
pub const DRAIN_TIMEOUT_MS: u64 = 5_000;

/// Everything one shard owns. Lives on its executor thread only (`Rc`), never shared.
pub struct Shard {
    pub id: usize,
    pub count: usize,
    /// The static config (file and flags); [`Shard::live_config`] adds the dynamic broker
    /// configs.
    pub config: Arc<BrokerConfig>,
    /// `config` with this node's dynamic broker configs from the applied image, and the store
    /// it was made from.
    live_config: RefCell<(
        Arc<BrokerConfig>,
        Arc<cluster::broker_config::BrokerConfigStore>,
    )>,
    /// The newest metadata image this shard has applied.
    metadata: RefCell<Arc<MetadataImage>>,
    /// Partitions whose logs this shard owns.
    pub partitions: PartitionTable,
    /// Held while the startup open or an image apply changes `partitions`: an image that
    /// arrives during the startup open must not open the same log a second time.
    pub partitions_change_lock: glommio::sync::Semaphore,
    /// Bytes of request frames the shard holds at once (`max_request_memory_per_shard_bytes`,
    /// and `small_request_memory_per_shard_bytes` for small frames); connections wait for room
    /// before reading more of a frame.
    pub request_memory: crate::net::request_memory::RequestMemory,
    /// Connections per client address over all shards (`max_connections_per_ip`); `None` when
    /// no address is limited.
    pub connections_per_ip: Option<Arc<crate::net::connections_per_ip::ConnectionsPerIp>>,
    /// `senders[peer]` carries tasks to shard `peer`; `None` at our own index.
    senders: Vec<Option<ConnectedSender<ShardTask>>>,
    /// The metadata node (controller quorum driver, metadata image, broker lifecycle): set on
    /// shard 0 only, once the shard's partitions are open.
    pub metadata_node: std::cell::OnceCell<Rc<cluster::driver::MetadataNode>>,
    /// Group coordinator state of the `__consumer_offsets` partitions this shard owns.
    pub groups: crate::group::GroupShard,
    /// Transaction coordinator state of the `__transaction_state` partitions this shard leads.
    pub txns: crate::txn::coordinator::TxnShard,
    /// Incremental fetch sessions opened on this shard's connections.
    pub fetch_sessions: RefCell<crate::api::fetch_session::FetchSessionCache>,
    /// How this shard dials other brokers (inter-broker listener, TLS client, SASL login).
    pub inter_broker: crate::security::inter_broker::InterBrokerClient,
    /// Set when the broker is shutting down: stop accepting and reading requests.
    pub stopping: Rc<glommio::sync::Gate>,
    stop_signal: RefCell<Option<futures::future::Shared<oneshot::Receiver<()>>>>,
    stop_trigger: RefCell<Option<oneshot::Sender<()>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard {0} is not reachable (shutting down)")]
    Unreachable(usize),
}

impl Shard {
    pub fn metadata(&self) -> Arc<MetadataImage> {
        self.metadata.borrow().clone()
    }

    pub fn set_metadata(&self, image: Arc<MetadataImage>) {
        self.refresh_live_config(&image);
        let mut current = self.metadata.borrow_mut();
        assert!(
            image.version >= current.version,
            "metadata images are applied in order"
        );
        *current = image;
    }

    /// The config the shard runs with now: the static config with the dynamic broker configs
    /// for this node (topic defaults, message size, ...). Read it where a dynamic key applies.
    pub fn live_config(&self) -> Arc<BrokerConfig> {
        self.live_config.borrow().0.clone()
    }

    /// Takes the dynamic broker configs of `image`; true when this node's changed.
    pub fn refresh_live_config(&self, image: &MetadataImage) -> bool {
        let mut live = self.live_config.borrow_mut();
        if Arc::ptr_eq(&live.1, &image.broker_configs) {
            return false;
        }
        let dynamic = image.broker_configs.for_node(self.config.node_id);
        let changed = dynamic != live.0.dynamic;
        if changed {
            live.0 = Arc::new(cluster::broker_config::live_config(
                &self.config,
                &image.broker_configs,
            ));
        }
        live.1 = image.broker_configs.clone();
        changed
    }

    /// Runs `work` on shard `target` and returns its result. On our own shard it runs inline
    /// (no hop); elsewhere it crosses the shard channel.
    pub async fn invoke_on<T, F, Fut>(
        self: &Rc<Self>,
        target: usize,
        work: F,
    ) -> Result<T, ShardError>
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        assert!(target < self.count, "shard {target} out of range");
        if target == self.id {
            return Ok(work(self.clone()).await);
        }
        let (reply_sender, reply_receiver) = oneshot::channel();
        let task: ShardTask = Box::new(move |shard| {
            Box::pin(async move {
                let output = work(shard).await;
                let _ = reply_sender.send(output);
            })
        });
        let sender = self.senders[target]
            .as_ref()
            .expect("a sender exists for every other shard");
        if sender.send(task).await.is_err() {
            return Err(ShardError::Unreachable(target));
        }
        reply_receiver
            .await
            .map_err(|_| ShardError::Unreachable(target))
    }

    /// A future that resolves when shutdown begins.
    pub fn stopped(&self) -> futures::future::Shared<oneshot::Receiver<()>> {
        self.stop_signal
            .borrow()
            .as_ref()
            .expect("stop signal exists for the shard's life")
            .clone()
    }

    pub fn is_stopping(&self) -> bool {
        self.stop_trigger.borrow().is_none()
    }

    fn begin_stop(&self) {
        if let Some(trigger) = self.stop_trigger.borrow_mut().take() {
            let _ = trigger.send(());
        }
    }
}

/// Channels of one shard to and from every other, handed to its executor at spawn.
struct ShardLinks {
    outgoing: Vec<Option<shared_channel::SharedSender<ShardTask>>>,
    incoming: Vec<Option<shared_channel::SharedReceiver<ShardTask>>>,
}

fn build_mesh(shard_count: usize, capacity: usize) -> Vec<ShardLinks> {
    let mut links: Vec<ShardLinks> = (0..shard_count)
        .map(|_| ShardLinks {
            outgoing: (0..shard_count).map(|_| None).collect(),
            incoming: (0..shard_count).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shard_count {
        for to in 0..shard_count {
            if from != to {
                let (sender, receiver) = shared_channel::new_bounded(capacity);
                links[from].outgoing[to] = Some(sender);
                links[to].incoming[from] = Some(receiver);
            }
        }
    }
    links
}

/// CPUs to pin shards to: the process's CPU set, in order.
fn shard_cpus(requested: Option<usize>) -> anyhow::Result<Vec<usize>> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    anyhow::ensure!(!available.is_empty(), "cannot read the process's CPU set");
    let count = requested.unwrap_or(available.len());
    if count > available.len() {
        tracing::warn!(
            shards = count,
            cpus = available.len(),
            "more shards than CPUs in the CPU set: shards will share cores"
        );
    }
    Ok((0..count).map(|i| available[i % available.len()]).collect())
}

/// Starts every shard, waits for SIGTERM or SIGINT, drains and flushes, and returns.
pub fn run_broker(config: BrokerConfig) -> anyhow::Result<()> {
    let cpus = shard_cpus(config.cores)?;
    let shard_count = cpus.len();
    // Heartbeats for the systemd watchdog and readiness for the admin endpoint.
    let liveness = Arc::new(crate::service::Liveness::new(shard_count));
    let connections_per_ip =
        crate::net::connections_per_ip::ConnectionsPerIp::from_config(&config)?;
    memlock::ensure_memlock(shard_count, config.io_memory_bytes)?;
    let open_files_limit = nofile::raise_open_files_limit();
    tracing::debug!(open_files_limit, "open-files limit");
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create data directory {}: {e}",
            config.data_dir.display()
        )
    })?;
    let config = Arc::new(config);
    let startup = cluster::startup::open(&config, shard_count)?;
    let image = Arc::new(startup.image.clone());
    // Moves to shard 0, which owns the quorum and the node's metadata from then on.
    let startup = Arc::new(std::sync::Mutex::new(Some(startup)));

    // Signals go to a dedicated waiter thread, not to the shard threads.
    let signals = block_termination_signals()?;
    let stop_flag = Arc::new(AtomicBool::new(false));
    let started = Arc::new(ShardBarrier::new(shard_count));
    let drained = Arc::new(ShardBarrier::new(shard_count));
    let (ready_sender, ready_receiver) = std::sync::mpsc::channel::<anyhow::Result<()>>();

    let mut handles = Vec::with_capacity(shard_count);
    for (shard_id, (links, cpu)) in build_mesh(shard_count, config.shard_channel_capacity)
        .into_iter()
        .zip(cpus.iter().copied())
        .enumerate()
    {
        let config = config.clone();
        let image = image.clone();
        let startup = startup.clone();
        let stop_flag = stop_flag.clone();
        let started = started.clone();
        let drained = drained.clone();
        let liveness = liveness.clone();
        let connections_per_ip = connections_per_ip.clone();
        let ready_sender = ready_sender.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{shard_id}"))
            .io_memory(config.io_memory_bytes)
            .spawn(move || async move {
                sched_slice::apply_to_current_thread(shard_id, config.shard_sched_slice_us);
                let outcome = shard_main(
                    shard_id,
                    shard_count,
                    config,
                    image,
                    (shard_id == 0)
                        .then(|| startup.lock().expect("not poisoned").take())
                        .flatten(),
                    links,
                    stop_flag,
                    started,
                    drained,
                    ready_sender.clone(),
                    liveness,
                    connections_per_ip,
                )
                .await;
                if let Err(error) = &outcome {
                    tracing::error!(shard = shard_id, "shard failed: {error:#}");
                    let _ = ready_sender.send(Err(anyhow::anyhow!("shard {shard_id}: {error:#}")));
                }
                outcome.is_ok()
            })
            .map_err(|e| anyhow::anyhow!("cannot start shard {shard_id} on cpu {cpu}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_sender);

    let mut ready_count = 0;
    let mut startup_error = None;
    while ready_count < shard_count {
        match ready_receiver.recv() {
            Ok(Ok(())) => ready_count += 1,
            Ok(Err(error)) => {
                startup_error = Some(error);
                break;
            }
            Err(_) => {
                startup_error = Some(anyhow::anyhow!("a shard exited during start-up"));
                break;
            }
        }
    }
    if let Some(error) = startup_error {
        stop_flag.store(true, Ordering::SeqCst);
        started.poison();
        drained.poison();
        for handle in handles {
            let _ = handle.join();
        }
        return Err(error);
    }
    let listeners: Vec<String> = config
        .kafka_listeners()?
        .iter()
        .map(|l| {
            format!(
                "{}://{} ({}, advertised {})",
                l.name,
                l.listen,
                l.protocol.name(),
                l.advertise
            )
        })
        .collect();
    tracing::info!(
        listeners = %listeners.join(", "),
        shards = shard_count,
        data_dir = %config.data_dir.display(),
        "riptide is ready"
    );
    liveness.set_ready(true);
    crate::service::notify_ready(&format!(
        "serving Kafka on {} with {shard_count} shards",
        config.listen
    ));

    let signal = crate::service::wait_for_termination(&signals, &liveness);
    liveness.set_ready(false);
    crate::service::notify_stopping();
    tracing::info!(signal = %signal, "shutting down: draining connections and flushing logs");
    stop_flag.store(true, Ordering::SeqCst);
    let mut clean = true;
    for handle in handles {
        clean &= matches!(handle.join(), Ok(true));
    }
    anyhow::ensure!(clean, "a shard did not shut down cleanly");
    tracing::info!("riptide stopped");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn shard_main(
    shard_id: usize,
    shard_count: usize,
    config: Arc<BrokerConfig>,
    image: Arc<MetadataImage>,
    startup: Option<cluster::startup::StartupMetadata>,
    links: ShardLinks,
    stop_flag: Arc<AtomicBool>,
    started: Arc<ShardBarrier>,
    drained: Arc<ShardBarrier>,
    ready_sender: std::sync::mpsc::Sender<anyhow::Result<()>>,
    liveness: Arc<crate::service::Liveness>,
    connections_per_ip: Option<Arc<crate::net::connections_per_ip::ConnectionsPerIp>>,
) -> anyhow::Result<()> {
    // Both ends of a shared channel must connect before either connect completes: connect every
    // channel of this shard at once, or two shards would wait on each other.
    let connect_senders =
        futures::future::join_all(links.outgoing.into_iter().map(|sender| async {
            match sender {
                Some(sender) => Some(sender.connect().await),
                None => None,
            }
        }));
    let connect_receivers = futures::future::join_all(
        links
            .incoming
            .into_iter()
            .flatten()
            .map(|receiver| receiver.connect()),
    );
    let (senders, receivers): (
        Vec<Option<ConnectedSender<ShardTask>>>,
        Vec<ConnectedReceiver<ShardTask>>,
    ) = futures::join!(connect_senders, connect_receivers);
    let (stop_trigger, stop_receiver) = oneshot::channel();
    let shard = Rc::new(Shard {
        id: shard_id,
        count: shard_count,
        metadata_node: std::cell::OnceCell::new(),
        config: config.clone(),
        live_config: RefCell::new((
            Arc::new(cluster::broker_config::live_config(
                &config,
                &image.broker_configs,
            )),
            image.broker_configs.clone(),
        )),
        metadata: RefCell::new(image.clone()),
        partitions: PartitionTable::default(),
        groups: crate::group::GroupShard::default(),
        txns: crate::txn::coordinator::TxnShard::default(),
        fetch_sessions: RefCell::new(crate::api::fetch_session::FetchSessionCache::new(
            session_id_seed(shard_id),
        )),
        inter_broker: crate::security::inter_broker::InterBrokerClient::new(
            config.inter_broker_security()?,
        )?,
        partitions_change_lock: glommio::sync::Semaphore::new(1),
        request_memory: crate::net::request_memory::RequestMemory::new(&config),
        connections_per_ip,
        senders,
        stopping: Rc::new(glommio::sync::Gate::new()),
        stop_signal: RefCell::new(Some(futures::FutureExt::shared(stop_receiver))),
        stop_trigger: RefCell::new(Some(stop_trigger)),
    });

    // Serve tasks from other shards for the shard's whole life, including the drain.
    let mut receiver_tasks = Vec::new();
    for receiver in receivers {
        let shard = shard.clone();
        receiver_tasks.push(glommio::spawn_local(async move {
            while let Some(task) = receiver.recv().await {
                glommio::spawn_local(task(shard.clone())).detach();
            }
        }));
    }

    cluster::open_owned_partitions(&shard, &image).await?;
    if let Some(startup) = startup {
        let roles = config.roles()?;
        let controller_tls = match config.controller_tls_settings()? {
            Some((server, client)) => Some(crate::security::inter_broker::ControllerTls {
                acceptor: crate::security::tls::TlsAcceptor::new(server)?,
                client: crate::security::inter_broker::TlsClient::new(client)?,
            }),
            None => None,
        };
        let node = cluster::driver::MetadataNode::new(
            config.clone(),
            startup.quorum,
            startup.image,
            startup.placement,
            controller_tls,
        );
        let _ = shard.metadata_node.set(node.clone());
        node.start(&shard)?;
        if roles.broker {
            let agent = Rc::new(cluster::broker_agent::BrokerAgent::new(
                startup.incarnation_id,
                startup.broker_epoch,
            ));
            *node.agent.borrow_mut() = Some(agent.clone());
            cluster::broker_agent::start(node.clone(), agent, shard_count);
        }
    }
    // Loads this shard's consumer groups from `__consumer_offsets` in the background.
    crate::group::start(&shard);
    // Loads the transactions this shard coordinates and starts their timeouts.
    crate::txn::coordinator::start(&shard);
    started.wait().await?;
    // One TLS configuration per shard, reloaded here when its files change.
    let tls = match config.tls_settings()? {
        Some(settings) => {
            let acceptor = Rc::new(crate::security::tls::TlsAcceptor::new(settings)?);
            glommio::spawn_local(crate::net::reload_tls(shard.clone(), acceptor.clone())).detach();
            Some(acceptor)
        }
        None => None,
    };
    if shard_count > 1 {
        glommio::spawn_local(crate::api::share_quota_measurements(shard.clone())).detach();
    }
    let mut listeners = Vec::new();
    for listener in config.kafka_listeners()? {
        let socket = crate::net::bind_listener(&listener.listen)?;
        let listener_tls = if listener.protocol.uses_tls() {
            tls.clone()
        } else {
            None
        };
        listeners.push((Rc::new(listener), socket, listener_tls));
    }
    if shard_id == 0 && !config.admin_listen.is_empty() {
        let admin = crate::metrics::server::bind(&config.admin_listen)?;
        glommio::spawn_local(crate::metrics::server::serve(
            shard.clone(),
            admin,
            liveness.clone(),
        ))
        .detach();
    }
    let _ = ready_sender.send(Ok(()));
    drop(ready_sender);

    let watcher_shard = shard.clone();
    glommio::spawn_local(async move {
        while !stop_flag.load(Ordering::SeqCst) {
            liveness.beat(watcher_shard.id);
            glommio::timer::sleep(Duration::from_millis(STOP_POLL_INTERVAL_MS)).await;
        }
        watcher_shard.begin_stop();
    })
    .detach();

    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|(listener, socket, tls)| {
            crate::net::accept_loop(shard.clone(), listener, socket, tls)
        })
        .collect();
    futures::future::join_all(accepting).await;
    if let Some(node) = shard.metadata_node.get() {
        let agent = node.agent.borrow().clone();
        match agent {
            Some(agent) => cluster::broker_agent::controlled_shutdown(node, &agent).await,
            None => node.shutting_down.set(true),
        }
    }
    // Connections finish their in-flight requests, bounded by the drain timeout.
    let drain = shard.stopping.close();
    if glommio::timer::timeout(Duration::from_millis(DRAIN_TIMEOUT_MS), async {
        drain
            .await
            .map_err(|_| glommio::GlommioError::<()>::Closed(glommio::ResourceType::Gate))
    })
    .await
    .is_err()
    {
        tracing::warn!(
            shard = shard_id,
            "connections still busy after the drain timeout"
        );
    }
    // Other shards may still forward work to our partitions until they have drained too.
    drained.wait().await?;
    cluster::close_partitions(&shard).await;
    drop(receiver_tasks);
    Ok(())
}

fn block_termination_signals() -> anyhow::Result<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // Not a termination: `wait_for_termination` reloads TLS certificates on it.
    set.add(Signal::SIGHUP);
    set.thread_block()
        .map_err(|e| anyhow::anyhow!("cannot block termination signals: {e}"))?;
    Ok(set)
}

/// Seeds a shard's fetch session ids: different per shard and per start, so a client holding
/// an id from before a restart or from another shard is unlikely to name a live session.
fn session_id_seed(shard_id: usize) -> u64 {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    now_ns ^ ((shard_id as u64 + 1) << 48) ^ u64::from(std::process::id())
}
