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
        let value = self.host_value(crate::exact::host_values(loss.clone()), t, mask, norm_len);
        let graph = match self {
            Aggregation::TokenMean => loss.sum().div_scalar(mask.n_tokens().max(1) as f64),
            Aggregation::SeqMeanTokenMean => {
                let inv_len: Vec<f32> =
                    mask.row_tokens.iter().map(|&n| if n == 0 { 0.0 } else { 1.0 / n as f32 }).collect();
                let inv_len = Tensor::<B, 1>::from_data(TensorData::new(inv_len, [s]), &loss.device()).reshape([s, 1]);
                (loss.sum_dim(1) * inv_len).sum().div_scalar(n_seqs)
            }
            Aggregation::SeqMeanTokenSum => loss.sum().div_scalar(n_seqs),
            Aggregation::SeqMeanTokenSumNorm => loss.sum().div_scalar(n_seqs * norm_len.unwrap_or(t).max(1) as f64),
        };
        // burn's graph gives the gradient (a sum's is exact in any order); the value is the host's, summed in a
        // fixed order, so that it is the same on every CPU (crate::exact).
        crate::exact::with_value(graph, value)
    }

    /// The value [`Self::aggregate`] returns, from the cleaned loss `[S, T]` on the host: row sums in f64 in
    /// token order, then the mode's formula over the rows in order.
    fn host_value<B: Backend>(self, cleaned: Vec<f32>, t: usize, mask: &Mask<B>, norm_len: Option<usize>) -> f64 {
        let row_sums: Vec<f64> = if t == 0 {
            vec![0.0; mask.row_tokens.len()]
        } else {
            cleaned.chunks(t).map(|row| row.iter().map(|&v| f64::from(v)).sum()).collect()
        };
        let total: f64 = row_sums.iter().sum();
        let n_seqs = mask.n_seqs().max(1) as f64;
        match self {
            Aggregation::TokenMean => total / mask.n_tokens().max(1) as f64,
            Aggregation::SeqMeanTokenMean => {
                row_sums
                    .iter()
                    .zip(&mask.row_tokens)
                    .map(|(sum, &n)| if n == 0 { 0.0 } else { sum / n as f64 })
                    .sum::<f64>()
                    / n_seqs
            }
            Aggregation::SeqMeanTokenSum => total / n_seqs,
            Aggregation::SeqMeanTokenSumNorm => total / (n_seqs * norm_len.unwrap_or(t).max(1) as f64),
        }
    }

    /// The share of a mini-batch's normaliser held by one shard of its rows, given the real tokens of each row
    /// of the shard (`shard_tokens`) and of the whole mini-batch (`batch_tokens`): for `token-mean` the share of
    /// the real tokens, for every other mode the share of the sequences (rows with a real token); 0 for an empty
    /// mini-batch.
    ///
    /// Why: each mode is `sum(...) / normaliser`, with the shard's own normaliser when a shard is aggregated
    /// alone. Multiplying the shard's value by `shard normaliser / batch normaliser` turns it into its part of the
    /// mini-batch's sum over the mini-batch's normaliser, so the weighted objectives of the shards of a
    /// partition (and their gradients) add up to the whole mini-batch's, up to float rounding. For
    /// `seq-mean-token-sum-norm` that holds when the constant `C` is the same in every shard, i.e. when
    /// `max_response_len` is set (otherwise each shard divides by its own padded T).
    pub fn shard_weight(self, shard_tokens: &[usize], batch_tokens: &[usize]) -> f64 {
        let tokens = |rows: &[usize]| rows.iter().sum::<usize>();
        let seqs = |rows: &[usize]| rows.iter().filter(|&&n| n > 0).count();
        match self {
            Aggregation::TokenMean => tokens(shard_tokens) as f64 / tokens(batch_tokens).max(1) as f64,
            _ => seqs(shard_tokens) as f64 / seqs(batch_tokens).max(1) as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_shard_weighs_its_share_of_tokens_or_sequences() {
        let (shard, batch) = ([3, 0], [3, 0, 5, 2]);
        assert_eq!(Aggregation::TokenMean.shard_weight(&shard, &batch), 0.3);
        for (_, mode) in &Aggregation::ALL[1..] {
            assert_eq!(mode.shard_weight(&shard, &batch), 1.0 / 3.0, "{}", mode.name());
        }
        for (_, mode) in Aggregation::ALL {
            assert_eq!(mode.shard_weight(&[0], &[0, 0]), 0.0, "an empty mini-batch, {}", mode.name());
        }
    }

    #[test]
    fn weighted_shards_aggregate_to_the_whole_mini_batch() {
        use crate::batch::{host_tensor, pad_rows, scalar};
        type B = atod_models::CpuBackend;
        let rows: Vec<Vec<f32>> =
            vec![vec![0.5, -1.0, 2.0], vec![], vec![1.5], vec![-0.25, 0.75], vec![3.0, 1.0, -2.0, 0.5]];
        let aggregate = |mode: Aggregation, rows: &[Vec<f32>]| {
            let (values, mask, t) = pad_rows(rows, None).unwrap();
            let mask = Mask::<B>::new(&host_tensor(mask, rows.len(), t, &Default::default()));
            scalar(mode.aggregate(host_tensor(values, rows.len(), t, &Default::default()), &mask, Some(4)))
        };
        let tokens = |rows: &[Vec<f32>]| rows.iter().map(Vec::len).collect::<Vec<_>>();
        for (_, mode) in Aggregation::ALL {
            let sharded: f64 = [&rows[..2], &rows[2..3], &rows[3..]]
                .into_iter()
                .map(|shard| mode.shard_weight(&tokens(shard), &tokens(&rows)) * aggregate(mode, shard))
                .sum();
            assert!((sharded - aggregate(mode, &rows)).abs() < 1e-6, "{}", mode.name());
        }
    }

    proptest! {
        #[test]
        fn the_weights_of_a_partition_sum_to_one(
            rows in proptest::collection::vec(0usize..6, 1..24),
            shards in 1usize..5,
        ) {
            prop_assume!(rows.iter().any(|&n| n > 0));
            for (_, mode) in Aggregation::ALL {
                let total: f64 = rows.chunks(rows.len().div_ceil(shards)).map(|s| mode.shard_weight(s, &rows)).sum();
                prop_assert!((total - 1.0).abs() < 1e-12, "{}: {total}", mode.name());
            }
        }
    }
}
