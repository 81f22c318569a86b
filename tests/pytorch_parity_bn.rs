//! LeNet-5-BN against PyTorch's NetBN, through the real training code path and the binary:
//! `tests/fixtures/make_fixtures.py` wrote NetBN's initial state_dict, the first batch's logits,
//! loss, every gradient and the running statistics after it, each batch's loss over one
//! unshuffled epoch (the last batch partial) and every state_dict entry after it, and how far
//! PyTorch's own float32 run is from its float64 run on each of them (`f64diff.*`).
//!
//! Tolerances: this engine and PyTorch both compute in float32 and differ in their summation
//! orders, so they may differ by about as much as PyTorch's float32 differs from float64. Each
//! comparison allows 10 times that difference (at least 1e-5), relative to the largest value.
//! A conv bias before BatchNorm has a gradient of zero up to rounding (the batch mean removes
//! it): its grad is judged against its conv weight grad's scale.

mod common;
use common::*;

use gpu_lenet::checkpoint;
use gpu_lenet::data::{self, DataOptions, DatasetKind};
use gpu_lenet::kernels::softmax_cross_entropy::METRICS_WORDS;
use gpu_lenet::nn::Model;
use gpu_lenet::train::{Engine, Setup};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn tensor(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
    t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The tolerance for `name`, from PyTorch's own float32-against-float64 difference.
fn tol(st: &SafeTensors, name: &str) -> f64 {
    (10.0 * tensor(st, &format!("f64diff.{name}"))[0] as f64).max(1e-5)
}

fn engine(g: &'static gpu_lenet::gpu::Gpu) -> Engine<'static> {
    let ds =
        data::load(&DataOptions { kind: DatasetKind::Cifar10, dir: Some(fixture("cifar")), download: false, seed: 0 })
            .unwrap();
    let init = checkpoint::load(&fixture("bn_init.safetensors"), g.storage_alignment()).unwrap();
    assert_eq!(init.model, Model::Lenet5Bn, "a PyTorch export without metadata, known by its bn1.* tensors");
    let e = Engine::new(g, ds, Model::Lenet5Bn, 64, &Setup::constant(0.01, 0.9), true).unwrap();
    assert_eq!(init.arena, e.net.arena);
    e.upload_weights(&init.weights, None);
    e.net.upload_state(g, &init.state);
    e
}

fn is_conv_bias(name: &str) -> bool {
    name.starts_with("conv") && name.ends_with(".bias")
}

#[test]
fn netbn_first_batch_logits_loss_gradients_and_running_statistics_match_pytorch() {
    let g = gpu();
    let e = engine(g);
    let order: Vec<u32> = (0..150).collect();
    e.train_steps(&order, 0..1, &mut |_, _| {}).unwrap();
    let bytes = std::fs::read(fixture("bn_first_batch.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let sched = e.train_schedule().unwrap();
    assert_close("logits", &read(&sched.acts.logits)[..640], &tensor(&st, "logits"), tol(&st, "logits"));
    let rows = e.train_metrics_rows().unwrap();
    assert_close("loss", &[rows[0] / rows[2]], &tensor(&st, "loss"), 1e-5);
    let grads = e.net.download_grads(g).unwrap();
    let arena = &e.net.arena;
    for t in &arena.tensors {
        let (got, want) = (arena.slice(&grads, &t.name), tensor(&st, &format!("grad.{}", t.name)));
        if is_conv_bias(&t.name) {
            let weight = t.name.replace(".bias", ".weight");
            let scale = tensor(&st, &format!("grad.{weight}")).iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err <= 1e-5 * scale, "grad {}: {err:e} against {weight}'s scale {scale:e}", t.name);
        } else {
            assert_close(&format!("grad {}", t.name), got, &want, tol(&st, &format!("grad.{}", t.name)));
        }
    }
    let state = e.net.download_state(g).unwrap();
    for t in &e.net.state_arena.tensors {
        let name = format!("running.{}", t.name);
        assert_close(&t.name, e.net.state_arena.slice(&state, &t.name), &tensor(&st, &name), tol(&st, &name));
    }
}

#[test]
fn netbn_one_epoch_losses_weights_and_running_statistics_match_pytorch() {
    let g = gpu();
    let e = engine(g);
    let init = e.net.download_weights(g).unwrap();
    let order: Vec<u32> = (0..150).collect();
    e.train_epoch(&order, &mut |_, _| {}).unwrap();
    let bytes = std::fs::read(fixture("bn_epoch.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let rows = e.train_metrics_rows().unwrap();
    assert_eq!(rows.chunks_exact(METRICS_WORDS).map(|r| r[2]).collect::<Vec<_>>(), vec![64.0, 64.0, 22.0]);
    let losses: Vec<f32> = rows.chunks_exact(METRICS_WORDS).map(|r| r[0] / r[2]).collect();
    for (i, (&a, &b)) in losses.iter().zip(&tensor(&st, "losses")).enumerate() {
        assert!(((a - b) / b).abs() < 1e-5, "batch {i} loss {a} vs PyTorch {b}");
    }
    let after = e.net.download_weights(g).unwrap();
    let arena = &e.net.arena;
    for t in &arena.tensors {
        let i = arena.slice(&init, &t.name);
        let got: Vec<f32> = arena.slice(&after, &t.name).iter().zip(i).map(|(x, y)| x - y).collect();
        let want: Vec<f32> = tensor(&st, &format!("after.{}", t.name)).iter().zip(i).map(|(x, y)| x - y).collect();
        if is_conv_bias(&t.name) {
            // Its updates are momentum over (numerically) zero grads: below the weights' scale.
            let w = t.name.replace(".bias", ".weight");
            let wi = arena.slice(&init, &w);
            let scale = tensor(&st, &format!("after.{w}")).iter().zip(wi).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(err <= 1e-4 * scale, "update of {}: {err:e} against {w}'s updates {scale:e}", t.name);
        } else {
            assert_close(&format!("update of {}", t.name), &got, &want, tol(&st, &t.name));
        }
    }
    let state = e.net.download_state(g).unwrap();
    for t in &e.net.state_arena.tensors {
        let (got, want) = (e.net.state_arena.slice(&state, &t.name), tensor(&st, &format!("after.{}", t.name)));
        assert_close(&t.name, got, &want, tol(&st, &t.name));
    }
}

#[test]
fn the_train_command_writes_netbns_state_dict_as_pytorch_does() {
    let dir = std::env::temp_dir().join(format!("gpu-lenet-parity-bn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("after.safetensors");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-lenet"))
        .args(["train", "--dataset", "cifar10", "--no-download", "--epochs", "1", "--no-shuffle", "--lr", "0.01"])
        .arg("--data")
        .arg(fixture("cifar"))
        .arg("--init")
        .arg(fixture("bn_init.safetensors"))
        .arg("--save")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Training LeNet-5-BN"), "the model comes from --init's file");
    let got = checkpoint::load(&out, 4).unwrap();
    assert_eq!((got.model, got.batches_tracked), (Model::Lenet5Bn, 3), "num_batches_tracked after 3 batches");
    let bytes = std::fs::read(fixture("bn_epoch.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for t in &got.state_arena.tensors {
        let want = tensor(&st, &format!("after.{}", t.name));
        assert_close(&t.name, got.state_arena.slice(&got.state, &t.name), &want, tol(&st, &t.name));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
