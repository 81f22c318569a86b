//! `cargo bench --bench kernels`: the same per-kernel table as `gpu-lenet bench-kernels`
//! (every kernel checked against its CPU reference, then timed), at batch 64 or
//! GPU_LENET_BENCH_BATCH, for GPU_LENET_BENCH_MODEL (lenet5 by default), on GPU_LENET_ADAPTER
//! (default: the best adapter found).

use gpu_lenet::gpu::{AdapterChoice, Gpu};

fn main() {
    let batch = std::env::var("GPU_LENET_BENCH_BATCH").ok().and_then(|s| s.parse().ok()).unwrap_or(64);
    let gpu = Gpu::new(AdapterChoice::from_env().expect("GPU_LENET_ADAPTER")).expect("a GPU adapter");
    let model = std::env::var("GPU_LENET_BENCH_MODEL").unwrap_or("lenet5".into());
    let model = <gpu_lenet::nn::Model as clap::ValueEnum>::from_str(&model, false).expect("GPU_LENET_BENCH_MODEL");
    let report = gpu_lenet::bench::run(&gpu, model, batch, None).expect("benchmark");
    gpu_lenet::bench::print(&report);
    assert!(report.kernels.iter().all(|k| k.correct), "a kernel failed its check");
}
