//! Property tests of every parser on hostile bytes: random buffers, random truncations and
//! random byte flips of valid inputs, from fixed seeds (reproducible). Each parser must return
//! Ok or Err, never panic, and an Err must name the file. Run longer with
//! GPU_LENET_FUZZ_ITERATIONS=1000000 cargo test --release --test fuzz_parsers.

use gpu_lenet::checkpoint;
use gpu_lenet::data::{cifar, fashion, Split};
use std::path::Path;

fn iterations() -> usize {
    std::env::var("GPU_LENET_FUZZ_ITERATIONS").ok().and_then(|s| s.parse().ok()).unwrap_or(50_000)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A hostile variant of `valid`: truncated, extended, bytes flipped or overwritten with
/// boundary values, or pure noise.
fn mutate(r: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let mut b = valid.to_vec();
    match r.below(5) {
        0 => b.truncate(r.below(valid.len() + 1)),
        1 => b.extend((0..r.below(64) + 1).map(|_| r.next() as u8)),
        2 => {
            for _ in 0..r.below(8) + 1 {
                let i = r.below(b.len());
                if !b.is_empty() {
                    b[i] ^= 1 << r.below(8);
                }
            }
        }
        3 => {
            // Boundary values in the header region, where lengths and counts live.
            for _ in 0..r.below(4) + 1 {
                let i = r.below(b.len().min(128));
                if !b.is_empty() {
                    b[i] = [0x00, 0xff, 0x7f, 0x80, b'{', b'"'][r.below(6)];
                }
            }
        }
        _ => b = (0..r.below(4096)).map(|_| r.next() as u8).collect(),
    }
    b
}

fn check(what: &str, name: &str, result: Result<(), String>) {
    if let Err(e) = result {
        assert!(e.contains(name), "{what}: error does not name the file: {e}");
    }
}

#[test]
fn cifar_records_never_panic() {
    let path = Path::new("fuzz/data_batch_1.bin");
    let valid =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar/data_batch_1.bin")).unwrap();
    let valid = &valid[..3073 * 5];
    let mut r = Rng(1);
    for _ in 0..iterations() {
        let b = mutate(&mut r, valid);
        let mut split = Split::default();
        let res = cifar::parse_batch(path, &b, &mut split);
        if res.is_ok() {
            assert_eq!(split.images.len(), split.labels.len() * 3072);
            assert!(split.labels.iter().all(|&l| l < 10));
        }
        check("cifar", "data_batch_1.bin", res);
    }
}

#[test]
fn idx_files_and_gzip_never_panic() {
    let img_path = Path::new("fuzz/train-images-idx3-ubyte.gz");
    let lab_path = Path::new("fuzz/train-labels-idx1-ubyte.gz");
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28];
    images.extend((0..3 * 784).map(|i| (i % 251) as u8));
    let labels = vec![0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3];
    let gz = |b: &[u8]| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    };
    let (images_gz, labels_gz) = (gz(&images), gz(&labels));
    let mut r = Rng(2);
    for i in 0..iterations() {
        // Raw IDX, and gzip streams whose compressed bytes are mutated.
        let b = mutate(&mut r, &images);
        check(
            "idx images",
            "train-images",
            fashion::parse_images(img_path, &b).map(|(n, px)| assert_eq!(px.len(), n * 784)),
        );
        let b = mutate(&mut r, &labels);
        check(
            "idx labels",
            "train-labels",
            fashion::parse_labels(lab_path, &b).map(|l| assert!(l.iter().all(|&x| x < 10))),
        );
        let src = if i % 2 == 0 { &images_gz } else { &labels_gz };
        let b = mutate(&mut r, src);
        let res = fashion::maybe_gunzip(img_path, b).and_then(|raw| fashion::parse_images(img_path, &raw).map(|_| ()));
        check("gzip", "train-images", res);
    }
}

#[test]
fn checkpoints_never_panic() {
    let path = Path::new("fuzz/weights.safetensors");
    let valid = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/init.safetensors")).unwrap();
    // A resumable checkpoint too: metadata and momentum tensors.
    let l = checkpoint::from_bytes(path, &valid, 4).unwrap();
    let meta = std::collections::BTreeMap::from([
        ("epoch".to_string(), "3".to_string()),
        ("shuffle_rng".to_string(), "12345".to_string()),
    ]);
    let network = l.model.network(l.in_channels);
    let contents = checkpoint::Contents {
        network: &network,
        arena: &l.arena,
        weights: &l.weights,
        momentum: Some(&l.weights),
        state_arena: &l.state_arena,
        state: &l.state,
        batches_tracked: 0,
    };
    let resumable = checkpoint::to_bytes(&contents, &meta).unwrap();
    let mut r = Rng(3);
    // Whole-file parses are large; a third of the iterations is enough to cover the header.
    for i in 0..iterations() / 3 {
        let src = if i % 2 == 0 { &valid } else { &resumable };
        let b = mutate(&mut r, src);
        let res = checkpoint::from_bytes(path, &b, 4).map(|l| {
            assert_eq!(l.weights.len(), l.arena.words);
            assert!(l.weights.iter().all(|v| v.is_finite()));
        });
        check("checkpoint", "weights.safetensors", res);
    }
}

#[test]
fn resume_metadata_never_panics() {
    use gpu_lenet::train::progress_from_metadata;
    let keys = [
        "epoch",
        "step",
        "shuffle_rng",
        "best_test_accuracy",
        "lr",
        "momentum",
        "batch_size",
        "seed",
        "shuffle",
        "dataset",
        "x",
    ];
    let values = [
        "0",
        "3",
        "-1",
        "18446744073709551615",
        "18446744073709551616",
        "1e309",
        "NaN",
        "inf",
        "0.5",
        "",
        " 7 ",
        "abc",
        "\u{0}",
        "9999999999999999999999",
    ];
    let mut r = Rng(4);
    for _ in 0..iterations() {
        let mut meta = std::collections::HashMap::new();
        for k in keys {
            if r.below(8) != 0 {
                let v = if r.below(4) == 0 {
                    (0..r.below(12)).map(|_| (r.next() as u8 % 96 + 32) as char).collect()
                } else {
                    values[r.below(values.len())].to_string()
                };
                meta.insert(k.to_string(), v);
            }
        }
        check(
            "metadata",
            "last.safetensors",
            progress_from_metadata("fuzz/last.safetensors", &meta).map(|p| {
                assert!(p.best_test_accuracy.is_finite());
            }),
        );
    }
}
