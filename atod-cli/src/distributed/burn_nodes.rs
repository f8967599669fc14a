//! [`Collective`] on burn's collective operations (`burn-collective`): one peer per node, registered with the
//! global orchestrator; sums are burn's `all_reduce` on host tensors of the CPU backend.

use anyhow::{anyhow, Context};
use atod_models::CpuBackend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};

use super::{Collective, Reduce};

/// This process's node of a burn-collective run.
pub struct BurnNodes {
    index: usize,
    nodes: usize,
    peer: PeerId,
}

impl BurnNodes {
    /// Registers node `index` of `nodes` with the orchestrator at `orchestrator` (`HOST:PORT`), its own data
    /// service at `node_address` (`IP:PORT`, served on `node_port`). Returns when every node has registered.
    pub fn register(
        index: usize,
        nodes: usize,
        orchestrator: &str,
        node_address: &str,
        node_port: u16,
        reduce: Reduce,
    ) -> anyhow::Result<BurnNodes> {
        let strategy = match reduce {
            // `ordered` moves gathers over the ring (each slot is one node's value plus zeros: exact).
            Reduce::Ordered | Reduce::Ring => AllReduceStrategy::Ring,
            Reduce::Tree => AllReduceStrategy::Tree(2),
            Reduce::Centralized => AllReduceStrategy::Centralized,
        };
        let address = |text: String| text.parse().map_err(|e| anyhow!("`{text}`: {e:?}"));
        let config = CollectiveConfig::default()
            .with_num_devices(1)
            .with_num_nodes(nodes as u32)
            .with_global_address(address(format!("ws://{orchestrator}"))?)
            .with_node_address(address(format!("ws://{node_address}"))?)
            .with_data_service_port(node_port)
            .with_global_all_reduce_strategy(strategy);
        let peer = PeerId::from(index as u32);
        burn_collective::register::<CpuBackend>(peer, Default::default(), config)
            .map_err(|e| anyhow!("registering with burn's orchestrator at {orchestrator}: {e:?}"))?;
        Ok(BurnNodes { index, nodes, peer })
    }
}

impl Collective for BurnNodes {
    fn nodes(&self) -> usize {
        self.nodes
    }
    fn index(&self) -> usize {
        self.index
    }
    fn sum(&self, mut values: Vec<f32>) -> anyhow::Result<Vec<f32>> {
        // burn's ring all-reduce cuts the vector into one slice per node: pad short ones with zeros.
        let len = values.len();
        values.resize(len.max(self.nodes), 0.0);
        let padded = values.len();
        let tensor = Tensor::<CpuBackend, 1>::from_data(TensorData::new(values, [padded]), &Default::default());
        let summed = burn_collective::all_reduce::<CpuBackend>(
            self.peer,
            tensor.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(|e| anyhow!("burn-collective's all-reduce: {e:?}"))?;
        let summed = Tensor::<CpuBackend, 1>::from_primitive(TensorPrimitive::Float(summed));
        let mut summed =
            summed.into_data().to_vec::<f32>().map_err(|e| anyhow!("{e:?}")).context("the all-reduce's result")?;
        summed.truncate(len);
        Ok(summed)
    }
    fn finish(&self) -> anyhow::Result<()> {
        burn_collective::finish_collective::<CpuBackend>(self.peer)
            .map_err(|e| anyhow!("leaving burn's orchestrator: {e:?}"))
    }
}

/// Keeps panics on burn-collective's tokio threads (a peer's connection breaking mid-transfer panics there) off
/// the terminal: the node reports the failure itself, in one line, through the control service. Set
/// `ATOD_COLLECTIVE_DEBUG=1` to see them.
pub fn quiet_worker_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("ATOD_COLLECTIVE_DEBUG").is_some() {
            return;
        }
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if matches!(thread.name(), Some("tokio-runtime-worker" | "tokio-rt-worker" | "atod-collective")) {
                return;
            }
            default(info);
        }));
    });
}

/// Runs burn's global orchestrator on `port` (all interfaces) until the process ends: on its own thread and
/// tokio runtime. Returns once it is listening.
pub fn start_orchestrator(port: u16) -> anyhow::Result<()> {
    // burn's orchestrator logs a failed bind and returns; a bind here first makes that error ours, in one line.
    drop(std::net::TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("cannot listen on port {port}"))?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    std::thread::Builder::new().name("burn-orchestrator".into()).spawn(move || {
        runtime.block_on(burn_collective::start_global_orchestrator(port));
        eprintln!("error: burn's orchestrator on port {port} stopped");
        std::process::exit(1);
    })?;
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > std::time::Duration::from_secs(10) {
            anyhow::bail!("burn's orchestrator did not start listening on port {port}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}
