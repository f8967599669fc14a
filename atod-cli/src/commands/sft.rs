//! `atod sft --config FILE.toml`: supervised fine-tuning of one model on expert demonstrations (the teachers,
//! and the students' initialisation). The result is a stage, reused by every later config that asks for it.

use std::path::PathBuf;

use atod_envs::Registry;

use crate::pipeline::config::SftRunConfig;
use crate::pipeline::stages;
use crate::progress;

/// Arguments of `atod sft`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SFT config: `name`, `[env]`, `[demos]`, `[tokenizer]`, `[prompt]` and `[model]` (an SFT stage).
    #[arg(long)]
    pub config: PathBuf,
    /// Print the result as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// Runs `atod sft`.
pub fn run(registry: &Registry, args: &Args) -> anyhow::Result<()> {
    let mut config = SftRunConfig::load(&args.config)?;
    if let Some(on) = super::reproducible_flag() {
        config.reproducible = on;
    }
    atod_models::cpu::isa::set_reproducible(config.reproducible);
    let stage = stages::sft(registry, &config, &progress::bar(0, "sft"))?;
    let eval: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(stage.dir.join("eval.json"))?)?;
    if args.json {
        let doc = serde_json::json!({ "stage": stage.dir, "built": stage.built, "model": stage.dir.join("model"), "result": eval });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("model          {}", stage.dir.join("model").display());
        println!("{}          {}", if stage.built { "built" } else { "reused" }, stage.key);
        println!("eval success   {:.1}%", 100.0 * eval["eval"]["success_rate"].as_f64().unwrap_or(f64::NAN));
    }
    Ok(())
}
