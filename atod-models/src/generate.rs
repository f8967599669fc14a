//! Batched, KV-cached sampling and batched scoring.
//!
//! Generation prefills a left-padded batch of prompts of different lengths, then decodes one token per live row
//! per step with the KV cache; rows that stop (end of turn, or the token budget) leave the batch. Sampling runs on
//! the host from each row's own random stream (so a row's sample does not depend on what else is in the batch),
//! with temperature, top-k and top-p; the behaviour log-prob of every sampled token comes from the hot path
//! ([`crate::hotpath`]) under the temperature-scaled distribution, the same function scoring uses, so the two
//! agree.
//!
//! Scoring lays (prompt, response) pairs out right-padded, runs one forward pass, keeps only the hidden states
//! that predict response tokens, and applies the head and the hot path there: per-token log-probs and entropies.
//! [`response_stats`] is the tensor-level form the trainer differentiates through.

use atod_core::rng::SplitMix64;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hotpath::{token_logprobs, HotPathBackend, TokenStats};
use crate::model::{KvCache, Layout, Transformer};

/// How to sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy decoding (log-probs are then reported at temperature 1).
    #[serde(default = "one")]
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
    #[serde(default = "one")]
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    #[serde(default)]
    pub top_k: usize,
    /// The token budget of one response.
    #[serde(default = "default_max_new_tokens")]
    pub max_new_tokens: usize,
}

fn one() -> f32 {
    1.0
}
fn default_max_new_tokens() -> usize {
    64
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 1.0, top_p: 1.0, top_k: 0, max_new_tokens: default_max_new_tokens() }
    }
}

impl SamplingParams {
    /// Greedy decoding with the given budget.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self { temperature: 0.0, max_new_tokens, ..Self::default() }
    }

    /// The temperature log-probs are reported at (1 for greedy decoding).
    pub fn logprob_temperature(&self) -> f32 {
        if self.temperature > 0.0 {
            self.temperature
        } else {
            1.0
        }
    }

    fn validate(&self) -> Result<()> {
        let ok = self.temperature >= 0.0
            && self.temperature.is_finite()
            && self.top_p > 0.0
            && self.top_p <= 1.0
            && self.max_new_tokens > 0;
        if ok {
            Ok(())
        } else {
            Err(Error::BadInput {
                what: format!(
                    "invalid sampling parameters {self:?}: need temperature >= 0, 0 < top_p <= 1, max_new_tokens > 0"
                ),
            })
        }
    }
}

/// One generated response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Generation {
    /// The sampled ids, the stop token included when the row stopped on one.
    pub ids: Vec<u32>,
    /// The behaviour log-prob of each sampled id.
    pub logprobs: Vec<f32>,
    /// Whether the row ended on a stop token (rather than the budget).
    pub stopped: bool,
}

/// Samples one response per prompt. `seeds[i]` seeds row i's random stream; `stop` are the end-of-turn ids.
pub fn generate<B: HotPathBackend>(
    model: &Transformer<B>,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    stop: &[u32],
    seeds: &[u64],
) -> Result<Vec<Generation>> {
    params.validate()?;
    if prompts.len() != seeds.len() {
        return Err(Error::BadInput { what: format!("{} prompts but {} seeds", prompts.len(), seeds.len()) });
    }
    if let Some(i) = prompts.iter().position(Vec::is_empty) {
        return Err(Error::BadInput { what: format!("prompt {i} is empty") });
    }
    let out = vec![Generation::default(); prompts.len()];
    if prompts.is_empty() {
        return Ok(out);
    }
    let vocab = model.vocab_size();
    check_ids(prompts.iter().flatten(), vocab)?;
    if let Some(out) = B::fused_generate(model, prompts, params, stop, seeds) {
        return Ok(out);
    }
    reference_generate(model, prompts, params, stop, seeds)
}

/// [`generate`] through the reference composition of burn ops (`Transformer::forward_cached`), whatever the
/// backend: what the fused CPU path is tested against. Inputs are not checked here.
pub fn reference_generate<B: HotPathBackend>(
    model: &Transformer<B>,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    stop: &[u32],
    seeds: &[u64],
) -> Result<Vec<Generation>> {
    let mut out = vec![Generation::default(); prompts.len()];
    if prompts.is_empty() {
        return Ok(out);
    }
    let vocab = model.vocab_size();
    let device = model.device();
    let mut rngs: Vec<SplitMix64> = seeds.iter().map(|&s| SplitMix64::new(s)).collect();
    let temperature = params.logprob_temperature();

    // Prefill, left-padded so that every row's last prompt token is in the last column.
    let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let width = lengths.iter().copied().max().unwrap_or(0);
    let ids: Vec<i32> = prompts
        .iter()
        .flat_map(|p| std::iter::repeat_n(0, width - p.len()).chain(p.iter().map(|&t| t as i32)))
        .collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [prompts.len(), width]), &device);
    let mut cache = KvCache::new(model.num_layers());
    let mut logits = model.forward_cached(ids, &lengths, &mut cache);
    // `live[j]` is the output row of batch row j.
    let mut live: Vec<usize> = (0..prompts.len()).collect();

    for step in 0..params.max_new_tokens {
        let host: Vec<f32> = logits.clone().into_data().convert::<f32>().to_vec().map_err(data_err)?;
        let chosen: Vec<u32> = live
            .iter()
            .enumerate()
            .map(|(j, &row)| sample_row(&host[j * vocab..(j + 1) * vocab], params, &mut rngs[row]))
            .collect();
        let targets = Tensor::<B, 1, Int>::from_data(
            TensorData::new(chosen.iter().map(|&t| t as i32).collect::<Vec<_>>(), [chosen.len()]),
            &device,
        );
        let stats = B::token_stats(logits / temperature, targets);
        let logps: Vec<f32> = stats.logp.into_data().convert::<f32>().to_vec().map_err(data_err)?;

        let mut keep = Vec::with_capacity(live.len());
        for (j, &row) in live.iter().enumerate() {
            out[row].ids.push(chosen[j]);
            out[row].logprobs.push(logps[j]);
            if stop.contains(&chosen[j]) {
                out[row].stopped = true;
            } else {
                keep.push(j);
            }
        }
        if keep.is_empty() || step + 1 == params.max_new_tokens {
            break;
        }
        if keep.len() != live.len() {
            cache.retain_rows(&keep, &device);
            live = keep.iter().map(|&j| live[j]).collect();
        }
        let next: Vec<i32> = live.iter().map(|&row| *out[row].ids.last().expect("sampled") as i32).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(next, [live.len(), 1]), &device);
        logits = model.forward_cached(ids, &vec![1; live.len()], &mut cache);
    }
    Ok(out)
}

fn data_err(err: impl std::fmt::Debug) -> Error {
    Error::BadInput { what: format!("tensor data: {err:?}") }
}

fn check_ids<'a>(ids: impl Iterator<Item = &'a u32>, vocab: usize) -> Result<()> {
    for &id in ids {
        if id as usize >= vocab {
            return Err(Error::BadInput {
                what: format!("token id {id} is outside the model's vocabulary of {vocab}"),
            });
        }
    }
    Ok(())
}

/// Picks one token from a row of logits: argmax at temperature 0, else a draw from the temperature-scaled,
/// top-k- and top-p-truncated distribution. Ties in argmax go to the lowest id.
pub(crate) fn sample_row(logits: &[f32], params: &SamplingParams, rng: &mut SplitMix64) -> u32 {
    sample_row_with(logits, params, rng, &mut Vec::new())
}

/// [`sample_row`] with the caller's buffer for the distribution, so that a decoding loop allocates nothing per
/// token.
pub(crate) fn sample_row_with(
    logits: &[f32],
    params: &SamplingParams,
    rng: &mut SplitMix64,
    probs: &mut Vec<(u32, f64)>,
) -> u32 {
    if params.temperature == 0.0 {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let t = f64::from(params.temperature);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    probs.clear();
    probs.extend(logits.iter().enumerate().map(|(i, &x)| (i as u32, ((x as f64 - max) / t).exp())));
    let truncate = params.top_k > 0 && params.top_k < probs.len() || params.top_p < 1.0;
    if truncate {
        // Descending probability, ties by id, so truncation is deterministic.
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if params.top_k > 0 {
            probs.truncate(params.top_k);
        }
        if params.top_p < 1.0 {
            let total: f64 = probs.iter().map(|p| p.1).sum();
            let mut cumulative = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cumulative += p.1 / total;
                if cumulative >= f64::from(params.top_p) {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut draw = rng.unit() * total;
    for &(id, p) in probs.iter() {
        draw -= p;
        if draw < 0.0 {
            return id;
        }
    }
    probs.last().map_or(0, |p| p.0)
}

/// Per-token statistics of responses under prompts, as tensors (with gradient when `B` is an autodiff backend).
#[derive(Debug, Clone)]
pub struct ResponseStats<B: HotPathBackend> {
    /// `[rows, max_response_len]` log-probs of the response tokens; 0 at padding.
    pub logp: Tensor<B, 2>,
    /// `[rows, max_response_len]` entropies of the predicting distributions; 0 at padding.
    pub entropy: Tensor<B, 2>,
    /// `[rows, max_response_len]`: 1 for real response tokens, 0 for padding.
    pub mask: Tensor<B, 2>,
}

/// Runs `(prompt, response)` pairs through the model in one right-padded batch and returns the statistics of
/// the response tokens at `temperature` (the distribution is `softmax(logits / temperature)`).
///
/// # Shapes
/// - output: `[pairs.len(), max response length]` each
pub fn response_stats<B: HotPathBackend>(
    model: &Transformer<B>,
    pairs: &[(&[u32], &[u32])],
    temperature: f32,
) -> Result<ResponseStats<B>> {
    let rows = response_rows(pairs)?;
    let rows: Vec<(&[u32], &[bool])> = rows.iter().map(|(ids, mask)| (&ids[..], &mask[..])).collect();
    sequence_stats(model, &rows, temperature)
}

/// Statistics of chosen tokens of whole sequences: `targets[b][t]` says whether token t of row b is a target
/// (predicted from the tokens before it; token 0 never is). This is SFT's form of [`response_stats`]: the
/// loss mask of a chat transcript picks the assistant tokens wherever they are.
///
/// # Shapes
/// - output: `[rows.len(), max number of targets in a row]` each
pub fn sequence_stats<B: HotPathBackend>(
    model: &Transformer<B>,
    rows: &[(&[u32], &[bool])],
    temperature: f32,
) -> Result<ResponseStats<B>> {
    check_rows(model, rows, temperature)?;
    if let Some(stats) = B::fused_sequence_stats(model, rows, temperature) {
        return Ok(stats);
    }
    reference_sequence_stats(model, rows, temperature)
}

/// [`sequence_stats`] through the reference composition of burn ops (`Transformer::forward_hidden`, the head
/// and the hot path), whatever the backend: what the fused CPU path is tested against.
pub fn reference_sequence_stats<B: HotPathBackend>(
    model: &Transformer<B>,
    rows: &[(&[u32], &[bool])],
    temperature: f32,
) -> Result<ResponseStats<B>> {
    let (logits, targets, mask) = target_logits(model, rows, temperature)?;
    let TokenStats { logp, entropy } = token_logprobs(logits, targets);
    Ok(ResponseStats { logp: logp * mask.clone(), entropy: entropy * mask.clone(), mask })
}

/// The checks of every scoring entry point: ids and masks of equal length, a positive temperature, ids inside
/// the vocabulary.
fn check_rows<B: HotPathBackend>(model: &Transformer<B>, rows: &[(&[u32], &[bool])], temperature: f32) -> Result<()> {
    if let Some(i) = rows.iter().position(|(ids, mask)| ids.len() != mask.len()) {
        return Err(Error::BadInput { what: format!("row {i}: ids and target mask differ in length") });
    }
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::BadInput { what: format!("scoring temperature must be positive, got {temperature}") });
    }
    check_ids(rows.iter().flat_map(|(ids, _)| ids.iter()), model.vocab_size())
}

/// [`response_stats`] together with the whole distribution at every response position: the log-softmax of
/// `logits / temperature` over the vocabulary (GKD's input), with gradient when `B` is an autodiff backend.
/// Rows and positions are those of [`response_stats`]; padded positions hold the distribution after the row's
/// first token, which a loss must mask.
///
/// # Shapes
/// - output: the stats `[pairs.len(), T]` each, the log-probs `[pairs.len(), T, vocab]`
pub fn response_vocab_stats<B: HotPathBackend>(
    model: &Transformer<B>,
    pairs: &[(&[u32], &[u32])],
    temperature: f32,
) -> Result<(ResponseStats<B>, Tensor<B, 3>)> {
    let rows = response_rows(pairs)?;
    let rows: Vec<(&[u32], &[bool])> = rows.iter().map(|(ids, mask)| (&ids[..], &mask[..])).collect();
    let (logits, targets, mask) = target_logits(model, &rows, temperature)?;
    let vocab = burn::tensor::activation::log_softmax(logits.clone(), 2);
    let TokenStats { logp, entropy } = token_logprobs(logits, targets);
    Ok((ResponseStats { logp: logp * mask.clone(), entropy: entropy * mask.clone(), mask }, vocab))
}

/// The rows of `(prompt, response)` pairs as whole sequences with the response tokens as targets.
fn response_rows(pairs: &[(&[u32], &[u32])]) -> Result<Vec<(Vec<u32>, Vec<bool>)>> {
    if let Some(i) = pairs.iter().position(|(p, _)| p.is_empty()) {
        return Err(Error::BadInput { what: format!("pair {i} has an empty prompt") });
    }
    Ok(pairs
        .iter()
        .map(|(prompt, response)| {
            let ids = prompt.iter().chain(response.iter()).copied().collect();
            let mask =
                std::iter::repeat_n(false, prompt.len()).chain(std::iter::repeat_n(true, response.len())).collect();
            (ids, mask)
        })
        .collect())
}

/// One right-padded forward of `rows`, the head applied only where a target is predicted: the logits at
/// `temperature`, the target ids and the mask of real targets.
///
/// # Shapes
/// - output: `[n, span, vocab]`, `[n, span]`, `[n, span]` with `span` the most targets in a row (at least 1)
#[allow(clippy::type_complexity)]
fn target_logits<B: HotPathBackend>(
    model: &Transformer<B>,
    rows: &[(&[u32], &[bool])],
    temperature: f32,
) -> Result<(Tensor<B, 3>, Tensor<B, 2, Int>, Tensor<B, 2>)> {
    check_rows(model, rows, temperature)?;
    let device = model.device();
    let n = rows.len();
    let lengths: Vec<usize> = rows.iter().map(|(ids, _)| ids.len()).collect();
    let layout = Layout::right_padded(&lengths);
    let width = layout.width();
    let positions: Vec<Vec<usize>> =
        rows.iter().map(|(_, mask)| (1..mask.len()).filter(|&t| mask[t]).collect()).collect();
    let span = positions.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(n * width);
    let (mut gather, mut targets, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for (b, ((row, _), pos)) in rows.iter().zip(&positions).enumerate() {
        ids.extend(row.iter().map(|&t| t as i32));
        ids.extend(std::iter::repeat_n(0, width - row.len()));
        for j in 0..span {
            let real = j < pos.len();
            gather.push((b * width + if real { pos[j] - 1 } else { 0 }) as i32);
            targets.push(if real { row[pos[j]] as i32 } else { 0 });
            mask.push(if real { 1.0f32 } else { 0.0 });
        }
    }
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, width]), &device);
    let hidden = model.forward_hidden(ids, &layout);
    let d = hidden.dims()[2];
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(gather, [n * span]), &device);
    let picked = hidden.reshape([n * width, d]).select(0, index).reshape([n, span, d]);
    let logits = model.head(picked);
    let logits = if temperature == 1.0 { logits } else { logits / temperature };
    let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [n, span]), &device);
    let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [n, span]), &device);
    Ok((logits, targets, mask))
}

/// Per-token log-probs and entropies of one response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scored {
    /// Log-prob of each response token.
    pub logprobs: Vec<f32>,
    /// Entropy of the distribution that predicted each response token.
    pub entropies: Vec<f32>,
}

/// Scores `(prompt, response)` pairs in mini-batches of `batch_size` rows; host-side results.
pub fn score<B: HotPathBackend>(
    model: &Transformer<B>,
    pairs: &[(&[u32], &[u32])],
    temperature: f32,
    batch_size: usize,
) -> Result<Vec<Scored>> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size.max(1)) {
        let stats = response_stats(model, chunk, temperature)?;
        let span = stats.logp.dims()[1];
        let logp: Vec<f32> = stats.logp.into_data().convert::<f32>().to_vec().map_err(data_err)?;
        let entropy: Vec<f32> = stats.entropy.into_data().convert::<f32>().to_vec().map_err(data_err)?;
        for (b, (_, response)) in chunk.iter().enumerate() {
            let row = b * span..b * span + response.len();
            out.push(Scored { logprobs: logp[row.clone()].to_vec(), entropies: entropy[row].to_vec() });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_respects_top_k_and_top_p() {
        let logits = [0.0f32, 3.0, 2.9, -1.0, 2.8];
        let mut rng = SplitMix64::new(7);
        let top1 = SamplingParams { top_k: 1, ..SamplingParams::default() };
        assert!((0..50).all(|_| sample_row(&logits, &top1, &mut rng) == 1));
        let top2 = SamplingParams { top_k: 2, ..SamplingParams::default() };
        assert!((0..200).all(|_| matches!(sample_row(&logits, &top2, &mut rng), 1 | 2)));
        let nucleus = SamplingParams { top_p: 0.5, ..SamplingParams::default() };
        // p(1) ~ 0.36, p(2) ~ 0.33: the nucleus of mass 0.5 is {1, 2}.
        assert!((0..200).all(|_| matches!(sample_row(&logits, &nucleus, &mut rng), 1 | 2)));
        let greedy = SamplingParams::greedy(4);
        assert_eq!(sample_row(&logits, &greedy, &mut rng), 1);
        let full = SamplingParams::default();
        let mut seen = [0usize; 5];
        for _ in 0..4000 {
            seen[sample_row(&logits, &full, &mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    }
}
