//! The `gpu-lenet` binary end to end: training output and metrics, checkpoints and `eval`,
//! the CIFAR-10 download against a local HTTP server, and accuracy on the synthetic set and on
//! real Fashion-MNIST.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpu-lenet-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gpu-lenet"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let r = Run {
        ok: o.status.success(),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    };
    assert!(!r.stderr.contains("panicked"), "gpu-lenet {args:?} panicked:\n{}", r.stderr);
    r
}

fn last_metrics(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// `eval` (and the end of `train`) print the confusion matrix; `eval --json` gives the same
/// numbers to scripts, its test loss the training criterion's (label smoothing included).
#[test]
fn eval_prints_the_confusion_matrix_and_json_with_the_runs_criterion() {
    let d = temp_dir("confusion");
    let (ck, m) = (d.join("w.safetensors"), d.join("m.jsonl"));
    let t = run(
        &[
            "train",
            "--dataset",
            "synthetic",
            "--epochs",
            "1",
            "--lr",
            "0.01",
            "--label-smoothing",
            "0.2",
            "--save",
            ck.to_str().unwrap(),
            "--metrics",
            m.to_str().unwrap(),
        ],
        &[],
    );
    assert!(t.ok, "{}", t.stderr);
    assert!(t.stdout.contains("Confusion matrix (rows: true class, columns: predicted class):"), "{}", t.stdout);
    let metrics = last_metrics(&m);
    let e = run(&["eval", "--checkpoint", ck.to_str().unwrap(), "--json"], &[]);
    assert!(e.ok, "{}", e.stderr);
    let j: serde_json::Value = serde_json::from_str(&e.stdout).unwrap_or_else(|err| panic!("{err}: {}", e.stdout));
    assert_eq!(j["label_smoothing"], 0.2);
    let loss = j["test_loss"].as_f64().unwrap();
    assert!((loss - metrics["test_loss"].as_f64().unwrap()).abs() < 1e-6, "eval loss {loss} vs training's {metrics}");
    let confusion: Vec<Vec<u64>> = serde_json::from_value(j["confusion"].clone()).unwrap();
    assert_eq!(confusion.len(), 10);
    let total: u64 = confusion.iter().flatten().sum();
    let diagonal: u64 = (0..10).map(|c| confusion[c][c]).sum();
    assert_eq!((total, diagonal), (j["count"].as_u64().unwrap(), j["correct"].as_u64().unwrap()));
    assert_eq!(j["test_accuracy"].as_f64().unwrap(), metrics["test_accuracy"].as_f64().unwrap());
    // The text report: one row per class with its counts and the accuracy the JSON gives.
    let e = run(&["eval", "--checkpoint", ck.to_str().unwrap()], &[]);
    assert!(e.ok && e.stdout.contains("Test loss (label smoothing 0.2): "), "{}", e.stdout);
    for (c, row) in confusion.iter().enumerate() {
        let line = e.stdout.lines().find(|l| l.starts_with(&format!("{c} pattern-{c} "))).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        let counts: Vec<u64> = cells[2..12].iter().map(|v| v.parse().unwrap()).collect();
        assert_eq!(&counts, row, "{line}");
        let acc = j["per_class_accuracy"][c].as_f64().unwrap();
        assert_eq!(cells[12], format!("{:.1}", 100.0 * acc), "{line}");
    }
}

#[test]
fn train_prints_epoch_lines_per_class_accuracy_and_writes_metrics_and_checkpoint() {
    let d = temp_dir("train");
    let (m, ck) = (d.join("m.jsonl"), d.join("w.safetensors"));
    let data = fixture("cifar");
    let r = run(
        &[
            "train",
            "--dataset",
            "cifar10",
            "--data",
            data.to_str().unwrap(),
            "--epochs",
            "2",
            "--metrics",
            m.to_str().unwrap(),
            "--save",
            ck.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}", r.stderr);
    let epoch_lines: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("Epoch ")).collect();
    assert_eq!(epoch_lines.len(), 2, "{}", r.stdout);
    for (i, l) in epoch_lines.iter().enumerate() {
        let prefix = format!("Epoch {}, Loss: ", i + 1);
        assert!(l.starts_with(&prefix), "{l}");
        let loss = &l[prefix.len()..l.find(',').map(|_| prefix.len() + 6).unwrap()];
        assert!(
            loss.len() == 6 && loss.as_bytes()[1] == b'.' && loss.parse::<f64>().is_ok(),
            "loss printed as X.XXXX: {l}"
        );
        assert!(l.contains("Test loss: ") && l.contains("Test accuracy: ") && l.contains("images/s"), "{l}");
    }
    for class in ["airplane", "automobile", "truck"] {
        assert!(r.stdout.lines().any(|l| l.starts_with("Accuracy for class: ") && l.contains(class)), "{}", r.stdout);
    }
    let text = std::fs::read_to_string(&m).unwrap();
    assert_eq!(text.lines().count(), 2);
    let v = last_metrics(&m);
    for key in ["epoch", "train_loss", "test_loss", "test_accuracy", "images_per_sec", "seconds"] {
        assert!(v.get(key).is_some(), "metrics line lacks {key}: {v}");
    }
    assert_eq!(v["epoch"], 2);
    let acc = v["test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));

    // eval on the saved checkpoint agrees with the last epoch's test accuracy.
    let e = run(
        &["eval", "--checkpoint", ck.to_str().unwrap(), "--dataset", "cifar10", "--data", data.to_str().unwrap()],
        &[],
    );
    assert!(e.ok, "{}", e.stderr);
    assert!(e.stdout.contains(&format!("Test accuracy: {:.2}%", 100.0 * acc)), "{}\n(metrics said {acc})", e.stdout);
    assert!(e.stdout.contains("Accuracy for class: truck"));
    // Without --dataset and --data, eval takes both from what the checkpoint records.
    let e = run(&["eval", "--checkpoint", ck.to_str().unwrap(), "--no-download"], &[]);
    assert!(e.ok, "{}", e.stderr);
    assert!(e.stdout.contains(&format!("Test accuracy: {:.2}%", 100.0 * acc)), "{}\n(metrics said {acc})", e.stdout);
}

/// A tensor name for the tables below (a test process: leaking a few names is fine).
fn static_str(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn write_tensors(path: &Path, tensors: &[(&str, safetensors::Dtype, Vec<usize>)]) {
    let bufs: Vec<Vec<u8>> =
        tensors.iter().map(|(_, dt, s)| vec![0u8; s.iter().product::<usize>() * dt.bitsize() / 8]).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bufs)
        .map(|((n, dt, s), b)| (n.to_string(), safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn init_refuses_checkpoints_whose_tensors_do_not_fit_naming_the_tensor() {
    use safetensors::Dtype::{F16, F32};
    let d = temp_dir("init");
    type Tensors = Vec<(&'static str, safetensors::Dtype, Vec<usize>)>;
    let good: Tensors = gpu_lenet::model::param_specs(3).into_iter().map(|(n, s)| (static_str(n), F32, s)).collect();
    let data = fixture("cifar");
    let cases: Vec<(&str, Tensors, &str)> = vec![
        ("missing", good.iter().filter(|t| t.0 != "fc2.bias").cloned().collect(), "fc2.bias"),
        (
            "shape",
            good.iter()
                .map(|t| if t.0 == "fc1.weight" { ("fc1.weight", F32, vec![120, 399]) } else { t.clone() })
                .collect(),
            "fc1.weight",
        ),
        (
            "dtype",
            good.iter().map(|t| if t.0 == "conv2.bias" { ("conv2.bias", F16, vec![16]) } else { t.clone() }).collect(),
            "conv2.bias",
        ),
        ("extra", good.iter().cloned().chain([("fc4.weight", F32, vec![2])]).collect(), "fc4.weight"),
    ];
    for (tag, tensors, name) in cases {
        let p = d.join(format!("{tag}.safetensors"));
        write_tensors(&p, &tensors);
        let r = run(
            &["train", "--dataset", "cifar10", "--data", data.to_str().unwrap(), "--init", p.to_str().unwrap()],
            &[],
        );
        assert!(!r.ok, "{tag} accepted");
        let line = r.stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{tag}: {}", r.stderr));
        assert!(line.contains(name) && line.contains(&format!("{tag}.safetensors")), "{tag}: {line}");
    }
}

/// Serves `body` over HTTP on 127.0.0.1 to any number of requests; counts them.
fn serve(body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cifar-10-binary.tar.gz", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            h.fetch_add(1, Ordering::SeqCst);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(&body);
        }
    });
    (url, hits)
}

fn cifar_archive() -> (Vec<u8>, String) {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for name in ["data_batch_1.bin", "test_batch.bin", "batches.meta.txt"] {
        let bytes = std::fs::read(fixture("cifar").join(name)).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("cifar-10-batches-bin/{name}"), &bytes[..]).unwrap();
    }
    let body = tar.into_inner().unwrap().finish().unwrap();
    use md5::Digest;
    let md5: String = md5::Md5::digest(&body).iter().map(|b| format!("{b:02x}")).collect();
    (body, md5)
}

#[test]
fn train_downloads_verifies_extracts_and_reuses_cifar10() {
    let (body, md5) = cifar_archive();
    let (url, hits) = serve(body);
    let d = temp_dir("download");
    let dir = d.join("cifar-10-batches-bin");
    let env = [("GPU_LENET_TEST_CIFAR_URL", url.as_str()), ("GPU_LENET_TEST_CIFAR_MD5", md5.as_str())];
    let args = ["train", "--dataset", "cifar10", "--data", dir.to_str().unwrap(), "--epochs", "1"];
    let r = run(&args, &env);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(r.stderr.contains("Downloading") && r.stderr.contains(dir.to_str().unwrap()), "{}", r.stderr);
    assert!(dir.join("data_batch_1.bin").exists() && d.join("cifar-10-binary.tar.gz").exists());
    assert!(r.stdout.contains("Epoch 1, Loss: "));
    // The folder is there: no request. Folder gone, archive verified: reused, no request.
    assert!(run(&args, &env).ok);
    std::fs::remove_dir_all(&dir).unwrap();
    let r = run(&args, &env);
    assert!(r.ok && r.stderr.contains("Reusing"), "{}", r.stderr);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn a_download_with_the_wrong_md5_is_refused_and_deleted() {
    let (body, _) = cifar_archive();
    let (url, _) = serve(body);
    let d = temp_dir("badmd5");
    let dir = d.join("cifar-10-batches-bin");
    let env =
        [("GPU_LENET_TEST_CIFAR_URL", url.as_str()), ("GPU_LENET_TEST_CIFAR_MD5", "0123456789abcdef0123456789abcdef")];
    let r = run(&["train", "--dataset", "cifar10", "--data", dir.to_str().unwrap()], &env);
    assert!(!r.ok);
    assert!(r.stderr.contains("md5") && r.stderr.contains("0123456789abcdef0123456789abcdef"), "{}", r.stderr);
    let left: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn an_unreachable_host_or_no_download_names_the_alternatives() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let d = temp_dir("offline");
    let dir = d.join("cifar-10-batches-bin");
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let env =
        [("GPU_LENET_TEST_CIFAR_URL", url.as_str()), ("GPU_LENET_TEST_CIFAR_MD5", "0123456789abcdef0123456789abcdef")];
    for extra in [None, Some("--no-download")] {
        let mut args = vec!["train", "--dataset", "cifar10", "--data", dir.to_str().unwrap()];
        args.extend(extra);
        let r = run(&args, &env);
        assert!(!r.ok);
        let line = r.stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
        for hint in ["--data", "--dataset fashion-mnist", "--dataset synthetic"] {
            assert!(line.contains(hint), "{line}");
        }
    }
}

#[test]
fn synthetic_set_reaches_95_percent() {
    let d = temp_dir("synthetic");
    let m = d.join("m.jsonl");
    let r = run(
        &["train", "--dataset", "synthetic", "--epochs", "2", "--lr", "0.01", "--metrics", m.to_str().unwrap()],
        &[],
    );
    assert!(r.ok, "{}", r.stderr);
    let acc = last_metrics(&m)["test_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.95, "synthetic test accuracy {acc} after 2 epochs:\n{}", r.stdout);
}

#[test]
fn fashion_mnist_one_epoch_reaches_80_percent() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    assert!(dir.is_dir(), "Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist (.ci/run does)");
    let d = temp_dir("fashion");
    let (m, ck) = (d.join("m.jsonl"), d.join("w.safetensors"));
    let r = run(
        &[
            "train",
            "--dataset",
            "fashion-mnist",
            "--epochs",
            "1",
            "--lr",
            "0.01",
            "--batch-size",
            "64",
            "--metrics",
            m.to_str().unwrap(),
            "--save",
            ck.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}", r.stderr);
    let acc = last_metrics(&m)["test_accuracy"].as_f64().unwrap();
    println!("{}", r.stdout);
    assert!(acc >= 0.80, "Fashion-MNIST test accuracy {acc} after 1 epoch:\n{}", r.stdout);
    // predict on the first 100 test images saved as 28x28 grayscale PNGs (Pillow's convert("L")
    // keeps a gray value; the padding to 32x32 is the training's): they score as the test set does.
    let ds = gpu_lenet::data::fashion::load(dir).unwrap();
    let mut files = Vec::new();
    for i in 0..100 {
        let f = d.join(format!("test-{i}.png"));
        image::GrayImage::from_raw(28, 28, ds.test.images[i * 784..(i + 1) * 784].to_vec()).unwrap().save(&f).unwrap();
        files.push(f.display().to_string());
    }
    let args: Vec<&str> = ["predict", "--json", "--checkpoint", ck.to_str().unwrap()]
        .into_iter()
        .chain(files.iter().map(String::as_str))
        .collect();
    let p = run(&args, &[]);
    assert!(p.ok, "{}", p.stderr);
    let answers: serde_json::Value = serde_json::from_str(&p.stdout).unwrap();
    let hits = (0..100).filter(|&i| answers[i]["top"][0]["index"].as_u64() == Some(ds.test.labels[i] as u64)).count();
    assert!(hits >= 70, "predict got {hits} of the first 100 test images right; the test set scored {acc}");
    assert!(gpu_lenet::data::FASHION_CLASSES.contains(&answers[0]["top"][0]["class"].as_str().unwrap()));
    // eval of a Fashion-MNIST checkpoint needs no --dataset (and never downloads CIFAR-10).
    let e = run(&["eval", "--checkpoint", ck.to_str().unwrap()], &[]);
    assert!(e.ok, "{}", e.stderr);
    assert!(e.stdout.contains(&format!("Test accuracy: {:.2}% (", 100.0 * acc)), "{}\n(metrics said {acc})", e.stdout);
    assert!(
        e.stdout.contains("of 10000 images") && e.stdout.contains("Accuracy for class: Ankle boot"),
        "{}",
        e.stdout
    );
}

#[test]
fn eval_of_a_one_channel_checkpoint_without_metadata_uses_fashion_mnist() {
    // A PyTorch export: LeNet's tensors for one input channel, no metadata.
    let d = temp_dir("export");
    let ck = d.join("export.safetensors");
    let tensors: Vec<(&str, safetensors::Dtype, Vec<usize>)> = gpu_lenet::model::param_specs(1)
        .into_iter()
        .map(|(n, s)| (static_str(n), safetensors::Dtype::F32, s))
        .collect();
    write_tensors(&ck, &tensors);
    let e = run(&["eval", "--checkpoint", ck.to_str().unwrap()], &[]);
    assert!(e.ok, "{}", e.stderr);
    assert!(e.stdout.contains("of 10000 images") && e.stdout.contains("Accuracy for class: Sneaker"), "{}", e.stdout);
}

/// `gpu-lenet train | head -1`: a closed stdout ends the program quietly (SIGPIPE, as for other
/// command-line tools), never with a panic. The read end is closed before the first line, so
/// the first `println!` meets it whatever the adapter's speed.
#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_the_program_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(env!("CARGO_BIN_EXE_gpu-lenet"))
        .args(["train", "--dataset", "cifar10", "--data", fixture("cifar").to_str().unwrap(), "--epochs", "1"])
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "{:?}: {err}", o.status);
}

#[test]
fn an_adapter_that_is_not_there_is_named_with_what_exists() {
    // No machine has both a Metal and a DX12 adapter; ask for the one this OS lacks.
    let missing = if cfg!(target_os = "macos") { "dx12" } else { "metal" };
    let r = run(&["train", "--dataset", "synthetic", "--adapter", missing], &[]);
    assert!(!r.ok);
    let errors: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    assert!(
        errors[0].contains(&format!("adapter '{missing}' not found")) && errors[0].contains("adapters found:"),
        "{}",
        errors[0]
    );
    // An unknown name is refused by the flag parser, naming the valid ones.
    let r = run(&["train", "--adapter", "cuda"], &[]);
    assert!(!r.ok && r.stderr.contains("cuda") && r.stderr.contains("lavapipe"), "{}", r.stderr);
    let r = run(&["adapters"], &[]);
    assert!(r.ok && r.stdout.contains("TIMESTAMP_QUERY") && r.stdout.contains("backend"), "{}", r.stdout);
}

/// Where the pools' fused variants do not run (no 8-lane subgroups: most GPUs) the step runs
/// conv, pool and their backward passes as separate kernels. `GPU_LENET_NO_SUBGROUPS` selects
/// that schedule here, and bench-kernels checks every one of its stages against the CPU
/// reference of a whole step.
#[test]
fn bench_kernels_checks_the_schedule_without_fused_pools() {
    let r = run(&["bench-kernels", "--batch-size", "5", "--json"], &[("GPU_LENET_NO_SUBGROUPS", "1")]);
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let kernels = v["kernels"].as_array().unwrap();
    let names: Vec<&str> = kernels.iter().map(|k| k["name"].as_str().unwrap()).collect();
    for name in [
        "conv1_forward",
        "pool1_forward",
        "conv2_forward",
        "pool2_forward",
        "pool2_backward",
        "pool1_backward",
        "conv1_backward_weight",
        "conv2_backward_input",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    for k in kernels {
        assert_eq!(k["correct"], true, "{k}");
    }
}

#[test]
fn bench_kernels_checks_every_kernel_and_writes_json() {
    let r = run(&["bench-kernels", "--batch-size", "7", "--json"], &[]);
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    for key in ["adapter", "batch_size", "timing", "kernels", "train_step"] {
        assert!(v.get(key).is_some(), "no {key} in {v}");
    }
    assert_eq!(v["batch_size"], 7);
    assert!(["gpu-timestamps", "wall-clock"].contains(&v["timing"].as_str().unwrap()));
    let kernels = v["kernels"].as_array().unwrap();
    let names: Vec<&str> = kernels.iter().map(|k| k["name"].as_str().unwrap()).collect();
    for name in [
        "prepare_batch",
        "conv1_backward_weight",
        "conv2_backward_weight",
        "conv2_backward_input",
        "softmax_cross_entropy",
        "sgd_momentum",
        "fc1_weight_grad",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    // conv and pool are one kernel where the pool's backward is fused into the conv's grads.
    for l in ["1", "2"] {
        let fused = format!("conv{l}_pool{l}_forward");
        let (conv, pool) = (format!("conv{l}_forward"), format!("pool{l}_forward"));
        assert!(
            names.contains(&fused.as_str()) || (names.contains(&conv.as_str()) && names.contains(&pool.as_str())),
            "{names:?}"
        );
    }
    for k in kernels {
        assert_eq!(k["correct"], true, "{k}");
        for key in ["ms", "gflops", "gbps", "share"] {
            assert!(k[key].as_f64().is_some_and(|x| x >= 0.0), "{key} of {k}");
        }
    }
    let step = &v["train_step"];
    assert!(step["ms"].as_f64().unwrap() > 0.0 && step["images_per_sec"].as_f64().unwrap() > 0.0);
    // Every kernel row is at least one dispatch of the step.
    assert!(step["dispatches"].as_u64().unwrap() >= kernels.len() as u64, "{step}");
}

/// `--model lenet5-bn`: the checkpoint records the model; `eval` and `--resume` take it from the
/// file, and a file of another network than `--model` asks for is refused in one line naming both.
#[test]
fn the_model_is_recorded_in_checkpoints_and_checked() {
    let d = temp_dir("model");
    let data = fixture("cifar");
    let (ck, m, dir) = (d.join("bn.safetensors"), d.join("m.jsonl"), d.join("run"));
    let data_s = data.to_str().unwrap();
    let r = run(
        &[
            "train",
            "--model",
            "lenet5-bn",
            "--dataset",
            "cifar10",
            "--data",
            data_s,
            "--epochs",
            "1",
            "--save",
            ck.to_str().unwrap(),
            "--metrics",
            m.to_str().unwrap(),
            "--checkpoint-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("Training LeNet-5-BN on cifar10"), "{}", r.stdout);
    let acc = last_metrics(&m)["test_accuracy"].as_f64().unwrap();
    let l = gpu_lenet::checkpoint::load(&ck, 4).unwrap();
    assert_eq!(l.metadata["model"], "lenet5-bn");
    assert_eq!(l.batches_tracked, 3, "150 images in batches of 64: 3 training batches");
    // eval takes the model (and the data) from the file; its running statistics give the same
    // test accuracy as the run's last evaluation.
    let e = run(&["eval", "--checkpoint", ck.to_str().unwrap()], &[]);
    assert!(e.ok, "{}", e.stderr);
    assert!(e.stdout.contains(&format!("Test accuracy: {:.2}%", 100.0 * acc)), "{}\n(metrics said {acc})", e.stdout);
    for args in [
        vec!["eval", "--checkpoint", ck.to_str().unwrap(), "--model", "lenet5"],
        vec!["train", "--dataset", "cifar10", "--data", data_s, "--init", ck.to_str().unwrap(), "--model", "lenet5"],
        vec!["train", "--resume", dir.to_str().unwrap(), "--epochs", "2", "--model", "lenet5"],
    ] {
        let r = run(&args, &[]);
        assert!(!r.ok, "{args:?} accepted");
        let line = r.stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{}", r.stderr));
        assert!(line.contains("lenet5-bn") && line.contains("--model lenet5"), "{args:?}: {line}");
    }
    // --resume without --model continues the recorded network.
    let r = run(&["train", "--resume", dir.to_str().unwrap(), "--epochs", "2"], &[]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("Training LeNet-5-BN") && r.stdout.contains("Epoch 2, Loss: "), "{}", r.stdout);
}
