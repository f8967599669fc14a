//! `atod orchestrator [--port 9400] [--once]`: the meeting point of a data-parallel run. burn's global
//! orchestrator listens on PORT and atod's control service on PORT + 1 (both on every interface); nodes join with
//! `atod train --nodes N --node-index I --orchestrator HOST:PORT`.

use std::sync::Arc;

use anyhow::Context;

/// Arguments of `atod orchestrator`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// burn's orchestrator port; atod's control service takes the next one.
    #[arg(long, default_value_t = 9400)]
    pub port: u16,
    /// Exit once the first run's nodes have all left (finished or gone). burn's orchestrator keeps the node
    /// count of the first run it saw, so a run of another size needs a fresh orchestrator anyway.
    #[arg(long)]
    pub once: bool,
}

/// Runs `atod orchestrator`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let control_port = args.port.checked_add(1).context("--port 65535 leaves no port for the control service")?;
    let control = std::net::TcpListener::bind(("0.0.0.0", control_port))
        .with_context(|| format!("cannot listen on port {control_port} (the control service, --port + 1)"))?;
    crate::distributed::burn_nodes::start_orchestrator(args.port)?;
    eprintln!(
        "orchestrator: burn-collective on port {}, atod's control service on port {control_port}; nodes join with \
         `atod train --config FILE --nodes N --node-index I --orchestrator HOST:{}`",
        args.port, args.port
    );
    let log = Arc::new(|line: &str| eprintln!("orchestrator: {line}"));
    crate::distributed::control::serve(control, args.once, log)
}
