//! The choices made per adapter: whether uniform windows and subgroup sharing are used, how
//! many images a window holds, and the tuning knobs read from the environment.

use super::UNIFORM_SLACK_BYTES;
use crate::gpu::Gpu;

/// How to cut a run of equal items (images of a batch) into uniform windows: items per window,
/// or None when one item is too big or no window start can be aligned.
pub fn uniform_windows(gpu: &Gpu, item_bytes: usize) -> Option<usize> {
    shared_uniform_windows(gpu, &[item_bytes])
}

/// Like [`uniform_windows`] for a kernel that reads several per-image tensors through windows
/// over the same images: the images per window that fit every one of them, at offsets every
/// one of them can be bound at.
pub fn shared_uniform_windows(gpu: &Gpu, item_bytes: &[usize]) -> Option<usize> {
    let window = (gpu.limits.max_uniform_buffer_binding_size as usize).min(UNIFORM_SLACK_BYTES as usize);
    let align = gpu.limits.min_uniform_buffer_offset_alignment as usize;
    let step = item_bytes.iter().fold(1, |acc, &b| {
        let s = align / gcd(b, align);
        acc / gcd(acc, s) * s
    });
    let largest = item_bytes.iter().copied().max()?;
    let per = (window / largest) / step * step;
    (per > 0 && uniform_inputs_pay(gpu)).then_some(per)
}

/// Whether per-image inputs (and GEMM operands) are read through uniform windows on this
/// adapter. On llvmpipe a uniform load costs a tenth of a storage load (examples/loadcost.rs);
/// on a GPU a uniform buffer is the constant cache, which serves one address per cycle, so lanes
/// reading different addresses wait in turn: on the H200, with windows everywhere, conv1's
/// weight grad took 15.8 ms and fc1's forward 4.5 ms a step (`bench-kernels`, README). So on by
/// default only on a CPU adapter; `GPU_LENET_UNIFORM_INPUTS=1` / `=0` (or the older
/// `GPU_LENET_NO_UNIFORM_INPUTS`) force it, for measuring both on one adapter.
pub fn uniform_inputs_pay(gpu: &Gpu) -> bool {
    env_knob("GPU_LENET_NO_UNIFORM_INPUTS", |n| n <= 1) != Some(1)
        && per_adapter(gpu, "GPU_LENET_UNIFORM_INPUTS", |n| n <= 1, 1, 0) == 1
}

/// A tuning choice made per kind of adapter: `cpu` on a CPU adapter (lavapipe, where the
/// kernels were first tuned), `other` on a GPU (measured on the H200 with `scripts/gpu_tune.sh`),
/// unless the knob `name` sets it ([`env_knob`]).
pub fn per_adapter(gpu: &Gpu, name: &str, valid: impl Fn(usize) -> bool, cpu: usize, other: usize) -> usize {
    env_knob(name, valid).unwrap_or(if gpu.info.device_type == wgpu::DeviceType::Cpu { cpu } else { other })
}

/// A numeric tuning knob from the environment (`GPU_LENET_GEMM_ROWS` and the like): None when
/// unset; a value that does not parse or that `valid` refuses is reported on stderr and ignored,
/// so that a typo does not silently measure the default.
pub fn env_knob(name: &str, valid: impl Fn(usize) -> bool) -> Option<usize> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse::<usize>() {
        Ok(n) if valid(n) => Some(n),
        _ => {
            eprintln!("warning: {name}={v:?} ignored: not a valid value");
            None
        }
    }
}

pub(crate) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Whether kernels may share loads across the lanes of a subgroup in `wg`-wide workgroups:
/// the adapter has subgroup operations in compute shaders, every subgroup has a multiple of 8
/// lanes and whole subgroups fill the workgroup. `GPU_LENET_NO_SUBGROUPS` turns it off (tests of
/// the plain kernels, adapters where it measures slower).
pub fn subgroup_sharing(gpu: &Gpu, wg: usize) -> bool {
    let (lo, hi) = (gpu.info.subgroup_min_size as usize, gpu.info.subgroup_max_size as usize);
    gpu.features.contains(wgpu::Features::SUBGROUP)
        && lo >= 8
        && lo % 8 == 0
        && hi <= wg
        && wg.is_multiple_of(hi)
        && std::env::var_os("GPU_LENET_NO_SUBGROUPS").is_none()
}
