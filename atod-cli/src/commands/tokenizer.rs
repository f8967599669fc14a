//! `atod tokenizer`: trains the chat tokenizer (byte-level BPE) on the messages of JSONL transcripts.
//!
//! The input is what `atod collect` writes: one JSON object per line with a `"messages"` array of
//! `{"role": "system" | "user" | "assistant", "content": "..."}`; other fields are ignored, blank lines skipped.
//! Every message content is one training text.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use atod_models::ChatTokenizer;
use serde::Serialize;

/// Arguments of `atod tokenizer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSONL transcripts to train on (one `{"messages": [...]}` object per line), e.g. from `atod collect`.
    #[arg(long, value_name = "FILE.jsonl", num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// The vocabulary size, special tokens included (at least 259: 256 bytes and 3 special tokens).
    #[arg(long)]
    pub vocab_size: usize,
    /// Where to write the tokenizer.json (atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Print one JSON document instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

/// The JSON document of `atod tokenizer --json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The tokenizer.json written.
    pub out: PathBuf,
    /// The number of ids of the trained tokenizer (may be below `--vocab-size` on little data).
    pub vocab_size: usize,
    /// The number of texts (message contents) read.
    pub texts: usize,
    /// Their total size in bytes (UTF-8).
    pub bytes: usize,
    /// Tokens per byte of the texts under the trained tokenizer (lower is better; 1.0 means no compression).
    pub tokens_per_byte: f64,
}

/// Reads the data, trains, saves and measures.
pub fn train(args: &Args) -> anyhow::Result<Report> {
    let mut texts = Vec::new();
    for path in &args.data {
        texts.extend(crate::demos::read_texts(path)?);
    }
    if texts.iter().all(|t| t.is_empty()) {
        bail!(
            "no text to train on in {}",
            args.data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    let tokenizer = ChatTokenizer::train(&texts, args.vocab_size)?;
    tokenizer.save(&args.out)?;
    let bytes: usize = texts.iter().map(String::len).sum();
    // `encode_response` appends `<|im_end|>`, which is not part of the text.
    let tokens: usize = texts.iter().map(|t| tokenizer.encode_response(t).len() - 1).sum();
    Ok(Report {
        out: args.out.clone(),
        vocab_size: tokenizer.vocab_size(),
        texts: texts.len(),
        bytes,
        tokens_per_byte: tokens as f64 / bytes as f64,
    })
}

/// Runs `atod tokenizer`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let report = train(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("vocabulary      {} ids", report.vocab_size);
    println!("read            {} texts, {} bytes from {} file(s)", report.texts, report.bytes, args.data.len());
    println!(
        "compression     {:.3} tokens per byte ({:.2} bytes per token)",
        report.tokens_per_byte,
        1.0 / report.tokens_per_byte
    );
    println!("wrote           {} in {:.1?}", report.out.display(), started.elapsed());
    Ok(())
}
