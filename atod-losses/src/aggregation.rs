//! Aggregation of a per-token loss `[S, T]` over the mask into a scalar, shared by every loss term.
//!
//! The modes of verl's `agg_loss` (verl `core_algos.py`) and of Dr.GRPO (Liu et al., arXiv 2503.20783, §3.1,
//! which replaces GRPO's per-sequence `1/|o_i|` by a constant). A "sequence" is one row, i.e. one turn sample;
//! rows without real tokens (padding rows) are not sequences. With `L` the per-token loss, `M` the mask, `n_i`
//! the real tokens of row i and `N` the number of sequences:
//!
//! | mode | value |
//! |---|---|
//! | `token-mean` (default) | `sum(L M) / sum(M)` |
//! | `seq-mean-token-mean` | `(1/N) sum_i (sum_t L M)_i / n_i` |
//! | `seq-mean-token-sum` | `(1/N) sum_i (sum_t L M)_i` |
//! | `seq-mean-token-sum-norm` | `sum(L M) / (N * C)` with the constant `C` |
//!
//! `C` is the config's `max_response_len` when set, otherwise the padded T of the batch (verl's default).
//! Deviation from verl: verl's `seq-mean-token-sum-norm` divides by `C` only, not by `N`; we follow Dr.GRPO's
//! code (`masked_sum(...) / generate_max_length`, then a mean over the batch), which divides by both, so the
//! loss scale does not grow with the batch. Only with `max_response_len` set is this mode independent of the
//! padding.
//!
//! When every sequence has the same length `n`: `token-mean` = `seq-mean-token-mean`;
//! `seq-mean-token-sum` = `n` x `token-mean`; `seq-mean-token-sum-norm` = `(n / C)` x `token-mean`.
//! A batch without real tokens aggregates to 0.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::batch::Mask;

/// How a per-token loss is reduced to a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Mean over all real tokens of the batch.
    #[default]
    TokenMean,
    /// Mean over rows of the mean over the row's tokens.
    SeqMeanTokenMean,
    /// Mean over rows of the sum over the row's tokens.
    SeqMeanTokenSum,
    /// Sum over all tokens divided by rows times a constant length (Dr.GRPO).
    SeqMeanTokenSumNorm,
}

impl Aggregation {
    /// Every mode with its name.
    pub const ALL: [(&'static str, Aggregation); 4] = [
        ("token-mean", Aggregation::TokenMean),
        ("seq-mean-token-mean", Aggregation::SeqMeanTokenMean),
        ("seq-mean-token-sum", Aggregation::SeqMeanTokenSum),
        ("seq-mean-token-sum-norm", Aggregation::SeqMeanTokenSumNorm),
    ];

    /// The registered name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, a)| *a == self).map(|(n, _)| *n).unwrap_or("?")
    }

    /// Reduces `loss` `[S, T]` to `[1]` over `mask`; `norm_len` is `max_response_len` (None: the padded T).
    /// Padded positions of `loss` are ignored whatever they hold.
    pub fn aggregate<B: Backend>(self, loss: Tensor<B, 2>, mask: &Mask<B>, norm_len: Option<usize>) -> Tensor<B, 1> {
        let [s, t] = loss.dims();
        let loss = mask.clean(loss);
        let n_seqs = mask.n_seqs().max(1) as f64;
        match self {
            Aggregation::TokenMean => loss.sum().div_scalar(mask.n_tokens().max(1) as f64),
            Aggregation::SeqMeanTokenMean => {
                let inv_len: Vec<f32> =
                    mask.row_tokens.iter().map(|&n| if n == 0 { 0.0 } else { 1.0 / n as f32 }).collect();
                let inv_len = Tensor::<B, 1>::from_data(TensorData::new(inv_len, [s]), &loss.device()).reshape([s, 1]);
                (loss.sum_dim(1) * inv_len).sum().div_scalar(n_seqs)
            }
            Aggregation::SeqMeanTokenSum => loss.sum().div_scalar(n_seqs),
            Aggregation::SeqMeanTokenSumNorm => loss.sum().div_scalar(n_seqs * norm_len.unwrap_or(t).max(1) as f64),
        }
    }
}
