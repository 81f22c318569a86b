//! The training recipe against PyTorch, through the real binary: `make_fixtures.py` ran several
//! unshuffled epochs of the tiny CIFAR-format set (batches of 64, 64 and a partial 22) from the
//! same init with `torch.optim.SGD(weight_decay, nesterov)`, `CrossEntropyLoss(label_smoothing)`
//! and the scheduler each `--lr-schedule` names, and recorded the rates of every step, each
//! epoch's mean loss, the state_dict after the run and PyTorch's own float32-against-float64
//! difference on each entry (`f64diff.*`).
//!
//! Tolerances, as for BatchNorm's parity: both sides compute in float32 with different summation
//! orders, so each update (after - init) may differ by about PyTorch's float32-against-float64
//! difference; each allows 10 times it (at least 1e-5) relative to the largest update. The
//! rates are computed in float64 on both sides and stored as float32: equal to 1e-6.

mod common;
use common::assert_close;

use gpu_lenet::checkpoint;
use gpu_lenet::train::LrSchedule;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn tensor(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
    t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

const STEPS: usize = 3;

/// Trains with `flags` from `init` for `epochs` epochs through the binary and checks the run
/// against the fixture `name`: the rates `LrSchedule` gives, each epoch's loss, every update.
fn check(name: &str, init: &str, epochs: usize, schedule: &str, flags: &[&str]) {
    let dir = std::env::temp_dir().join(format!("gpu-lenet-parity-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (out, metrics) = (dir.join("after.safetensors"), dir.join("metrics.jsonl"));
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-lenet"))
        .args(["train", "--dataset", "cifar10", "--no-download", "--no-shuffle", "--batch-size", "64"])
        .args(["--epochs", &epochs.to_string(), "--lr", "0.01", "--momentum", "0.9", "--lr-schedule", schedule])
        .args(flags)
        .arg("--data")
        .arg(fixture("cifar"))
        .arg("--init")
        .arg(fixture(&format!("{init}.safetensors")))
        .arg("--save")
        .arg(&out)
        .arg("--metrics")
        .arg(&metrics)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(fixture(&format!("{name}.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();

    // The rates of every step, as the engine writes them into the step table.
    let s = LrSchedule::parse(schedule).unwrap();
    let rates: Vec<(f32, f32)> = (0..epochs).flat_map(|e| s.epoch_rates(0.01, 0.9, epochs, STEPS, e)).collect();
    let (lr, momentum): (Vec<f32>, Vec<f32>) = rates.into_iter().unzip();
    assert_close("lr per step", &lr, &tensor(&st, "lr"), 1e-6);
    assert_close("momentum per step", &momentum, &tensor(&st, "momentum"), 1e-6);

    // Each epoch's training loss and its last lr, from --metrics.
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(&metrics).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), epochs);
    let want = tensor(&st, "epoch_losses");
    for (e, row) in rows.iter().enumerate() {
        let got = row["train_loss"].as_f64().unwrap();
        assert!(
            ((got - want[e] as f64) / want[e] as f64).abs() < 1e-5,
            "epoch {} loss {got} vs PyTorch {}",
            e + 1,
            want[e]
        );
        let last_lr = row["lr"].as_f64().unwrap() as f32;
        assert_eq!(last_lr, lr[(e + 1) * STEPS - 1], "epoch {} lr in --metrics", e + 1);
    }

    // Every state_dict entry: the update for parameters, the value for running statistics.
    let init = checkpoint::load(&fixture(&format!("{init}.safetensors")), 4).unwrap();
    let got = checkpoint::load(&out, 4).unwrap();
    let arena = &got.arena;
    for t in &arena.tensors {
        let i = init.arena.slice(&init.weights, &t.name);
        let upd: Vec<f32> = arena.slice(&got.weights, &t.name).iter().zip(i).map(|(x, y)| x - y).collect();
        let want: Vec<f32> = tensor(&st, &format!("after.{}", t.name)).iter().zip(i).map(|(x, y)| x - y).collect();
        let tol = (10.0 * tensor(&st, &format!("f64diff.{}", t.name))[0] as f64).max(1e-5);
        if t.name.starts_with("conv") && t.name.ends_with(".bias") && init.model == gpu_lenet::nn::Model::Lenet5Bn {
            // Before BatchNorm its gradient is zero up to rounding: judged on the weight's scale.
            let w = t.name.replace(".bias", ".weight");
            let wi = init.arena.slice(&init.weights, &w);
            let scale = tensor(&st, &format!("after.{w}")).iter().zip(wi).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            let err = upd.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err <= 1e-4 * scale, "update of {}: {err:e} against {w}'s updates {scale:e}", t.name);
        } else {
            assert_close(&format!("{name}: update of {}", t.name), &upd, &want, tol);
        }
    }
    for t in &got.state_arena.tensors {
        let want = tensor(&st, &format!("after.{}", t.name));
        let tol = (10.0 * tensor(&st, &format!("f64diff.{}", t.name))[0] as f64).max(1e-5);
        assert_close(&format!("{name}: {}", t.name), got.state_arena.slice(&got.state, &t.name), &want, tol);
    }
}

#[test]
fn weight_decay_nesterov_label_smoothing_and_steplr_match_pytorch() {
    let flags = ["--weight-decay", "5e-4", "--nesterov", "--label-smoothing", "0.1"];
    check("recipe_step", "init", 3, "step:1:0.5", &flags);
}

#[test]
fn onecycle_rates_per_step_and_weights_match_pytorch() {
    check("recipe_onecycle", "init", 2, "onecycle", &[]);
}

#[test]
fn lenet5_bn_with_cosine_annealing_matches_pytorch() {
    check("recipe_cosine", "bn_init", 3, "cosine", &[]);
}

/// Every step's rates against PyTorch's schedulers on longer runs than the training fixtures
/// (`schedules.safetensors`: an optimizer stepped as the run steps it, no training). The rates
/// are float64 on both sides, stored as float32: equal to 1e-6 relative.
#[test]
fn every_schedule_gives_pytorchs_rates_step_by_step() {
    let bytes = std::fs::read(fixture("schedules.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    // As make_fixtures.py's SCHEDULES: (name, --lr-schedule, epochs, steps per epoch, lr, momentum).
    for (name, schedule, epochs, steps, lr, momentum) in [
        ("step", "step:3:0.3", 10, 4, 0.1, 0.9),
        ("multistep", "multistep:2,5:0.1", 8, 3, 0.05, 0.9),
        ("cosine", "cosine", 7, 5, 0.1, 0.9),
        ("onecycle", "onecycle", 3, 17, 0.2, 0.9),
    ] {
        let s = LrSchedule::parse(schedule).unwrap();
        let rates: Vec<(f32, f32)> = (0..epochs).flat_map(|e| s.epoch_rates(lr, momentum, epochs, steps, e)).collect();
        let (l, m): (Vec<f32>, Vec<f32>) = rates.into_iter().unzip();
        assert_close(&format!("{schedule}: lr"), &l, &tensor(&st, &format!("lr.{name}")), 1e-6);
        assert_close(&format!("{schedule}: momentum"), &m, &tensor(&st, &format!("momentum.{name}")), 1e-6);
    }
}
