//! The example of a user's own training loop (`examples/custom_loop.rs`) runs for two steps, updates the
//! student at each, and reports finite metrics: the test that the library is shaped for loops of one's own.

#[allow(dead_code)]
#[path = "../examples/custom_loop.rs"]
mod custom_loop;

#[test]
fn a_custom_loop_reuses_rollout_scoring_and_update() {
    let history = custom_loop::run(2).expect("the example runs");
    assert_eq!(history.len(), 2);
    for metrics in &history {
        assert!(metrics["loss/total"].is_finite(), "{metrics:?}");
        assert!(metrics["actor/grad_norm"] > 0.0, "{metrics:?}");
        assert!(metrics["rollout/samples"] >= 4.0, "two tasks, two episodes each: {metrics:?}");
    }
}
