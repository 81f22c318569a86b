//! relu: standalone forward and backward, for ReLUs not fused into conv/GEMM/pool kernels.

use super::{grid_1d, Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n: u32,
    pub _pad: [u32; 3],
}

pub struct Relu {
    forward: Kernel,
    backward: Kernel,
    backward_vec4: Kernel,
}

const SLOTS: [Slot; 4] = [Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite];

impl Relu {
    pub fn new(gpu: &Gpu) -> Self {
        let src = include_str!("../../shaders/relu.wgsl");
        Relu {
            forward: Kernel::new(gpu, "relu.forward", src, "forward", &SLOTS),
            backward: Kernel::new(gpu, "relu.backward", src, "backward", &SLOTS),
            backward_vec4: Kernel::new(
                gpu,
                "relu_backward_vec4",
                include_str!("../../shaders/relu_backward_vec4.wgsl"),
                "main",
                &SLOTS,
            ),
        }
    }

    /// y = max(x, 0).
    pub fn bind_forward(&self, gpu: &Gpu, x: &View, y: &View) -> Dispatch {
        let params = gpu.uniform("relu params", &Params { n: x.len as u32, _pad: [0; 3] });
        self.forward.bind(gpu, &[params.as_entire_binding(), x.resource(), x.resource(), y.resource()], grid_1d(x.len))
    }

    /// dx = dy * (y > 0) over dy's length, with y the forward's output (four values an
    /// invocation where the length is a multiple of 4 and the views start 16-byte aligned).
    pub fn bind_backward(&self, gpu: &Gpu, dy: &View, y: &View, dx: &View) -> Dispatch {
        let n = dy.len;
        let params = gpu.uniform("relu params", &Params { n: n as u32, _pad: [0; 3] });
        let vec4 = n.is_multiple_of(4) && [dy, y, dx].iter().all(|v| v.offset.is_multiple_of(16));
        let (kernel, invocations) = if vec4 { (&self.backward_vec4, n / 4) } else { (&self.backward, n) };
        kernel.bind(
            gpu,
            &[params.as_entire_binding(), dy.resource(), y.resource(), dx.resource()],
            grid_1d(invocations),
        )
    }
}

pub fn reference_forward(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| v.max(0.0)).collect()
}

pub fn reference_backward(dy: &[f32], y: &[f32]) -> Vec<f32> {
    dy.iter().zip(y).map(|(&g, &a)| if a > 0.0 { g } else { 0.0 }).collect()
}
