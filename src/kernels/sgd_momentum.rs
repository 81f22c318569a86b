//! sgd_momentum: one dispatch updates every parameter of the arena.

use super::{grid_1d, Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n: u32,
    pub lr: f32,
    pub momentum: f32,
    pub _pad: u32,
}

pub struct SgdMomentum {
    kernel: Kernel,
}

impl SgdMomentum {
    pub fn new(gpu: &Gpu) -> Self {
        let kernel = Kernel::new(
            gpu,
            "sgd_momentum",
            include_str!("../../shaders/sgd_momentum.wgsl"),
            "main",
            &[Slot::Uniform, Slot::Read, Slot::ReadWrite, Slot::ReadWrite],
        );
        SgdMomentum { kernel }
    }

    pub fn bind(&self, gpu: &Gpu, lr: f32, momentum: f32, grad: &View, weight: &View, velocity: &View) -> Dispatch {
        let n = weight.len;
        let params = gpu.uniform("sgd_momentum params", &Params { n: n as u32, lr, momentum, _pad: 0 });
        self.kernel.bind(
            gpu,
            &[params.as_entire_binding(), grad.resource(), weight.resource(), velocity.resource()],
            grid_1d(n),
        )
    }
}

/// CPU reference, in place: v = momentum*v + g; w -= lr*v (in f32, as PyTorch computes it).
pub fn reference(lr: f32, momentum: f32, grad: &[f32], weight: &mut [f32], velocity: &mut [f32]) {
    for i in 0..weight.len() {
        let v = momentum * velocity[i] + grad[i];
        velocity[i] = v;
        weight[i] -= lr * v;
    }
}
