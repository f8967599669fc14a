//! A Qwen2/Qwen3/Llama-style decoder-only transformer.
//!
//! The architecture is Qwen2's (Qwen2 Technical Report, arXiv 2407.10671) and Llama's (arXiv 2302.13971): token
//! embeddings, `L` pre-norm blocks of grouped-query self-attention with rotary positions (RoFormer, arXiv
//! 2104.09864, in the "rotate half" layout of Hugging Face's `modeling_qwen2.py`) and a SwiGLU MLP, a final
//! RMSNorm and a language-model head that may share the embedding matrix. Qwen2 puts biases on the q/k/v
//! projections and Llama (by default) does not; everything else is the same, so one model serves both.
//!
//! Qwen3 (Qwen3 Technical Report, arXiv 2505.09388; `modular_qwen3.py` in transformers) is Llama's attention
//! with two additions: a per-head RMSNorm on queries and keys (`q_norm`, `k_norm`, weights of width `head_dim`),
//! applied after the projections are split into heads and before the rotary positions, so the KV cache holds
//! normed keys; and a `head_dim` of its own, not necessarily `hidden_size / num_attention_heads` (Qwen3-0.6B: d
//! 1024, 16 heads of 128). Like Llama, its q/k/v *and* o projections carry biases exactly when `attention_bias`
//! says so (default false); Qwen2's o projection never has one.
//!
//! The config mirrors Hugging Face's `config.json`, so real checkpoints load (see `checkpoint.rs`). Parameter
//! names follow the checkpoint's tensor names. The KV cache is a separate struct ([`KvCache`]); positions and
//! masks are passed explicitly, so one forward serves training (right-padded batches), prefill (left-padded
//! prompts) and cached decoding.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Initializer, Linear, LinearConfig, RmsNorm};
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use atod_core::Registry;

use crate::error::{Error, Result};

/// The architecture family, as Hugging Face's `model_type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    /// Qwen2: biases on q/k/v.
    #[default]
    Qwen2,
    /// Llama: no attention biases unless `attention_bias` says so.
    Llama,
    /// Qwen3: per-head RMSNorm on queries and keys, its own `head_dim`, biases as `attention_bias` says.
    Qwen3,
}

/// The model's hyperparameters, field for field as in a Hugging Face `config.json` (Qwen2, Qwen3 or Llama).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    /// `qwen2`, `qwen3` or `llama`.
    pub model_type: ModelType,
    /// Vocabulary size (rows of the embedding and of the head).
    pub vocab_size: usize,
    /// Width of the residual stream, `d`.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP's hidden layer.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Number of query heads; `hidden_size` must be a multiple of it unless `head_dim` is given.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); divides `num_attention_heads`.
    pub num_key_value_heads: usize,
    /// The longest sequence the rotary table is meant for (informational: rotary positions extrapolate).
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Rotary base `theta`.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// Whether the head reuses the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on the q/k/v projections (and, for Llama and Qwen3, on o); Qwen2 always has them on q/k/v, so
    /// `None` means "the family's default".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    /// The width of one attention head; `None` (every Qwen2 config, most Llama ones) means
    /// `hidden_size / num_attention_heads`. Qwen3 configs give it explicitly. Left out of the serialised config
    /// when `None`, so configs without it read and write exactly as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// The activation; only `silu` (SwiGLU) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_max_positions() -> usize {
    4096
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_rms_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "silu".to_owned()
}

/// A preset's constructor: the config at a given vocabulary size.
pub type PresetFn = fn(usize) -> TransformerConfig;

/// The one declaration of the named presets, smallest first: [`presets`], [`PRESETS`] and
/// [`TransformerConfig::preset`] all follow from it.
const PRESET_TABLE: [(&str, PresetFn); 8] = [
    ("student-s", TransformerConfig::student_s),
    ("student-m", TransformerConfig::student_m),
    ("student-ml", TransformerConfig::student_ml),
    ("student-l2", TransformerConfig::student_l2),
    ("student-l3", TransformerConfig::student_l3),
    ("student-l", TransformerConfig::student_l),
    ("teacher", TransformerConfig::teacher),
    ("probe", TransformerConfig::probe),
];

/// The names of the presets, smallest first.
pub const PRESETS: &[&str] = &preset_names(&PRESET_TABLE);

const fn preset_names<const N: usize>(table: &[(&'static str, PresetFn); N]) -> [&'static str; N] {
    let mut names = [""; N];
    let mut i = 0;
    while i < N {
        names[i] = table[i].0;
        i += 1;
    }
    names
}

/// The presets by name, smallest first; a miss lists the known names.
pub fn presets() -> Registry<PresetFn> {
    Registry::from_entries("model preset", PRESET_TABLE).expect("the preset names are distinct")
}

impl TransformerConfig {
    /// A Qwen2-style config of the given shape with the defaults of this crate (tied embeddings, theta 10000).
    pub fn qwen2(vocab_size: usize, hidden: usize, layers: usize, heads: usize, kv_heads: usize, mlp: usize) -> Self {
        Self {
            model_type: ModelType::Qwen2,
            vocab_size,
            hidden_size: hidden,
            intermediate_size: mlp,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            max_position_embeddings: default_max_positions(),
            rope_theta: default_rope_theta(),
            rms_norm_eps: default_rms_eps(),
            tie_word_embeddings: true,
            attention_bias: None,
            head_dim: None,
            hidden_act: default_act(),
        }
    }

    /// About 0.1M parameters at a 512-token vocabulary: d 64, 2 layers, 4 heads (2 KV).
    pub fn student_s(vocab_size: usize) -> Self {
        Self::qwen2(vocab_size, 64, 2, 4, 2, 176)
    }

    /// About 0.4M parameters at a 512-token vocabulary: d 128, 2 layers, 4 heads (2 KV).
    pub fn student_m(vocab_size: usize) -> Self {
        Self::qwen2(vocab_size, 128, 2, 4, 2, 344)
    }

    /// About 0.8M parameters at a 512-token vocabulary: student-m's width with student-l's depth (d 128, 4 layers, 4
    /// heads, 2 KV). Between the two: student-m, with 2 layers, copies names across ALFWorld's 512-token prompts but
    /// nothing across WebShop's (configs/paper-mini/REGIME-LOG.md), where student-l copies.
    pub fn student_ml(vocab_size: usize) -> Self {
        Self::qwen2(vocab_size, 128, 4, 4, 2, 344)
    }

    /// About 0.8M parameters at a 512-token vocabulary: student-l's width and heads with student-m's depth (d 192, 2
    /// layers, 6 heads, 2 KV). The other way between the two than student-ml: student-ml's depth did not make it copy a
    /// WebShop ASIN (configs/paper-mini/REGIME-LOG.md), so this one tries student-l's width.
    pub fn student_l2(vocab_size: usize) -> Self {
        Self::qwen2(vocab_size, 192, 2, 6, 2, 448)
    }

    /// About 1.2M parameters at a 512-token vocabulary: student-l with 3 layers of its 4 (d 192, 6 heads, 2 KV).
    /// On WebShop it won 3% of its episodes, student-l2 4%, where student-l's budget-limited runs reached 11-61%
    /// (configs/paper-mini/REGIME-LOG.md).
    pub fn student_l3(vocab_size: usize) -> Self {
        Self::qwen2(vocab_size, 192, 3, 6, 2, 448)
    }

    /// About 1.5M parameters at a 512-token vocabulary: d 192, 4 layers, 6 heads (2 KV).
    pub fn student_l(vocab_size: usize) -> Self {
        Self::qwen2(vocab_size, 192, 4, 6, 2, 448)
    }

    /// About 4.6M parameters at a 512-token vocabulary: d 256, 6 layers, 8 heads (4 KV).
    pub fn teacher(vocab_size: usize) -> Self {
        Self::qwen2(vocab_size, 256, 6, 8, 4, 704)
    }

    /// The shape of the speed probe: d 128, 2 layers, 4 heads (no GQA), MLP 512.
    pub fn probe(vocab_size: usize) -> Self {
        Self::qwen2(vocab_size, 128, 2, 4, 4, 512)
    }

    /// The preset called `name` (one of [`PRESETS`]) at a vocabulary of `vocab_size`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownPreset`] listing the known presets.
    pub fn preset(name: &str, vocab_size: usize) -> Result<Self> {
        let presets = presets();
        let preset = presets
            .get(name)
            .map_err(|_| Error::UnknownPreset { given: name.to_owned(), known: presets.names().join(", ") })?;
        Ok(preset(vocab_size))
    }

    /// Dimension of one head: the config's `head_dim`, or `hidden_size / num_attention_heads` without one.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or_else(|| self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Whether q/k/v carry biases.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias.unwrap_or(self.model_type == ModelType::Qwen2)
    }

    /// Whether the output projection carries a bias: never for Qwen2, `attention_bias` for Llama and Qwen3 (as
    /// `LlamaAttention` builds `o_proj`).
    pub fn o_bias(&self) -> bool {
        self.model_type != ModelType::Qwen2 && self.qkv_bias()
    }

    /// Whether queries and keys pass through a per-head RMSNorm (`q_norm`, `k_norm`) before the rotary positions.
    pub fn qk_norm(&self) -> bool {
        self.model_type == ModelType::Qwen3
    }

    /// Checks the shape constraints; every loader and `init` calls it.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidConfig { why });
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocab_size, hidden_size and num_hidden_layers must be positive".into());
        }
        if self.num_attention_heads == 0 {
            return bad("num_attention_heads must be positive".into());
        }
        if self.head_dim == Some(0) {
            return bad("head_dim must be positive".into());
        }
        // With an explicit head_dim (Qwen3), the projections map d to heads * head_dim and back: nothing ties d
        // to the number of heads.
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("head dimension {} must be even for rotary positions", self.head_dim()));
        }
        if self.num_key_value_heads == 0 || !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if self.hidden_act != "silu" {
            return bad(format!("hidden_act `{}` is not supported (only `silu`)", self.hidden_act));
        }
        Ok(())
    }

    /// The number of parameters (tied embeddings counted once).
    pub fn num_params(&self) -> usize {
        let (d, v, f) = (self.hidden_size, self.vocab_size, self.intermediate_size);
        let (q, kv) = (self.num_attention_heads * self.head_dim(), self.num_key_value_heads * self.head_dim());
        let qkv_bias = if self.qkv_bias() { q + 2 * kv } else { 0 };
        let o_bias = if self.o_bias() { d } else { 0 };
        let qk_norm = if self.qk_norm() { 2 * self.head_dim() } else { 0 };
        let attention = d * q + 2 * d * kv + q * d + qkv_bias + o_bias + qk_norm;
        let layer = attention + 3 * d * f + 2 * d;
        let head = if self.tie_word_embeddings { 0 } else { v * d };
        v * d + self.num_hidden_layers * layer + d + head
    }

    /// A freshly initialised model: weights ~ N(0, 0.02) as Hugging Face's `_init_weights`, norms (Qwen3's
    /// `q_norm` and `k_norm` included) at 1, biases at 0. The backend's seed (`B::seed`) makes it reproducible.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Transformer<B>> {
        self.validate()?;
        let init = Initializer::Normal { mean: 0.0, std: 0.02 };
        let linear = |d_in: usize, d_out: usize, bias: bool| {
            let mut layer = LinearConfig::new(d_in, d_out).with_bias(bias).with_initializer(init.clone()).init(device);
            if let Some(b) = layer.bias.take() {
                layer.bias = Some(Param::from_tensor(b.val().zeros_like()));
            }
            layer
        };
        let norm =
            |d: usize| RmsNorm { gamma: Param::from_tensor(Tensor::ones([d], device)), epsilon: self.rms_norm_eps };
        let (d, head_dim) = (self.hidden_size, self.head_dim());
        let (q, kv) = (self.num_attention_heads * head_dim, self.num_key_value_heads * head_dim);
        let layers = (0..self.num_hidden_layers)
            .map(|_| DecoderLayer {
                self_attn: Attention {
                    q_proj: linear(d, q, self.qkv_bias()),
                    k_proj: linear(d, kv, self.qkv_bias()),
                    v_proj: linear(d, kv, self.qkv_bias()),
                    o_proj: linear(q, d, self.o_bias()),
                    q_norm: self.qk_norm().then(|| norm(head_dim)),
                    k_norm: self.qk_norm().then(|| norm(head_dim)),
                },
                mlp: Mlp {
                    gate_proj: linear(d, self.intermediate_size, false),
                    up_proj: linear(d, self.intermediate_size, false),
                    down_proj: linear(self.intermediate_size, d, false),
                },
                input_layernorm: norm(d),
                post_attention_layernorm: norm(d),
            })
            .collect();
        let embed_tokens =
            Embedding { weight: Param::from_tensor(Tensor::random([self.vocab_size, d], normal(0.02), device)) };
        let lm_head = (!self.tie_word_embeddings).then(|| linear(d, self.vocab_size, false));
        Ok(Transformer {
            embed_tokens,
            layers,
            norm: norm(d),
            lm_head,
            heads: self.num_attention_heads,
            kv_heads: self.num_key_value_heads,
            head_dim,
            rope_theta: self.rope_theta,
        })
    }
}

fn normal(std: f64) -> burn::tensor::Distribution {
    burn::tensor::Distribution::Normal(0.0, std)
}

/// The decoder. Only [`TransformerConfig`] and this type are public; build it with [`TransformerConfig::init`]
/// or load it with `checkpoint::load`.
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    /// `model.embed_tokens`: `[vocab, d]`.
    pub embed_tokens: Embedding<B>,
    /// `model.layers.{i}`.
    pub layers: Vec<DecoderLayer<B>>,
    /// `model.norm`.
    pub norm: RmsNorm<B>,
    /// `lm_head`, absent when tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rope_theta: f64,
}

/// One pre-norm block: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// `self_attn`.
    pub self_attn: Attention<B>,
    /// `mlp`.
    pub mlp: Mlp<B>,
    /// `input_layernorm`.
    pub input_layernorm: RmsNorm<B>,
    /// `post_attention_layernorm`.
    pub post_attention_layernorm: RmsNorm<B>,
}

/// Grouped-query attention's projections.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `q_proj`: `[d, heads * head_dim]`.
    pub q_proj: Linear<B>,
    /// `k_proj`: `[d, kv_heads * head_dim]`.
    pub k_proj: Linear<B>,
    /// `v_proj`: `[d, kv_heads * head_dim]`.
    pub v_proj: Linear<B>,
    /// `o_proj`: `[heads * head_dim, d]`.
    pub o_proj: Linear<B>,
    /// `q_norm`: Qwen3's RMSNorm of each query head, `[head_dim]`; `None` for Qwen2 and Llama.
    pub q_norm: Option<RmsNorm<B>>,
    /// `k_norm`: Qwen3's RMSNorm of each key head, `[head_dim]`; `None` for Qwen2 and Llama.
    pub k_norm: Option<RmsNorm<B>>,
}

/// SwiGLU: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `gate_proj`.
    pub gate_proj: Linear<B>,
    /// `up_proj`.
    pub up_proj: Linear<B>,
    /// `down_proj`.
    pub down_proj: Linear<B>,
}

/// Where each token sits and what it may attend to, for one forward call.
///
/// Built on the host from per-row lengths; see [`Layout::right_padded`] (training and scoring) and
/// [`Layout::left_padded`] (prefill of a generation batch).
#[derive(Debug, Clone)]
pub struct Layout {
    /// `positions[b][t]`: the rotary position of token t of row b.
    positions: Vec<Vec<usize>>,
    /// `valid[b][t]`: whether token t of row b is a real token (pads are neither attended to nor trained on).
    valid: Vec<Vec<bool>>,
}

impl Layout {
    /// Rows of the given lengths, padded on the right to the longest: positions `0..len`.
    pub fn right_padded(lengths: &[usize]) -> Self {
        let width = lengths.iter().copied().max().unwrap_or(0);
        let positions = lengths.iter().map(|_| (0..width).collect()).collect();
        let valid = lengths.iter().map(|&len| (0..width).map(|t| t < len).collect()).collect();
        Self { positions, valid }
    }

    /// Rows of the given lengths, padded on the left to the longest, so that every row ends at the same column
    /// (the layout of a batched prefill): row b's first real token has position 0.
    pub fn left_padded(lengths: &[usize]) -> Self {
        let width = lengths.iter().copied().max().unwrap_or(0);
        let positions =
            lengths.iter().map(|&len| (0..width).map(|t| (t + len).saturating_sub(width)).collect()).collect();
        let valid = lengths.iter().map(|&len| (0..width).map(|t| t + len >= width).collect()).collect();
        Self { positions, valid }
    }

    /// Number of rows.
    pub fn batch(&self) -> usize {
        self.positions.len()
    }

    /// Number of columns.
    pub fn width(&self) -> usize {
        self.positions.first().map_or(0, Vec::len)
    }
}

/// The KV cache of one generation batch: per layer, keys and values of every position so far.
///
/// A plain struct outside the module (as llama-burn and candle keep it): [`KvCache::reset`] empties it.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    /// Per layer: keys `[batch, kv_heads, len, head_dim]` and values of the same shape.
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    /// `valid[b][j]`: whether cached position j of row b is a real token.
    valid: Vec<Vec<bool>>,
    /// The next rotary position of each row.
    next_position: Vec<usize>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self { layers: vec![None; num_layers], valid: Vec::new(), next_position: Vec::new() }
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(|layer| *layer = None);
        self.valid.clear();
        self.next_position.clear();
    }

    /// Number of cached positions (columns, pads included).
    pub fn len(&self) -> usize {
        self.valid.first().map_or(0, Vec::len)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the given rows (finished sequences leave the batch).
    pub fn retain_rows(&mut self, rows: &[usize], device: &B::Device) {
        let index = Tensor::<B, 1, Int>::from_data(
            TensorData::new(rows.iter().map(|&r| r as i32).collect::<Vec<_>>(), [rows.len()]),
            device,
        );
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.clone().select(0, index.clone());
            *v = v.clone().select(0, index.clone());
        }
        self.valid = rows.iter().map(|&r| self.valid[r].clone()).collect();
        self.next_position = rows.iter().map(|&r| self.next_position[r]).collect();
    }
}

impl<B: Backend> Transformer<B> {
    /// Number of decoder blocks.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    /// Query heads and key/value heads.
    pub(crate) fn head_counts(&self) -> (usize, usize) {
        (self.heads, self.kv_heads)
    }

    /// The width of one attention head.
    pub(crate) fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The rotary base.
    pub(crate) fn rope_theta(&self) -> f64 {
        self.rope_theta
    }

    /// The device the weights live on.
    pub fn device(&self) -> B::Device {
        self.embed_tokens.weight.device()
    }

    /// Hidden states after the final norm for a batch laid out by `layout`, without a cache.
    ///
    /// # Shapes
    /// - `ids`: `[batch, time]`
    /// - output: `[batch, time, d]`
    pub fn forward_hidden(&self, ids: Tensor<B, 2, Int>, layout: &Layout) -> Tensor<B, 3> {
        let device = ids.device();
        let positions = layout.positions.clone();
        // Rows that start at column 0 (right padding) need only the causal mask: a real token never sees a pad,
        // which comes after it, and the backend's causal path is faster than an explicit mask.
        let aligned = positions.iter().all(|row| row.iter().enumerate().all(|(t, &p)| p == t));
        let mask = (!aligned)
            .then(|| attention_mask::<B>(&layout.valid, &layout.positions, &layout.valid, &positions, &device));
        let rope = self.rope(&positions, &device);
        let mut x = self.embed_tokens.forward(ids);
        for layer in &self.layers {
            let (out, _) = layer.forward(x, &rope, mask.as_ref(), None, self.shape());
            x = out;
        }
        self.norm.forward(x)
    }

    /// Logits for every position, without a cache.
    ///
    /// # Shapes
    /// - `ids`: `[batch, time]`
    /// - output: `[batch, time, vocab]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>, layout: &Layout) -> Tensor<B, 3> {
        self.head(self.forward_hidden(ids, layout))
    }

    /// The language-model head (the tied embedding or `lm_head`).
    ///
    /// # Shapes
    /// - `hidden`: `[batch, time, d]`
    /// - output: `[batch, time, vocab]`
    pub fn head(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                // One 2-D matmul rather than a broadcast batched one.
                let [batch, time, d] = hidden.dims();
                let vocab = self.vocab_size();
                hidden
                    .reshape([batch * time, d])
                    .matmul(self.embed_tokens.weight.val().transpose())
                    .reshape([batch, time, vocab])
            }
        }
    }

    /// Runs new tokens through the model, appending their keys and values to `cache`, and returns the logits of
    /// each row's last new token. The first call (an empty cache) takes a left-padded prompt batch with the
    /// per-row prompt lengths; later calls take one token per row and `lengths` all 1.
    ///
    /// # Shapes
    /// - `ids`: `[batch, time]`
    /// - output: `[batch, vocab]`
    pub fn forward_cached(&self, ids: Tensor<B, 2, Int>, lengths: &[usize], cache: &mut KvCache<B>) -> Tensor<B, 2> {
        let device = ids.device();
        let [batch, time] = ids.dims();
        if cache.is_empty() {
            let layout = Layout::left_padded(lengths);
            cache.valid = layout.valid.clone();
            cache.next_position = lengths.to_vec();
            let positions = layout.positions;
            let mask = attention_mask::<B>(&cache.valid, &positions, &cache.valid, &positions, &device);
            return self.run_cached(ids, &positions, &mask, cache, batch, time);
        }
        // Decoding: every row appends `time` real tokens at its own next positions.
        let positions: Vec<Vec<usize>> =
            cache.next_position.iter().map(|&start| (start..start + time).collect()).collect();
        let key_positions: Vec<Vec<usize>> = cache
            .valid
            .iter()
            .zip(&cache.next_position)
            .map(|(valid, &next)| {
                // Positions of cached columns; pads get a position that never blocks anything (they are masked).
                let real = valid.iter().filter(|&&v| v).count();
                let mut p = next - real;
                let mut cols: Vec<usize> = valid
                    .iter()
                    .map(|&v| {
                        let here = p;
                        if v {
                            p += 1;
                        }
                        here
                    })
                    .collect();
                cols.extend(next..next + time);
                cols
            })
            .collect();
        for (row, valid) in cache.valid.iter_mut().enumerate() {
            valid.extend(std::iter::repeat_n(true, time));
            cache.next_position[row] += time;
        }
        let query_valid = vec![vec![true; time]; batch];
        let mask = attention_mask::<B>(&query_valid, &positions, &cache.valid, &key_positions, &device);
        self.run_cached(ids, &positions, &mask, cache, batch, time)
    }

    fn run_cached(
        &self,
        ids: Tensor<B, 2, Int>,
        positions: &[Vec<usize>],
        mask: &Tensor<B, 4, Bool>,
        cache: &mut KvCache<B>,
        batch: usize,
        time: usize,
    ) -> Tensor<B, 2> {
        let device = ids.device();
        let rope = self.rope(positions, &device);
        let mut x = self.embed_tokens.forward(ids);
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let (out, kv) = layer.forward(x, &rope, Some(mask), slot.take(), self.shape());
            *slot = Some(kv);
            x = out;
        }
        let last = self.norm.forward(x.narrow(1, time - 1, 1));
        self.head(last).reshape([batch, self.vocab_size()])
    }

    /// The attention's head layout.
    fn shape(&self) -> HeadShape {
        HeadShape { heads: self.heads, kv_heads: self.kv_heads, head_dim: self.head_dim }
    }

    /// Rotary tables for the given positions, in the "rotate half" layout, laid out per projection width so
    /// that applying them is plain contiguous element-wise work (broadcasting over heads took flex's slow
    /// strided path).
    ///
    /// # Shapes
    /// - output: cos/sin `[batch, time, heads * head_dim]` for queries and `[batch, time, kv_heads * head_dim]`
    ///   for keys; rotation matrices `[heads * head_dim]^2` and `[kv_heads * head_dim]^2`
    fn rope(&self, positions: &[Vec<usize>], device: &B::Device) -> Rope<B> {
        let head_dim = self.head_dim;
        let half = head_dim / 2;
        let batch = positions.len();
        let time = positions.first().map_or(0, Vec::len);
        // The angle is computed in f32 as the reference does (inv_freq in f32, position * inv_freq in f32).
        let inv_freq: Vec<f32> =
            (0..half).map(|i| (1.0 / self.rope_theta.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
        let table = |heads: usize| {
            let width = heads * head_dim;
            let mut cos = Vec::with_capacity(batch * time * width);
            let mut sin = Vec::with_capacity(batch * time * width);
            for row in positions {
                for &p in row {
                    for _ in 0..heads * 2 {
                        for f in &inv_freq {
                            let angle = (p as f32) * f;
                            cos.push(angle.cos());
                            sin.push(angle.sin());
                        }
                    }
                }
            }
            // x @ rotation = rotate_half(x) head by head: [x1, x2] -> [-x2, x1].
            let mut rotation = vec![0f32; width * width];
            for h in 0..heads {
                let base = h * head_dim;
                for i in 0..half {
                    rotation[(base + i + half) * width + base + i] = -1.0;
                    rotation[(base + i) * width + base + i + half] = 1.0;
                }
            }
            let shape = [batch, time, width];
            (
                Tensor::from_data(TensorData::new(cos, shape), device),
                Tensor::from_data(TensorData::new(sin, shape), device),
                Tensor::from_data(TensorData::new(rotation, [width, width]), device),
            )
        };
        let (cos_q, sin_q, rot_q) = table(self.heads);
        let (cos_k, sin_k, rot_k) = table(self.kv_heads);
        Rope { cos_q, sin_q, rot_q, cos_k, sin_k, rot_k }
    }
}

/// How the attention splits its projections: `heads` query heads and `kv_heads` key/value heads of `head_dim`.
#[derive(Debug, Clone, Copy)]
struct HeadShape {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

struct Rope<B: Backend> {
    cos_q: Tensor<B, 3>,
    sin_q: Tensor<B, 3>,
    rot_q: Tensor<B, 2>,
    cos_k: Tensor<B, 3>,
    sin_k: Tensor<B, 3>,
    rot_k: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    /// `x * cos + rotate_half(x) * sin` on queries (`kv = false`) or keys, before the heads are split.
    ///
    /// # Shapes
    /// - `x`: `[batch, time, heads * head_dim]`
    fn apply(&self, x: Tensor<B, 3>, kv: bool) -> Tensor<B, 3> {
        let (cos, sin, rot) =
            if kv { (&self.cos_k, &self.sin_k, &self.rot_k) } else { (&self.cos_q, &self.sin_q, &self.rot_q) };
        let [batch, time, width] = x.dims();
        let rotated = x.clone().reshape([batch * time, width]).matmul(rot.clone()).reshape([batch, time, width]);
        x * cos.clone() + rotated * sin.clone()
    }
}

/// The boolean mask of `attention` (true = blocked) for queries at `query_positions` over keys at
/// `key_positions`: a key is visible when it is a real token at a position no later than the query's. A query
/// always sees itself, so that pad rows stay finite (their outputs are never used).
///
/// # Shapes
/// - output: `[batch, 1, queries, keys]`
fn attention_mask<B: Backend>(
    query_valid: &[Vec<bool>],
    query_positions: &[Vec<usize>],
    key_valid: &[Vec<bool>],
    key_positions: &[Vec<usize>],
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let batch = query_positions.len();
    let queries = query_positions.first().map_or(0, Vec::len);
    let keys = key_positions.first().map_or(0, Vec::len);
    let offset = keys - queries;
    let mut blocked = Vec::with_capacity(batch * queries * keys);
    for b in 0..batch {
        for q in 0..queries {
            for k in 0..keys {
                let visible = (key_valid[b][k] && query_valid[b][q] && key_positions[b][k] <= query_positions[b][q]
                    || k == q + offset)
                    && k <= q + offset;
                blocked.push(!visible);
            }
        }
    }
    Tensor::from_data(TensorData::new(blocked, [batch, 1, queries, keys]), device)
}

impl<B: Backend> DecoderLayer<B> {
    /// # Shapes
    /// - `x`: `[batch, time, d]`; `mask`: `[batch, 1, time, past + time]`
    /// - output: `[batch, time, d]` and the layer's keys/values `[batch, kv_heads, past + time, head_dim]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        mask: Option<&Tensor<B, 4, Bool>>,
        past: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
        shape: HeadShape,
    ) -> (Tensor<B, 3>, (Tensor<B, 4>, Tensor<B, 4>)) {
        let (attn, kv) = self.self_attn.forward(self.input_layernorm.forward(x.clone()), rope, mask, past, shape);
        let x = x + attn;
        let x = x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x));
        (x, kv)
    }
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - `x`: `[batch, time, d]`; `mask`: `[batch, 1, time, past + time]`
    /// - output: `[batch, time, d]` and the keys/values `[batch, kv_heads, past + time, head_dim]`
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        mask: Option<&Tensor<B, 4, Bool>>,
        past: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
        shape: HeadShape,
    ) -> (Tensor<B, 3>, (Tensor<B, 4>, Tensor<B, 4>)) {
        let HeadShape { heads, kv_heads, head_dim } = shape;
        let [batch, time, _] = x.dims();
        // Qwen3's per-head norm, on the unsplit layout: (B, T, H*hd) -> (B, T, H, hd), normed over hd, and back.
        let head_norm = |t: Tensor<B, 3>, norm: &Option<RmsNorm<B>>, n: usize| match norm {
            Some(norm) => norm.forward(t.reshape([batch, time, n, head_dim])).reshape([batch, time, n * head_dim]),
            None => t,
        };
        // (B, T, H*hd) -> (B, H, T, hd)
        let split = |t: Tensor<B, 3>, n: usize| t.reshape([batch, time, n, head_dim]).swap_dims(1, 2);
        let q = head_norm(self.q_proj.forward(x.clone()), &self.q_norm, heads);
        let k = head_norm(self.k_proj.forward(x.clone()), &self.k_norm, kv_heads);
        let q = split(rope.apply(q, false), heads);
        let k = split(rope.apply(k, true), kv_heads);
        let v = split(self.v_proj.forward(x), kv_heads);
        let (k, v) = match past {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        let keys = k.dims()[2];
        let repeat = |t: Tensor<B, 4>| {
            if heads == kv_heads {
                t
            } else {
                t.unsqueeze_dim::<5>(2)
                    .expand([batch, kv_heads, heads / kv_heads, keys, head_dim])
                    .reshape([batch, heads, keys, head_dim])
            }
        };
        // `None` is the plain causal mask (queries and keys aligned at column 0).
        let options = AttentionModuleOptions { is_causal: mask.is_none(), ..AttentionModuleOptions::default() };
        let mask = mask.map(|m| m.clone().expand([batch, heads, time, keys]));
        let out = attention(q, repeat(k.clone()), repeat(v.clone()), mask, None, options);
        let out = out.swap_dims(1, 2).reshape([batch, time, heads * head_dim]);
        (self.o_proj.forward(out), (k, v))
    }
}

impl<B: Backend> Mlp<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down_proj.forward(silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_reachable_by_name_and_a_miss_lists_them() {
        assert_eq!(presets().names(), PRESETS);
        for (name, constructor) in PRESET_TABLE {
            assert_eq!(TransformerConfig::preset(name, 300).unwrap(), constructor(300), "{name}");
        }
        assert_eq!(TransformerConfig::preset("probe", 300).unwrap().intermediate_size, 512);
        let err = TransformerConfig::preset("huge", 300).unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown model preset `huge`; known presets: student-s, student-m, student-ml, student-l2, student-l3, student-l, teacher, probe"
        );
    }

    /// Qwen3-0.6B's `config.json`, as far as the shapes go.
    fn qwen3_0_6b() -> TransformerConfig {
        TransformerConfig {
            model_type: ModelType::Qwen3,
            head_dim: Some(128),
            attention_bias: Some(false),
            ..TransformerConfig::qwen2(151_936, 1024, 28, 16, 8, 3072)
        }
    }

    #[test]
    fn qwen3_0_6b_has_its_published_parameter_count() {
        // By hand (d 1024, 16 query and 8 KV heads of 128, MLP 3072, 28 layers, vocabulary 151936, tied, no
        // attention biases):
        //   embedding          151936 * 1024                          = 155,582,464
        //   per layer  q, o    2 * 1024 * (16 * 128)                  =   4,194,304
        //              k, v    2 * 1024 * (8 * 128)                   =   2,097,152
        //              MLP     3 * 1024 * 3072                        =   9,437,184
        //              norms   2 * 1024 + q_norm 128 + k_norm 128     =       2,304
        //                                                     a layer =  15,730,944
        //   28 layers                                                 = 440,466,432
        //   final norm                                                =       1,024
        //   total                                                     = 596,049,920
        let config = qwen3_0_6b();
        config.validate().unwrap();
        assert_eq!(config.head_dim(), 128);
        assert!(!config.qkv_bias() && !config.o_bias() && config.qk_norm());
        assert_eq!(config.num_params(), 596_049_920);
    }

    #[test]
    fn head_dim_is_the_configs_or_d_over_heads() {
        let qwen2 = TransformerConfig::student_s(512);
        assert_eq!(qwen2.head_dim(), 16);
        // A config without head_dim serialises without the key, as it did before the field existed.
        let value = serde_json::to_value(&qwen2).unwrap();
        assert!(value.get("head_dim").is_none(), "{value}");
        // An explicit head_dim frees d from the head count (4 heads of 16 over d 36), but must stay even.
        let mut qwen3 =
            TransformerConfig { model_type: ModelType::Qwen3, ..TransformerConfig::qwen2(96, 36, 2, 4, 2, 64) };
        assert!(qwen3.validate().is_err(), "36 is not a multiple of 4 heads without head_dim");
        qwen3.head_dim = Some(16);
        qwen3.validate().unwrap();
        assert_eq!(serde_json::to_value(&qwen3).unwrap()["head_dim"], 16);
        qwen3.head_dim = Some(15);
        assert!(qwen3.validate().unwrap_err().to_string().contains("head dimension 15 must be even"));
    }

    #[test]
    fn qwen3_init_has_head_norms_at_one_and_projections_of_heads_times_head_dim() {
        type B = crate::backend::CpuBackend;
        let config = TransformerConfig {
            model_type: ModelType::Qwen3,
            head_dim: Some(16),
            attention_bias: Some(true),
            ..TransformerConfig::qwen2(96, 32, 2, 4, 2, 64)
        };
        let model = config.init::<B>(&Default::default()).unwrap();
        let attn = &model.layers[0].self_attn;
        assert_eq!(attn.q_proj.weight.dims(), [32, 64]);
        assert_eq!(attn.k_proj.weight.dims(), [32, 32]);
        assert_eq!(attn.o_proj.weight.dims(), [64, 32]);
        assert!(attn.o_proj.bias.is_some(), "Qwen3, like Llama, puts attention_bias on o_proj too");
        for norm in [&attn.q_norm, &attn.k_norm] {
            let gamma: Vec<f32> = norm.as_ref().unwrap().gamma.val().into_data().to_vec().unwrap();
            assert_eq!(gamma, vec![1.0; 16]);
        }
        assert_eq!(model.num_params(), config.num_params());
        let qwen2 = TransformerConfig::student_s(96).init::<B>(&Default::default()).unwrap();
        assert!(qwen2.layers[0].self_attn.q_norm.is_none() && qwen2.layers[0].self_attn.o_proj.bias.is_none());
    }
}
