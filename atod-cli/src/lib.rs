//! The `atod` command-line tool (DESIGN.md §8) and the library behind it.
//!
//! Each command lives in its own module under `commands` with a clap `Args` struct and a `run` function; this
//! file only parses the command line, builds the environment registry and reports errors. Every command has
//! `--help`; commands that print results accept `--json` and then print exactly one JSON document on stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod commands;
pub mod grid;
pub mod pipeline;
pub mod plot;
pub mod policies;
pub mod progress;
pub mod registry;
pub mod render;
pub mod report;
pub mod rollout;

/// Post-train small language-model agents on multi-turn text environments (ATOD, OPD, GRPO).
#[derive(Debug, Parser)]
#[command(name = "atod", version, propagate_version = true)]
pub struct Cli {
    /// Load an environment plugin (a shared library built with `atod_envs::export_environment!`). Repeatable;
    /// a plugin given here replaces a bundled environment of the same name. More plugins are found through
    /// the ATOD_PLUGIN_PATH variable (files or directories, separated like PATH) and beside the executable.
    #[arg(long = "plugin", value_name = "PATH", global = true)]
    pub plugins: Vec<PathBuf>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Throughput figures: `atod bench model --preset NAME`.
    Bench(commands::bench::Args),
    /// Play the environment's expert and write its turns as chat-format JSONL demonstrations.
    Collect(commands::collect::Args),
    /// List the environments found: name, version, splits and their sizes.
    Envs(commands::envs::Args),
    /// Evaluate a policy on a split: success rate, score, turns and invalid actions, per task type.
    Eval(commands::eval::Args),
    /// Train every unfinished cell of a grid of runs (resuming), then write results.csv, results.md and plots.
    Grid(commands::grid::Args),
    /// Play an environment in the terminal, replay a script of responses, or watch the expert.
    Play(commands::play::Args),
    /// Regenerate the tables and plots of a grid directory, or show a run directory's results.
    Report(commands::report::Args),
    /// Evaluate a schedule expression over the training steps and draw it.
    Schedule(commands::schedule::Args),
    /// Supervised fine-tuning on expert demonstrations (teachers, student initialisation).
    Sft(commands::sft::Args),
    /// Train the chat tokenizer (byte-level BPE) on JSONL transcripts and write its tokenizer.json.
    Tokenizer(commands::tokenizer::Args),
    /// Online post-training (atod, opd, grpo and ablations); builds missing stages first.
    Train(commands::train::Args),
}

/// Runs the command line of this process and returns its exit code. Errors print as one `error:` paragraph
/// on stderr with exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(args) => commands::bench::run(&args),
        Command::Collect(args) => commands::collect::run(&registry::build(&cli.plugins)?, &args),
        Command::Envs(args) => commands::envs::run(&registry::build(&cli.plugins)?, &args),
        Command::Eval(args) => commands::eval::run(&registry::build(&cli.plugins)?, &args),
        Command::Grid(args) => commands::grid::run(&cli.plugins, &args),
        Command::Play(args) => commands::play::run(&registry::build(&cli.plugins)?, &args),
        Command::Report(args) => commands::report::run(&args),
        Command::Schedule(args) => commands::schedule::run(&args),
        Command::Sft(args) => commands::sft::run(&registry::build(&cli.plugins)?, &args),
        Command::Tokenizer(args) => commands::tokenizer::run(&args),
        Command::Train(args) => commands::train::run(&registry::build(&cli.plugins)?, &args),
    }
}
