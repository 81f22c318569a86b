//! A built-in, seeded, learnable CIFAR-shaped data set (3x32x32, 10 classes) for demos and
//! tests when no real data is at hand. Each class is a family of oriented colour gratings with
//! its own frequencies and phases per channel; every image shifts, rescales and adds noise to
//! its class's pattern, so a classifier has to learn shapes, not memorise pixels.

use super::{Dataset, Split};
use crate::rng::Rng;

pub const TRAIN: usize = 10_000;
pub const TEST: usize = 2_000;

struct ClassPattern {
    /// Per channel: (fx, fy, phase).
    waves: [(f32, f32, f32); 3],
}

fn patterns(seed: u64) -> Vec<ClassPattern> {
    let mut r = Rng::for_purpose(seed, "synthetic-classes");
    (0..10)
        .map(|c| {
            let angle = c as f32 * std::f32::consts::PI / 10.0 + r.uniform(-0.05, 0.05);
            let freq = 0.25 + 0.35 * ((c * 7) % 10) as f32 / 10.0;
            let mut waves = [(0.0, 0.0, 0.0); 3];
            for (ch, w) in waves.iter_mut().enumerate() {
                let a = angle + ch as f32 * 0.4;
                // A phase in [0, 6.283), kept as written so the data set stays the same.
                #[allow(clippy::approx_constant)]
                let phase = r.uniform(0.0, 6.283);
                *w = (freq * a.cos(), freq * a.sin(), phase);
            }
            ClassPattern { waves }
        })
        .collect()
}

fn split(pats: &[ClassPattern], r: &mut Rng, n: usize) -> Split {
    let mut images = Vec::with_capacity(n * 3072);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = r.below(10) as usize;
        let (dx, dy) = (r.uniform(-3.0, 3.0), r.uniform(-3.0, 3.0));
        let amp = r.uniform(50.0, 100.0);
        let base = r.uniform(90.0, 160.0);
        for &(fx, fy, ph) in &pats[c].waves {
            for y in 0..32 {
                for x in 0..32 {
                    let v =
                        base + amp * (fx * (x as f32 + dx) + fy * (y as f32 + dy) + ph).sin() + r.uniform(-40.0, 40.0);
                    images.push(v.clamp(0.0, 255.0) as u8);
                }
            }
        }
        labels.push(c as u8);
    }
    Split { images, labels }
}

/// `train` + `test` images from `seed`.
pub fn generate(seed: u64, train: usize, test: usize) -> Dataset {
    let pats = patterns(seed);
    let mut r = Rng::for_purpose(seed, "synthetic-images");
    let train = split(&pats, &mut r, train);
    let test = split(&pats, &mut r, test);
    Dataset {
        name: "synthetic".into(),
        source: format!("built-in synthetic set, seed {seed}"),
        channels: 3,
        height: 32,
        width: 32,
        pad: 0,
        class_names: super::class_names(super::DatasetKind::Synthetic),
        train,
        test,
    }
}
