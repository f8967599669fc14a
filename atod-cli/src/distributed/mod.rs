//! Data-parallel training across processes and machines: N nodes each play their share of a step's tasks
//! (whole GRPO groups), score them with their own teacher replica, and sum their gradients before every
//! optimiser step, so that every node holds the same weights (ARCHITECTURE.md, "Data-parallel training").
//!
//! The pieces, from the bottom:
//! - [`Collective`]: one operation, the element-wise sum of a float vector across nodes, every node receiving
//!   the same bits. Behind it, burn's collective operations (`burn-collective`, [`burn_nodes`], feature
//!   `distributed`) over a global orchestrator; or threads of one process ([`LocalGroup`], for tests and
//!   `--nodes 1`).
//! - [`control`]: atod's control service beside burn's orchestrator (`atod orchestrator`): it admits the nodes
//!   of a run (same node count, same config hash, distinct indices), starts them together, and tells every node
//!   at once when another one is gone, so that a killed node stops the run with an error naming it, not a hang.
//! - [`Cluster`]: what the trainer holds: sums, gathers built on sums, the gradients' reduction, a timeout and
//!   the control service's verdicts around each operation.

pub mod control;

#[cfg(feature = "distributed")]
pub mod burn_nodes;

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use atod_models::tokenizer::Fnv1a;
use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The JSON bytes a message may have to ride in the gradients' collective operation
/// ([`Cluster::gather_with_gradients`]); a mini-batch's metrics take a few hundred.
pub const INLINE_BYTES: usize = 4096;

/// The `[distributed]` table of a train config (`atod train --nodes N --orchestrator HOST:P` say the same; a
/// node's own index and port are flags only, since every node reads the same config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedConfig {
    /// Nodes (processes) of the run.
    pub nodes: usize,
    /// burn's global orchestrator, `HOST:PORT` (`atod orchestrator --port PORT`); atod's control service
    /// listens beside it on PORT + 1. Empty only for `nodes = 1`, which runs in-process.
    #[serde(default)]
    pub orchestrator: String,
    /// How gradients are summed across nodes.
    #[serde(default)]
    pub reduce: Reduce,
    /// Seconds a node waits in one collective operation (the leader's evaluations included) before it gives up.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
}

fn default_timeout_s() -> u64 {
    1800
}

/// How the gradients of a mini-batch are summed across nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reduce {
    /// Every node receives every node's gradient (an all-gather built on burn's all-reduce) and sums them in
    /// node order: the same bits whichever node registered first, at N times ring's traffic. The default: the
    /// models atod trains on a CPU are small.
    #[default]
    Ordered,
    /// burn's ring all-reduce: bandwidth-optimal; the order of the partial sums follows the ring, which follows
    /// the order the nodes registered in, so runs may differ in their last bits (all nodes still agree).
    Ring,
    /// burn's tree all-reduce (arity 2); the same caveat as `ring`.
    Tree,
    /// burn's centralised all-reduce: one node sums and sends back; the same caveat as `ring` for more than two.
    Centralized,
}

impl Reduce {
    /// The name in configs and flags.
    pub fn name(self) -> &'static str {
        match self {
            Reduce::Ordered => "ordered",
            Reduce::Ring => "ring",
            Reduce::Tree => "tree",
            Reduce::Centralized => "centralized",
        }
    }
}

impl std::str::FromStr for Reduce {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        [Reduce::Ordered, Reduce::Ring, Reduce::Tree, Reduce::Centralized]
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| anyhow!("unknown reduce `{s}`; known: ordered, ring, tree, centralized"))
    }
}

/// The one collective operation atod needs.
pub trait Collective: Send + Sync {
    /// Nodes in the run.
    fn nodes(&self) -> usize;
    /// This node's index, `0..nodes()`.
    fn index(&self) -> usize;
    /// The element-wise sum of every node's `values` (every node passes the same length); every node receives
    /// the same bits.
    fn sum(&self, values: Vec<f32>) -> anyhow::Result<Vec<f32>>;
    /// Leaves the run cleanly.
    fn finish(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Nodes as threads of one process: the tests' cluster, and `--nodes 1`. Sums run in node order.
pub struct LocalGroup {
    nodes: usize,
    state: Mutex<GroupState>,
    ready: Condvar,
}

#[derive(Default)]
struct GroupState {
    /// The operation being collected.
    round: u64,
    slots: Vec<Option<Vec<f32>>>,
    /// Finished operations' results and how many nodes have yet to read each.
    results: BTreeMap<u64, (Arc<Vec<f32>>, usize)>,
}

impl LocalGroup {
    /// A group of `nodes` members; [`LocalGroup::member`] hands out each node's handle.
    pub fn new(nodes: usize) -> Arc<LocalGroup> {
        let state = GroupState { slots: vec![None; nodes], ..GroupState::default() };
        Arc::new(LocalGroup { nodes, state: Mutex::new(state), ready: Condvar::new() })
    }

    /// Node `index`'s handle.
    pub fn member(self: &Arc<Self>, index: usize) -> LocalMember {
        assert!(index < self.nodes, "node {index} of {}", self.nodes);
        LocalMember { group: self.clone(), index, round: Mutex::new(0) }
    }
}

/// One node of a [`LocalGroup`].
pub struct LocalMember {
    group: Arc<LocalGroup>,
    index: usize,
    round: Mutex<u64>,
}

impl Collective for LocalMember {
    fn nodes(&self) -> usize {
        self.group.nodes
    }
    fn index(&self) -> usize {
        self.index
    }
    fn sum(&self, values: Vec<f32>) -> anyhow::Result<Vec<f32>> {
        let mut round = self.round.lock().expect("round");
        let group = &self.group;
        let mut state = group.state.lock().expect("group state");
        while state.round != *round {
            state = group.ready.wait(state).expect("group state");
        }
        state.slots[self.index] = Some(values);
        if state.slots.iter().all(Option::is_some) {
            let mut slots = std::mem::replace(&mut state.slots, vec![None; group.nodes]).into_iter().flatten();
            let mut total = slots.next().expect("one node at least");
            for other in slots {
                if other.len() != total.len() {
                    bail!("nodes summed vectors of {} and {} values", total.len(), other.len());
                }
                for (t, o) in total.iter_mut().zip(other) {
                    *t += o;
                }
            }
            state.results.insert(*round, (Arc::new(total), group.nodes));
            state.round += 1;
            group.ready.notify_all();
        }
        while !state.results.contains_key(&*round) {
            state = group.ready.wait(state).expect("group state");
        }
        let entry = state.results.get_mut(&*round).expect("present");
        entry.1 -= 1;
        let result = entry.0.as_ref().clone();
        if entry.1 == 0 {
            state.results.remove(&*round);
        }
        *round += 1;
        Ok(result)
    }
}

/// The trainer's handle on the run's nodes: collective operations with a timeout, interrupted as soon as the
/// control service reports a node gone.
pub struct Cluster {
    collective: Arc<dyn Collective>,
    control: Option<control::ControlClient>,
    reduce: Reduce,
    timeout: Duration,
    spent: Mutex<f64>,
}

impl Cluster {
    /// A cluster over `collective`; `control` (the control service's connection) makes operations stop as soon
    /// as a node is reported gone.
    pub fn new(
        collective: Arc<dyn Collective>,
        control: Option<control::ControlClient>,
        reduce: Reduce,
        timeout: Duration,
    ) -> Cluster {
        Cluster { collective, control, reduce, timeout, spent: Mutex::new(0.0) }
    }

    /// A cluster of nodes as threads of this process, sums in node order: node `i` is element `i`.
    pub fn local(nodes: usize) -> Vec<Cluster> {
        let group = LocalGroup::new(nodes);
        (0..nodes)
            .map(|i| Cluster::new(Arc::new(group.member(i)), None, Reduce::Ordered, Duration::from_secs(600)))
            .collect()
    }

    /// Nodes in the run.
    pub fn nodes(&self) -> usize {
        self.collective.nodes()
    }

    /// This node's index.
    pub fn index(&self) -> usize {
        self.collective.index()
    }

    /// Whether this node writes the run's metrics, evaluations and checkpoints (node 0).
    pub fn is_leader(&self) -> bool {
        self.index() == 0
    }

    /// Seconds spent in collective operations since the last call (and resets the count).
    pub fn take_seconds(&self) -> f64 {
        std::mem::take(&mut *self.spent.lock().expect("spent"))
    }

    /// An error when the control service has reported a node gone.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.control.as_ref().and_then(control::ControlClient::failure) {
            Some(failure) => Err(anyhow!("{failure}")),
            None => Ok(()),
        }
    }

    /// Runs `op` on the collective. With a control service, `op` runs on its own thread and this one polls: a
    /// node reported gone, or `timeout`, ends the wait with an error (the operation's thread is left blocked;
    /// the process is about to stop).
    fn call<R: Send + 'static>(
        &self,
        what: &str,
        op: impl FnOnce(&dyn Collective) -> anyhow::Result<R> + Send + 'static,
    ) -> anyhow::Result<R> {
        self.check()?;
        let started = Instant::now();
        let result = if self.control.is_none() {
            op(&*self.collective)
        } else {
            let (tx, rx) = mpsc::channel();
            let collective = self.collective.clone();
            std::thread::Builder::new()
                .name("atod-collective".into())
                .spawn(move || {
                    let _ = tx.send(op(&*collective));
                })
                .context("cannot start a thread")?;
            loop {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(result) => break result,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.check()?;
                        if started.elapsed() > self.timeout {
                            bail!(
                                "node {}: {what} waited {} s for the other nodes (distributed.timeout_s)",
                                self.index(),
                                self.timeout.as_secs()
                            );
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        self.check()?;
                        bail!("node {}: {what} failed inside burn-collective (a peer's connection broke)", self.index())
                    }
                }
            }
        };
        *self.spent.lock().expect("spent") += started.elapsed().as_secs_f64();
        result
    }

    /// The element-wise sum of every node's `values`.
    pub fn sum(&self, what: &str, values: Vec<f32>) -> anyhow::Result<Vec<f32>> {
        self.call(what, move |c| c.sum(values))
    }

    /// Every node's `bytes`, in node order: an all-gather built on the sum (each node writes its own slots, two
    /// bytes a float, zeros elsewhere, so every sum adds one value to zeros and is exact).
    pub fn gather_bytes(&self, what: &str, bytes: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
        let (n, me) = (self.nodes(), self.index());
        if n == 1 {
            return Ok(vec![bytes.to_vec()]);
        }
        let len = u32::try_from(bytes.len()).context("a gathered message over 4 GiB")?;
        let mut lens = vec![0f32; 2 * n];
        lens[2 * me] = (len & 0xffff) as f32;
        lens[2 * me + 1] = (len >> 16) as f32;
        let lens = self.sum(what, lens)?;
        let lens: Vec<usize> = (0..n).map(|i| lens[2 * i] as usize | ((lens[2 * i + 1] as usize) << 16)).collect();
        let slot = lens.iter().max().copied().unwrap_or(0).div_ceil(2);
        if slot == 0 {
            return Ok(vec![Vec::new(); n]);
        }
        let mut values = vec![0f32; n * slot];
        for (k, pair) in bytes.chunks(2).enumerate() {
            let word = u16::from(pair[0]) | (u16::from(*pair.get(1).unwrap_or(&0)) << 8);
            values[me * slot + k] = f32::from(word);
        }
        let values = self.sum(what, values)?;
        Ok((0..n)
            .map(|i| {
                let words = &values[i * slot..(i + 1) * slot];
                let mut out: Vec<u8> = words.iter().flat_map(|&w| (w as u16).to_le_bytes()).collect();
                out.truncate(lens[i]);
                out
            })
            .collect())
    }

    /// Every node's `value`, in node order (JSON on the wire; floats round-trip exactly).
    pub fn gather<T: Serialize + DeserializeOwned>(&self, what: &str, value: &T) -> anyhow::Result<Vec<T>> {
        let bytes = serde_json::to_vec(value)?;
        self.gather_bytes(what, &bytes)?
            .into_iter()
            .enumerate()
            .map(|(i, b)| serde_json::from_slice(&b).with_context(|| format!("{what}: node {i} sent garbage")))
            .collect()
    }

    /// The sum of every node's gradient vector, by [`Reduce`]: `ordered` gathers them and adds them in node order.
    pub fn sum_gradients(&self, values: Vec<f32>) -> anyhow::Result<Vec<f32>> {
        Ok(self.gather_with_gradients(&(), values)?.1)
    }

    /// Every node's `meta` (in node order) and the sum of every node's `gradients` by [`Reduce`], in one
    /// collective operation: each node's slot carries its message (up to [`INLINE_BYTES`] of JSON, 16 bits a
    /// float; a longer one takes a gather of its own) and, for `ordered`, its gradients, which every node then adds
    /// in node order; the other kinds sum one shared gradient region with burn's strategy. A slot holds one
    /// node's values and zeros elsewhere, so its sum is exact (a -0.0 may come back +0.0, which no AdamW update
    /// tells apart).
    pub fn gather_with_gradients<T: Serialize + DeserializeOwned>(
        &self,
        meta: &T,
        gradients: Vec<f32>,
    ) -> anyhow::Result<(Vec<T>, Vec<f32>)> {
        const WHAT: &str = "a mini-batch's gradients and metrics";
        let (n, me) = (self.nodes(), self.index());
        let json = serde_json::to_vec(meta)?;
        if n == 1 {
            return Ok((vec![serde_json::from_slice(&json)?], gradients));
        }
        let inline = json.len() <= INLINE_BYTES;
        let header = 1 + INLINE_BYTES / 2;
        let p = gradients.len();
        let ordered = self.reduce == Reduce::Ordered;
        let slot = header + if ordered { p } else { 0 };
        let mut values = vec![0f32; n * slot + if ordered { 0 } else { p }];
        let mine = &mut values[me * slot..(me + 1) * slot];
        if inline {
            mine[0] = json.len() as f32 + 1.0;
            for (k, pair) in json.chunks(2).enumerate() {
                mine[1 + k] = f32::from(u16::from(pair[0]) | (u16::from(*pair.get(1).unwrap_or(&0)) << 8));
            }
        }
        if ordered {
            mine[header..].copy_from_slice(&gradients);
        } else {
            values[n * slot..].copy_from_slice(&gradients);
        }
        drop(gradients);
        let values = self.sum(WHAT, values)?;
        let metas = if (0..n).all(|i| values[i * slot] > 0.0) {
            (0..n)
                .map(|i| {
                    let len = values[i * slot] as usize - 1;
                    let words = &values[i * slot + 1..i * slot + header];
                    let mut bytes: Vec<u8> = words.iter().flat_map(|&w| (w as u16).to_le_bytes()).collect();
                    bytes.truncate(len);
                    serde_json::from_slice(&bytes).with_context(|| format!("{WHAT}: node {i} sent garbage"))
                })
                .collect::<anyhow::Result<Vec<T>>>()?
        } else {
            self.gather(WHAT, meta)?
        };
        let total = if ordered {
            let mut total = values[header..slot].to_vec();
            for i in 1..n {
                for (t, v) in total.iter_mut().zip(&values[i * slot + header..(i + 1) * slot]) {
                    *t += v;
                }
            }
            total
        } else {
            values[n * slot..].to_vec()
        };
        Ok((metas, total))
    }

    /// Leaves the run: tells the control service this node finished (so that its exit is not a failure) and
    /// unregisters from burn's orchestrator.
    pub fn finish(&self) -> anyhow::Result<()> {
        if let Some(control) = &self.control {
            control.done();
        }
        self.collective.finish()
    }
}

/// The gradient of every float parameter of `module`, flattened in the module's visiting order (zeros for a
/// parameter without one): what nodes sum.
pub fn flatten_grads<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M, grads: &GradientsParams) -> Vec<f32> {
    struct Flatten<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        out: Vec<f32>,
        _b: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Flatten<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            match self.grads.get::<B::InnerBackend, D>(param.id) {
                Some(grad) => self.out.extend(grad.into_data().convert::<f32>().iter::<f32>()),
                None => self.out.extend(std::iter::repeat_n(0.0, param.shape().num_elements())),
            }
        }
    }
    let mut visitor = Flatten::<B> { grads, out: Vec::new(), _b: std::marker::PhantomData };
    module.visit(&mut visitor);
    visitor.out
}

/// The inverse of [`flatten_grads`]: a gradient for every float parameter of `module`.
pub fn unflatten_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    flat: &[f32],
) -> anyhow::Result<GradientsParams> {
    struct Unflatten<'a, B: AutodiffBackend> {
        flat: &'a [f32],
        at: usize,
        grads: GradientsParams,
        _b: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Unflatten<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let shape = param.shape();
            let n = shape.num_elements();
            let values = self.flat.get(self.at..self.at + n).map(<[f32]>::to_vec).unwrap_or_default();
            self.at += n;
            if values.len() == n {
                let device = param.val().inner().device();
                let grad = Tensor::<B::InnerBackend, D>::from_data(TensorData::new(values, shape), &device);
                self.grads.register::<B::InnerBackend, D>(param.id, grad);
            }
        }
    }
    let mut visitor = Unflatten::<B> { flat, at: 0, grads: GradientsParams::new(), _b: std::marker::PhantomData };
    module.visit(&mut visitor);
    if visitor.at != flat.len() {
        bail!("{} gradient values for a model of {} parameters", flat.len(), visitor.at);
    }
    Ok(visitor.grads)
}

/// A 64-bit FNV-1a hash of every float parameter's bits in visiting order, as 16 hex digits: the weights'
/// fingerprint nodes compare after every step.
pub fn weight_hash<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M) -> String {
    struct Hasher<B: AutodiffBackend> {
        hash: Fnv1a,
        _b: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Hasher<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let data = param.val().inner().into_data().convert::<f32>();
            for v in data.iter::<f32>() {
                self.hash.write(&v.to_bits().to_le_bytes());
            }
        }
    }
    let mut visitor = Hasher::<B> { hash: Fnv1a::new(), _b: std::marker::PhantomData };
    module.visit(&mut visitor);
    format!("{:016x}", visitor.hash.finish())
}

/// The groups `0..groups` node `index` of `nodes` plays: contiguous, as even as can be.
pub fn share(groups: usize, nodes: usize, index: usize) -> std::ops::Range<usize> {
    (index * groups / nodes)..((index + 1) * groups / nodes)
}

/// Joins a run of `config.nodes` nodes as node `index`: through the control service (which checks the node
/// count, `config_hash` and the index, and starts every node together), then burn's orchestrator. `node_port`
/// is this node's port for peer-to-peer transfers (a free one when `None`). `nodes = 1` runs in-process.
#[cfg(feature = "distributed")]
pub fn join(
    config: &DistributedConfig,
    index: usize,
    node_port: Option<u16>,
    config_hash: &str,
) -> anyhow::Result<Cluster> {
    let timeout = Duration::from_secs(config.timeout_s.max(1));
    if config.nodes == 0 {
        bail!("distributed.nodes must be at least 1");
    }
    if index >= config.nodes {
        bail!("--node-index {index} is out of range for {} nodes (0..{})", config.nodes, config.nodes);
    }
    if config.nodes == 1 {
        return Ok(Cluster::local(1).pop().expect("one"));
    }
    let (host, port) = parse_host_port(&config.orchestrator)?;
    let control_address = format!("{host}:{}", port.checked_add(1).context("orchestrator port 65535")?);
    burn_nodes::quiet_worker_panics();
    let control = control::ControlClient::join(&control_address, index, config.nodes, config_hash, timeout)
        .with_context(|| format!("node {index} joining the run at {}", config.orchestrator))?;
    let node_ip = control.local_ip();
    let node_port = match node_port {
        Some(port) => port,
        None => std::net::TcpListener::bind(("0.0.0.0", 0))?.local_addr()?.port(),
    };
    let collective = burn_nodes::BurnNodes::register(
        index,
        config.nodes,
        &format!("{host}:{port}"),
        &format!("{node_ip}:{node_port}"),
        node_port,
        config.reduce,
    );
    let cluster = Cluster::new(Arc::new(collective?), Some(control), config.reduce, timeout);
    // Registration with burn's orchestrator returns when every node has registered; a first sum checks that
    // every node can reach every other one before any work starts.
    cluster.sum("the first all-reduce", vec![1.0]).and_then(|n| {
        if n[0] as usize == config.nodes {
            Ok(())
        } else {
            Err(anyhow!("the first all-reduce counted {} nodes, not {}", n[0], config.nodes))
        }
    })?;
    Ok(cluster)
}

/// `HOST:PORT`.
pub fn parse_host_port(text: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) =
        text.rsplit_once(':').ok_or_else(|| anyhow!("`{text}`: expected HOST:PORT, such as 127.0.0.1:9400"))?;
    let port: u16 = port.parse().map_err(|_| anyhow!("`{text}`: the port `{port}` is not a number 0-65535"))?;
    if host.is_empty() {
        bail!("`{text}`: expected HOST:PORT, such as 127.0.0.1:9400");
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_group_sums_in_node_order_and_gathers_bytes_exactly() {
        let clusters = Cluster::local(3);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = clusters
                .iter()
                .map(|c| {
                    scope.spawn(move || {
                        let i = c.index();
                        let sums: Vec<Vec<f32>> =
                            (0..20).map(|round| c.sum("t", vec![i as f32 + round as f32, 1.0]).unwrap()).collect();
                        let mine = vec![i as u8; 3 + 2 * i];
                        let gathered = c.gather_bytes("g", &mine).unwrap();
                        let json = c.gather("j", &format!("node {i}")).unwrap();
                        let grads = c.sum_gradients(vec![0.1 * (i as f32 + 1.0), -0.0, f32::MIN_POSITIVE]).unwrap();
                        let (metas, with) =
                            c.gather_with_gradients(&i, vec![0.1 * (i as f32 + 1.0), -0.0, f32::MIN_POSITIVE]).unwrap();
                        assert_eq!(metas, vec![0, 1, 2]);
                        // A message too long to ride with the gradients takes a gather of its own.
                        let long = "x".repeat(INLINE_BYTES + i);
                        let (metas, _) = c.gather_with_gradients(&long, vec![1.0; 4]).unwrap();
                        assert_eq!(
                            metas.iter().map(String::len).collect::<Vec<_>>(),
                            (0..3).map(|k| INLINE_BYTES + k).collect::<Vec<_>>()
                        );
                        assert_eq!(
                            with.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            grads.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                        );
                        (sums, gathered, json, grads)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (sums, gathered, json, grads) in &results {
            for (round, sum) in sums.iter().enumerate() {
                assert_eq!(sum, &vec![3.0 + 3.0 * round as f32, 3.0]);
            }
            assert_eq!(gathered, &vec![vec![0u8; 3], vec![1u8; 5], vec![2u8; 7]]);
            assert_eq!(json, &vec!["node 0".to_owned(), "node 1".into(), "node 2".into()]);
            let ordered = 0.1f32 + 0.2f32 + 0.3f32;
            assert_eq!(grads[0].to_bits(), ordered.to_bits(), "summed in node order");
            assert_eq!(grads[1], 0.0);
            assert_eq!(grads[2], 3.0 * f32::MIN_POSITIVE);
        }
    }

    #[test]
    fn shares_cover_every_group_once_in_order() {
        for groups in 1..12 {
            for nodes in 1..=groups {
                let ranges: Vec<_> = (0..nodes).map(|i| share(groups, nodes, i)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[nodes - 1].end, groups);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                assert!(ranges.iter().all(|r| !r.is_empty()), "{groups} groups on {nodes} nodes");
            }
        }
    }

    #[test]
    fn host_ports_and_reduce_names_parse_with_clear_errors() {
        assert_eq!(parse_host_port("127.0.0.1:9400").unwrap(), ("127.0.0.1".to_owned(), 9400));
        assert!(parse_host_port("localhost").unwrap_err().to_string().contains("HOST:PORT"));
        assert!(parse_host_port("h:99999").unwrap_err().to_string().contains("99999"));
        assert_eq!("ring".parse::<Reduce>().unwrap(), Reduce::Ring);
        assert!("fast".parse::<Reduce>().unwrap_err().to_string().contains("ordered, ring"));
    }
}
