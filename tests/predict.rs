//! `predict` against torchvision: `tests/fixtures/make_pictures.py` recorded Pillow's resized
//! bytes of each picture and the softmax PyTorch's Net (init.safetensors) gives it after
//! `Resize((32, 32))`, `ToTensor()`, `Normalize(0.5, 0.5)`.

use gpu_lenet::predict::{load_picture, resize};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("pictures/expected.json")).unwrap()).unwrap()
}

fn bytes(v: &serde_json::Value) -> Vec<u8> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect()
}

/// Pillow's bytes exactly, for the lossless pictures (PNG: both decoders give the same pixels);
/// a JPEG decoder may upsample chroma and round its inverse DCT differently (up to 5 levels here).
#[test]
fn pictures_are_resized_byte_for_byte_as_pillow_resizes_them() {
    let want = expected();
    for (name, slack) in [("wide.png", 0), ("gray.png", 0), ("tall.jpg", 8)] {
        let p = image::open(fixture(&format!("pictures/{name}"))).unwrap().to_rgb8();
        let (w, h) = (p.width() as usize, p.height() as usize);
        let rgb = resize::bilinear(p.as_raw(), 3, w, h, 32, 32);
        let l = resize::bilinear(&resize::luma(p.as_raw()), 1, w, h, 28, 28);
        for (what, got, want) in
            [("rgb 32x32", rgb, bytes(&want[name]["rgb32"])), ("L 28x28", l, bytes(&want[name]["l28"]))]
        {
            assert_eq!(got.len(), want.len(), "{name} {what}");
            let worst = got.iter().zip(&want).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
            assert!(worst <= slack, "{name} {what}: differs from Pillow by up to {worst}");
        }
        // load_picture is the same bytes, planar.
        let record = load_picture(&fixture(&format!("pictures/{name}")), 3, 32, 32).unwrap();
        let rgb = bytes(&want[name]["rgb32"]);
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                assert!((record[c * 1024 + i] as i32 - px[c] as i32).abs() <= slack, "{name}: planar record");
            }
        }
    }
}

fn predict(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_gpu-lenet")).arg("predict").args(args).output().unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string());
    assert!(!err.contains("panicked"), "{err}");
    (o.status.success(), out, err)
}

#[test]
fn predict_gives_pytorchs_probabilities() {
    let want = expected();
    let names = ["wide.png", "gray.png", "tall.jpg"];
    let files: Vec<String> = names.iter().map(|n| fixture(&format!("pictures/{n}")).display().to_string()).collect();
    let ck = fixture("init.safetensors").display().to_string();
    let args: Vec<&str> =
        ["--checkpoint", &ck, "--json", "--top", "10"].into_iter().chain(files.iter().map(String::as_str)).collect();
    let (ok, out, err) = predict(&args);
    assert!(ok, "{err}");
    let got: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    for (i, name) in names.iter().enumerate() {
        let torch: Vec<f64> =
            want[name]["probabilities"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let top = got[i]["top"].as_array().unwrap();
        assert_eq!(top.len(), 10);
        assert_eq!(got[i]["file"], files[i]);
        // Float32 forward passes summed in different orders; the JPEG's pixels within a few levels.
        let tol = if name.ends_with(".jpg") { 2e-3 } else { 1e-5 };
        for c in top {
            let k = c["index"].as_u64().unwrap() as usize;
            let p = c["probability"].as_f64().unwrap();
            assert!((p - torch[k]).abs() < tol, "{name} class {k}: {p} vs PyTorch {}", torch[k]);
            assert_eq!(c["class"], gpu_lenet::data::CIFAR10_CLASSES[k]);
        }
        let ps: Vec<f64> = top.iter().map(|c| c["probability"].as_f64().unwrap()).collect();
        assert!(ps.windows(2).all(|w| w[0] >= w[1]), "most probable first: {ps:?}");
    }
    // The text form: one line per picture with its top 3.
    let (ok, out, err) = predict(&["--checkpoint", &ck, &files[0], &files[1]]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with(&format!("{}: ", files[0])) && lines[0].matches('%').count() == 3, "{out}");
}

#[test]
fn a_file_that_is_not_a_picture_gets_one_clear_line() {
    let ck = fixture("init.safetensors").display().to_string();
    let bad = fixture("pictures/not-a-picture.png").display().to_string();
    let (ok, out, err) = predict(&["--checkpoint", &ck, &bad]);
    assert!(!ok && out.is_empty());
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains(&bad) && lines[0].contains("not a PNG or JPEG picture"), "{err}");
    let missing = fixture("pictures/missing.png").display().to_string();
    let (ok, _, err) = predict(&["--checkpoint", &ck, &missing]);
    assert!(!ok && err.contains(&missing) && err.contains("cannot read"), "{err}");
}
