//! Parity with PyTorch, llm.c style. `tests/fixtures/make_fixtures.py` (PyTorch from pip)
//! wrote a small CIFAR-format data set with a partial last batch, Net()'s initial weights, the
//! first batch's logits, loss and every gradient, each batch's loss over one unshuffled epoch
//! and the weights after it. Here the same runs through the real training code path.

mod common;
use common::*;

use gpu_lenet::checkpoint;
use gpu_lenet::data::{self, DataOptions, DatasetKind};
use gpu_lenet::kernels::softmax_cross_entropy::METRICS_WORDS;
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

fn dataset() -> data::Dataset {
    data::load(&DataOptions { kind: DatasetKind::Cifar10, dir: Some(fixture("cifar")), download: false, seed: 0 })
        .unwrap()
}

fn engine(g: &'static gpu_lenet::gpu::Gpu) -> Engine<'static> {
    let init = checkpoint::load(&fixture("init.safetensors"), g.storage_alignment()).unwrap();
    let e = Engine::new(g, dataset(), gpu_lenet::nn::Model::Lenet5, 64, &Setup::constant(0.001, 0.9), true).unwrap();
    assert_eq!(init.arena, e.net.arena);
    e.upload_weights(&init.weights, None);
    e
}

#[test]
fn first_batch_logits_loss_and_gradients_match_pytorch() {
    let g = gpu();
    let e = engine(g);
    let order: Vec<u32> = (0..150).collect();
    e.train_steps(&order, 0..1, &mut |_, _| {}).unwrap();
    let bytes = std::fs::read(fixture("first_batch.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let sched = e.train_schedule().unwrap();
    assert_close("logits", &read(&sched.acts.logits), &tensor(&st, "logits"), 1e-5);
    let rows = e.train_metrics_rows().unwrap();
    let loss = rows[0] / rows[2];
    assert_eq!(rows[2], 64.0);
    assert_close("loss", &[loss], &tensor(&st, "loss"), 1e-5);
    let grads = e.net.download_grads(g).unwrap();
    for t in &e.net.arena.tensors {
        assert_close(
            &format!("grad {}", t.name),
            e.net.arena.slice(&grads, &t.name),
            &tensor(&st, &format!("grad.{}", t.name)),
            1e-5,
        );
    }
}

#[test]
fn one_epoch_losses_and_weights_match_pytorch() {
    let g = gpu();
    let e = engine(g);
    let init = e.net.download_weights(g).unwrap();
    let order: Vec<u32> = (0..150).collect();
    e.train_epoch(&order, &mut |_, _| {}).unwrap();
    let bytes = std::fs::read(fixture("epoch.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let rows = e.train_metrics_rows().unwrap();
    let losses: Vec<f32> = rows.chunks_exact(METRICS_WORDS).map(|r| r[0] / r[2]).collect();
    assert_eq!(
        rows.chunks_exact(METRICS_WORDS).map(|r| r[2]).collect::<Vec<_>>(),
        vec![64.0, 64.0, 22.0],
        "batch sizes, the last one partial"
    );
    let want = tensor(&st, "losses");
    for (i, (&a, &b)) in losses.iter().zip(&want).enumerate() {
        assert!(((a - b) / b).abs() < 1e-5, "batch {i} loss {a} vs PyTorch {b}");
    }
    let after = e.net.download_weights(g).unwrap();
    for t in &e.net.arena.tensors {
        let a = e.net.arena.slice(&after, &t.name);
        let i = e.net.arena.slice(&init, &t.name);
        let got: Vec<f32> = a.iter().zip(i).map(|(x, y)| x - y).collect();
        let want: Vec<f32> = tensor(&st, &format!("after.{}", t.name)).iter().zip(i).map(|(x, y)| x - y).collect();
        assert_close(&format!("update of {}", t.name), &got, &want, 1e-3);
    }
}

#[test]
fn the_train_command_saves_the_same_weights_as_pytorch() {
    let dir = std::env::temp_dir().join(format!("gpu-lenet-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("after.safetensors");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_gpu-lenet"))
        .args(["train", "--dataset", "cifar10", "--no-download", "--epochs", "1", "--no-shuffle"])
        .arg("--data")
        .arg(fixture("cifar"))
        .arg("--init")
        .arg(fixture("init.safetensors"))
        .arg("--save")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let got = checkpoint::load(&out, 4).unwrap();
    let init = checkpoint::load(&fixture("init.safetensors"), 4).unwrap();
    let bytes = std::fs::read(fixture("epoch.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for t in &got.arena.tensors {
        let i = got.arena.slice(&init.weights, &t.name);
        let upd: Vec<f32> = got.arena.slice(&got.weights, &t.name).iter().zip(i).map(|(x, y)| x - y).collect();
        let want: Vec<f32> = tensor(&st, &format!("after.{}", t.name)).iter().zip(i).map(|(x, y)| x - y).collect();
        assert_close(&format!("saved update of {}", t.name), &upd, &want, 1e-3);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
