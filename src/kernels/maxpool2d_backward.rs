//! maxpool2d_backward: routes grads through the argmax, optionally fusing the ReLU mask of the
//! layer below the pool.

use super::maxpool2d_forward::{plane_constants, PoolShape};
use super::{grid_1d, Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub total: u32,
    pub _pad: [u32; 3],
}

/// A max-pool backward pipeline specialised to one plane shape (any number of planes), with
/// or without the fused ReLU mask.
pub struct Maxpool2dBackward {
    kernel: Kernel,
    shape: PoolShape,
    /// The per-window entry point is used (windows tile the plane exactly).
    per_window: bool,
}

impl Maxpool2dBackward {
    /// `s.planes` is ignored. With `relu_mask` the grad is zeroed where `act` (the pool's
    /// input, a ReLU output) is not positive.
    pub fn new(gpu: &Gpu, s: PoolShape, relu_mask: bool) -> Self {
        let mut constants = plane_constants(s);
        constants.push(("RELU_MASK", relu_mask as u32 as f64));
        // Exact tiling (stride == kernel, nothing left over): one invocation per window.
        let per_window = s.stride == s.k && s.h.is_multiple_of(s.k) && s.w.is_multiple_of(s.k);
        let (name, entry) =
            if per_window { ("maxpool2d_backward.per_window", "per_window") } else { ("maxpool2d_backward", "main") };
        let kernel = Kernel::with_constants(
            gpu,
            name,
            include_str!("../../shaders/maxpool2d_backward.wgsl"),
            entry,
            &[Slot::Uniform, Slot::Read, Slot::Read, Slot::Read, Slot::ReadWrite],
            &constants,
        );
        Maxpool2dBackward { kernel, shape: s, per_window }
    }

    /// `act` is read only when the pipeline fuses the ReLU mask.
    pub fn bind(&self, gpu: &Gpu, planes: usize, dy: &View, idx: &View, act: &View, dx: &View) -> Dispatch {
        let shape = PoolShape { planes, ..self.shape };
        let total = if self.per_window { shape.output_len() } else { shape.input_len() };
        let params = gpu.uniform("maxpool2d_backward params", &Params { total: total as u32, _pad: [0; 3] });
        self.kernel.bind(
            gpu,
            &[params.as_entire_binding(), dy.resource(), idx.resource(), act.resource(), dx.resource()],
            grid_1d(total),
        )
    }
}

/// CPU reference: scatter each output grad to its argmax, then apply the ReLU mask if asked.
pub fn reference(s: PoolShape, relu_mask: bool, dy: &[f32], idx: &[u32], act: &[f32]) -> Vec<f32> {
    let (oh, ow) = (s.oh(), s.ow());
    let mut dx = vec![0f64; s.input_len()];
    for pl in 0..s.planes {
        for o in 0..oh * ow {
            let i = pl * s.h * s.w + idx[pl * oh * ow + o] as usize;
            dx[i] += dy[pl * oh * ow + o] as f64;
        }
    }
    dx.iter()
        .enumerate()
        .map(|(i, &g)| if relu_mask && (act[i] <= 0.0 || act[i].is_nan()) { 0.0 } else { g as f32 })
        .collect()
}
