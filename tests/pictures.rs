//! The pictures the binary writes: `show-batch` shows the batch kernel's output (checked pixel
//! for pixel against the CPU reference of the augmentation), `plot` and `train --plot` draw the
//! curves, and bad input gets one clear line.

use gpu_lenet::data::augment::Augment;
use gpu_lenet::data::{self, DataOptions, DatasetKind};
use gpu_lenet::kernels::prepare_batch;
use gpu_lenet::picture::batch_grid::{tile_origin, SCALE};
use std::path::{Path, PathBuf};
use std::process::Command;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpu-lenet-pictures-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cifar() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar")
}

fn run(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_gpu-lenet")).args(args).output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string());
    assert!(!err.contains("panicked"), "{err}");
    (o.status.success(), out, err)
}

#[test]
fn show_batch_shows_what_the_network_receives() {
    let d = temp_dir("show");
    let png = d.join("batch.png");
    let data = cifar().display().to_string();
    let (seed, epoch, count) = (5u64, 2u32, 10usize);
    let (ok, out, err) = run(&[
        "show-batch",
        "--dataset",
        "cifar10",
        "--data",
        &data,
        "--augment",
        "crop:4,flip",
        "--seed",
        &seed.to_string(),
        "--epoch",
        &epoch.to_string(),
        "--count",
        &count.to_string(),
        "-o",
        png.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("Wrote 10 training images"), "{out}{err}");
    let picture = image::open(&png).unwrap().to_rgb8();
    // The reference: epoch 2's order under --seed 5, augmented on the CPU.
    let ds =
        data::load(&DataOptions { kind: DatasetKind::Cifar10, dir: Some(cifar()), download: false, seed: 0 }).unwrap();
    let order = gpu_lenet::train::epoch_order(seed, true, ds.train.len(), epoch as usize - 1);
    let a = Augment { crop: 4, flip: true };
    let (x, labels) = prepare_batch::reference_augmented(&ds, &ds.train, &order, 0, count, a, seed, epoch - 1);
    assert_eq!(labels.len(), count);
    let mut padding = 0;
    for i in 0..count {
        let (x0, y0) = tile_origin(i, 8);
        for c in 0..3 {
            for y in 0..32 {
                for xx in 0..32 {
                    let v = x[((i * 3 + c) * 32 + y) * 32 + xx];
                    padding += (v == -1.0) as usize;
                    let want = ((v * 0.5 + 0.5) * 255.0).round() as u8;
                    for (dy, dx) in [(0, 0), (SCALE - 1, SCALE - 1)] {
                        let got = picture.get_pixel((x0 + xx * SCALE + dx) as u32, (y0 + y * SCALE + dy) as u32)[c];
                        assert_eq!(got, want, "image {i} channel {c} pixel ({y}, {xx})");
                    }
                }
            }
        }
        // Its class name is drawn under it: dark pixels in the caption strip.
        let dark = (0..96u32)
            .flat_map(|dx| (0..16u32).map(move |dy| (dx, dy)))
            .filter(|&(dx, dy)| picture.get_pixel(x0 as u32 + dx, (y0 + 96) as u32 + 2 + dy)[0] < 128)
            .count();
        assert!(dark > 20, "image {i}: no caption under it");
    }
    assert!(padding > 0, "crop:4 shows some of the padding");
}

#[test]
fn plot_draws_the_curves_of_a_metrics_file_and_train_plot_writes_them() {
    let d = temp_dir("plot");
    let (m, png, png2) = (d.join("m.jsonl"), d.join("curves.png"), d.join("from-train.png"));
    let data = cifar().display().to_string();
    let (ok, _, err) = run(&[
        "train",
        "--dataset",
        "cifar10",
        "--data",
        &data,
        "--epochs",
        "3",
        "--lr",
        "0.01",
        "--lr-schedule",
        "cosine",
        "--metrics",
        m.to_str().unwrap(),
        "--plot",
        png2.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&["plot", m.to_str().unwrap(), "-o", png.to_str().unwrap()]);
    assert!(ok && out.contains("3 epoch(s)"), "{out}{err}");
    for p in [&png, &png2] {
        let img = image::open(p).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (1260, 370));
        let coloured = img.pixels().filter(|px| px[0] != px[1] || px[1] != px[2]).count();
        assert!(coloured > 200, "{}: no curves drawn", p.display());
    }
    // Bad input: one line naming the file, the line and the field.
    std::fs::write(&m, "{\"epoch\": 1, \"train_loss\": 2.0, \"test_loss\": \"x\", \"test_accuracy\": 0.1}\n").unwrap();
    let (ok, _, err) = run(&["plot", m.to_str().unwrap(), "-o", png.to_str().unwrap()]);
    assert!(!ok && err.contains(&format!("{} line 1: field test_loss: expected a number", m.display())), "{err}");
    // A --plot that cannot be written is refused before training starts.
    let (ok, out, err) =
        run(&["train", "--dataset", "synthetic", "--epochs", "1", "--plot", d.join("c.jpg").to_str().unwrap()]);
    assert!(!ok && out.is_empty() && err.contains("--plot") && err.contains(".png"), "{out}{err}");
}
