//! The loss on 100k response tokens on the CPU backend: stage one (host advantages and T-DUR weights over the
//! whole step) and stage two (the objective with its k3 KL and entropy terms, then backward to the log-probs).
//! The model's forward and backward are not included: this is the loss's own share of a training step.

use atod_core::{Schedule, SplitMix64};
use atod_losses::batch::host_tensor;
use atod_losses::{Loss, LossConfig, StepBatch, StepInfo, TrainBatch};
use atod_models::CpuAutodiff;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

/// 200 turn rows of 500 tokens (about 10% of it padding), 40 trajectories of 5 turns in 10 groups of 4.
const ROWS: usize = 200;
const COLS: usize = 500;

fn step_batch() -> StepBatch {
    let mut rng = SplitMix64::new(7);
    let mut lp = |lo: f64, hi: f64| (lo + (hi - lo) * rng.unit()) as f32;
    let lengths: Vec<usize> = (0..ROWS).map(|r| COLS - (r * 37) % 100).collect();
    let mut b = StepBatch {
        n_rows: ROWS,
        n_cols: COLS,
        lp_old: vec![0.0; ROWS * COLS],
        lp_teacher: vec![0.0; ROWS * COLS],
        mask: vec![0.0; ROWS * COLS],
        turn_idx: (0..ROWS).map(|r| r % 5).collect(),
        traj_id: (0..ROWS).map(|r| r / 5).collect(),
        group_id: (0..ROWS).map(|r| r / 20).collect(),
        returns: (0..ROWS / 5).map(|i| (i % 3) as f32).collect(),
    };
    for (r, &len) in lengths.iter().enumerate() {
        for c in 0..len {
            let k = r * COLS + c;
            b.mask[k] = 1.0;
            b.lp_old[k] = lp(-4.0, -0.01);
            b.lp_teacher[k] = b.lp_old[k] + lp(-1.0, 1.0);
        }
    }
    b
}

fn losses(c: &mut Criterion) {
    let mut config = LossConfig::atod();
    config.components.insert("kl".into(), Schedule::constant(0.01));
    config.components.insert("entropy".into(), Schedule::constant(0.001));
    let loss = Loss::new(config).expect("a valid loss");
    let batch = step_batch();
    let step = StepInfo::new(40, 150);
    let mut group = c.benchmark_group("losses");
    group.throughput(Throughput::Elements((ROWS * COLS) as u64));
    group.bench_function("advantages_100k", |b| {
        b.iter(|| loss.advantages(black_box(&batch), step).expect("advantages"))
    });

    let adv = loss.advantages(&batch, step).expect("advantages");
    let d = Default::default();
    let rows: Vec<usize> = (0..ROWS).collect();
    let t = |x: &Vec<f32>| host_tensor::<CpuAutodiff>(x.clone(), ROWS, COLS, &d);
    let lp_ref: Vec<f32> = batch.lp_old.iter().map(|x| x - 0.05).collect();
    let entropy: Vec<f32> = batch.lp_old.iter().map(|x| -x).collect();
    group.bench_function("objective_backward_100k", |b| {
        b.iter(|| {
            let lp = t(&batch.lp_old).add_scalar(0.01).require_grad();
            let train = TrainBatch::new(lp.clone(), t(&batch.lp_old), t(&entropy).require_grad(), t(&batch.mask))
                .with_ref(t(&lp_ref));
            let advantages = adv.rows(&rows, COLS, &d).expect("rows");
            let out = loss.objective(&train, advantages, step).expect("objective");
            let grads = out.loss.backward();
            black_box(lp.grad(&grads))
        })
    });
    group.finish();
}

criterion_group!(benches, losses);
criterion_main!(benches);
