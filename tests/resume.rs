//! Nothing lost: resumable checkpoints (2 epochs + resume + 2 epochs is bit-identical to 4),
//! refused hyperparameter changes, Ctrl-C with a checkpoint and a resume, divergence that
//! keeps the last good checkpoint, and run-to-run determinism.

use gpu_lenet::checkpoint;
use std::io::{BufRead, BufReader, Read};
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
    two_plus_resume_plus_two("plain", &[]);
}

/// The schedule's position and the augmentation's draws (keyed on seed, epoch and sample)
/// survive a resume: the resumed run reads the recipe back from the checkpoint.
#[test]
fn a_schedule_and_augmentation_resume_bit_identically() {
    two_plus_resume_plus_two(
        "recipe",
        &["--augment", "crop:4,flip", "--lr-schedule", "step:1:0.5", "--weight-decay", "5e-4", "--nesterov"],
    );
}

/// OneCycle spans the run, so it resumes from an interrupt inside the run's `--epochs`; the
/// augmentation's draws do not depend on where the run stopped.
#[test]
fn onecycle_and_augmentation_resume_mid_epoch_bit_identically() {
    let (d, whole) = (temp_dir("onecycle"), temp_dir("onecycle-whole"));
    let flags = ["--dataset", "synthetic", "--epochs", "1", "--lr", "0.05", "--batch-size", "128"];
    let recipe = ["--lr-schedule", "onecycle", "--augment", "crop:4,flip", "--label-smoothing", "0.1"];
    let err = interrupt_mid_epoch(&[&flags[..], &recipe, &["--checkpoint-dir", d.to_str().unwrap()]].concat());
    assert!(err.contains("interrupted at epoch 1"), "{err}");
    let (ok, out, err) = train(&["--resume", d.to_str().unwrap()]);
    assert!(ok && out.contains("step(s) of epoch 1"), "{out}{err}");
    let (ok, _, err) = train(&[&flags[..], &recipe, &["--checkpoint-dir", whole.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let (full, resumed) = (bits(&whole.join("last.safetensors")), bits(&d.join("last.safetensors")));
    assert!(full == resumed, "the resumed onecycle run differs from the uninterrupted one");
    // Another --epochs would stretch the curve: refused unless asked.
    let (ok, _, err) = train(&["--resume", d.to_str().unwrap(), "--epochs", "2"]);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(!ok && line.contains("--epochs") && line.contains("epochs=1, now 2"), "{err}");
}

fn two_plus_resume_plus_two(tag: &str, recipe: &[&str]) {
    let data = fixture_data();
    let (a, b) = (temp_dir(&format!("{tag}-a")), temp_dir(&format!("{tag}-b")));
    let base = ["--dataset", "cifar10", "--data", &data, "--batch-size", "32", "--lr", "0.01"];
    let common = [&base[..], recipe].concat();
    let (ok, _, err) = train(&[&common[..], &["--epochs", "4", "--checkpoint-dir", a.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let (ok, _, err) = train(&[&common[..], &["--epochs", "2", "--checkpoint-dir", b.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    assert_ne!(bits(&a.join("last.safetensors")), bits(&b.join("last.safetensors")), "2 epochs differ from 4");
    // Without the recipe's flags: the resumed run takes them from the checkpoint.
    let (ok, out, err) = train(&[&base[..], &["--epochs", "4", "--resume", b.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    assert!(
        out.contains("Resuming from") && out.contains("Epoch 3, Loss: ") && !out.contains("Epoch 2, Loss: "),
        "{out}"
    );
    let (full, resumed) = (bits(&a.join("last.safetensors")), bits(&b.join("last.safetensors")));
    let differ = full.iter().zip(&resumed).filter(|(x, y)| x != y).count();
    assert!(
        full.len() == resumed.len() && differ == 0,
        "{tag}: {differ} of {} values differ after the resume",
        full.len()
    );
    // Byte for byte, metadata included: the resumed run records the same progress and flags.
    assert!(
        std::fs::read(a.join("last.safetensors")).unwrap() == std::fs::read(b.join("last.safetensors")).unwrap(),
        "the resumed run's last.safetensors differs from the uninterrupted run's"
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

/// Starts `gpu-lenet train ARGS`, waits until its first steps are done (the run says so on stderr
/// and holds there: `GPU_LENET_TEST_HOLD_FOR_INTERRUPT`), sends SIGINT, and returns its stderr.
/// An event, not a clock: however fast the adapter, the signal arrives mid-epoch.
fn interrupt_mid_epoch(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpu-lenet"))
        .arg("train")
        .args(args)
        .env("GPU_LENET_TEST_HOLD_FOR_INTERRUPT", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !line.contains("holding for an interrupt") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the run ended before its first steps:\n{seen}");
        seen += &line;
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    stderr.read_to_string(&mut seen).unwrap();
    let status = child.wait().unwrap();
    assert!(!seen.contains("panicked"), "{seen}");
    assert_eq!(status.code(), Some(130), "{seen}");
    seen
}

#[test]
fn ctrl_c_checkpoints_and_the_run_resumes() {
    let d = temp_dir("sigint");
    let err = interrupt_mid_epoch(&[
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--lr",
        "0.01",
        "--checkpoint-dir",
        d.to_str().unwrap(),
    ]);
    let last = err.lines().rev().find(|l| l.starts_with("error: ")).unwrap();
    assert!(last.contains("interrupted at epoch 1") && last.contains("--resume"), "{last}");
    let l = checkpoint::load(&d.join("last.safetensors"), 4).unwrap();
    let step: usize = l.metadata["step"].parse().unwrap();
    assert!(step > 0 && l.metadata["epoch"] == "0", "{:?}", l.metadata);
    // The command the message prints works as printed (the data set and the hyperparameters come
    // from the checkpoint), and gives the same weights as a resume with every flag.
    let printed =
        last.split("continue with: ").nth(1).and_then(|r| r.split(')').next()).unwrap_or_else(|| panic!("{last}"));
    let words: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(&words[..3], &["gpu-lenet", "train", "--resume"], "{printed}");
    let copy = temp_dir("sigint-copy");
    std::fs::copy(d.join("last.safetensors"), copy.join("last.safetensors")).unwrap();
    let (ok, out, err) = train(&words[2..]);
    assert!(ok, "{printed}: {err}");
    assert!(out.contains(&format!("and {step} step(s) of epoch 1")) && out.contains("Epoch 1, Loss: "), "{out}");
    let (ok, out, err) =
        train(&["--dataset", "synthetic", "--epochs", "1", "--lr", "0.01", "--resume", copy.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("and {step} step(s) of epoch 1")) && out.contains("Epoch 1, Loss: "), "{out}");
    assert_eq!(bits(&d.join("last.safetensors")), bits(&copy.join("last.safetensors")));
}

#[test]
fn ctrl_c_with_save_and_no_checkpoint_dir_writes_the_weights() {
    let d = temp_dir("sigint-save");
    let save = d.join("w.safetensors");
    let err = interrupt_mid_epoch(&["--dataset", "synthetic", "--epochs", "1", "--save", save.to_str().unwrap()]);
    let last = err.lines().rev().find(|l| l.starts_with("error: ")).unwrap();
    let l = checkpoint::load(&save, 4).unwrap_or_else(|e| panic!("{e}\n{last}"));
    let step: usize = l.metadata["step"].parse().unwrap();
    assert!(step > 0 && l.metadata["epoch"] == "0" && l.momentum.is_none(), "{:?}", l.metadata);
    assert!(
        last.contains("interrupted at epoch 1")
            && last.contains(&format!("wrote the weights after step {step} of epoch 1 to {}", save.display())),
        "{last}"
    );
    // Nothing else was left in the folder (the write went through a temporary file and a rename).
    let names: Vec<_> = std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("w.safetensors")]);
}

#[test]
fn resume_given_a_file_says_it_takes_the_checkpoint_folder() {
    let d = temp_dir("resume-file");
    let f = d.join("last.safetensors");
    std::fs::write(&f, b"not read").unwrap();
    let (ok, _, err) = train(&["--resume", f.to_str().unwrap()]);
    assert!(!ok);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(
        line.contains("--resume")
            && line.contains("is a file")
            && line.contains("--checkpoint-dir")
            && line.contains(&format!("--resume {}", d.display())),
        "{line}"
    );
    assert_eq!(std::fs::read(&f).unwrap(), b"not read");
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
    // The same command gives the same file, byte for byte (metadata in a fixed order).
    let bytes = |name: &str| std::fs::read(d.join(name)).unwrap();
    assert!(bytes("a.safetensors") == bytes("b.safetensors"), "two runs with seed 5 wrote different bytes");
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
