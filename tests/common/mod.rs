//! Shared test helpers: one GPU per test binary, a seeded RNG, and tolerance-checked comparison.
#![allow(dead_code)]

use gpu_lenet::gpu::{AdapterChoice, Gpu};
use std::sync::OnceLock;

/// The adapter CI has (lavapipe there; `GPU_LENET_ADAPTER` chooses). A test that finds no
/// adapter fails: it never skips.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let choice = AdapterChoice::from_env().expect("GPU_LENET_ADAPTER");
        let gpu = Gpu::new(choice).unwrap_or_else(|e| panic!("no GPU adapter for the tests: {e}"));
        eprintln!("tests run on {}", gpu.describe());
        gpu
    })
}

/// SplitMix64: small, seeded, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

/// Asserts max|got - want| <= tol * max|want| (tol relative to the tensor's largest value).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length {} != {}", got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, &v| m.max((v as f64).abs())).max(1e-30);
    let (mut worst, mut at) = (0f64, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w as f64).abs();
        if d > worst || d.is_nan() {
            worst = d;
            at = i;
        }
    }
    let rel = worst / scale;
    assert!(
        rel <= tol,
        "{what}: max error {worst:e} at [{at}] (got {}, want {}) is {rel:e} of the largest value {scale:e}; \
            tolerance {tol:e}",
        got[at],
        want[at]
    );
}

/// Uploads data to a fresh storage buffer.
pub fn upload<T: bytemuck::Pod>(data: &[T]) -> wgpu::Buffer {
    gpu().storage_from("test input", data)
}

pub fn out(words: usize) -> wgpu::Buffer {
    gpu().storage("test output", words)
}

pub fn read(buf: &wgpu::Buffer) -> Vec<f32> {
    gpu().read_f32(buf, (buf.size() / 4) as usize)
}

pub fn read_u32(buf: &wgpu::Buffer) -> Vec<u32> {
    gpu().read_words(buf, 0, (buf.size() / 4) as usize).unwrap()
}
