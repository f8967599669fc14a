//! atod's loss components on burn: ATOD (arXiv 2606.27814) with DESIGN.md §3 as the contract. GRPO and OPD
//! advantages, T-DUR turn weights (ATOD Eqs 13 to 16), the annealed hybrid (ATOD Eq 8, Eqs 10 to 12), the
//! clipped surrogate and its aggregation modes, and the optional k3 KL, entropy bonus and GKD terms, composed by
//! name from a TOML `[loss]` table ([`LossConfig`], [`Loss`]). Each formula of the paper is a short function
//! whose documentation cites its equation.
//!
//! A training step uses it in two stages. Once over the whole step's batch, on the host and without gradient:
//! [`Loss::advantages`] on a [`StepBatch`] gives the per-token hybrid advantages, the weights and their metrics
//! ([`Advantages`]). Then for each mini-batch of rows and PPO epoch: [`Loss::objective`] on a [`TrainBatch`] and
//! the rows' advantages ([`Advantages::rows`]) gives a [`LossOutput`] (the scalar loss with its graph, and
//! metrics with stable keys); [`LossOutput::check_finite`] and [`check_finite`] on the gradient norm let the
//! trainer skip a non-finite update. Padding and masks are handled in one place, [`batch`]. A trainer that
//! cannot fill some optional input of the batch ([`Input`]) says so once with [`Loss::check_fed`], and a
//! data-parallel trainer weighs each shard of a mini-batch by [`Aggregation::shard_weight`].
//!
//! Architecture invariant: atod-losses never samples and never sees an environment; it maps one batch to
//! `(loss, metrics)`.

pub mod aggregation;
pub mod batch;
pub mod entropy;
mod error;
pub mod exact;
pub mod gkd;
pub mod grpo;
pub mod hybrid;
pub mod kl;
pub mod loss;
pub mod opd;
pub mod registry;
pub mod surrogate;
pub mod tdur;

pub use aggregation::Aggregation;
pub use batch::{pad_rows, Input, Layout, Mask, StepBatch, TrainBatch, VocabLogProbs};
pub use error::{Error, Result};
pub use hybrid::{Advantages, HybridAdvantage, StepInfo};
pub use loss::{all_finite, check_finite, Component, Ctx, Loss, LossConfig, LossOutput, COMPONENTS};
pub use registry::Registry;
pub use surrogate::Clip;
pub use tdur::{TurnWeights, Weighting};
