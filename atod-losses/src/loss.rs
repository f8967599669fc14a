//! The composed loss: a `[loss]` TOML table (or a preset) in, the two stages of a training step out.
//!
//! ```toml
//! [loss]
//! preset = "atod"                  # optional, default "atod"; the keys below override it
//! kappa = "linear(1.0, 0.1, 80)"   # OPD coefficient: a number or a schedule expression (DESIGN §4)
//! rho = "linear(1.0, 2.0, 80)"     # GRPO coefficient
//! weighting = "tdur"               # uniform | tdur | token
//! rescale = false                  # mean-preserving rescale of the weights per trajectory, clipped to [0.5, 2]
//! norm_by_std = true               # false: Dr.GRPO
//! aggregation = "token-mean"       # token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
//! max_response_len = 512           # optional: the constant of seq-mean-token-sum-norm (default: the padded T)
//! clip_low = 0.2                   # eps_lo
//! clip_high = 0.2                  # eps_hi (DAPO's clip-higher when larger)
//!
//! [loss.components]                # extra terms by registered name = coefficient (number or schedule)
//! kl = 0.0                         # k3 KL to a reference (needs TrainBatch::lp_ref)
//! entropy = 0.0                    # entropy bonus (subtracted)
//! gkd = 0.0                        # full-vocabulary reverse KL (needs TrainBatch::vocab)
//! ```
//!
//! Unknown keys (`deny_unknown_fields`), presets, weightings, aggregations and components are errors that list
//! the known names. Stage one, once per step over the whole batch: [`Loss::advantages`] (host, stop-gradient).
//! Stage two, per mini-batch: [`Loss::objective`] (tensors, with gradient): the clipped surrogate of the
//! precomputed advantages plus the components, each reduced by the one aggregation.
//!
//! Each extra component is declared once (`declare_components!` below: name, type, the optional batch inputs it
//! needs), and [`Component`], [`COMPONENTS`], [`components`] and the dispatch follow from it.
//! [`LossConfig::needs`] lists the inputs of the components a config switches on, and [`Loss::check_fed`]
//! refuses, before any batch is built, a config whose inputs the caller does not feed.

use std::collections::BTreeMap;

use atod_core::Schedule;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::aggregation::Aggregation;
use crate::batch::{scalar, Input, Mask, StepBatch, TrainBatch};
use crate::entropy::EntropyBonus;
use crate::error::{Error, Result};
use crate::gkd::GkdDistill;
use crate::hybrid::{Advantages, HybridAdvantage, StepInfo};
use crate::kl::KlPenalty;
use crate::registry::Registry;
use crate::surrogate::{Clip, PolicyGradient};
use crate::tdur::Weighting;

/// The resolved `[loss]` configuration: every field explicit. Deserialises from the TOML shape of the
/// [module documentation](self) (a preset plus overrides) and serialises back with every field written out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LossToml")]
pub struct LossConfig {
    /// Coefficient of the weighted OPD advantage.
    pub kappa: Schedule,
    /// Coefficient of the GRPO advantage.
    pub rho: Schedule,
    /// Weighting of the OPD term.
    pub weighting: Weighting,
    /// Mean-preserving rescale of the weights.
    pub rescale: bool,
    /// GRPO's division by the group std (false: Dr.GRPO).
    pub norm_by_std: bool,
    /// Aggregation of every per-token term.
    pub aggregation: Aggregation,
    /// The constant of `seq-mean-token-sum-norm`; None: the padded T of each mini-batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_response_len: Option<usize>,
    /// eps_lo of the clip.
    pub clip_low: f64,
    /// eps_hi of the clip.
    pub clip_high: f64,
    /// Coefficients of the extra components by registered name (`kl`, `entropy`, `gkd`); absent means 0.
    pub components: BTreeMap<String, Schedule>,
}

/// The presets, by name.
pub fn presets() -> Registry<fn() -> LossConfig> {
    Registry::from_entries(
        "loss preset",
        [
            ("atod", LossConfig::atod as fn() -> LossConfig),
            ("opd", LossConfig::opd),
            ("grpo", LossConfig::grpo),
            ("atod-uniform", LossConfig::atod_uniform),
            ("atod-const", LossConfig::atod_const),
            ("atod-token", LossConfig::atod_token),
        ],
    )
    .expect("the preset names are distinct")
}

/// The weightings, by name.
pub fn weightings() -> Registry<Weighting> {
    Registry::from_entries("weighting", Weighting::ALL).expect("the weighting names are distinct")
}

/// The aggregation modes, by name.
pub fn aggregations() -> Registry<Aggregation> {
    Registry::from_entries("aggregation", Aggregation::ALL).expect("the aggregation names are distinct")
}

impl LossConfig {
    /// ATOD as in the paper: `kappa = linear(1.0, 0.1, 80)`, `rho = linear(1.0, 2.0, 80)`, T-DUR weights, GRPO
    /// normalised by the std, token-mean, clip 0.2, no extra component.
    pub fn atod() -> LossConfig {
        LossConfig {
            kappa: Schedule::parse("linear(1.0, 0.1, 80)").expect("a valid schedule"),
            rho: Schedule::parse("linear(1.0, 2.0, 80)").expect("a valid schedule"),
            weighting: Weighting::Tdur,
            rescale: false,
            norm_by_std: true,
            aggregation: Aggregation::TokenMean,
            max_response_len: None,
            clip_low: 0.2,
            clip_high: 0.2,
            components: BTreeMap::new(),
        }
    }

    /// On-policy distillation alone: `kappa = 1`, `rho = 0`, uniform weights.
    pub fn opd() -> LossConfig {
        LossConfig {
            kappa: Schedule::constant(1.0),
            rho: Schedule::constant(0.0),
            weighting: Weighting::Uniform,
            ..Self::atod()
        }
    }

    /// GRPO alone: `kappa = 0`, `rho = 1` (the weighting is then irrelevant; uniform).
    pub fn grpo() -> LossConfig {
        LossConfig {
            kappa: Schedule::constant(0.0),
            rho: Schedule::constant(1.0),
            weighting: Weighting::Uniform,
            ..Self::atod()
        }
    }

    /// ATOD's schedules without T-DUR (uniform weights).
    pub fn atod_uniform() -> LossConfig {
        LossConfig { weighting: Weighting::Uniform, ..Self::atod() }
    }

    /// ATOD without annealing: `kappa` and `rho` fixed at their start values, 1.0 and 1.0.
    pub fn atod_const() -> LossConfig {
        LossConfig { kappa: Schedule::constant(1.0), rho: Schedule::constant(1.0), ..Self::atod() }
    }

    /// ATOD with per-token weights.
    pub fn atod_token() -> LossConfig {
        LossConfig { weighting: Weighting::Token, ..Self::atod() }
    }

    /// A preset by name.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownName`] listing the presets.
    pub fn preset(name: &str) -> Result<LossConfig> {
        presets().get(name).map(|f| f())
    }

    /// Reads the `[loss]` table of a TOML document (a run config, say); a document without one gives the
    /// default preset.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for TOML that does not parse or an unknown key, [`Error::UnknownName`] for an unknown
    /// name, [`Error::Value`] for a value out of range.
    pub fn from_toml(document: &str) -> Result<LossConfig> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            loss: Option<toml::Value>,
        }
        let doc: Doc = toml::from_str(document).map_err(|e| Error::Config { message: e.message().to_owned() })?;
        let table: LossToml = match doc.loss {
            Some(v) => v.try_into().map_err(|e: toml::de::Error| Error::Config { message: e.message().to_owned() })?,
            None => LossToml::default(),
        };
        LossConfig::try_from(table)
    }

    /// The coefficient of component `name` (0 when absent).
    pub fn component(&self, name: &str) -> Schedule {
        self.components.get(name).cloned().unwrap_or_else(|| Schedule::constant(0.0))
    }

    /// The configured extra components in the order of [`COMPONENTS`]; a name that is not declared is skipped
    /// here ([`LossConfig::validate`] refuses it).
    fn extra_components(&self) -> Vec<Component> {
        DECLARED.iter().filter_map(|(name, build)| self.components.get(*name).map(|coef| build(coef.clone()))).collect()
    }

    /// `(component, input)` for each optional batch input that a configured component needs: every component
    /// whose coefficient is not the constant 0 (a `kl = 0.0` needs nothing), in the order of [`COMPONENTS`].
    pub fn needs(&self) -> Vec<(&'static str, Input)> {
        let on = self.extra_components().into_iter().filter(|c| !c.is_off());
        on.flat_map(|c| c.inputs().iter().map(move |&input| (c.name(), input))).collect()
    }

    /// Checks ranges and component names.
    pub fn validate(&self) -> Result<()> {
        let known = components();
        for name in self.components.keys() {
            known.get(name)?;
        }
        for (key, v) in [("clip_low", self.clip_low), ("clip_high", self.clip_high)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::Value { key, got: v.to_string(), expected: "a finite number >= 0" });
            }
        }
        if self.clip_low >= 1.0 {
            return Err(Error::Value { key: "clip_low", got: self.clip_low.to_string(), expected: "a number below 1" });
        }
        if self.max_response_len == Some(0) {
            return Err(Error::Value { key: "max_response_len", got: "0".into(), expected: "at least 1" });
        }
        Ok(())
    }
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig::atod()
    }
}

/// The `[loss]` table as written: a preset plus optional overrides.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LossToml {
    preset: Option<String>,
    kappa: Option<Schedule>,
    rho: Option<Schedule>,
    weighting: Option<String>,
    rescale: Option<bool>,
    norm_by_std: Option<bool>,
    aggregation: Option<String>,
    max_response_len: Option<usize>,
    clip_low: Option<f64>,
    clip_high: Option<f64>,
    components: Option<BTreeMap<String, Schedule>>,
}

impl TryFrom<LossToml> for LossConfig {
    type Error = Error;

    fn try_from(t: LossToml) -> Result<LossConfig> {
        let mut c = LossConfig::preset(t.preset.as_deref().unwrap_or("atod"))?;
        if let Some(v) = t.kappa {
            c.kappa = v;
        }
        if let Some(v) = t.rho {
            c.rho = v;
        }
        if let Some(v) = t.weighting {
            c.weighting = *weightings().get(&v)?;
        }
        if let Some(v) = t.rescale {
            c.rescale = v;
        }
        if let Some(v) = t.norm_by_std {
            c.norm_by_std = v;
        }
        if let Some(v) = t.aggregation {
            c.aggregation = *aggregations().get(&v)?;
        }
        if t.max_response_len.is_some() {
            c.max_response_len = t.max_response_len;
        }
        if let Some(v) = t.clip_low {
            c.clip_low = v;
        }
        if let Some(v) = t.clip_high {
            c.clip_high = v;
        }
        if let Some(v) = t.components {
            c.components.extend(v);
        }
        c.validate()?;
        Ok(c)
    }
}

/// A loss term's value and metrics.
#[derive(Debug, Clone)]
pub struct LossOutput<B: Backend> {
    /// The scalar to minimise, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Metrics with stable keys.
    pub metrics: BTreeMap<String, f64>,
}

impl<B: Backend> LossOutput<B> {
    /// `coef * value`, reporting `value` (unscaled) under `key`.
    pub(crate) fn term(key: &str, value: Tensor<B, 1>, coef: f64) -> Self {
        let metrics = BTreeMap::from([(key.to_owned(), scalar(value.clone().detach()))]);
        LossOutput { loss: value.mul_scalar(coef), metrics }
    }

    /// `loss/total` (NaN when missing).
    pub fn total(&self) -> f64 {
        self.metrics.get("loss/total").copied().unwrap_or(f64::NAN)
    }

    /// Whether the total loss is finite; when it is not, the trainer should skip the update.
    pub fn is_finite(&self) -> bool {
        self.total().is_finite()
    }

    /// [`Error::NonFinite`] when the total loss is NaN or infinite.
    pub fn check_finite(&self) -> Result<()> {
        check_finite("loss/total", self.total())
    }
}

/// [`Error::NonFinite`] naming `what` when `value` is NaN or infinite: for a loss, or for the global gradient
/// norm the trainer computes before clipping (a non-finite norm means some gradient is), so that it can skip
/// the update.
pub fn check_finite(what: &str, value: f64) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFinite { what: what.to_owned(), value })
    }
}

/// Whether every element of `t` is finite (one host sync): for a gradient tensor.
pub fn all_finite<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    scalar(t.clone().is_nan().float().sum()) == 0.0 && scalar(t.clone().is_inf().float().sum()) == 0.0
}

/// What every component's `compute` sees: the mini-batch, its advantages, the mask and the aggregation.
#[derive(Debug)]
pub struct Ctx<'a, B: Backend> {
    /// The mini-batch.
    pub batch: &'a TrainBatch<B>,
    /// Precomputed advantages of its rows, `[S, T]`.
    pub advantages: &'a Tensor<B, 2>,
    /// Its mask.
    pub mask: &'a Mask<B>,
    /// The aggregation.
    pub aggregation: Aggregation,
    /// The constant of `seq-mean-token-sum-norm`.
    pub max_response_len: Option<usize>,
}

impl<B: Backend> Ctx<'_, B> {
    /// Reduces a per-token term with the loss's aggregation.
    pub fn aggregate(&self, per_token: Tensor<B, 2>) -> Tensor<B, 1> {
        self.aggregation.aggregate(per_token, self.mask, self.max_response_len)
    }
}

/// Declares the extra components once: from one line per component (its variant, its type, its name and the
/// optional batch inputs it needs) follow the [`Component`] enum, [`COMPONENTS`], [`components`] and the
/// dispatch of [`Component`]'s methods. Each type has a `coef: Schedule` field and a
/// `compute(&self, &Ctx, coef: f64) -> Result<LossOutput>`.
macro_rules! declare_components {
    ($($(#[$doc:meta])* $variant:ident($ty:ident) = $name:literal, needs [$($input:ident),*];)*) => {
        /// One extra term of the loss.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Component {
            $($(#[$doc])* $variant($ty),)*
        }

        /// The names of the extra components, in the order they are added to the loss.
        pub const COMPONENTS: [&str; [$($name),*].len()] = [$($name),*];

        /// Each component's name and constructor from its coefficient, in the order of [`COMPONENTS`].
        const DECLARED: [(&str, fn(Schedule) -> Component); COMPONENTS.len()] =
            [$(($name, |coef| Component::$variant($ty { coef }))),*];

        impl Component {
            /// Its registered name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Component::$variant(_) => $name,)*
                }
            }

            /// The optional batch inputs it needs whenever its coefficient is non-zero.
            pub fn inputs(&self) -> &'static [Input] {
                match self {
                    $(Component::$variant(_) => &[$(Input::$input),*],)*
                }
            }

            /// Its coefficient.
            pub fn coef(&self) -> &Schedule {
                match self {
                    $(Component::$variant(c) => &c.coef,)*
                }
            }

            /// `coef * term` of its type.
            fn compute_with<B: Backend>(&self, ctx: &Ctx<'_, B>, coef: f64) -> Result<LossOutput<B>> {
                match self {
                    $(Component::$variant(c) => c.compute(ctx, coef),)*
                }
            }
        }
    };
}

declare_components! {
    /// k3 KL to a reference.
    Kl(KlPenalty) = "kl", needs [LpRef];
    /// Entropy bonus.
    Entropy(EntropyBonus) = "entropy", needs [];
    /// Full-vocabulary reverse KL (GKD).
    Gkd(GkdDistill) = "gkd", needs [Vocab];
}

/// The extra loss components by name, each with its constructor from a coefficient.
pub fn components() -> Registry<fn(Schedule) -> Component> {
    Registry::from_entries("loss component", DECLARED).expect("the component names are distinct")
}

impl Component {
    /// The component registered as `name` with coefficient `coef`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownName`] listing the components.
    pub fn from_name(name: &str, coef: Schedule) -> Result<Component> {
        Ok(components().get(name)?(coef))
    }

    /// Whether its coefficient is the constant 0, so that it never computes and needs no input.
    pub fn is_off(&self) -> bool {
        self.coef().is_constant() && self.coef().eval(0, 0) == 0.0
    }

    /// The term at this step, or None when its coefficient is 0 there (then its inputs are not needed).
    pub fn compute<B: Backend>(&self, ctx: &Ctx<'_, B>, step: StepInfo) -> Result<Option<LossOutput<B>>> {
        let coef = self.coef().eval(step.step, step.total);
        if coef == 0.0 {
            return Ok(None);
        }
        self.compute_with(ctx, coef).map(Some)
    }
}

/// The loss of a run, built once from its [`LossConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct Loss {
    config: LossConfig,
    advantage: HybridAdvantage,
    pg: PolicyGradient,
    components: Vec<Component>,
}

impl Loss {
    /// Builds the loss.
    ///
    /// # Errors
    ///
    /// What [`LossConfig::validate`] finds.
    pub fn new(config: LossConfig) -> Result<Loss> {
        config.validate()?;
        let advantage = HybridAdvantage {
            kappa: config.kappa.clone(),
            rho: config.rho.clone(),
            weighting: config.weighting,
            rescale: config.rescale,
            norm_by_std: config.norm_by_std,
        };
        let pg = PolicyGradient { clip: Clip { low: config.clip_low, high: config.clip_high } };
        let components = config.extra_components();
        Ok(Loss { config, advantage, pg, components })
    }

    /// A preset by name.
    pub fn preset(name: &str) -> Result<Loss> {
        Loss::new(LossConfig::preset(name)?)
    }

    /// The `[loss]` table of a TOML document.
    pub fn from_toml(document: &str) -> Result<Loss> {
        Loss::new(LossConfig::from_toml(document)?)
    }

    /// The resolved configuration (serialise it into the run's resolved config).
    pub fn config(&self) -> &LossConfig {
        &self.config
    }

    /// The optional batch inputs its components need: [`LossConfig::needs`].
    pub fn needs(&self) -> Vec<(&'static str, Input)> {
        self.config.needs()
    }

    /// Whether the teacher's log-probs can change this loss at some step of a `total`-step run. They do not when
    /// `kappa` is 0 at every step, the weighting is uniform (T-DUR's and the per-token weights read the teacher)
    /// and no component reads full-vocabulary distributions: then the OPD half of Eq 8 is `0 * 1 * A_opd` for
    /// any finite `A_opd`, and a trainer may skip the teacher's forward pass (GRPO's preset).
    pub fn reads_teacher(&self, total: u64) -> bool {
        let kappa = self.config.kappa.first_step_where(total.max(1), |k| k != 0.0).is_some();
        let vocab = self.needs().iter().any(|&(_, input)| input == Input::Vocab);
        kappa || self.config.weighting != Weighting::Uniform || vocab
    }

    /// Checks, before any batch is built, that a caller feeding the optional inputs `fed` (the fields of
    /// [`TrainBatch`] it fills) gives every component what it needs.
    ///
    /// # Errors
    ///
    /// [`Error::Unfed`] naming the first component whose input is not in `fed`.
    pub fn check_fed(&self, fed: &[Input]) -> Result<()> {
        match self.needs().into_iter().find(|(_, input)| !fed.contains(input)) {
            None => Ok(()),
            Some((component, input)) => Err(Error::Unfed {
                component: component.to_owned(),
                input: input.name(),
                fed: if fed.is_empty() {
                    "nothing".to_owned()
                } else {
                    fed.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
                },
            }),
        }
    }

    /// Stage one, once per step over the whole batch: the hybrid advantages, the weights and their metrics.
    pub fn advantages(&self, batch: &StepBatch, step: StepInfo) -> Result<Advantages> {
        Advantages::compute(&self.advantage, batch, step)
    }

    /// Stage two, per mini-batch: the clipped surrogate of `advantages` (`[S, T]`, from [`Advantages::rows`])
    /// aggregated over the mask, plus the components whose coefficient is non-zero at `step`.
    ///
    /// Metrics: `loss/total`, `loss/pg`, `actor/clipfrac`, `actor/approx_kl`, `actor/entropy` (token-mean of
    /// the current entropy), `sched/kappa`, `sched/rho`, and `loss/kl`, `loss/entropy`, `loss/gkd` for the
    /// components computed (unscaled by their coefficients).
    ///
    /// # Errors
    ///
    /// [`Error::Shape`] for mismatched tensors, [`Error::MissingInput`] for a component whose input is absent.
    /// A non-finite loss is not an error here: see [`LossOutput::check_finite`].
    pub fn objective<B: Backend>(
        &self,
        batch: &TrainBatch<B>,
        advantages: Tensor<B, 2>,
        step: StepInfo,
    ) -> Result<LossOutput<B>> {
        batch.check()?;
        if advantages.dims() != batch.dims() {
            return Err(Error::Shape {
                field: "advantages",
                expected: format!("{:?}", batch.dims()),
                got: format!("{:?}", advantages.dims()),
            });
        }
        let mask = Mask::new(&batch.mask);
        let ctx = Ctx {
            batch,
            advantages: &advantages,
            mask: &mask,
            aggregation: self.config.aggregation,
            max_response_len: self.config.max_response_len,
        };
        let mut out = self.pg.compute(&ctx)?;
        for component in &self.components {
            if let Some(term) = component.compute(&ctx, step)? {
                out.loss = out.loss + term.loss;
                out.metrics.extend(term.metrics);
            }
        }
        let m = &mut out.metrics;
        m.insert("actor/entropy".to_owned(), mask.mean_host(batch.entropy.clone().detach()));
        m.insert("sched/kappa".to_owned(), self.config.kappa.eval(step.step, step.total));
        m.insert("sched/rho".to_owned(), self.config.rho.eval(step.step, step.total));
        m.insert("loss/total".to_owned(), scalar(out.loss.clone().detach()));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use atod_models::CpuBackend;
    use burn::tensor::activation::log_softmax;

    use super::*;
    use crate::batch::host_tensor;

    fn with_components(components: &[(&str, &str)]) -> Loss {
        let mut config = LossConfig::grpo();
        for (name, coef) in components {
            config.components.insert((*name).to_owned(), Schedule::parse(coef).unwrap());
        }
        Loss::new(config).unwrap()
    }

    #[test]
    fn one_declaration_gives_the_names_the_registry_and_the_inputs() {
        assert_eq!(COMPONENTS, ["kl", "entropy", "gkd"]);
        assert_eq!(components().names(), COMPONENTS);
        for name in COMPONENTS {
            assert_eq!(Component::from_name(name, Schedule::constant(1.0)).unwrap().name(), name);
        }
        let inputs = |name| Component::from_name(name, Schedule::constant(1.0)).unwrap().inputs();
        assert_eq!(
            (inputs("kl"), inputs("entropy"), inputs("gkd")),
            (&[Input::LpRef][..], &[][..], &[Input::Vocab][..])
        );
        let err = Component::from_name("ppo", Schedule::constant(1.0)).unwrap_err().to_string();
        assert_eq!(err, "unknown loss component `ppo`; known loss components: kl, entropy, gkd");
        assert_eq!((Input::LpRef.to_string(), Input::Vocab.name()), ("lp_ref".to_owned(), "vocab"));
    }

    /// GRPO's preset cannot read the teacher, so a trainer may skip its scoring: every preset with an OPD half,
    /// a non-uniform weighting or a full-vocabulary component can. And for GRPO the skip changes nothing: its
    /// advantages with the teacher's log-probs replaced by the behaviour ones (what the trainer feeds it) equal
    /// those with any teacher, to the bit.
    #[test]
    fn only_losses_whose_teacher_term_can_be_nonzero_read_the_teacher() {
        let reads = |name: &str| Loss::preset(name).unwrap().reads_teacher(60);
        assert!(!reads("grpo"));
        for name in ["atod", "opd", "atod-uniform", "atod-const", "atod-token"] {
            assert!(reads(name), "{name}");
        }
        assert!(with_components(&[("gkd", "step_at(30, 0, 1)")]).reads_teacher(60));
        let mut late = LossConfig::grpo();
        late.kappa = Schedule::parse("step_at(59, 0, 0.5)").unwrap();
        assert!(Loss::new(late).unwrap().reads_teacher(60));

        let behaviour = vec![vec![-0.1, -2.0, -0.5], vec![-1.0, -0.2], vec![-0.3, -0.3, -0.9], vec![-0.05]];
        let teacher = vec![vec![-3.0, -0.1, -0.7], vec![-0.4, -5.0], vec![-0.2, -1.1, -0.6], vec![-2.5]];
        let batch = |lp_teacher: &[Vec<f32>]| {
            StepBatch::from_ragged(
                &behaviour,
                lp_teacher,
                None,
                vec![0, 1, 0, 1],
                vec![0, 0, 1, 1],
                vec![0, 0, 0, 0],
                vec![1.0, 0.0],
            )
            .unwrap()
        };
        let grpo = Loss::preset("grpo").unwrap();
        for step in [0, 30, 59] {
            let info = StepInfo::new(step, 60);
            let with_teacher = grpo.advantages(&batch(&teacher), info).unwrap().per_token;
            let without = grpo.advantages(&batch(&behaviour), info).unwrap().per_token;
            let bits = |v: &[f32]| v.iter().map(|x| (x + 0.0).to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&with_teacher), bits(&without), "step {step}");
            assert!(with_teacher.iter().any(|&a| a != 0.0), "the GRPO half is not trivially 0");
        }
    }

    #[test]
    fn only_components_not_constantly_zero_need_their_inputs() {
        assert_eq!(Loss::preset("atod").unwrap().needs(), []);
        assert_eq!(with_components(&[("kl", "0.0"), ("gkd", "0"), ("entropy", "0.01")]).needs(), []);
        let loss = with_components(&[("gkd", "1"), ("kl", "step_at(5, 0, 0.1)")]);
        assert_eq!(loss.needs(), [("kl", Input::LpRef), ("gkd", Input::Vocab)]);
        assert_eq!(loss.needs(), loss.config().needs());
    }

    #[test]
    fn an_unfed_input_is_an_error_naming_the_key_and_the_fix() {
        let loss = with_components(&[("kl", "step_at(5, 0, 0.1)"), ("gkd", "0.5")]);
        assert!(loss.check_fed(&Input::ALL).is_ok());
        let err = loss.check_fed(&[]).unwrap_err();
        assert!(matches!(&err, Error::Unfed { component, input: "lp_ref", .. } if component == "kl"), "{err:?}");
        assert_eq!(
            err.to_string(),
            "`loss.components.kl` needs the batch input `lp_ref`, which this caller does not feed (it feeds: \
             nothing); remove the key or set it to 0"
        );
        let err = loss.check_fed(&[Input::LpRef]).unwrap_err().to_string();
        assert!(
            err.starts_with("`loss.components.gkd` needs the batch input `vocab`") && err.contains("feeds: `lp_ref`)")
        );
        assert!(with_components(&[("kl", "0")]).check_fed(&[]).is_ok());
    }

    /// A one-row batch of two tokens feeding `fed`.
    fn batch(fed: &[Input]) -> TrainBatch<CpuBackend> {
        let d = Default::default();
        let t = |x: f32| host_tensor::<CpuBackend>(vec![x; 2], 1, 2, &d);
        let mut batch = TrainBatch::new(t(-1.0), t(-1.0), t(0.5), t(1.0));
        if fed.contains(&Input::LpRef) {
            batch = batch.with_ref(t(-1.5));
        }
        if fed.contains(&Input::Vocab) {
            let v = |x: f32| log_softmax(Tensor::<CpuBackend, 3>::from_floats([[[x, 0.0, 1.0], [0.0, x, 2.0]]], &d), 2);
            batch = batch.with_vocab(v(0.5), v(-0.5));
        }
        assert_eq!(batch.fed(), fed);
        batch
    }

    #[test]
    fn every_component_computes_with_its_declared_inputs_and_errs_without_each() {
        let advantages = host_tensor::<CpuBackend>(vec![1.0; 2], 1, 2, &Default::default());
        for name in COMPONENTS {
            let loss = with_components(&[(name, "1")]);
            let needs: Vec<Input> = loss.needs().into_iter().map(|(_, input)| input).collect();
            let out = loss.objective(&batch(&needs), advantages.clone(), StepInfo::new(0, 1)).unwrap();
            assert!(out.metrics.contains_key(&format!("loss/{name}")), "{name}");
            for &missing in &needs {
                let fed: Vec<Input> = needs.iter().copied().filter(|&i| i != missing).collect();
                let err = loss.objective(&batch(&fed), advantages.clone(), StepInfo::new(0, 1)).unwrap_err();
                let expected = (name, missing.name());
                assert!(matches!(err, Error::MissingInput { component, input } if (component, input) == expected));
            }
        }
    }
}
