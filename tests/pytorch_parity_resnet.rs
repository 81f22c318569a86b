//! ResNet-20 against PyTorch's module (tests/fixtures/resnet20.py), through the real training
//! code path and the binary: `tests/fixtures/make_fixtures.py` wrote its Kaiming-initialised
//! state_dict, the first batch's logits, loss, every gradient and the running statistics after
//! it, each batch's loss over one unshuffled epoch (64, 64 and a partial 22 images, SGD lr 0.05
//! momentum 0.9), every state_dict entry after it, the trained network's loss and accuracy on
//! the test images, and how far PyTorch's own float32 run is from its float64 run on each
//! (`f64diff.*`).
//!
//! Tolerances: both compute in float32 and sum in different orders, so they may differ by about
//! as much as PyTorch's float32 differs from float64; each comparison allows 10 times that
//! difference, relative to the largest value (updates: after - init). The logits and losses
//! allow at least 1e-5 (1e-4 after an epoch). Gradients, updates and statistics allow at least
//! 2e-2: with 19 ReLUs over up to 2M values a batch, some ReLU inputs lie within float32
//! rounding of 0 and fall on either side in two float32 runs that sum in different orders,
//! and one such element moves a gradient discretely (measured: layer3.2.conv2.weight's grad by
//! 1.3e-2 of its largest value, while PyTorch's own float32 and float64 runs differ by up to
//! 3.3e-3 on the grads). A wrong padding, stride, shortcut or branch sum moves them by O(1):
//! the GPU against the CPU reference, where the masks agree, is held to 1e-5 by train_step.rs.

mod common;
use common::*;

use gpu_lenet::checkpoint;
use gpu_lenet::data::{self, DataOptions, DatasetKind};
use gpu_lenet::kernels::softmax_cross_entropy::METRICS_WORDS;
use gpu_lenet::nn::Model;
use gpu_lenet::train::{Engine, Setup};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

const LR: f32 = 0.05;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn tensor(st: &SafeTensors, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("fixture tensor {name}: {e}"));
    t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn tol(st: &SafeTensors, name: &str) -> f64 {
    (10.0 * tensor(st, &format!("f64diff.{name}"))[0] as f64).max(if name == "logits" { 1e-5 } else { 2e-2 })
}

fn load(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn engine(g: &'static gpu_lenet::gpu::Gpu) -> Engine<'static> {
    let ds =
        data::load(&DataOptions { kind: DatasetKind::Cifar10, dir: Some(fixture("cifar")), download: false, seed: 0 })
            .unwrap();
    let init = checkpoint::load(&fixture("resnet20_init.safetensors"), g.storage_alignment()).unwrap();
    assert_eq!(init.model, Model::Resnet20, "a PyTorch export without metadata, known by layer1.0.conv1");
    let e = Engine::new(g, ds, Model::Resnet20, 64, &Setup::constant(LR, 0.9), true).unwrap();
    assert_eq!(init.arena, e.net.arena);
    e.upload_weights(&init.weights, None);
    e.net.upload_state(g, &init.state);
    e
}

#[test]
fn resnet20_first_batch_logits_loss_gradients_and_running_statistics_match_pytorch() {
    let g = gpu();
    let e = engine(g);
    let order: Vec<u32> = (0..150).collect();
    e.train_steps(&order, 0..1, &mut |_, _| {}).unwrap();
    let bytes = load("resnet20_first_batch.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let sched = e.train_schedule().unwrap();
    assert_close("logits", &read(&sched.acts.logits)[..640], &tensor(&st, "logits"), tol(&st, "logits"));
    let rows = e.train_metrics_rows().unwrap();
    assert_close("loss", &[rows[0] / rows[2]], &tensor(&st, "loss"), 1e-5);
    let grads = e.net.download_grads(g).unwrap();
    let arena = &e.net.arena;
    // PyTorch's named_parameters, every one.
    let mut want: Vec<String> =
        st.names().into_iter().filter_map(|n| n.strip_prefix("grad.")).map(String::from).collect();
    let mut have: Vec<String> = arena.tensors.iter().map(|t| t.name.clone()).collect();
    want.sort();
    have.sort();
    assert_eq!(have, want);
    for t in &arena.tensors {
        let name = format!("grad.{}", t.name);
        assert_close(&name, arena.slice(&grads, &t.name), &tensor(&st, &name), tol(&st, &name));
    }
    let state = e.net.download_state(g).unwrap();
    for t in &e.net.state_arena.tensors {
        let name = format!("running.{}", t.name);
        let (got, want) = (e.net.state_arena.slice(&state, &t.name), tensor(&st, &name));
        match t.name.strip_suffix(".running_mean") {
            // After one step running_mean is 0.1 of the batch mean, which Kaiming's symmetric
            // weights put near 0: a mean of values far larger than itself. Its error is judged
            // against the spread of those values, 0.1 of their standard deviation (from
            // running_var = 0.9 + 0.1 var).
            Some(bn) => {
                let var = tensor(&st, &format!("running.{bn}.running_var"));
                let sd = var.iter().map(|v| ((v - 0.9) / 0.1).max(0.0).sqrt()).fold(0f32, f32::max);
                let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(err as f64 <= 1e-5 * 0.1 * sd as f64, "{}: error {err:e} against 0.1 x sd {sd:e}", t.name);
            }
            None => assert_close(&t.name, got, &want, tol(&st, &name)),
        }
    }
}

#[test]
fn resnet20_one_epoch_losses_weights_and_running_statistics_match_pytorch() {
    let g = gpu();
    let e = engine(g);
    let init = e.net.download_weights(g).unwrap();
    let order: Vec<u32> = (0..150).collect();
    e.train_epoch(&order, &mut |_, _| {}).unwrap();
    let bytes = load("resnet20_epoch.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let rows = e.train_metrics_rows().unwrap();
    assert_eq!(rows.chunks_exact(METRICS_WORDS).map(|r| r[2]).collect::<Vec<_>>(), vec![64.0, 64.0, 22.0]);
    let losses: Vec<f32> = rows.chunks_exact(METRICS_WORDS).map(|r| r[0] / r[2]).collect();
    for (i, (&a, &b)) in losses.iter().zip(&tensor(&st, "losses")).enumerate() {
        assert!(((a - b) / b).abs() < 1e-4, "batch {i} loss {a} vs PyTorch {b}");
    }
    let after = e.net.download_weights(g).unwrap();
    let arena = &e.net.arena;
    for t in &arena.tensors {
        let i = arena.slice(&init, &t.name);
        let got: Vec<f32> = arena.slice(&after, &t.name).iter().zip(i).map(|(x, y)| x - y).collect();
        let want: Vec<f32> = tensor(&st, &format!("after.{}", t.name)).iter().zip(i).map(|(x, y)| x - y).collect();
        assert_close(&format!("update of {}", t.name), &got, &want, tol(&st, &t.name));
    }
    let state = e.net.download_state(g).unwrap();
    for t in &e.net.state_arena.tensors {
        let (got, want) = (e.net.state_arena.slice(&state, &t.name), tensor(&st, &format!("after.{}", t.name)));
        assert_close(&t.name, got, &want, tol(&st, &t.name));
    }
}

fn run(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gpu-lenet")).args(args).output().unwrap()
}

#[test]
fn the_train_command_writes_pytorchs_resnet20_state_dict_and_eval_reads_pytorchs() {
    let dir = std::env::temp_dir().join(format!("gpu-lenet-parity-resnet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (data, init, out) = (fixture("cifar"), fixture("resnet20_init.safetensors"), dir.join("after.safetensors"));
    let o = run(&[
        "train",
        "--dataset",
        "cifar10",
        "--no-download",
        "--epochs",
        "1",
        "--no-shuffle",
        "--lr",
        "0.05",
        "--data",
        data.to_str().unwrap(),
        "--init",
        init.to_str().unwrap(),
        "--save",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Training ResNet-20"), "the model comes from --init's file");
    // Every entry of PyTorch's state_dict with its dtype and shape (what a strict
    // load_state_dict needs), and the running statistics PyTorch's epoch left.
    let (saved, want) = (std::fs::read(&out).unwrap(), std::fs::read(&init).unwrap());
    let (saved, want) = (SafeTensors::deserialize(&saved).unwrap(), SafeTensors::deserialize(&want).unwrap());
    for (name, t) in want.tensors() {
        let s = saved.tensor(&name).unwrap_or_else(|_| panic!("{name} missing from the checkpoint"));
        assert_eq!((s.dtype(), s.shape()), (t.dtype(), t.shape()), "{name}");
    }
    let got = checkpoint::load(&out, 4).unwrap();
    assert_eq!((got.model, got.batches_tracked), (Model::Resnet20, 3), "num_batches_tracked after 3 batches");
    let bytes = load("resnet20_epoch.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for t in &got.state_arena.tensors {
        let want = tensor(&st, &format!("after.{}", t.name));
        assert_close(&t.name, got.state_arena.slice(&got.state, &t.name), &want, tol(&st, &t.name));
    }

    // PyTorch's trained network, as a plain state_dict file: eval gives PyTorch's test loss and
    // accuracy.
    let trained: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter_map(|(n, t)| n.strip_prefix("after.").map(|k| (k.to_string(), t))).collect();
    let export = dir.join("pytorch_trained.safetensors");
    safetensors::serialize_to_file(trained, None, &export).unwrap();
    let e = run(&[
        "eval",
        "--checkpoint",
        export.to_str().unwrap(),
        "--dataset",
        "cifar10",
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let j: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    let (loss, correct) = (j["test_loss"].as_f64().unwrap(), j["correct"].as_u64().unwrap());
    let want_loss = tensor(&st, "test_loss")[0] as f64;
    assert!(((loss - want_loss) / want_loss).abs() < 1e-4, "eval loss {loss} vs PyTorch's {want_loss}");
    assert_eq!(correct, tensor(&st, "test_correct")[0] as u64, "test images right");
    let _ = std::fs::remove_dir_all(&dir);
}
