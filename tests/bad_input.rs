//! The bad-input corpus: every case runs the real binary and must exit non-zero with exactly
//! one `error:` line that names the file or flag and what was expected, never panic (no
//! "panicked", no backtrace), and leave existing files as they were.

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpu-lenet-bad-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A valid CIFAR folder (from the fixtures), for a case to break.
fn cifar_dir(tag: &str) -> PathBuf {
    let d = root().join(tag);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for f in ["data_batch_1.bin", "test_batch.bin", "batches.meta.txt"] {
        std::fs::copy(fixture("cifar").join(f), d.join(f)).unwrap();
    }
    d
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A valid Fashion-MNIST-format folder with 4 training and 2 test images.
fn fashion_dir(tag: &str) -> PathBuf {
    let d = root().join(tag);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let images = |n: u32| {
        let mut b = Vec::new();
        for v in [0x803u32, n, 28, 28] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend(std::iter::repeat_n(7u8, n as usize * 784));
        b
    };
    let labels = |l: &[u8]| {
        let mut b = 0x801u32.to_be_bytes().to_vec();
        b.extend_from_slice(&(l.len() as u32).to_be_bytes());
        b.extend_from_slice(l);
        b
    };
    std::fs::write(d.join("train-images-idx3-ubyte.gz"), gz(&images(4))).unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte.gz"), gz(&labels(&[1, 2, 3, 4]))).unwrap();
    std::fs::write(d.join("t10k-images-idx3-ubyte.gz"), gz(&images(2))).unwrap();
    std::fs::write(d.join("t10k-labels-idx1-ubyte.gz"), gz(&labels(&[5, 6]))).unwrap();
    d
}

fn idx_header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b
}

/// A checkpoint built from LeNet's tensors with edits.
/// A checkpoint's tensors as (name, dtype, shape).
type Tensors = Vec<(String, Dtype, Vec<usize>)>;

fn tensors_file(tag: &str, edit: &dyn Fn(&mut Tensors)) -> PathBuf {
    let mut t: Vec<(String, Dtype, Vec<usize>)> =
        gpu_lenet::model::param_specs(3).into_iter().map(|(n, s)| (n.to_string(), Dtype::F32, s)).collect();
    edit(&mut t);
    let bufs: Vec<Vec<u8>> =
        t.iter().map(|(_, dt, s)| vec![0u8; s.iter().product::<usize>() * dt.bitsize() / 8]).collect();
    let views: Vec<(String, TensorView)> =
        t.iter().zip(&bufs).map(|((n, dt, s), b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap())).collect();
    let p = root().join(format!("{tag}.safetensors"));
    std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
    p
}

fn raw_file(tag: &str, bytes: &[u8]) -> PathBuf {
    let p = root().join(tag);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn serve_once(body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cifar-10-binary.tar.gz", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(&body);
        }
    });
    url
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Every one of these must appear in the error line.
    expect: Vec<&'static str>,
    /// Files that must be byte-identical afterwards.
    keep: Vec<PathBuf>,
}

fn case(name: &'static str, args: &[&str], expect: &[&'static str]) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        expect: expect.to_vec(),
        keep: vec![],
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn every_bad_input_gets_one_clear_error_line_and_damages_nothing() {
    let mut cases = Vec::new();
    let train_cifar = |dir: &Path| {
        vec!["train".to_string(), "--dataset".into(), "cifar10".into(), "--no-download".into(), "--data".into(), s(dir)]
    };

    // CIFAR-10 files.
    let d = cifar_dir("truncated");
    let f = d.join("data_batch_1.bin");
    let b = std::fs::read(&f).unwrap();
    std::fs::write(&f, &b[..b.len() - 1000]).unwrap();
    cases.push(Case {
        args: train_cifar(&d),
        ..case("truncated CIFAR batch", &[], &["data_batch_1.bin", "3073", "truncated"])
    });
    let d = cifar_dir("oversized");
    let big: Vec<u8> = (0..10_001 * 3073).map(|i| if i % 3073 == 0 { 1 } else { 9 }).collect();
    std::fs::write(d.join("data_batch_2.bin"), big).unwrap();
    cases.push(Case {
        args: train_cifar(&d),
        ..case("oversized CIFAR batch", &[], &["data_batch_2.bin", "10001 records", "10000"])
    });
    for label in [10u8, 255] {
        let d = cifar_dir(if label == 10 { "label10" } else { "label255" });
        let f = d.join("test_batch.bin");
        let mut b = std::fs::read(&f).unwrap();
        b[2 * 3073] = label;
        std::fs::write(&f, b).unwrap();
        let expect: &'static str = if label == 10 { "label 10 " } else { "label 255 " };
        cases.push(Case {
            args: train_cifar(&d),
            ..case("bad CIFAR label", &[], &["test_batch.bin", "record 2", expect, "0-9"])
        });
    }
    let d = cifar_dir("notest");
    std::fs::remove_file(d.join("test_batch.bin")).unwrap();
    cases.push(Case { args: train_cifar(&d), ..case("missing test_batch.bin", &[], &["test_batch.bin", "missing"]) });
    let d = root().join("empty");
    std::fs::create_dir_all(&d).unwrap();
    cases.push(Case {
        args: train_cifar(&d),
        ..case("empty CIFAR folder", &[], &["data_batch_1.bin", "no training batch file"])
    });
    let d = cifar_dir("zerofile");
    std::fs::write(d.join("data_batch_1.bin"), b"").unwrap();
    cases.push(Case { args: train_cifar(&d), ..case("empty batch file", &[], &["data_batch_1.bin", "empty"]) });
    let d = cifar_dir("meta");
    std::fs::write(d.join("batches.meta.txt"), "cat\ndog\n").unwrap();
    cases.push(Case {
        args: train_cifar(&d),
        ..case("short batches.meta.txt", &[], &["batches.meta.txt", "10 class names"])
    });

    // Fashion-MNIST IDX files.
    let fashion =
        |d: &Path| vec!["train".to_string(), "--dataset".into(), "fashion-mnist".into(), "--data".into(), s(d)];
    let d = fashion_dir("magic");
    std::fs::write(
        d.join("t10k-images-idx3-ubyte.gz"),
        gz(&[idx_header(0x804, &[2, 28, 28]), vec![0; 2 * 784]].concat()),
    )
    .unwrap();
    cases.push(Case {
        args: fashion(&d),
        ..case("IDX wrong magic", &[], &["t10k-images-idx3-ubyte.gz", "magic 0x00000804", "0x00000803"])
    });
    let d = fashion_dir("dims");
    std::fs::write(
        d.join("t10k-images-idx3-ubyte.gz"),
        gz(&[idx_header(0x803, &[2, 32, 28]), vec![0; 2 * 32 * 28]].concat()),
    )
    .unwrap();
    cases.push(Case {
        args: fashion(&d),
        ..case("IDX wrong dimension", &[], &["t10k-images-idx3-ubyte.gz", "32x28", "28x28"])
    });
    let d = fashion_dir("gzip");
    let mut bad = gz(&[idx_header(0x803, &[4, 28, 28]), vec![0; 4 * 784]].concat());
    let mid = bad.len() / 2;
    bad[mid..].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(d.join("train-images-idx3-ubyte.gz"), bad).unwrap();
    cases.push(Case { args: fashion(&d), ..case("corrupt gzip", &[], &["train-images-idx3-ubyte.gz", "gzip"]) });
    let d = fashion_dir("idxshort");
    std::fs::write(
        d.join("train-images-idx3-ubyte.gz"),
        gz(&[idx_header(0x803, &[4, 28, 28]), vec![0; 3 * 784]].concat()),
    )
    .unwrap();
    cases.push(Case { args: fashion(&d), ..case("IDX truncated", &[], &["train-images-idx3-ubyte.gz", "truncated"]) });
    let d = fashion_dir("idxlabel");
    std::fs::write(d.join("train-labels-idx1-ubyte.gz"), gz(&[idx_header(0x801, &[4]), vec![1, 2, 12, 3]].concat()))
        .unwrap();
    cases.push(Case {
        args: fashion(&d),
        ..case("IDX label 12", &[], &["train-labels-idx1-ubyte.gz", "label 2 is 12", "0-9"])
    });
    let d = fashion_dir("count");
    std::fs::write(d.join("train-labels-idx1-ubyte.gz"), gz(&[idx_header(0x801, &[3]), vec![1, 2, 3]].concat()))
        .unwrap();
    cases.push(Case {
        args: fashion(&d),
        ..case("IDX count mismatch", &[], &["train-labels-idx1-ubyte.gz", "3 labels for 4 images"])
    });

    // Checkpoints given to --init.
    let data = s(&fixture("cifar"));
    let init = |p: &Path| {
        vec![
            "train".to_string(),
            "--dataset".into(),
            "cifar10".into(),
            "--data".into(),
            data.clone(),
            "--init".into(),
            s(p),
        ]
    };
    let p = tensors_file("missing", &|t| t.retain(|x| x.0 != "fc2.weight"));
    cases.push(Case {
        args: init(&p),
        ..case("checkpoint missing tensor", &[], &["missing.safetensors", "fc2.weight", "missing"])
    });
    let p = tensors_file("extra", &|t| t.push(("fc4.bias".into(), Dtype::F32, vec![3])));
    cases.push(Case {
        args: init(&p),
        ..case("checkpoint extra tensor", &[], &["extra.safetensors", "fc4.bias", "unexpected"])
    });
    let p = tensors_file("shape", &|t| {
        t.iter_mut().filter(|x| x.0 == "conv2.weight").for_each(|x| x.2 = vec![16, 6, 3, 3])
    });
    cases.push(Case {
        args: init(&p),
        ..case("checkpoint wrong shape", &[], &["shape.safetensors", "conv2.weight", "[16, 6, 3, 3]", "[16, 6, 5, 5]"])
    });
    let p = tensors_file("f16", &|t| t.iter_mut().filter(|x| x.0 == "fc1.weight").for_each(|x| x.1 = Dtype::F16));
    cases
        .push(Case { args: init(&p), ..case("checkpoint F16", &[], &["f16.safetensors", "fc1.weight", "F16", "F32"]) });
    let p = tensors_file("i64", &|t| t.iter_mut().filter(|x| x.0 == "fc3.bias").for_each(|x| x.1 = Dtype::I64));
    cases.push(Case { args: init(&p), ..case("checkpoint I64", &[], &["i64.safetensors", "fc3.bias", "I64", "F32"]) });
    let good = std::fs::read(fixture("init.safetensors")).unwrap();
    let p = raw_file("truncated.safetensors", &good[..good.len() - 100]);
    cases.push(Case {
        args: init(&p),
        ..case("checkpoint truncated payload", &[], &["truncated.safetensors", "not a valid safetensors"])
    });
    let mut notjson = 16u64.to_le_bytes().to_vec();
    notjson.extend_from_slice(b"this is not json");
    let p = raw_file("notjson.safetensors", &notjson);
    cases.push(Case {
        args: init(&p),
        ..case("checkpoint header not JSON", &[], &["notjson.safetensors", "not a valid safetensors"])
    });
    let mut beyond = 1_000_000u64.to_le_bytes().to_vec();
    beyond.extend_from_slice(b"{}");
    let p = raw_file("beyond.safetensors", &beyond);
    cases.push(Case {
        args: init(&p),
        ..case("checkpoint header length beyond the file", &[], &["beyond.safetensors", "not a valid safetensors"])
    });
    let p = raw_file("text.safetensors", b"hello, I am a text file\n");
    cases.push(Case {
        args: init(&p),
        ..case("not safetensors at all", &[], &["text.safetensors", "not a valid safetensors"])
    });
    let p = tensors_file("onechannel", &|t| {
        t.iter_mut().filter(|x| x.0 == "conv1.weight").for_each(|x| x.2 = vec![6, 1, 5, 5])
    });
    cases.push(Case {
        args: init(&p),
        ..case("1-channel checkpoint on CIFAR", &[], &["onechannel.safetensors", "input channel", "cifar10"])
    });
    cases.push(case(
        "eval of a missing checkpoint",
        &["eval", "--dataset", "cifar10", "--data", &data, "--checkpoint", "/nonexistent/w.safetensors"],
        &["/nonexistent/w.safetensors", "cannot read"],
    ));

    // Flags.
    fn syn<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&["train", "--dataset", "synthetic"][..], extra].concat()
    }
    cases.push(case("--batch-size 0", &syn(&["--batch-size", "0"]), &["--batch-size", "at least 1"]));
    cases.push(case(
        "batch too large for the adapter",
        &["train", "--dataset", "cifar10", "--data", &data, "--batch-size", "100000000"],
        &["--batch-size 100000000", "at most"],
    ));
    cases.push(case(
        "a ResNet-20 batch too large for the adapter",
        &["train", "--model", "resnet20", "--dataset", "cifar10", "--data", &data, "--batch-size", "1000000"],
        &["--batch-size 1000000", "at most"],
    ));
    cases.push(case(
        "bench-kernels batch beyond every adapter's dispatch limit",
        &["bench-kernels", "--batch-size", "100000000"],
        &["--batch-size 100000000", "at most"],
    ));
    cases.push(case(
        "bench-kernels --batch-size 0",
        &["bench-kernels", "--batch-size", "0"],
        &["--batch-size", "at least 1"],
    ));
    cases.push(case(
        "bench-kernels --kernel that matches none",
        &["bench-kernels", "--kernel", "nosuch"],
        &["--kernel nosuch", "conv1", "fc3", "sgd_momentum"],
    ));
    cases.push(case("--epochs 0", &syn(&["--epochs", "0"]), &["--epochs", "at least 1"]));
    cases.push(case("negative --lr", &syn(&["--lr", "-0.1"]), &["--lr -0.1", "positive"]));
    cases.push(case("NaN --lr", &syn(&["--lr", "NaN"]), &["--lr NaN", "positive"]));
    cases.push(case(
        "--momentum 1.5",
        &["train", "--dataset", "cifar10", "--data", &data, "--momentum", "1.5"],
        &["--momentum 1.5", "[0, 1)"],
    ));
    cases.push(case(
        "unknown adapter",
        &syn(&["--adapter", "cuda"]),
        &["cuda", "auto, vulkan, metal, dx12, gl, lavapipe"],
    ));

    // Outputs that cannot be written, and existing files that must survive.
    let keep = root().join("keep.safetensors");
    std::fs::write(&keep, b"user's weights").unwrap();
    cases.push(Case {
        keep: vec![keep.clone()],
        ..case(
            "unwritable --save folder",
            &["train", "--dataset", "cifar10", "--data", &data, "--save", "/nonexistent-dir/w.safetensors"],
            &["--save", "/nonexistent-dir"],
        )
    });
    cases.push(case(
        "--save on a read-only location",
        &["train", "--dataset", "cifar10", "--data", &data, "--save", "/proc/gpu-lenet.safetensors"],
        &["--save", "/proc"],
    ));
    cases.push(case(
        "--checkpoint-dir on a read-only location",
        &["train", "--dataset", "cifar10", "--data", &data, "--checkpoint-dir", "/proc/gpu-lenet-ckpt"],
        &["--checkpoint-dir", "/proc/gpu-lenet-ckpt"],
    ));
    if Path::new("/dev/full").exists() {
        cases.push(case(
            "--metrics on a full device",
            &["train", "--dataset", "cifar10", "--data", &data, "--epochs", "1", "--metrics", "/dev/full"],
            &["--metrics /dev/full", "cannot write"],
        ));
    }
    let bad_input_keeps_save = cifar_dir("keepsave");
    std::fs::write(bad_input_keeps_save.join("test_batch.bin"), b"x").unwrap();
    cases.push(Case {
        args: [train_cifar(&bad_input_keeps_save), vec!["--save".into(), s(&keep)]].concat(),
        keep: vec![keep.clone()],
        ..case("bad data with an existing --save file", &[], &["test_batch.bin", "3073"])
    });
    cases.push(Case {
        args: vec![
            "train".into(),
            "--dataset".into(),
            "cifar10".into(),
            "--data".into(),
            data.clone(),
            "--resume".into(),
            s(&fixture(".")),
        ],
        ..case("--resume from a folder without last.safetensors", &[], &["--resume", "last.safetensors"])
    });

    // A download whose md5 does not match.
    let url = serve_once(b"not the archive".to_vec());
    let dl = root().join("download");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl).unwrap();
    cases.push(Case {
        args: vec![
            "train".into(),
            "--dataset".into(),
            "cifar10".into(),
            "--data".into(),
            s(&dl.join("cifar-10-batches-bin")),
        ],
        env: vec![
            ("GPU_LENET_TEST_CIFAR_URL".into(), url),
            ("GPU_LENET_TEST_CIFAR_MD5".into(), "00112233445566778899aabbccddeeff".into()),
        ],
        ..case("download with a wrong md5", &[], &["md5", "00112233445566778899aabbccddeeff", "deleted"])
    });

    // The training recipe.
    cases.push(case("unknown schedule", &syn(&["--lr-schedule", "warm"]), &["--lr-schedule", "warm", "cosine"]));
    cases.push(case("step size 0", &syn(&["--lr-schedule", "step:0:0.5"]), &["step:0:0.5", "at least 1"]));
    cases.push(case(
        "milestone past the run",
        &syn(&["--epochs", "10", "--lr-schedule", "multistep:3,20:0.1"]),
        &["multistep:3,20:0.1", "1..10"],
    ));
    cases.push(case("crop too wide", &syn(&["--augment", "crop:40"]), &["--augment", "crop:40", "1..=16"]));
    cases.push(case("unknown augmentation", &syn(&["--augment", "rotate"]), &["rotate", "crop:4,flip"]));
    cases.push(case("negative weight decay", &syn(&["--weight-decay", "-1"]), &["--weight-decay -1", "at least 0"]));
    cases.push(case("label smoothing above 1", &syn(&["--label-smoothing", "2"]), &["--label-smoothing 2", "[0, 1]"]));
    cases.push(case(
        "nesterov without momentum",
        &syn(&["--nesterov", "--momentum", "0"]),
        &["--nesterov", "momentum"],
    ));
    cases.push(case("--plot not a PNG", &syn(&["--plot", "/tmp/curves.jpg"]), &["--plot /tmp/curves.jpg", ".png"]));
    cases.push(case(
        "--plot in a missing folder",
        &syn(&["--plot", "/nonexistent-dir/c.png"]),
        &["--plot", "/nonexistent-dir", "does not exist"],
    ));
    // Pictures.
    let not_a_picture = raw_file("not-a-picture.png", b"plain text\n");
    let ck = s(&fixture("init.safetensors"));
    cases.push(Case {
        keep: vec![not_a_picture.clone()],
        ..case(
            "predict on a text file",
            &["predict", "--checkpoint", &ck, &s(&not_a_picture)],
            &["not-a-picture.png", "not a PNG or JPEG"],
        )
    });
    let broken_png = raw_file("broken.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    cases.push(case(
        "predict on a truncated PNG",
        &["predict", "--checkpoint", &ck, &s(&broken_png)],
        &["broken.png", "cannot decode"],
    ));
    let bad_metrics = raw_file("m.jsonl", b"{\"epoch\": 1}\n");
    cases.push(case(
        "plot of a metrics file without losses",
        &["plot", &s(&bad_metrics), "-o", "/tmp/gpu-lenet-bad-plot.png"],
        &["m.jsonl line 1: field train_loss: expected a number"],
    ));
    cases.push(case(
        "show-batch to a missing folder",
        &["show-batch", "--dataset", "synthetic", "-o", "/nonexistent-dir/b.png"],
        &["-o", "/nonexistent-dir", "does not exist"],
    ));
    assert!(cases.len() >= 25, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let before: Vec<Vec<u8>> = c.keep.iter().map(|p| std::fs::read(p).unwrap()).collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gpu-lenet"));
        cmd.args(&c.args).env("RUST_BACKTRACE", "1");
        for (k, v) in &c.env {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        let problem = if o.status.success() {
            Some("exited 0".to_string())
        } else if err.contains("panicked") || err.contains("stack backtrace") {
            Some(format!("panicked:\n{err}"))
        } else if errors.len() != 1 {
            Some(format!("{} error lines:\n{err}", errors.len()))
        } else if let Some(missing) = c.expect.iter().find(|e| !errors[0].contains(*e)) {
            Some(format!("error line lacks {missing:?}: {}", errors[0]))
        } else if c.keep.iter().zip(&before).any(|(p, b)| std::fs::read(p).ok().as_ref() != Some(b)) {
            Some("an existing file was changed".to_string())
        } else {
            None
        };
        if let Some(p) = problem {
            failures.push(format!("[{}] {p}", c.name));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// One batch-size limit for every command: the largest batch `train` accepts plus one is refused
/// by `eval` and `bench-kernels` with the same line (not an allocation failure or a raw wgpu error).
#[test]
fn every_command_refuses_a_batch_over_the_same_limit() {
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_gpu-lenet")).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success() && !err.contains("panicked"), "{args:?}: {err}");
        let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {err}");
        errors[0].to_string()
    };
    let data = s(&fixture("cifar"));
    let line = run(&["train", "--dataset", "cifar10", "--data", &data, "--batch-size", "100000000"]);
    let limit: usize = line
        .split("at most ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let over = (limit + 1).to_string();
    let want = format!("--batch-size {over}: this adapter supports at most {limit}");
    let init = s(&fixture("init.safetensors"));
    for args in [
        vec!["train", "--dataset", "cifar10", "--data", &data, "--batch-size", &over],
        vec!["eval", "--checkpoint", &init, "--dataset", "cifar10", "--data", &data, "--batch-size", &over],
        vec!["bench-kernels", "--batch-size", &over],
    ] {
        let line = run(&args);
        assert!(line.contains(&want), "{args:?}: {line}");
    }
}
