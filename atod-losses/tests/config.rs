//! The `[loss]` table, presets and registries by name, and non-finite detection.

use atod_core::Schedule;
use atod_losses::batch::host_tensor;
use atod_losses::{check_finite, Aggregation, Error, Loss, LossConfig, Registry, StepInfo, TrainBatch, Weighting};
use atod_models::CpuBackend;

#[test]
fn the_documented_table_parses() {
    let c = LossConfig::from_toml(
        r#"
        [loss]
        preset = "atod"
        kappa = "linear(1.0, 0.1, 80)"
        rho = 2
        weighting = "token"
        rescale = true
        norm_by_std = false
        aggregation = "seq-mean-token-sum-norm"
        max_response_len = 512
        clip_low = 0.2
        clip_high = 0.28

        [loss.components]
        kl = 0.001
        entropy = "linear(0.01, 0, 100)"
        "#,
    )
    .unwrap();
    assert_eq!(c.kappa.eval(80, 150), 0.1);
    assert_eq!(c.rho.eval(0, 150), 2.0);
    assert_eq!(c.weighting, Weighting::Token);
    assert!(c.rescale && !c.norm_by_std);
    assert_eq!(c.aggregation, Aggregation::SeqMeanTokenSumNorm);
    assert_eq!(c.max_response_len, Some(512));
    assert_eq!(c.component("kl").eval(0, 1), 0.001);
    assert_eq!(c.component("gkd").eval(0, 1), 0.0);
    // A resolved config written back reads back the same.
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        loss: &'a LossConfig,
    }
    let text = toml::to_string(&Doc { loss: &c }).unwrap();
    assert_eq!(LossConfig::from_toml(&text).unwrap(), c);
}

#[test]
fn presets_by_name_and_as_constructors() {
    let table = [
        ("atod", LossConfig::atod()),
        ("opd", LossConfig::opd()),
        ("grpo", LossConfig::grpo()),
        ("atod-uniform", LossConfig::atod_uniform()),
        ("atod-const", LossConfig::atod_const()),
        ("atod-token", LossConfig::atod_token()),
    ];
    for (name, config) in table {
        assert_eq!(LossConfig::preset(name).unwrap(), config, "{name}");
        let toml = format!("[loss]\npreset = \"{name}\"\n");
        assert_eq!(LossConfig::from_toml(&toml).unwrap(), config, "{name}");
    }
    let opd = LossConfig::opd();
    assert_eq!((opd.kappa.eval(50, 150), opd.rho.eval(50, 150), opd.weighting), (1.0, 0.0, Weighting::Uniform));
    let grpo = LossConfig::grpo();
    assert_eq!((grpo.kappa.eval(50, 150), grpo.rho.eval(50, 150)), (0.0, 1.0));
    let c = LossConfig::atod_const();
    assert_eq!((c.kappa.eval(100, 150), c.rho.eval(100, 150), c.weighting), (1.0, 1.0, Weighting::Tdur));
    assert_eq!(LossConfig::from_toml("").unwrap(), LossConfig::atod(), "no [loss] table: the atod preset");
}

#[test]
fn unknown_names_are_errors_listing_the_known_ones() {
    let cases = [
        ("[loss.components]\nfoo = 1.0\n", "unknown loss component `foo`; known loss components: kl, entropy, gkd"),
        ("[loss]\npreset = \"ppo\"\n", "unknown loss preset `ppo`; known loss presets: atod, opd, grpo, atod-uniform, atod-const, atod-token"),
        ("[loss]\nweighting = \"soft\"\n", "unknown weighting `soft`; known weightings: uniform, tdur, token"),
        (
            "[loss]\naggregation = \"mean\"\n",
            "unknown aggregation `mean`; known aggregations: token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm",
        ),
    ];
    for (toml, message) in cases {
        let err = LossConfig::from_toml(toml).unwrap_err();
        assert!(matches!(err, Error::UnknownName { .. }), "{toml}: {err:?}");
        assert_eq!(err.to_string(), message);
    }
    // An unknown key lists the known keys.
    let err = LossConfig::from_toml("[loss]\nkapa = 1.0\n").unwrap_err().to_string();
    assert!(err.contains("unknown field `kapa`") && err.contains("`kappa`") && err.contains("`components`"), "{err}");
    // A bad schedule carries its position.
    let err = LossConfig::from_toml("[loss]\nrho = \"linear(1, 2\"\n").unwrap_err().to_string();
    assert!(err.contains("line 1, column"), "{err}");
    // Out-of-range values.
    assert!(matches!(LossConfig::from_toml("[loss]\nclip_low = 1.5\n"), Err(Error::Value { key: "clip_low", .. })));
}

#[test]
fn a_registry_refuses_duplicates_and_lists_names_on_a_miss() {
    let mut r = Registry::new("widget");
    r.register("a", 1).unwrap();
    assert!(matches!(r.register("a", 2), Err(Error::DuplicateName { kind: "widget", .. })));
    assert_eq!(r.get("b").unwrap_err().to_string(), "unknown widget `b`; known widgets: a");
}

fn tiny_batch(lp: f32) -> TrainBatch<CpuBackend> {
    let d = Default::default();
    let t = |x: f32| host_tensor::<CpuBackend>(vec![x; 2], 1, 2, &d);
    TrainBatch::new(t(lp), t(-1.0), t(0.5), t(1.0))
}

#[test]
fn a_component_without_its_input_is_an_error_only_when_switched_on() {
    let mut c = LossConfig::grpo();
    c.components.insert("kl".into(), Schedule::parse("step_at(5, 0, 0.1)").unwrap());
    let loss = Loss::new(c).unwrap();
    let adv = host_tensor::<CpuBackend>(vec![1.0; 2], 1, 2, &Default::default());
    let early = loss.objective(&tiny_batch(-1.0), adv.clone(), StepInfo::new(0, 10)).unwrap();
    assert!(!early.metrics.contains_key("loss/kl"));
    let err = loss.objective(&tiny_batch(-1.0), adv, StepInfo::new(5, 10)).unwrap_err();
    assert!(matches!(err, Error::MissingInput { component: "kl", input: "lp_ref" }), "{err}");
}

#[test]
fn a_non_finite_loss_or_gradient_norm_is_reported() {
    let loss = Loss::preset("grpo").unwrap();
    let adv = host_tensor::<CpuBackend>(vec![1.0; 2], 1, 2, &Default::default());
    let ok = loss.objective(&tiny_batch(-1.0), adv.clone(), StepInfo::new(0, 10)).unwrap();
    assert!(ok.is_finite() && ok.check_finite().is_ok());
    assert_eq!(ok.metrics["loss/total"], -1.0);
    let bad = loss.objective(&tiny_batch(f32::NAN), adv, StepInfo::new(0, 10)).unwrap();
    assert!(!bad.is_finite());
    assert!(matches!(bad.check_finite(), Err(Error::NonFinite { .. })));
    assert!(check_finite("grad_norm", 3.0).is_ok());
    assert_eq!(check_finite("grad_norm", f64::INFINITY).unwrap_err().to_string(), "non-finite grad_norm: inf");
    let d = Default::default();
    assert!(atod_losses::all_finite(&host_tensor::<CpuBackend>(vec![1.0, 2.0], 1, 2, &d)));
    assert!(!atod_losses::all_finite(&host_tensor::<CpuBackend>(vec![1.0, f32::NAN], 1, 2, &d)));
}

#[test]
fn batch_bookkeeping_errors_name_the_problem() {
    let ok = atod_losses::StepBatch::from_ragged(
        &[vec![-1.0], vec![-2.0, -0.5]],
        &[vec![-1.1], vec![-2.0, -0.4]],
        None,
        vec![0, 1],
        vec![0, 0],
        vec![0, 0],
        vec![1.0],
    )
    .unwrap();
    assert_eq!((ok.n_rows, ok.n_cols), (2, 2));
    let mut split = ok.clone();
    split.group_id = vec![0, 1];
    assert!(split.layout().unwrap_err().to_string().contains("trajectory 0 is in group 0 and, at row 1, in group 1"));
    let mut dup = ok.clone();
    dup.turn_idx = vec![0, 0];
    assert!(dup.layout().unwrap_err().to_string().contains("turn 0 twice"));
    let mut orphan = ok;
    orphan.returns.push(0.0);
    assert!(orphan.layout().unwrap_err().to_string().contains("trajectory 1 has a return but no rows"));
}
