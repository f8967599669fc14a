//! A language model as an atod policy: the [`atod_core::policy::Policy`] the rollout engine and `atod eval`
//! drive, plus the training-side extension the trainer uses (scoring, and statistics with gradients).
//!
//! A [`LmPolicy`] renders each turn's chat messages with the tokenizer's chat template, generates all
//! responses of a batch at once with the KV cache, and returns the text (the end-of-turn token stripped), the
//! sampled ids and their behaviour log-probs. Its random stream is its own and seeded, so a run is
//! reproducible; [`LmPolicy::reseed`] sets it.

use std::path::Path;

use atod_core::policy::{Policy, PolicyResponse, TurnInput};
use atod_core::rng::SplitMix64;

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::generate::{generate, response_stats, score, ResponseStats, SamplingParams, Scored};
use crate::hotpath::HotPathBackend;
use crate::model::{Transformer, TransformerConfig};
use crate::tokenizer::ChatTokenizer;

/// The tokenizer file of an export directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// A model, its tokenizer and how to sample from it.
#[derive(Debug)]
pub struct LmPolicy<B: HotPathBackend> {
    /// The model.
    pub model: Transformer<B>,
    /// Its config (kept for exports).
    pub config: TransformerConfig,
    /// The tokenizer and chat template.
    pub tokenizer: ChatTokenizer,
    /// Sampling parameters of [`Policy::act`].
    pub sampling: SamplingParams,
    /// Rows generated at once (larger batches are split).
    pub batch_size: usize,
    /// Each generation and scoring batch is split into this many parts computed side by side on as many
    /// threads (default 2, the cores of the machine the defaults are sized for). Every row has its own sampling
    /// stream, so the split changes nothing but float rounding.
    pub shards: usize,
    name: String,
    rng: SplitMix64,
}

impl<B: HotPathBackend> LmPolicy<B> {
    /// Wraps a model and its tokenizer; the model's vocabulary must cover the tokenizer's.
    pub fn new(
        name: impl Into<String>,
        model: Transformer<B>,
        config: TransformerConfig,
        tokenizer: ChatTokenizer,
        sampling: SamplingParams,
        seed: u64,
    ) -> Result<Self> {
        if tokenizer.vocab_size() > model.vocab_size() {
            return Err(Error::BadInput {
                what: format!(
                    "the tokenizer has {} tokens but the model's vocabulary has only {}",
                    tokenizer.vocab_size(),
                    model.vocab_size()
                ),
            });
        }
        Ok(Self {
            model,
            config,
            tokenizer,
            sampling,
            batch_size: 64,
            shards: 2,
            name: name.into(),
            rng: SplitMix64::new(seed),
        })
    }

    /// Loads an export directory (`config.json`, `*.safetensors`, `tokenizer.json`).
    pub fn load(dir: &Path, device: &B::Device, sampling: SamplingParams, seed: u64) -> Result<Self> {
        let (config, model) = checkpoint::load::<B>(dir, device)?;
        let tokenizer = ChatTokenizer::from_file(dir.join(TOKENIZER_FILE))?;
        Self::new(dir.display().to_string(), model, config, tokenizer, sampling, seed)
    }

    /// Writes an export directory atomically: `config.json`, `model.safetensors` and `tokenizer.json`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tokenizer = self.tokenizer.to_json()?;
        checkpoint::save(&self.model, &self.config, dir, &[(TOKENIZER_FILE, tokenizer.as_bytes())])
    }

    /// Restarts the sampling stream.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = SplitMix64::new(seed);
    }

    /// Prompt ids of one turn.
    pub fn encode(&self, input: &TurnInput) -> Vec<u32> {
        self.tokenizer.encode_prompt(&input.messages)
    }

    /// Generates one response per prompt, each row from its own seed drawn from this policy's stream.
    pub fn generate_ids(&mut self, prompts: &[Vec<u32>]) -> Result<Vec<PolicyResponse>> {
        let seeds: Vec<u64> = prompts.iter().map(|_| self.rng.next_u64()).collect();
        self.generate_ids_seeded(prompts, &seeds)
    }

    /// Generates one response per prompt, row `i` sampled from stream `seeds[i]` (this policy's own stream is
    /// not used): a row's tokens then do not depend on which other rows share its batch.
    pub fn generate_ids_seeded(&mut self, prompts: &[Vec<u32>], seeds: &[u64]) -> Result<Vec<PolicyResponse>> {
        assert_eq!(prompts.len(), seeds.len(), "one seed per prompt");
        let stop = [self.tokenizer.eot_id()];
        let mut out = Vec::with_capacity(prompts.len());
        let batch = self.batch_size.max(1);
        for (chunk, seeds) in prompts.chunks(batch).zip(seeds.chunks(batch)) {
            let (model, sampling, stop) = (&self.model, &self.sampling, &stop);
            // Shards of row indices, so that each shard borrows its prompts and seeds rather than copying them.
            let rows: Vec<usize> = (0..chunk.len()).collect();
            let generations = crate::parallel::map_shards(&rows, self.shards, |part| {
                let span = part[0]..part[0] + part.len();
                generate(model, &chunk[span.clone()], sampling, stop, &seeds[span])
            })?
            .into_iter()
            .flatten();
            for generation in generations {
                let body = match generation.ids.split_last() {
                    Some((last, body)) if generation.stopped && *last == stop[0] => body,
                    _ => &generation.ids[..],
                };
                out.push(PolicyResponse {
                    text: self.tokenizer.decode(body),
                    token_ids: generation.ids,
                    logprobs: generation.logprobs,
                });
            }
        }
        Ok(out)
    }

    /// Per-token log-probs and entropies of `(prompt, response)` pairs (the teacher's and the reference's
    /// scoring), at the sampling temperature of this policy.
    pub fn score(&self, pairs: &[(&[u32], &[u32])]) -> Result<Vec<Scored>> {
        score(&self.model, pairs, self.sampling.logprob_temperature(), self.batch_size)
    }

    /// [`Self::score`] with the pairs split into `shards` contiguous parts scored side by side on as many
    /// threads; the same figures (a row's scores do not depend on its batch, within float rounding).
    pub fn score_sharded(&self, pairs: &[(&[u32], &[u32])], shards: usize) -> Result<Vec<Scored>>
    where
        Self: Sync,
    {
        Ok(crate::parallel::map_shards(pairs, shards, |part| self.score(part))?.into_iter().flatten().collect())
    }

    /// The tensors of the same statistics, differentiable when `B` is an autodiff backend: the trainer's
    /// forward pass over response tokens.
    pub fn response_stats(&self, pairs: &[(&[u32], &[u32])]) -> Result<ResponseStats<B>> {
        response_stats(&self.model, pairs, self.sampling.logprob_temperature())
    }
}

impl<B: HotPathBackend> Policy for LmPolicy<B> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn act(&mut self, inputs: &[TurnInput]) -> atod_core::Result<Vec<PolicyResponse>> {
        let prompts: Vec<Vec<u32>> = inputs.iter().map(|input| self.encode(input)).collect();
        self.generate_ids(&prompts).map_err(|err| atod_core::Error::Policy(err.to_string()))
    }
}
