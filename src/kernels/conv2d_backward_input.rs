//! conv2d_backward_input: the gradient of a convolution with respect to its input.

use super::conv2d_forward::ConvShape;
use super::{Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub batch: u32,
    pub cin: u32,
    pub h: u32,
    pub w: u32,
    pub cout: u32,
    pub kh: u32,
    pub kw: u32,
    pub oh: u32,
    pub ow: u32,
    pub _pad: [u32; 3],
}

pub struct Conv2dBackwardInput {
    kernel: Kernel,
}

impl Conv2dBackwardInput {
    pub fn new(gpu: &Gpu) -> Self {
        let kernel = Kernel::new(
            gpu,
            "conv2d_backward_input",
            include_str!("../../shaders/conv2d_backward_input.wgsl"),
            "main",
            &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite],
        );
        Conv2dBackwardInput { kernel }
    }

    pub fn bind(&self, gpu: &Gpu, s: ConvShape, dy: &View, w: &View, dx: &View) -> Dispatch {
        let p = Params {
            batch: s.batch as u32,
            cin: s.cin as u32,
            h: s.h as u32,
            w: s.w as u32,
            cout: s.cout as u32,
            kh: s.kh as u32,
            kw: s.kw as u32,
            oh: s.oh() as u32,
            ow: s.ow() as u32,
            _pad: [0; 3],
        };
        let params = gpu.uniform("conv2d_backward_input params", &p);
        self.kernel.bind(
            gpu,
            &[params.as_entire_binding(), dy.resource(), w.resource(), dx.resource()],
            [(s.h * s.w).div_ceil(64) as u32, s.cin as u32, s.batch as u32],
        )
    }
}

/// CPU reference: dx[n,ci,y,x] = sum over (co,ky,kx) of dy[n,co,y-ky,x-kx] * w[co,ci,ky,kx].
pub fn reference(s: ConvShape, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let (oh, ow) = (s.oh(), s.ow());
    let mut dx = vec![0f64; s.input_len()];
    for n in 0..s.batch {
        for co in 0..s.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dy[((n * s.cout + co) * oh + oy) * ow + ox] as f64;
                    for ci in 0..s.cin {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let wv = w[((co * s.cin + ci) * s.kh + ky) * s.kw + kx] as f64;
                                dx[((n * s.cin + ci) * s.h + oy + ky) * s.w + ox + kx] += g * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}
