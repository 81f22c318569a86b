//! Nothing lost: resumable checkpoints (2 epochs + resume + 2 epochs is bit-identical to 4),
//! refused hyperparameter changes, Ctrl-C with a checkpoint and a resume, divergence that
//! keeps the last good checkpoint, and run-to-run determinism.

use gpu_lenet::checkpoint;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpu-lenet-resume-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture_data() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar").display().to_string()
}

fn train(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_gpu-lenet")).arg("train").args(args).output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string());
    assert!(!err.contains("panicked"), "{err}");
    (o.status.success(), out, err)
}

/// Weights and momentum of a checkpoint, as raw bits.
fn bits(path: &Path) -> Vec<u32> {
    let l = checkpoint::load(path, 4).unwrap();
    let mut v: Vec<u32> = l.weights.iter().map(|x| x.to_bits()).collect();
    if let Some(m) = l.momentum {
        v.extend(m.iter().map(|x| x.to_bits()));
    }
    v
}

#[test]
fn two_epochs_plus_resume_plus_two_is_bit_identical_to_four() {
    let data = fixture_data();
    let (a, b) = (temp_dir("a"), temp_dir("b"));
    let common = ["--dataset", "cifar10", "--data", &data, "--batch-size", "32", "--lr", "0.01"];
    let (ok, _, err) = train(&[&common[..], &["--epochs", "4", "--checkpoint-dir", a.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let (ok, _, err) = train(&[&common[..], &["--epochs", "2", "--checkpoint-dir", b.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    assert_ne!(bits(&a.join("last.safetensors")), bits(&b.join("last.safetensors")), "2 epochs differ from 4");
    let (ok, out, err) = train(&[&common[..], &["--epochs", "4", "--resume", b.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    assert!(
        out.contains("Resuming from") && out.contains("Epoch 3, Loss: ") && !out.contains("Epoch 2, Loss: "),
        "{out}"
    );
    assert_eq!(
        bits(&a.join("last.safetensors")),
        bits(&b.join("last.safetensors")),
        "resumed run is not bit-identical"
    );
    assert!(a.join("best.safetensors").exists());
    // best.safetensors holds only the state_dict (loadable by PyTorch as is).
    assert!(checkpoint::load(&a.join("best.safetensors"), 4).unwrap().momentum.is_none());
}

#[test]
fn resume_refuses_changed_hyperparameters_unless_asked() {
    let data = fixture_data();
    let d = temp_dir("hyper");
    let (ok, _, err) =
        train(&["--dataset", "cifar10", "--data", &data, "--epochs", "1", "--checkpoint-dir", d.to_str().unwrap()]);
    assert!(ok, "{err}");
    let before = std::fs::read(d.join("last.safetensors")).unwrap();
    let (ok, _, err) = train(&[
        "--dataset",
        "cifar10",
        "--data",
        &data,
        "--epochs",
        "2",
        "--lr",
        "0.01",
        "--resume",
        d.to_str().unwrap(),
    ]);
    assert!(!ok);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(
        line.contains("--lr")
            && line.contains("0.001")
            && line.contains("0.01")
            && line.contains("--allow-changed-hyperparameters"),
        "{line}"
    );
    assert_eq!(std::fs::read(d.join("last.safetensors")).unwrap(), before, "a refused resume touched the checkpoint");
    let (ok, out, err) = train(&[
        "--dataset",
        "cifar10",
        "--data",
        &data,
        "--epochs",
        "2",
        "--lr",
        "0.01",
        "--resume",
        d.to_str().unwrap(),
        "--allow-changed-hyperparameters",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("Epoch 2, Loss: "), "{out}");
}

#[test]
fn ctrl_c_checkpoints_and_the_run_resumes() {
    let d = temp_dir("sigint");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpu-lenet"))
        .args([
            "train",
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--lr",
            "0.01",
            "--checkpoint-dir",
            d.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training has started, then let it run a little.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while stdout.read_line(&mut line).unwrap() > 0 && !line.contains("Training LeNet-5") {
        line.clear();
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(130), "{err}");
    let last = err.lines().rev().find(|l| l.starts_with("error: ")).unwrap();
    assert!(last.contains("interrupted at epoch 1") && last.contains("--resume"), "{last}");
    let l = checkpoint::load(&d.join("last.safetensors"), 4).unwrap();
    let step: usize = l.metadata["step"].parse().unwrap();
    assert!(step > 0 && l.metadata["epoch"] == "0", "{:?}", l.metadata);
    let (ok, out, err) =
        train(&["--dataset", "synthetic", "--epochs", "1", "--lr", "0.01", "--resume", d.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("and {step} step(s) of epoch 1")) && out.contains("Epoch 1, Loss: "), "{out}");
}

#[test]
fn divergence_stops_with_the_step_and_keeps_the_saved_file() {
    let data = fixture_data();
    let d = temp_dir("diverge");
    let save = d.join("w.safetensors");
    std::fs::write(&save, b"previous good weights").unwrap();
    let (ok, _, err) = train(&[
        "--dataset",
        "cifar10",
        "--data",
        &data,
        "--epochs",
        "3",
        "--lr",
        "100000",
        "--save",
        save.to_str().unwrap(),
    ]);
    assert!(!ok);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(line.contains("diverged") && line.contains("epoch 1, step") && line.contains("lower --lr"), "{line}");
    assert_eq!(std::fs::read(&save).unwrap(), b"previous good weights");
}

#[test]
fn the_same_seed_gives_bit_identical_weights() {
    let data = fixture_data();
    let d = temp_dir("determinism");
    let run = |name: &str, seed: &str| {
        let p = d.join(name);
        let (ok, _, err) = train(&[
            "--dataset",
            "cifar10",
            "--data",
            &data,
            "--epochs",
            "2",
            "--seed",
            seed,
            "--save",
            p.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        bits(&p)
    };
    let (a, b, c) = (run("a.safetensors", "5"), run("b.safetensors", "5"), run("c.safetensors", "6"));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn a_lost_device_ends_with_one_line_and_the_last_epoch_checkpoint_intact() {
    let data = fixture_data();
    let d = temp_dir("lost");
    let o = Command::new(env!("CARGO_BIN_EXE_gpu-lenet"))
        .args([
            "train",
            "--dataset",
            "cifar10",
            "--data",
            &data,
            "--epochs",
            "3",
            "--checkpoint-dir",
            d.to_str().unwrap(),
        ])
        .env("GPU_LENET_TEST_LOSE_DEVICE_AFTER_EPOCH", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("GPU") && errors[0].contains("checkpoint of epoch 1") && errors[0].contains("intact"),
        "{}",
        errors[0]
    );
    let l = checkpoint::load(&d.join("last.safetensors"), 4).unwrap();
    assert_eq!(l.metadata["epoch"], "1");
    // And training continues from it on a fresh device.
    let (ok, out, err) =
        train(&["--dataset", "cifar10", "--data", &data, "--epochs", "2", "--resume", d.to_str().unwrap()]);
    assert!(ok && out.contains("Epoch 2, Loss: "), "{err}");
}
