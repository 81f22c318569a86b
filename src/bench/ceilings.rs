//! What the adapter can do at best, for the "of ceiling" column: a vec4 copy (bandwidth),
//! multiply-adds on registers (arithmetic), this project's GEMM at its best size.

use super::timer::Timer;
use crate::gpu::Gpu;
use crate::kernels::gemm::{Epilogue, Product};
use crate::kernels::{Kernel, Slot, View};
use crate::model::NetKernels;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Ceilings {
    pub copy_gbps: f64,
    /// This project's GEMM at 128^3, the adapter's default variant (on lavapipe both operands in
    /// one uniform window each).
    pub gemm_gflops: f64,
    /// Multiply-adds in registers, nothing loaded: the arithmetic ceiling kernels are measured
    /// against.
    pub fma_gflops: f64,
}

/// Measures the three ceilings on `gpu` (the best of several repetitions each).
pub(super) fn measure(gpu: &Gpu, kernels: &NetKernels, timer: &Timer) -> Result<Ceilings, String> {
    let copy_words = 8 << 20; // 32 MiB each way
    let (src, dst) = (gpu.storage("copy src", copy_words), gpu.storage("copy dst", copy_words));
    let copy_k = Kernel::new(gpu, "copy_vec4", COPY_WGSL, "main", &[Slot::Uniform, Slot::Read, Slot::ReadWrite]);
    let n4 = gpu.uniform("copy n", &[(copy_words / 4) as u32, 0, 0, 0]);
    let copy = copy_k.bind(
        gpu,
        &[n4.as_entire_binding(), View::whole(&src).resource(), View::whole(&dst).resource()],
        crate::kernels::grid_1d(copy_words / 4),
    );
    let copy_ms = Timer { reps: 7, best: true, ..*timer }.time_ms(&[&copy])?;
    let copy_gbps = (2 * 4 * copy_words) as f64 / copy_ms / 1e6;
    let fma_k = Kernel::new(gpu, "fma_peak", FMA_WGSL, "main", &[Slot::ReadWrite]);
    let fma_invocations = 1 << 16;
    let fma_out = gpu.storage("fma out", fma_invocations);
    let fma = fma_k.bind(gpu, &[View::whole(&fma_out).resource()], [(fma_invocations / 64) as u32, 1, 1]);
    let fma_ms = Timer { reps: 11, best: true, ..*timer }.time_ms(&[&fma])?;
    let fma_gflops = (2 * 16 * FMA_STEPS * fma_invocations) as f64 / fma_ms / 1e6;
    // The GEMM, the adapter's default variant, at the size where both operands fit one 64 KiB
    // uniform window (its best case on lavapipe: bigger products split into windows, one
    // dispatch each).
    let (m, n, k) = (128, 128, 128);
    let mut abuf = vec![0f32; m * k + (crate::kernels::UNIFORM_SLACK_BYTES / 4) as usize];
    abuf.iter_mut().enumerate().for_each(|(i, v)| *v = ((i % 7) as f32 - 3.0) * 0.1);
    let (ga, gb, gc) = (
        gpu.storage_from("gemm a", &abuf),
        gpu.storage_from("gemm b", &vec![0.5f32; n * k]),
        gpu.storage("gemm c", m * n),
    );
    let gemm_ds = kernels.gemm.bind(
        gpu,
        Product::Forward,
        (m, n, k),
        Epilogue::default(),
        &View::whole(&ga),
        &View::whole(&gb),
        &View::whole(&gb),
        &View::whole(&gb),
        &View::whole(&gc),
    );
    let gemm_ms = Timer { reps: 11, best: true, ..*timer }.time_ms(&gemm_ds.iter().collect::<Vec<_>>())?;
    let gemm_gflops = (2 * m * n * k) as f64 / gemm_ms / 1e6;

    Ok(Ceilings { copy_gbps, gemm_gflops, fma_gflops })
}

const COPY_WGSL: &str = r#"
@group(0) @binding(0) var<uniform> n: vec4<u32>;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i < n.x) { dst[i] = src[i]; }
}
"#;

/// The arithmetic ceiling: multiply-adds on values held in registers, nothing loaded. Each
/// invocation runs 16 independent chains of FMA_STEPS steps (independent, so the FMA latency is
/// hidden as it would be in a well-tiled kernel); the result is stored only if it is an
/// impossible value, so the compiler cannot drop the work.
const FMA_STEPS: usize = 128;
const FMA_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let x = f32(gid.x) * 1e-7;
    var a: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) { a[i] = x + f32(i); }
    for (var s = 0u; s < 128u; s++) {
        for (var i = 0u; i < 16u; i++) { a[i] = fma(a[i], 0.999, 0.001); }
    }
    var t = 0.0;
    for (var i = 0u; i < 16u; i++) { t += a[i]; }
    if (t == -1.0) { out[gid.x] = t; }
}
"#;
