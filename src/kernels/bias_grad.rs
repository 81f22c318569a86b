//! bias_grad: column sums of a linear layer's output grad (the GEMM's bias gradient).

use super::{Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub m: u32,
    pub n: u32,
    pub _pad: [u32; 2],
}

pub struct BiasGrad {
    kernel: Kernel,
}

impl BiasGrad {
    pub fn new(gpu: &Gpu) -> Self {
        let kernel = Kernel::new(
            gpu,
            "bias_grad",
            include_str!("../../shaders/bias_grad.wgsl"),
            "main",
            &[Slot::Uniform, Slot::Read, Slot::ReadWrite],
        );
        BiasGrad { kernel }
    }

    pub fn bind(&self, gpu: &Gpu, m: usize, n: usize, dy: &View, db: &View) -> Dispatch {
        let p = Params { m: m as u32, n: n as u32, _pad: [0; 2] };
        let params = gpu.uniform("bias_grad params", &p);
        self.kernel.bind(
            gpu,
            &[params.as_entire_binding(), dy.resource(), db.resource()],
            [n.div_ceil(64) as u32, 1, 1],
        )
    }
}

/// CPU reference: db[j] = sum_i dy[i, j].
pub fn reference(m: usize, n: usize, dy: &[f32]) -> Vec<f32> {
    (0..n).map(|j| (0..m).map(|i| dy[i * n + j] as f64).sum::<f64>() as f32).collect()
}
