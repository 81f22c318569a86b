//! global_avg_pool: `F.adaptive_avg_pool2d(x, 1)` (ResNet's pool before its classifier),
//! forward and backward, for planes of any size.

use super::{grid_1d, Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub total: u32,
    pub _pad: [u32; 3],
}

/// Both directions for one plane size (`h * w` values per image channel), any number of planes.
pub struct GlobalAvgPool {
    forward: Kernel,
    backward: Kernel,
    plane: usize,
}

impl GlobalAvgPool {
    pub fn new(gpu: &Gpu, h: usize, w: usize) -> Self {
        let source = include_str!("../../shaders/global_avg_pool.wgsl");
        let slots = [Slot::Uniform, Slot::Read, Slot::ReadWrite];
        let constants = [("PLANE", (h * w) as f64)];
        let make = |name, entry| Kernel::with_constants(gpu, name, source, entry, &slots, &constants);
        GlobalAvgPool {
            forward: make("global_avg_pool_forward", "forward"),
            backward: make("global_avg_pool_backward", "backward"),
            plane: h * w,
        }
    }

    fn bind(&self, gpu: &Gpu, kernel: &Kernel, total: usize, src: &View, dst: &View) -> Dispatch {
        let params = gpu.uniform("global_avg_pool params", &Params { total: total as u32, _pad: [0; 3] });
        kernel.bind(gpu, &[params.as_entire_binding(), src.resource(), dst.resource()], grid_1d(total))
    }

    /// x [planes, h, w] -> y [planes].
    pub fn bind_forward(&self, gpu: &Gpu, planes: usize, x: &View, y: &View) -> Dispatch {
        self.bind(gpu, &self.forward, planes, x, y)
    }

    /// dy [planes] -> dx [planes, h, w].
    pub fn bind_backward(&self, gpu: &Gpu, planes: usize, dy: &View, dx: &View) -> Dispatch {
        self.bind(gpu, &self.backward, planes * self.plane, dy, dx)
    }
}

/// CPU reference of the forward: each plane's mean (summed in f64).
pub fn reference_forward(plane: usize, x: &[f32]) -> Vec<f32> {
    x.chunks_exact(plane).map(|p| (p.iter().map(|&v| v as f64).sum::<f64>() / plane as f64) as f32).collect()
}

/// CPU reference of the backward: dx = dy / plane over each plane.
pub fn reference_backward(plane: usize, dy: &[f32]) -> Vec<f32> {
    dy.iter().flat_map(|&g| std::iter::repeat_n(g / plane as f32, plane)).collect()
}
