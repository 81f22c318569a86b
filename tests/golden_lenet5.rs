//! LeNet-5 trains exactly as it always has: the weights after two epochs (full and partial
//! batches, two batch sizes) are held, bit for bit, to the digests that the engine's earlier
//! build recorded on each adapter in tests/fixtures/lenet5_golden.txt, together with the
//! dispatches per step (the same or fewer). On an adapter with no recorded digest the test
//! checks that two runs give the same bits. `GPU_LENET_RECORD_GOLDEN=1 cargo test --test
//! golden_lenet5` records this adapter's digests (do that with the build before a change).

use md5::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Trains with `args`, returns (the adapter line, dispatches per step, md5 of the weights' bits).
fn run(args: &[&str], tag: &str) -> (String, usize, String) {
    let dir = std::env::temp_dir().join(format!("gpu-lenet-golden-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let save = dir.join("w.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_gpu-lenet"))
        .arg("train")
        .args(args)
        .args(["--save", save.to_str().unwrap()])
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{args:?}: {err}");
    let line = out.lines().find(|l| l.starts_with("Training ")).unwrap_or_else(|| panic!("{out}"));
    let adapter = line.split(") on ").nth(1).and_then(|r| r.split("): ").next()).unwrap_or_else(|| panic!("{line}"));
    let dispatches: usize = line
        .split(" dispatches per step")
        .next()
        .and_then(|r| r.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    let w = gpu_lenet::checkpoint::load(&save, 4).unwrap().weights;
    let md5: String =
        md5::Md5::digest(bytemuck::cast_slice::<f32, u8>(&w)).iter().map(|b| format!("{b:02x}")).collect();
    let _ = std::fs::remove_dir_all(&dir);
    (format!("{adapter})"), dispatches, md5)
}

#[test]
fn lenet5_weights_are_bit_identical_to_the_recorded_ones() {
    let data = fixture("cifar");
    let data = data.to_str().unwrap();
    let common = ["--dataset", "cifar10", "--data", data, "--epochs", "2", "--lr", "0.01", "--seed", "3"];
    let runs = [("batch32", "32"), ("batch64", "64")];
    let golden_path = fixture("lenet5_golden.txt");
    let golden = std::fs::read_to_string(&golden_path).unwrap_or_default();
    let mut record = Vec::new();
    for (tag, batch) in runs {
        let args = [&common[..], &["--batch-size", batch]].concat();
        let (adapter, dispatches, md5) = run(&args, tag);
        let key = format!("{adapter}\t{tag}\t");
        match golden.lines().find(|l| l.starts_with(&key)) {
            Some(l) => {
                let f: Vec<&str> = l.split('\t').collect();
                let (want_dispatches, want_md5) = (f[2].parse::<usize>().unwrap(), f[3]);
                assert_eq!(md5, want_md5, "{tag} on {adapter}: the weights differ from the recorded build's");
                assert!(
                    dispatches <= want_dispatches,
                    "{tag} on {adapter}: {dispatches} dispatches a step, was {want_dispatches}"
                );
            }
            None => {
                let (_, _, again) = run(&args, &format!("{tag}-again"));
                assert_eq!(md5, again, "{tag} on {adapter}: two runs gave different weights");
                eprintln!("{tag}: no digest recorded for {adapter}; two runs agree");
            }
        }
        record.push(format!("{key}{dispatches}\t{md5}"));
    }
    if std::env::var_os("GPU_LENET_RECORD_GOLDEN").is_some() {
        let keys: Vec<String> = record.iter().map(|r| r.rsplitn(3, '\t').nth(2).unwrap().to_string()).collect();
        let mut lines: Vec<String> = golden
            .lines()
            .filter(|l| !keys.iter().any(|k| l.starts_with(&format!("{k}\t"))))
            .map(String::from)
            .collect();
        lines.extend(record);
        std::fs::write(&golden_path, lines.join("\n") + "\n").unwrap();
    }
}
