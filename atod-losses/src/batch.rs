//! The batch types and the one place where padding and masks are handled.
//!
//! A training step is a set of turn samples: every turn of every trajectory is one row, its response tokens
//! padded to a common length T. Two views of it exist because the two stages of the loss need different things:
//!
//! - [`StepBatch`], host vectors over the WHOLE step: behaviour and teacher log-probs, the mask, and per row the
//!   turn index, trajectory id and group id, per trajectory the return. Advantages and T-DUR weights are
//!   stop-gradient and need whole groups and whole trajectories, so they are computed once from it
//!   ([`crate::Advantages::compute`]).
//! - [`TrainBatch`], tensors of one mini-batch of rows: the current log-probs with gradient and the rest of the
//!   per-token inputs of the surrogate and the regularisers ([`crate::Loss::objective`]).
//!
//! Masking rules, the same on both sides: a token is real when its mask value is above 0.5; everything else is
//! padding. Padded values may be anything, NaN included: on the host they are never read, and on tensors
//! [`Mask::clean`] overwrites them with 0 before any arithmetic, so they reach neither the loss nor the gradient.
//! A row without any real token (a padding row) counts as no sequence in any aggregation.

use std::fmt;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};

use crate::error::{Error, Result};

/// Whether a host mask value marks a real token.
#[inline]
pub fn is_real(mask: f32) -> bool {
    mask > 0.5
}

/// The host side of a whole training step: `n_rows` turn samples padded to `n_cols` response tokens.
///
/// Per-token vectors are row-major `[n_rows * n_cols]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepBatch {
    /// Rows (turn samples), S.
    pub n_rows: usize,
    /// Padded response length, T.
    pub n_cols: usize,
    /// Behaviour log-prob of each sampled token, `[S * T]`.
    pub lp_old: Vec<f32>,
    /// Teacher log-prob of each sampled token, `[S * T]`.
    pub lp_teacher: Vec<f32>,
    /// 1.0 for real response tokens, 0.0 for padding, `[S * T]`.
    pub mask: Vec<f32>,
    /// Per row: the turn's index within its trajectory (0-based; unique within a trajectory).
    pub turn_idx: Vec<usize>,
    /// Per row: the trajectory, an index into `returns`.
    pub traj_id: Vec<usize>,
    /// Per row: the GRPO group (same task, same seed); equal for all rows of a trajectory.
    pub group_id: Vec<usize>,
    /// Per trajectory: the return R_i (sum of its rewards).
    pub returns: Vec<f32>,
}

/// What [`StepBatch::layout`] derives from the row bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// For each trajectory, its rows in turn order.
    pub rows_of_traj: Vec<Vec<usize>>,
    /// For each trajectory, its group.
    pub group_of_traj: Vec<usize>,
    /// For each row, its number of real tokens.
    pub row_tokens: Vec<usize>,
}

impl StepBatch {
    /// Builds a step batch from ragged rows: `lp_old[r]` and `lp_teacher[r]` are row r's real tokens; rows are
    /// padded to the longest one (or to `n_cols` when given, which must not cut any row).
    #[allow(clippy::too_many_arguments)]
    pub fn from_ragged(
        lp_old: &[Vec<f32>],
        lp_teacher: &[Vec<f32>],
        n_cols: Option<usize>,
        turn_idx: Vec<usize>,
        traj_id: Vec<usize>,
        group_id: Vec<usize>,
        returns: Vec<f32>,
    ) -> Result<StepBatch> {
        let (lp_old, mask, n_cols) = pad_rows(lp_old, n_cols)?;
        let (lp_teacher, _, _) = pad_rows(lp_teacher, Some(n_cols))?;
        let batch = StepBatch {
            n_rows: turn_idx.len(),
            n_cols,
            lp_old,
            lp_teacher,
            mask,
            turn_idx,
            traj_id,
            group_id,
            returns,
        };
        batch.layout()?;
        Ok(batch)
    }

    /// Checks the lengths and the row bookkeeping and derives the per-trajectory layout.
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] for a vector of the wrong length, [`Error::Rows`] for a trajectory id out of range, a
    /// trajectory without rows or in two groups, or a turn index repeated within a trajectory.
    pub fn layout(&self) -> Result<Layout> {
        let (s, t) = (self.n_rows, self.n_cols);
        for (field, len) in
            [("lp_old", self.lp_old.len()), ("lp_teacher", self.lp_teacher.len()), ("mask", self.mask.len())]
        {
            if len != s * t {
                return Err(shape(field, format!("[{s} * {t}] = {}", s * t), len));
            }
        }
        for (field, len) in
            [("turn_idx", self.turn_idx.len()), ("traj_id", self.traj_id.len()), ("group_id", self.group_id.len())]
        {
            if len != s {
                return Err(shape(field, format!("[{s}]"), len));
            }
        }
        let n_traj = self.returns.len();
        let mut rows_of_traj = vec![Vec::new(); n_traj];
        let mut group_of_traj: Vec<Option<usize>> = vec![None; n_traj];
        for row in 0..s {
            let traj = self.traj_id[row];
            if traj >= n_traj {
                return Err(Error::Rows {
                    problem: format!("row {row} has traj_id {traj} but there are {n_traj} returns"),
                });
            }
            match group_of_traj[traj] {
                Some(g) if g != self.group_id[row] => {
                    return Err(Error::Rows {
                        problem: format!(
                            "trajectory {traj} is in group {g} and, at row {row}, in group {}",
                            self.group_id[row]
                        ),
                    })
                }
                _ => group_of_traj[traj] = Some(self.group_id[row]),
            }
            rows_of_traj[traj].push(row);
        }
        let mut groups = Vec::with_capacity(n_traj);
        for (traj, (rows, group)) in rows_of_traj.iter_mut().zip(group_of_traj).enumerate() {
            let Some(group) = group else {
                return Err(Error::Rows { problem: format!("trajectory {traj} has a return but no rows") });
            };
            groups.push(group);
            rows.sort_by_key(|&r| self.turn_idx[r]);
            if let Some(w) = rows.windows(2).find(|w| self.turn_idx[w[0]] == self.turn_idx[w[1]]) {
                return Err(Error::Rows {
                    problem: format!(
                        "trajectory {traj} has turn {} twice (rows {} and {})",
                        self.turn_idx[w[0]], w[0], w[1]
                    ),
                });
            }
        }
        let row_tokens =
            (0..s).map(|r| self.mask[r * t..(r + 1) * t].iter().filter(|&&m| is_real(m)).count()).collect();
        Ok(Layout { rows_of_traj, group_of_traj: groups, row_tokens })
    }

    /// The real tokens of row `row` as `(column, lp_old, lp_teacher)`.
    pub(crate) fn real_tokens(&self, row: usize) -> impl Iterator<Item = (usize, f32, f32)> + '_ {
        let base = row * self.n_cols;
        (0..self.n_cols)
            .filter(move |&c| is_real(self.mask[base + c]))
            .map(move |c| (c, self.lp_old[base + c], self.lp_teacher[base + c]))
    }
}

/// Pads ragged rows to a common length with zeros; returns the values, the mask (both `[rows * n_cols]`) and
/// `n_cols` (the longest row, or the given length).
///
/// # Errors
///
/// [`Error::Shape`] when a row is longer than the given `n_cols`.
pub fn pad_rows(rows: &[Vec<f32>], n_cols: Option<usize>) -> Result<(Vec<f32>, Vec<f32>, usize)> {
    let longest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let n_cols = n_cols.unwrap_or(longest);
    if longest > n_cols {
        return Err(shape("rows", format!("at most {n_cols} tokens a row"), longest));
    }
    let mut values = vec![0.0; rows.len() * n_cols];
    let mut mask = vec![0.0; rows.len() * n_cols];
    for (r, row) in rows.iter().enumerate() {
        values[r * n_cols..r * n_cols + row.len()].copy_from_slice(row);
        mask[r * n_cols..r * n_cols + row.len()].fill(1.0);
    }
    Ok((values, mask, n_cols))
}

fn shape(field: &'static str, expected: String, got: impl std::fmt::Display) -> Error {
    Error::Shape { field, expected, got: got.to_string() }
}

/// Full-vocabulary log-probabilities for GKD.
///
/// # Shapes
/// `student`: `[S, T, V]` log-softmax of the student, with gradient; `teacher`: `[S, T, V]` log-softmax of the
/// teacher (detached by the loss).
#[derive(Debug, Clone)]
pub struct VocabLogProbs<B: Backend> {
    /// Student log-softmax, `[S, T, V]`, with gradient.
    pub student: Tensor<B, 3>,
    /// Teacher log-softmax, `[S, T, V]`.
    pub teacher: Tensor<B, 3>,
}

/// An optional input of a [`TrainBatch`], which some loss components need ([`crate::Component::inputs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Input {
    /// [`TrainBatch::lp_ref`]: the reference policy's log-probs (the `kl` component).
    LpRef,
    /// [`TrainBatch::vocab`]: full-vocabulary log-probs (the `gkd` component).
    Vocab,
}

impl Input {
    /// Every optional input.
    pub const ALL: [Input; 2] = [Input::LpRef, Input::Vocab];

    /// The name of its field of [`TrainBatch`].
    pub fn name(self) -> &'static str {
        match self {
            Input::LpRef => "lp_ref",
            Input::Vocab => "vocab",
        }
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The tensors of one mini-batch of rows, as [`crate::Loss::objective`] consumes them.
///
/// `lp` and `entropy` typically come from `atod_models::token_logprobs` on the student's logits.
///
/// # Shapes
/// Every per-token tensor is `[S, T]`: S rows (turn samples) padded to T response tokens.
#[derive(Debug, Clone)]
pub struct TrainBatch<B: Backend> {
    /// Current student log-prob of each sampled token, with gradient.
    pub lp: Tensor<B, 2>,
    /// Behaviour log-prob (from the rollout); detached by the loss.
    pub lp_old: Tensor<B, 2>,
    /// Entropy of the current student distribution; may carry gradient (the entropy bonus uses it).
    pub entropy: Tensor<B, 2>,
    /// 1.0 for real response tokens, 0.0 for padding.
    pub mask: Tensor<B, 2>,
    /// Reference-policy log-prob of each sampled token, for the k3 KL penalty.
    pub lp_ref: Option<Tensor<B, 2>>,
    /// Full-vocabulary log-probs, for GKD.
    pub vocab: Option<VocabLogProbs<B>>,
}

impl<B: Backend> TrainBatch<B> {
    /// A batch without the optional inputs.
    pub fn new(lp: Tensor<B, 2>, lp_old: Tensor<B, 2>, entropy: Tensor<B, 2>, mask: Tensor<B, 2>) -> Self {
        TrainBatch { lp, lp_old, entropy, mask, lp_ref: None, vocab: None }
    }

    /// Adds the reference log-probs of the k3 KL penalty.
    pub fn with_ref(mut self, lp_ref: Tensor<B, 2>) -> Self {
        self.lp_ref = Some(lp_ref);
        self
    }

    /// Adds the full-vocabulary log-probs of GKD.
    pub fn with_vocab(mut self, student: Tensor<B, 3>, teacher: Tensor<B, 3>) -> Self {
        self.vocab = Some(VocabLogProbs { student, teacher });
        self
    }

    /// The optional inputs this batch carries, for [`crate::Loss::check_fed`].
    pub fn fed(&self) -> Vec<Input> {
        Input::ALL
            .into_iter()
            .filter(|input| match input {
                Input::LpRef => self.lp_ref.is_some(),
                Input::Vocab => self.vocab.is_some(),
            })
            .collect()
    }

    /// `[S, T]`.
    pub fn dims(&self) -> [usize; 2] {
        self.mask.dims()
    }

    /// Checks that every tensor has the mask's shape (the vocabulary tensors `[S, T, V]` with one V).
    pub fn check(&self) -> Result<()> {
        let [s, t] = self.dims();
        let want = format!("[{s}, {t}]");
        let mut two: Vec<(&'static str, [usize; 2])> =
            vec![("lp", self.lp.dims()), ("lp_old", self.lp_old.dims()), ("entropy", self.entropy.dims())];
        if let Some(r) = &self.lp_ref {
            two.push(("lp_ref", r.dims()));
        }
        for (field, dims) in two {
            if dims != [s, t] {
                return Err(shape(field, want.clone(), format!("{dims:?}")));
            }
        }
        if let Some(v) = &self.vocab {
            let [vs, vt, vv] = v.student.dims();
            if [vs, vt] != [s, t] {
                return Err(shape("vocab.student", format!("[{s}, {t}, V]"), format!("{:?}", v.student.dims())));
            }
            if v.teacher.dims() != [vs, vt, vv] {
                return Err(shape("vocab.teacher", format!("[{s}, {t}, {vv}]"), format!("{:?}", v.teacher.dims())));
            }
        }
        Ok(())
    }
}

/// A mask in the forms the tensor code needs; built once per objective call.
#[derive(Debug, Clone)]
pub struct Mask<B: Backend> {
    /// 1.0 at real tokens, 0.0 at padding, `[S, T]`.
    pub real: Tensor<B, 2>,
    /// true at padding, `[S, T]`.
    pub pad: Tensor<B, 2, Bool>,
    /// Real tokens per row, `[S]` (host).
    pub row_tokens: Vec<usize>,
}

impl<B: Backend> Mask<B> {
    /// From a 0/1 float mask `[S, T]` (values above 0.5 are real).
    pub fn new(mask: &Tensor<B, 2>) -> Self {
        let [s, t] = mask.dims();
        let pad = mask.clone().lower_equal_elem(0.5);
        let real = Tensor::ones([s, t], &mask.device()).mask_fill(pad.clone(), 0.0);
        let host: Vec<f32> = mask.to_data().convert::<f32>().to_vec().unwrap_or_default();
        let row_tokens = (0..s).map(|r| host[r * t..(r + 1) * t].iter().filter(|&&m| is_real(m)).count()).collect();
        Mask { real, pad, row_tokens }
    }

    /// Real tokens in the batch.
    pub fn n_tokens(&self) -> usize {
        self.row_tokens.iter().sum()
    }

    /// Rows with at least one real token: the sequences of the aggregation modes.
    pub fn n_seqs(&self) -> usize {
        self.row_tokens.iter().filter(|&&n| n > 0).count()
    }

    /// `x` with every padded position set to 0, so that neither its value nor (through it) its gradient is used.
    pub fn clean(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.mask_fill(self.pad.clone(), 0.0)
    }

    /// The same for `[S, T, V]` tensors.
    pub fn clean3(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let dims = x.dims();
        x.mask_fill(self.pad.clone().unsqueeze_dim::<3>(2).expand(dims), 0.0)
    }

    /// The mean of `x` over real tokens, on the host (0 for a batch without real tokens): for metrics.
    pub fn mean_host(&self, x: Tensor<B, 2>) -> f64 {
        let n = self.n_tokens();
        if n == 0 {
            return 0.0;
        }
        crate::exact::host_sum(self.clean(x)) / n as f64
    }
}

/// The value of a one-element tensor as f64.
pub fn scalar<B: Backend>(x: Tensor<B, 1>) -> f64 {
    x.into_data().convert::<f64>().to_vec::<f64>().map(|v| v[0]).unwrap_or(f64::NAN)
}

/// A host `[rows * cols]` vector as a tensor `[rows, cols]`.
pub fn host_tensor<B: Backend>(values: Vec<f32>, rows: usize, cols: usize, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), device)
}
