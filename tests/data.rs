//! Data loading: CIFAR-10's binary format and Fashion-MNIST's IDX files (written here, since
//! CIFAR-10 cannot be downloaded on CI), the synthetic set, and the GPU's batch preparation
//! against its CPU reference, with the data set split over several buffers.

mod common;
use common::*;

use gpu_lenet::data::augment::{self, Augment};
use gpu_lenet::data::{cifar, fashion, synthetic, Dataset, Split};
use gpu_lenet::kernels::prepare_batch::{self, GpuSplit, PrepareBatch};
use gpu_lenet::kernels::{StepInfo, StepTable, View};
use std::io::Write;
use std::path::{Path, PathBuf};

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpu-lenet-data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn random_cifar(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut r = Rng(seed);
    let images = (0..n * 3072).map(|_| r.below(256) as u8).collect();
    let labels = (0..n).map(|_| r.below(10) as u8).collect();
    (images, labels)
}

#[test]
fn cifar_loader_reads_fewer_and_shorter_batch_files() {
    let d = temp_dir("cifar-ok");
    let (i1, l1) = random_cifar(7, 1);
    let (i3, l3) = random_cifar(5, 3);
    let (it, lt) = random_cifar(4, 9);
    cifar::write_batch(&d.join("data_batch_1.bin"), &i1, &l1).unwrap();
    cifar::write_batch(&d.join("data_batch_3.bin"), &i3, &l3).unwrap();
    cifar::write_batch(&d.join("test_batch.bin"), &it, &lt).unwrap();
    let ds = cifar::load(&d).unwrap();
    assert_eq!(ds.train.len(), 12);
    assert_eq!(ds.test.len(), 4);
    assert_eq!(&ds.train.labels[..7], &l1[..]);
    assert_eq!(&ds.train.labels[7..], &l3[..]);
    assert_eq!(&ds.train.images[7 * 3072..], &i3[..]);
    assert_eq!(ds.test.images, it);
    assert_eq!(ds.class_names[0], "airplane");
}

#[test]
fn cifar_loader_names_the_file_and_record_on_bad_input() {
    let d = temp_dir("cifar-bad");
    let (i, mut l) = random_cifar(5, 2);
    cifar::write_batch(&d.join("test_batch.bin"), &i, &l).unwrap();
    // A label of 10 in record 3.
    l[3] = 10;
    cifar::write_batch(&d.join("data_batch_1.bin"), &i, &l).unwrap();
    let e = cifar::load(&d).unwrap_err();
    assert!(e.contains("data_batch_1.bin") && e.contains("record 3") && e.contains("label 10"), "{e}");
    // Truncated: a record cut short.
    l[3] = 1;
    cifar::write_batch(&d.join("data_batch_1.bin"), &i, &l).unwrap();
    let bytes = std::fs::read(d.join("data_batch_1.bin")).unwrap();
    std::fs::write(d.join("data_batch_1.bin"), &bytes[..bytes.len() - 100]).unwrap();
    let e = cifar::load(&d).unwrap_err();
    assert!(e.contains("data_batch_1.bin") && e.contains("3073") && e.contains("record 4"), "{e}");
    // Missing test batch.
    cifar::write_batch(&d.join("data_batch_1.bin"), &i, &l).unwrap();
    std::fs::remove_file(d.join("test_batch.bin")).unwrap();
    let e = cifar::load(&d).unwrap_err();
    assert!(e.contains("test_batch.bin"), "{e}");
    // Empty folder.
    let empty = temp_dir("cifar-empty");
    let e = cifar::load(&empty).unwrap_err();
    assert!(e.contains("data_batch_1.bin"), "{e}");
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn idx_images(n: usize, rows: u32, seed: u64) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x803u32, n as u32, rows, 28] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    let mut r = Rng(seed);
    b.extend((0..n * rows as usize * 28).map(|_| r.below(256) as u8));
    b
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0x801u32.to_be_bytes());
    b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    b.extend_from_slice(labels);
    b
}

fn write_fashion(d: &Path, gzip: bool) {
    let w = |name: &str, bytes: Vec<u8>| {
        if gzip {
            std::fs::write(d.join(format!("{name}.gz")), gz(&bytes)).unwrap()
        } else {
            std::fs::write(d.join(name), bytes).unwrap()
        }
    };
    w("train-images-idx3-ubyte", idx_images(9, 28, 1));
    w("train-labels-idx1-ubyte", idx_labels(&[0, 1, 2, 3, 4, 5, 6, 7, 9]));
    w("t10k-images-idx3-ubyte", idx_images(3, 28, 2));
    w("t10k-labels-idx1-ubyte", idx_labels(&[9, 8, 7]));
}

#[test]
fn fashion_loader_reads_gzip_and_raw_idx() {
    for gzip in [true, false] {
        let d = temp_dir(if gzip { "fashion-gz" } else { "fashion-raw" });
        write_fashion(&d, gzip);
        let ds = fashion::load(&d).unwrap();
        assert_eq!((ds.train.len(), ds.test.len(), ds.channels, ds.pad), (9, 3, 1, 2));
        assert_eq!(ds.train.images[..784], idx_images(9, 28, 1)[16..16 + 784]);
        assert_eq!(ds.test.labels, vec![9, 8, 7]);
    }
}

#[test]
fn fashion_loader_refuses_bad_idx_files() {
    let d = temp_dir("fashion-bad");
    write_fashion(&d, true);
    let path = d.join("train-images-idx3-ubyte.gz");
    let mut bad_magic = idx_images(9, 28, 1);
    bad_magic[3] = 0x01;
    std::fs::write(&path, gz(&bad_magic)).unwrap();
    let e = fashion::load(&d).unwrap_err();
    assert!(e.contains("train-images-idx3-ubyte.gz") && e.contains("magic"), "{e}");
    std::fs::write(&path, gz(&idx_images(9, 27, 1))).unwrap();
    let e = fashion::load(&d).unwrap_err();
    assert!(e.contains("27x28") && e.contains("28x28"), "{e}");
    let full = idx_images(9, 28, 1);
    std::fs::write(&path, gz(&full[..full.len() - 5])).unwrap();
    let e = fashion::load(&d).unwrap_err();
    assert!(e.contains("truncated"), "{e}");
    let mut corrupt = gz(&full);
    let mid = corrupt.len() / 2;
    corrupt.truncate(mid);
    std::fs::write(&path, corrupt).unwrap();
    let e = fashion::load(&d).unwrap_err();
    assert!(e.contains("train-images-idx3-ubyte.gz") && e.contains("gzip"), "{e}");
}

#[test]
fn synthetic_set_is_seeded_and_balanced() {
    let a = synthetic::generate(5, 500, 100);
    let b = synthetic::generate(5, 500, 100);
    let c = synthetic::generate(6, 500, 100);
    assert_eq!(a.train.images, b.train.images);
    assert_ne!(a.train.images, c.train.images);
    assert_eq!(a.train.images.len(), 500 * 3072);
    for class in 0..10u8 {
        let n = a.train.labels.iter().filter(|&&l| l == class).count();
        assert!((25..=75).contains(&n), "class {class}: {n} of 500");
    }
}

/// The GPU gather/convert/normalise against the CPU reference, through a permutation, with the
/// data set split over up to four buffers and a partial last batch.
fn check_prepare(ds: &Dataset, split: &Split, batch: usize, chunk_limit: usize) {
    check_prepare_augmented(ds, split, batch, chunk_limit, Augment::default(), 0, 0);
}

/// The same with augmentation, for the run seed `seed` in epoch `epoch`.
fn check_prepare_augmented(
    ds: &Dataset,
    split: &Split,
    batch: usize,
    chunk_limit: usize,
    augment: Augment,
    seed: u64,
    epoch: u32,
) {
    let g = gpu();
    let gs = GpuSplit::upload_with_limit(g, ds, split, "test", chunk_limit).unwrap();
    let n = split.len();
    let mut r = gpu_lenet::rng::Rng::new(7);
    let perm = r.permutation(n);
    let permb = upload(&perm);
    let starts: Vec<usize> = (0..n).step_by(batch).collect();
    let rows: Vec<StepInfo> = starts
        .iter()
        .enumerate()
        .map(|(i, &s)| StepInfo { step: i as u32, start: s as u32, epoch, ..Default::default() })
        .collect();
    let table = StepTable::new(g, &rows);
    let k = PrepareBatch::augmented(g, &gs, augment);
    for (i, &start) in starts.iter().enumerate() {
        let b = batch.min(n - start);
        let xb = out(b * ds.channels * 32 * 32);
        let lb = out(b);
        let d = k.bind(g, &gs, &View::whole(&permb), &table, b, seed, &View::whole(&xb), &View::whole(&lb));
        let mut enc = g.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            d.record(&mut pass, table.offset(i));
        }
        g.queue.submit([enc.finish()]);
        let (x, labels) = prepare_batch::reference_augmented(ds, split, &perm, start, b, augment, seed, epoch);
        assert_eq!(read(&xb), x, "{augment} seed {seed} epoch {epoch}: batch {i} (start {start}, {b} images): pixels");
        assert_eq!(read_u32(&lb), labels, "batch {i}: labels");
    }
}

#[test]
fn prepare_batch_matches_reference_for_cifar_shapes_and_several_buffers() {
    let ds = synthetic::generate(3, 37, 5);
    assert_eq!(ds.record(), 3072);
    check_prepare(&ds, &ds.train, 16, 1 << 30); // one buffer, partial last batch of 5
    check_prepare(&ds, &ds.train, 1, 10 * 3072); // four buffers of 10 images, batch 1
    check_prepare(&ds, &ds.train, 13, 12 * 3072); // four buffers, batches straddle them
    check_prepare(&ds, &ds.train, 16, 20 * 3072); // two buffers (CIFAR-10 at a 128 MiB binding limit)
    check_prepare(&ds, &ds.train, 7, 15 * 3072); // three buffers
}

#[test]
fn prepare_batch_pads_fashion_images_to_32() {
    let d = temp_dir("fashion-prep");
    write_fashion(&d, false);
    let ds = fashion::load(&d).unwrap();
    check_prepare(&ds, &ds.train, 4, 1 << 30);
    check_prepare(&ds, &ds.train, 2, 3 * 784);
    // Padding is raw 0 before normalisation: -1 after.
    let (x, _) = prepare_batch::reference(&ds, &ds.train, &[0], 0, 1);
    assert_eq!(x[0], -1.0);
    assert_eq!(x[32 * 32 - 1], -1.0);
}

#[test]
fn a_data_set_too_large_for_four_buffers_is_refused() {
    let g = gpu();
    let ds = synthetic::generate(1, 50, 5);
    let e = GpuSplit::upload_with_limit(g, &ds, &ds.train, "training set", 10 * 3072).unwrap_err();
    assert!(e.contains("training set") && e.contains("50 images"), "{e}");
}

#[test]
fn augmented_batches_match_the_reference_on_the_gpu() {
    let ds = synthetic::generate(3, 37, 5);
    let crop_flip = Augment { crop: 4, flip: true };
    check_prepare_augmented(&ds, &ds.train, 16, 1 << 30, crop_flip, 11, 0);
    check_prepare_augmented(&ds, &ds.train, 1, 10 * 3072, crop_flip, 11, 3); // four buffers, batch 1
    check_prepare_augmented(&ds, &ds.train, 13, 12 * 3072, Augment { crop: 1, flip: false }, 5, 2);
    check_prepare_augmented(&ds, &ds.train, 7, 1 << 30, Augment { crop: 0, flip: true }, 5, 1);
    check_prepare_augmented(&ds, &ds.train, 9, 1 << 30, Augment { crop: augment::MAX_CROP, flip: true }, 1, 0);
    check_prepare_augmented(&ds, &ds.train, 5, 1 << 30, crop_flip, u64::MAX - 3, 9);
    // both seed halves
}

#[test]
fn augmented_fashion_images_are_padded_to_32_then_cropped() {
    let d = temp_dir("fashion-augment");
    write_fashion(&d, false);
    let ds = fashion::load(&d).unwrap();
    check_prepare_augmented(&ds, &ds.train, 4, 1 << 30, Augment { crop: 4, flip: true }, 3, 1);
    check_prepare_augmented(&ds, &ds.train, 2, 3 * 784, Augment { crop: 2, flip: false }, 3, 4);
}

/// torchvision's order written out plainly: pad the 32x32 image with P zeros, take the window
/// at (dy, dx), flip it; the reference must give exactly that for every choice it draws.
#[test]
fn the_reference_is_pad_then_crop_then_flip() {
    for (ds, seed) in [(synthetic::generate(4, 40, 1), 1u64), (fashion_set(), 2)] {
        let a = Augment { crop: 4, flip: true };
        let (c, n) = (ds.channels, ds.train.len());
        let perm: Vec<u32> = (0..n as u32).collect();
        let (plain, _) = prepare_batch::reference(&ds, &ds.train, &perm, 0, n);
        let (aug, _) = prepare_batch::reference_augmented(&ds, &ds.train, &perm, 0, n, a, seed, 6);
        let mut corners = std::collections::HashSet::new();
        for s in 0..n {
            let (dy, dx, flip) = augment::choices(a, seed, 6, s as u32);
            corners.insert((dy, dx));
            let p = a.crop as usize;
            for ch in 0..c {
                let img = &plain[(s * c + ch) * 1024..(s * c + ch + 1) * 1024];
                // The padded image, 40x40, with -1 (raw 0) around.
                let mut padded = vec![-1f32; (32 + 2 * p) * (32 + 2 * p)];
                for y in 0..32 {
                    for x in 0..32 {
                        padded[(y + p) * (32 + 2 * p) + x + p] = img[y * 32 + x];
                    }
                }
                for y in 0..32 {
                    for x in 0..32 {
                        let src_x = if flip { 31 - x } else { x };
                        let want = padded[(y + dy as usize) * (32 + 2 * p) + src_x + dx as usize];
                        let got = aug[(s * c + ch) * 1024 + y * 32 + x];
                        assert_eq!(got, want, "sample {s} channel {ch} ({y}, {x}), offset ({dy}, {dx}) flip {flip}");
                    }
                }
            }
        }
        assert!(corners.len() * 2 > n, "{n} samples drew only the offsets {corners:?}");
    }
    // The extreme offsets: the window flush with each edge of the padded image.
    let ds = synthetic::generate(4, 1, 1);
    let a = Augment { crop: 4, flip: false };
    let seed = (0..10_000u64).find(|&s| augment::choices(a, s, 0, 0) == (0, 8, false)).expect("a seed giving (0, 8)");
    let (x, _) = prepare_batch::reference_augmented(&ds, &ds.train, &[0], 0, 1, a, seed, 0);
    let (plain, _) = prepare_batch::reference(&ds, &ds.train, &[0], 0, 1);
    assert!(x[..4 * 32].iter().all(|&v| v == -1.0), "top 4 rows are padding");
    assert_eq!(x[4 * 32], plain[4], "row 4 starts at source column 4");
    assert!((0..32).all(|y| x[y * 32 + 28..y * 32 + 32].iter().all(|&v| v == -1.0)), "right 4 columns are padding");
}

fn fashion_set() -> Dataset {
    let d = temp_dir("fashion-augment-ref");
    write_fashion(&d, false);
    fashion::load(&d).unwrap()
}
