//! `atod train --config FILE.toml [--resume] [--out DIR]`: the whole pipeline of one run. Missing stages
//! (demonstrations, tokenizer, teacher, student initialisation) are built first and reused afterwards; then the
//! online loop runs and the run ends by printing the teacher's success and the student's before and after.
//!
//! Data-parallel: `atod orchestrator --port P` once, then on each node `atod train --config FILE --nodes N
//! --node-index I --orchestrator HOST:P [--node-port Q]` (a `[distributed]` table may give nodes and
//! orchestrator); node 0 writes the run directory. `--devices cpu,cpu` (or `cuda:0,cuda:1`) runs one node per
//! device in this process instead.

use std::path::PathBuf;

use anyhow::{bail, Context};
use atod_envs::Registry;

use crate::distributed::{DistributedConfig, Reduce};
use crate::pipeline::config::TrainConfig;
use crate::pipeline::run;
use crate::progress;

/// Arguments of `atod train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The train config (see configs/quickstart.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Continue an interrupted run from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// The run directory (default `runs/<name>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the summary as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Data-parallel training: the run's node count (the config's `distributed.nodes` otherwise). `--nodes 1`
    /// runs the data-parallel path in this process alone, the reference a run on N nodes reproduces.
    #[arg(long, value_name = "N")]
    pub nodes: Option<usize>,
    /// This node's index, 0..N (node 0 writes the run directory).
    #[arg(long, value_name = "I")]
    pub node_index: Option<usize>,
    /// burn's global orchestrator, `HOST:PORT` (`atod orchestrator --port PORT`; `distributed.orchestrator`).
    #[arg(long, value_name = "HOST:PORT")]
    pub orchestrator: Option<String>,
    /// This node's port for transfers between nodes (default: a free one).
    #[arg(long, value_name = "PORT")]
    pub node_port: Option<u16>,
    /// Data-parallel over several devices of this process, one node each, e.g. `cpu,cpu` or `cuda:0,cuda:1`:
    /// no orchestrator; gradients are summed on the host in device order. Not combined with --nodes.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub devices: Vec<String>,
    /// How nodes sum gradients: ordered (default: the same bits whatever the nodes' registration order), ring,
    /// tree or centralized (burn's all-reduce strategies); `distributed.reduce`.
    #[arg(long, value_name = "KIND")]
    pub reduce: Option<String>,
}

/// Runs `atod train`.
pub fn run(registry: &Registry, args: &Args) -> anyhow::Result<()> {
    let mut config = TrainConfig::load(&args.config)?;
    if let Some(on) = super::reproducible_flag() {
        config.reproducible = on;
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(&config.name));
    let summary = if !args.devices.is_empty() {
        run_devices(registry, &config, &out, args)?
    } else {
        match distributed_config(&mut config, args)? {
            None => run::run(registry, &config, &out, args.resume, &progress::bar(0, "train"))?,
            Some(index) => run_node(registry, &config, &out, args, index)?,
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("run            {}", out.display());
        println!(
            "method         {} on {} ({} steps, student {})",
            summary.method, summary.env, summary.steps, summary.student
        );
        println!("teacher        {}", success_line(summary.teacher_success_rate, summary.teacher_episodes));
        println!("student before {}", success_line(summary.initial_success_rate, summary.initial_episodes));
        println!("student after  {}", success_line(summary.final_success_rate, summary.final_episodes));
        println!("wall time      {:.0} s", summary.wall_seconds);
    }
    Ok(())
}

/// Merges the data-parallel flags into the config's `[distributed]` table; `Some(node index)` when the run is
/// data-parallel.
fn distributed_config(config: &mut TrainConfig, args: &Args) -> anyhow::Result<Option<usize>> {
    let flags = args.nodes.is_some() || args.orchestrator.is_some() || args.reduce.is_some();
    if config.distributed.is_none() && !flags {
        if args.node_index.is_some() || args.node_port.is_some() {
            bail!("--node-index and --node-port belong to a data-parallel run: give --nodes N and --orchestrator");
        }
        return Ok(None);
    }
    let table = config.distributed.get_or_insert_with(|| DistributedConfig {
        nodes: 1,
        orchestrator: String::new(),
        reduce: Reduce::default(),
        timeout_s: 1800,
    });
    if let Some(nodes) = args.nodes {
        table.nodes = nodes;
    }
    if let Some(orchestrator) = &args.orchestrator {
        table.orchestrator = orchestrator.clone();
    }
    if let Some(reduce) = &args.reduce {
        table.reduce = reduce.parse().context("--reduce")?;
    }
    if table.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if table.nodes > 1 && table.orchestrator.is_empty() {
        bail!("a run on {} nodes needs --orchestrator HOST:PORT (start one with `atod orchestrator`)", table.nodes);
    }
    match args.node_index {
        Some(index) => Ok(Some(index)),
        None if table.nodes == 1 => Ok(Some(0)),
        None => bail!("a run on {} nodes needs --node-index I (0..{})", table.nodes, table.nodes),
    }
}

/// Trains on the devices of `--devices`, one thread and one node of a local group each (node 0 writes the run
/// directory and shows the progress); returns node 0's summary.
fn run_devices(
    registry: &Registry,
    config: &TrainConfig,
    out: &std::path::Path,
    args: &Args,
) -> anyhow::Result<run::RunSummary> {
    if args.nodes.is_some() || args.node_index.is_some() || args.orchestrator.is_some() || config.distributed.is_some()
    {
        bail!("--devices trains on several devices of this process; it does not combine with --nodes or [distributed]");
    }
    for device in &args.devices {
        device.parse::<atod_models::DeviceSpec>().with_context(|| format!("--devices: `{device}`"))?;
    }
    let mut config = config.clone();
    config.distributed = Some(DistributedConfig {
        nodes: args.devices.len(),
        orchestrator: String::new(),
        reduce: Reduce::Ordered,
        timeout_s: 1800,
    });
    let clusters = crate::distributed::Cluster::local(args.devices.len());
    let label = format!("train ({} devices)", args.devices.len());
    let results: Vec<anyhow::Result<run::RunSummary>> = std::thread::scope(|scope| {
        let handles: Vec<_> = clusters
            .iter()
            .zip(&args.devices)
            .map(|(cluster, device)| {
                let mut config = config.clone();
                config.device = device.clone();
                let label = &label;
                scope.spawn(move || {
                    let result = if cluster.is_leader() {
                        let bar = progress::bar(0, label);
                        run::run_distributed(registry, &config, out, args.resume, &bar, cluster)
                    } else {
                        run::run_distributed(registry, &config, out, args.resume, &(), cluster)
                    };
                    // A node that fails leaves the others waiting in a collective operation: end the process.
                    if let Err(err) = &result {
                        eprintln!("error: device {} ({device}): {err:#}", cluster.index());
                        std::process::exit(1);
                    }
                    result
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    results.into_iter().next().expect("one device at least")
}

/// Joins the run's nodes and trains as node `index`.
#[cfg(feature = "distributed")]
fn run_node(
    registry: &Registry,
    config: &TrainConfig,
    out: &std::path::Path,
    args: &Args,
    index: usize,
) -> anyhow::Result<run::RunSummary> {
    let table = config.distributed.as_ref().expect("a data-parallel config");
    // Every node must train the same config; where each keeps its stages is its own affair.
    let mut hashed = config.clone();
    hashed.stages_dir = None;
    let hash = crate::pipeline::stages::key_of("distributed-config", &hashed);
    let cluster = crate::distributed::join(table, index, args.node_port, &hash)?;
    let label = format!("train (node {index} of {})", table.nodes);
    let summary = run::run_distributed(registry, config, out, args.resume, &progress::bar(0, &label), &cluster)?;
    cluster.finish()?;
    Ok(summary)
}

#[cfg(not(feature = "distributed"))]
fn run_node(_: &Registry, _: &TrainConfig, _: &std::path::Path, _: &Args, _: usize) -> anyhow::Result<run::RunSummary> {
    bail!("this atod was built without the `distributed` feature: data-parallel runs need it")
}

/// "6.2% success (95% CI 1.7-20.1%, 32 episodes)": the rate with Wilson's interval over the evaluation episodes,
/// so that a reader sees whether two figures differ by more than the episodes can resolve.
pub fn success_line(rate: f64, episodes: u64) -> String {
    match crate::report::stats::wilson95(rate, episodes) {
        Some((low, high)) => format!(
            "{:.1}% success (95% CI {:.1}-{:.1}%, {episodes} episodes)",
            100.0 * rate,
            100.0 * low,
            100.0 * high
        ),
        None => format!("{:.1}% success", 100.0 * rate),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn success_lines_carry_their_interval() {
        assert_eq!(super::success_line(2.0 / 32.0, 32), "6.2% success (95% CI 1.7-20.1%, 32 episodes)");
        assert_eq!(super::success_line(0.0, 128), "0.0% success (95% CI 0.0-2.9%, 128 episodes)");
        assert_eq!(super::success_line(0.25, 0), "25.0% success");
    }
}
