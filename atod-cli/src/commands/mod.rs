//! The command line: one module per command, each with its clap `Args` and a `run` that parses, calls the
//! library and prints. These are the leaves of atod-cli: nothing outside this module imports from it or knows
//! clap (a test checks that). Every command has `--help`; commands that print results accept `--json` and then
//! print exactly one JSON document on stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod alfworld_export;
pub mod bench;
pub mod collect;
pub mod envs;
pub mod eval;
pub mod grid;
#[cfg(feature = "distributed")]
pub mod orchestrator;
pub mod play;
pub mod report;
pub mod schedule;
#[cfg(feature = "serve")]
pub mod serve;
pub mod sft;
pub mod tokenizer;
pub mod train;

/// Post-train small language-model agents on multi-turn text environments (ATOD, OPD, GRPO).
#[derive(Debug, Parser)]
#[command(name = "atod", version, propagate_version = true)]
pub struct Cli {
    /// Load an environment plugin (a shared library built with `atod_envs::export_environment!`). Repeatable;
    /// a plugin given here replaces a bundled environment of the same name. More plugins are found through
    /// the ATOD_PLUGIN_PATH variable (files or directories, separated like PATH) and beside the executable.
    #[arg(long = "plugin", value_name = "PATH", global = true)]
    pub plugins: Vec<PathBuf>,

    /// The reproducible mode: on the CPU, results are the same bits on every x86-64 CPU with AVX2 and FMA and
    /// for any number of threads, at some cost in speed (benches/README.md). Default: a config's
    /// `reproducible` key, which is true unless set; true for commands without a config.
    #[arg(long, value_name = "BOOL", global = true)]
    pub reproducible: Option<bool>,

    /// Hold atod's CPU kernels to this instruction-set level: native (the default), x86-64-v4, x86-64-v3 or
    /// portable. The ATOD_ISA environment variable says the same; the flag wins.
    #[arg(long, value_name = "LEVEL", global = true)]
    pub isa: Option<String>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write tasks of the alfworld environment as ALFWorld game directories (game.tw-pddl) for its real engine.
    AlfworldExport(alfworld_export::Args),
    /// Throughput figures: `atod bench model --preset NAME`, `atod bench step --config FILE`.
    Bench(bench::Args),
    /// Play the environment's expert and write its turns as chat-format JSONL demonstrations.
    Collect(collect::Args),
    /// List the environments found: name, version, splits and their sizes.
    Envs(envs::Args),
    /// Evaluate a policy on a split: success rate, score, turns and invalid actions, per task type.
    Eval(eval::Args),
    /// Train every unfinished cell of a grid of runs (resuming), then write results.csv, results.md and plots.
    Grid(grid::Args),
    /// Start the orchestrator of a data-parallel run (burn-collective's, and atod's control service beside it).
    #[cfg(feature = "distributed")]
    Orchestrator(orchestrator::Args),
    /// Play an environment in the terminal, replay a script of responses, or watch the expert.
    Play(play::Args),
    /// Regenerate the tables and plots of a grid directory, or show a run directory's results.
    Report(report::Args),
    /// Evaluate a schedule expression over the training steps and draw it.
    Schedule(schedule::Args),
    /// Serve an environment over HTTP: atod's protocol, and AgentGym's for alfworld, webshop and searchqa.
    #[cfg(feature = "serve")]
    Serve(serve::Args),
    /// Supervised fine-tuning on expert demonstrations (teachers, student initialisation).
    Sft(sft::Args),
    /// Train the chat tokenizer (byte-level BPE) on JSONL transcripts and write its tokenizer.json.
    Tokenizer(tokenizer::Args),
    /// Online post-training (atod, opd, grpo and ablations); builds missing stages first.
    Train(train::Args),
}

/// Runs the command line of this process and returns its exit code. Errors print as one `error:` paragraph
/// on stderr with exit code 1.
pub fn main() -> ExitCode {
    restore_sigpipe();
    keep_freed_memory();
    atod_models::cpu::isa::flush_subnormals();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `--reproducible` flag of this process's command line, if given.
static REPRODUCIBLE_FLAG: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();

/// The `--reproducible` flag of the command line (None when not given): it overrides a config's key.
pub fn reproducible_flag() -> Option<bool> {
    REPRODUCIBLE_FLAG.get().copied().flatten()
}

/// Applies `ATOD_ISA`, `--isa` and `--reproducible` for the whole process. The level is also written back to
/// `ATOD_ISA`, so that the processes a grid starts for its cells run at it too.
fn set_arithmetic(cli: &Cli) -> anyhow::Result<()> {
    use atod_models::cpu::isa;
    isa::init_from_env().map_err(anyhow::Error::msg)?;
    if let Some(level) = &cli.isa {
        let request: isa::Request = level.parse().map_err(|e| anyhow::anyhow!("--isa: {e}"))?;
        isa::force(request).map_err(|e| anyhow::anyhow!("--isa {level}: {e}"))?;
        // Before any thread exists (clap has only parsed), so no other thread reads the environment.
        std::env::set_var("ATOD_ISA", level);
    }
    let _ = REPRODUCIBLE_FLAG.set(cli.reproducible);
    isa::set_reproducible(cli.reproducible.unwrap_or(true));
    Ok(())
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    set_arithmetic(&cli)?;
    match cli.command {
        Command::AlfworldExport(args) => alfworld_export::run(&args),
        Command::Bench(args) => bench::run(&cli.plugins, &args),
        Command::Collect(args) => collect::run(&crate::registry::build(&cli.plugins)?, &args),
        Command::Envs(args) => envs::run(&crate::registry::build(&cli.plugins)?, &args),
        Command::Eval(args) => eval::run(&crate::registry::build(&cli.plugins)?, &args),
        Command::Grid(args) => grid::run(&cli.plugins, &args),
        #[cfg(feature = "distributed")]
        Command::Orchestrator(args) => orchestrator::run(&args),
        Command::Play(args) => play::run(&crate::registry::build(&cli.plugins)?, &args),
        Command::Report(args) => report::run(&args),
        Command::Schedule(args) => schedule::run(&args),
        #[cfg(feature = "serve")]
        Command::Serve(args) => serve::run(&crate::registry::build(&cli.plugins)?, &args),
        Command::Sft(args) => sft::run(&crate::registry::build(&cli.plugins)?, &args),
        Command::Tokenizer(args) => tokenizer::run(&args),
        Command::Train(args) => train::run(&crate::registry::build(&cli.plugins)?, &args),
    }
}

/// Keeps freed memory in the process for the next allocation instead of handing it back to the kernel. A
/// training step allocates and frees the same tens of megabytes of activations every step; with glibc's
/// defaults those come from fresh `mmap`s, whose page faults and zeroing took 5-10% of a step in the profile
/// (benches/README.md). The peak resident memory is unchanged.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only tunes the allocator; it is called at the start of `main`, before any thread exists.
    unsafe {
        // The largest threshold glibc accepts (32 MiB on 64-bit), and a trim threshold that never trims.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Lets a closed stdout end the process quietly, as a Unix tool does (`atod eval ... --json | head -c 100`):
/// Rust ignores SIGPIPE, so without this every `println!` after the reader has gone would panic with "failed
/// printing to stdout: Broken pipe".
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default at the start of `main`, before any thread is
    // spawned, affects only how this process reacts to SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// An environment's config text: the file given with `--config`, else the plugin's defaults.
pub(crate) fn env_config(plugin: &atod_envs::EnvPlugin, file: Option<&std::path::Path>) -> anyhow::Result<String> {
    use anyhow::Context;
    match file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display())),
        None => Ok(plugin.default_config()),
    }
}
