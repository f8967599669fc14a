//! The fused CPU path: the whole transformer as one operation on the host, for flex and for `Autodiff<flex>`.
//!
//! burn-flex 0.21 runs the model of `model.rs` as some thirty separate operations a block, each allocating its
//! output, several of them strided copies (the head split and merge around attention, the repeat of grouped
//! K/V heads), with attention materialising its scores and mask; on the small models atod trains, that
//! composition, not arithmetic, was most of the time (benches/README.md has the profile). Here the forward is
//! [`engine::ModelIx::forward`] over packed rows (no padding), written with the kernels of [`kernels`] and
//! [`attention`], and its backward is hand-written ([`engine::ModelIx::backward`]).
//!
//! Under autodiff the whole forward is one node of burn's graph: the parameters are concatenated into one flat
//! tensor (whose `cat` backward hands each parameter its slice of the gradient), the node's output is the
//! `[rows * span, 2]` statistics (log-prob, entropy) the losses read, and its backward is [`ModelBackward`]. So
//! burn still owns the optimiser, the losses and every gradient outside the model, and the reference composition
//! of `model.rs` stays what CUDA runs and what the tests compare this path with.
//!
//! Generation on flex uses [`engine::Decoder`]: a KV cache allocated once for the whole batch and packed
//! prefill.

pub mod attention;
pub mod engine;
pub mod fixed;
pub mod isa;
pub mod kernels;
pub mod small;

use std::ops::Range;
use std::sync::Arc;

use atod_core::rng::SplitMix64;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::nn::{Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::FlexTensor;

use crate::backend::CpuBackend;
use crate::generate::{sample_row_with, Generation, ResponseStats, SamplingParams};
use crate::model::Transformer;
use attention::Heads;
use engine::{Decoder, LayerIx, Lin, ModelIx, Packed, Tape, Targets};

/// The parameters of `model` as 1-D tensors, in the order the returned layout gives their ranges.
pub(crate) fn flatten<B: Backend>(model: &Transformer<B>) -> (ModelIx, Vec<Tensor<B, 1>>) {
    let mut flat = Flat { list: Vec::new(), at: 0 };
    let [vocab, d] = model.embed_tokens.weight.dims();
    let embed = flat.push(model.embed_tokens.weight.val().reshape([vocab * d]));
    let layers = model
        .layers
        .iter()
        .map(|layer| {
            let (a, m) = (&layer.self_attn, &layer.mlp);
            LayerIx {
                q: flat.linear(&a.q_proj),
                k: flat.linear(&a.k_proj),
                v: flat.linear(&a.v_proj),
                o: flat.linear(&a.o_proj),
                gate: flat.linear(&m.gate_proj),
                up: flat.linear(&m.up_proj),
                down: flat.linear(&m.down_proj),
                ln1: flat.norm(&layer.input_layernorm),
                ln2: flat.norm(&layer.post_attention_layernorm),
                q_norm: a.q_norm.as_ref().map(|n| flat.norm(n)),
                k_norm: a.k_norm.as_ref().map(|n| flat.norm(n)),
            }
        })
        .collect();
    let norm = flat.norm(&model.norm);
    let head = model.lm_head.as_ref().map(|h| flat.linear(h));
    let (heads, kv_heads) = model.head_counts();
    let ix = ModelIx {
        vocab,
        d,
        embed,
        layers,
        norm,
        head,
        heads: Heads { heads, kv_heads, head_dim: model.head_dim() },
        theta: model.rope_theta(),
        len: flat.at,
    };
    (ix, flat.list)
}

/// The list [`flatten`] builds.
struct Flat<B: Backend> {
    list: Vec<Tensor<B, 1>>,
    at: usize,
}

impl<B: Backend> Flat<B> {
    fn push(&mut self, t: Tensor<B, 1>) -> Range<usize> {
        let n = t.dims()[0];
        self.list.push(t);
        self.at += n;
        self.at - n..self.at
    }

    fn linear(&mut self, l: &Linear<B>) -> Lin {
        let [d_in, d_out] = l.weight.dims();
        let w = self.push(l.weight.val().reshape([d_in * d_out]));
        let b = l.bias.as_ref().map(|b| self.push(b.val()));
        Lin { w, b, d_in, d_out }
    }

    fn norm(&mut self, n: &RmsNorm<B>) -> (Range<usize>, f32) {
        (self.push(n.gamma.val()), n.epsilon as f32)
    }
}

/// A flex tensor's f32 values, copied only when it is not contiguous already.
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

fn flex_tensor(values: Vec<f32>, shape: [usize; 2]) -> FlexTensor {
    Tensor::<CpuBackend, 2>::from_data(TensorData::new(values, shape), &Default::default()).into_primitive().tensor()
}

/// The host parameters of an inference model: one flat copy.
fn host_params(model: &Transformer<CpuBackend>) -> (ModelIx, FlexTensor) {
    let (ix, list) = flatten(model);
    (ix, contiguous(Tensor::cat(list, 0).into_primitive().tensor()))
}

/// Batches of at least this many tokens are computed in [`GROUPS`] groups of rows side by side.
const GROUP_MIN_TOKENS: usize = 1024;
/// The number of row groups of a large batch: fixed rather than the thread count, so that the gradient (each
/// group's summed in group order) does not depend on the machine.
const GROUPS: usize = 2;

/// A contiguous group of rows, packed, with its targets and each target's slot in the `[rows, span]` output.
#[derive(Debug, Clone)]
struct Part {
    packed: Packed,
    targets: Targets,
    slots: Vec<usize>,
}

/// Rows with target masks, in groups computed side by side (each a forward of its own, on its own thread).
struct Plan {
    parts: Vec<Part>,
    rows: usize,
    span: usize,
    mask: Vec<f32>,
}

impl Plan {
    /// `rows[b].1[t]` marks token t of row b as a target, predicted by token t - 1 (token 0 never is one).
    fn new(rows: &[(&[u32], &[bool])]) -> Self {
        let positions: Vec<Vec<usize>> =
            rows.iter().map(|(_, mask)| (1..mask.len()).filter(|&t| mask[t]).collect()).collect();
        let span = positions.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut mask = vec![0f32; rows.len() * span];
        // Cut where the first group holds about half the tokens.
        let total: usize = rows.iter().map(|(ids, _)| ids.len()).sum();
        let mut bounds = vec![0];
        if total >= GROUP_MIN_TOKENS && rows.len() >= GROUPS {
            let mut seen = 0;
            for (b, (ids, _)) in rows.iter().enumerate() {
                seen += ids.len();
                if seen * GROUPS >= total * bounds.len() && b + 1 < rows.len() && bounds.len() < GROUPS {
                    bounds.push(b + 1);
                }
            }
        }
        bounds.push(rows.len());
        let parts = bounds
            .windows(2)
            .map(|w| {
                let ids: Vec<&[u32]> = rows[w[0]..w[1]].iter().map(|(ids, _)| *ids).collect();
                let packed = Packed::rows(&ids);
                let (mut targets, mut slots) = (Targets::default(), Vec::new());
                for b in w[0]..w[1] {
                    for (j, &t) in positions[b].iter().enumerate() {
                        targets.from.push(packed.index(b - w[0], t - 1));
                        targets.ids.push(rows[b].0[t]);
                        slots.push(b * span + j);
                        mask[b * span + j] = 1.0;
                    }
                }
                Part { packed, targets, slots }
            })
            .collect();
        Self { parts, rows: rows.len(), span, mask }
    }

    /// Each group's forward, side by side: its statistics `[targets, 2]` and, with `keep`, its tape.
    fn forward(&self, ix: &ModelIx, p: &[f32], temperature: f32, keep: bool) -> Vec<(Vec<f32>, Option<Tape>)> {
        use rayon::prelude::*;
        self.parts.par_iter().map(|part| ix.forward(p, &part.packed, &part.targets, temperature, keep)).collect()
    }

    /// The groups' statistics laid out as `[rows * span, 2]`, zero at padding.
    fn scatter(&self, stats: &[(Vec<f32>, Option<Tape>)]) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.span * 2];
        for (part, (stats, _)) in self.parts.iter().zip(stats) {
            for (m, &slot) in part.slots.iter().enumerate() {
                out[2 * slot..2 * slot + 2].copy_from_slice(&stats[2 * m..2 * m + 2]);
            }
        }
        out
    }

    fn response_stats<B: crate::HotPathBackend>(&self, stats: Tensor<B, 2>) -> ResponseStats<B> {
        let (n, span) = (self.rows, self.span);
        let stats = stats.reshape([n, span, 2]);
        let device = stats.device();
        ResponseStats {
            logp: stats.clone().slice([0..n, 0..span, 0..1]).reshape([n, span]),
            entropy: stats.slice([0..n, 0..span, 1..2]).reshape([n, span]),
            mask: Tensor::from_data(TensorData::new(self.mask.clone(), [n, span]), &device),
        }
    }
}

/// `sequence_stats` on flex: one host forward, no graph.
pub(crate) fn sequence_stats_flex(
    model: &Transformer<CpuBackend>,
    rows: &[(&[u32], &[bool])],
    temperature: f32,
) -> ResponseStats<CpuBackend> {
    let (ix, params) = host_params(model);
    let plan = Plan::new(rows);
    let stats = plan.forward(&ix, values(&params), temperature, false);
    let out = flex_tensor(plan.scatter(&stats), [plan.rows * plan.span, 2]);
    plan.response_stats(Tensor::from_primitive(TensorPrimitive::Float(out)))
}

/// `sequence_stats` on `Autodiff<flex>`: the host forward as one node of the graph, with [`ModelBackward`].
pub(crate) fn sequence_stats_autodiff<C: CheckpointStrategy>(
    model: &Transformer<Autodiff<CpuBackend, C>>,
    rows: &[(&[u32], &[bool])],
    temperature: f32,
) -> ResponseStats<Autodiff<CpuBackend, C>> {
    let (ix, list) = flatten(model);
    let flat = Tensor::cat(list, 0).into_primitive().tensor();
    let params = contiguous(flat.primitive.clone());
    let plan = Plan::new(rows);
    let shape = [plan.rows * plan.span, 2];
    let output = match ModelBackward.prepare::<C>([flat.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let results = plan.forward(&ix, values(&params), temperature, true);
            let out = flex_tensor(plan.scatter(&results), shape);
            let tapes = results.into_iter().map(|(_, tape)| tape.expect("kept")).collect();
            prep.finish(Arc::new(Saved { ix, params, parts: plan.parts.clone(), tapes }), out)
        }
        OpsKind::UnTracked(prep) => {
            let results = plan.forward(&ix, values(&params), temperature, false);
            prep.finish(flex_tensor(plan.scatter(&results), shape))
        }
    };
    plan.response_stats(Tensor::from_primitive(TensorPrimitive::Float(output)))
}

/// What the backward of one forward needs.
#[derive(Clone)]
struct Saved {
    ix: ModelIx,
    params: FlexTensor,
    parts: Vec<Part>,
    tapes: Vec<Tape>,
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved").field("params", &self.ix.len).field("tapes", &self.tapes).finish()
    }
}

/// The backward node of the fused model: from the gradient of the `[rows * span, 2]` statistics to the gradient
/// of the flat parameters (each row group's backward side by side, their gradients added in group order).
#[derive(Debug)]
struct ModelBackward;

impl Backward<CpuBackend, 1> for ModelBackward {
    type State = Arc<Saved>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        use rayon::prelude::*;
        let saved = Arc::try_unwrap(ops.state).unwrap_or_else(|shared| (*shared).clone());
        unary::<CpuBackend, _>(ops.parents, ops.node, grads, |grad: FlexTensor| {
            let grad = contiguous(grad);
            let grad = values(&grad);
            let Saved { ix, params, parts, tapes } = saved;
            let p = values(&params);
            let mut sums = parts
                .into_par_iter()
                .zip(tapes)
                .map(|(part, tape)| {
                    let per_target: Vec<f32> =
                        part.slots.iter().flat_map(|&s| [grad[2 * s], grad[2 * s + 1]]).collect();
                    ix.backward(p, &part.packed, &part.targets, tape, &per_target)
                })
                .collect::<Vec<_>>()
                .into_iter();
            let mut g = sums.next().unwrap_or_else(|| vec![0f32; ix.len]);
            for other in sums {
                g.iter_mut().zip(&other).for_each(|(a, b)| *a += b);
            }
            Tensor::<CpuBackend, 1>::from_data(TensorData::new(g, [ix.len]), &Default::default())
                .into_primitive()
                .tensor()
        });
    }
}

/// `generate` on flex: the rows split into [`GROUPS`] contiguous groups, each decoded on its own thread without
/// further synchronisation (packed prefill, then one step per token for the rows still going, with the KV cache
/// allocated once). The grouping is fixed, so the result does not depend on the number of threads; a row's
/// result depends on the rest of its batch only through float rounding (the products' blocking). Sampling is
/// `generate`'s own, from each row's stream.
pub(crate) fn generate_flex(
    model: &Transformer<CpuBackend>,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    stop: &[u32],
    seeds: &[u64],
) -> Vec<Generation> {
    use rayon::prelude::*;
    let (ix, flat) = host_params(model);
    let p = values(&flat);
    // Fixed rather than the thread count (as the row groups of a forward), so that no bit depends on the cores.
    let groups = GROUPS.clamp(1, prompts.len().max(1));
    let size = prompts.len().div_ceil(groups).max(1);
    if groups == 1 {
        return decode_rows(&ix, p, prompts, params, stop, seeds, true);
    }
    let parts: Vec<Vec<Generation>> = prompts
        .par_chunks(size)
        .zip(seeds.par_chunks(size))
        .map(|(prompts, seeds)| decode_rows(&ix, p, prompts, params, stop, seeds, false))
        .collect();
    parts.into_iter().flatten().collect()
}

/// One group of rows of [`generate_flex`].
fn decode_rows(
    ix: &ModelIx,
    p: &[f32],
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    stop: &[u32],
    seeds: &[u64],
    parallel: bool,
) -> Vec<Generation> {
    let vocab = ix.vocab;
    let reserved = || Generation {
        ids: Vec::with_capacity(params.max_new_tokens),
        logprobs: Vec::with_capacity(params.max_new_tokens),
        stopped: false,
    };
    let mut out: Vec<Generation> = prompts.iter().map(|_| reserved()).collect();
    let mut rngs: Vec<SplitMix64> = seeds.iter().map(|&s| SplitMix64::new(s)).collect();
    let temperature = params.logprob_temperature();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut decoder = Decoder::new(ix, p, prompts.len(), longest + params.max_new_tokens, parallel);
    let views: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    decoder.prefill(&views);
    let mut live: Vec<usize> = (0..prompts.len()).collect();
    let mut still: Vec<usize> = Vec::with_capacity(live.len());
    let mut next: Vec<u32> = Vec::with_capacity(live.len());
    let (mut scaled, mut scratch) = (vec![0f32; vocab], Vec::with_capacity(vocab));
    let mut probs = Vec::with_capacity(vocab);
    for step in 0..params.max_new_tokens {
        next.clear();
        still.clear();
        for (j, &row) in live.iter().enumerate() {
            let logits = &decoder.logits[j * vocab..(j + 1) * vocab];
            let chosen = sample_row_with(logits, params, &mut rngs[row], &mut probs);
            scaled.iter_mut().zip(logits).for_each(|(s, x)| *s = x / temperature);
            let lse = kernels::log_sum_exp(&scaled, &mut scratch);
            out[row].ids.push(chosen);
            out[row].logprobs.push(scaled[chosen as usize] - lse);
            if stop.contains(&chosen) {
                out[row].stopped = true;
            } else {
                still.push(row);
                next.push(chosen);
            }
        }
        std::mem::swap(&mut live, &mut still);
        if live.is_empty() || step + 1 == params.max_new_tokens {
            break;
        }
        decoder.step(&live, &next);
    }
    out
}

#[cfg(test)]
mod tests;
