//! conv2d_forward: convolution (stride 1, no padding) with fused bias and optional ReLU.

use super::{Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

/// The shape of one convolution layer applied to a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
}

impl ConvShape {
    pub fn oh(&self) -> usize {
        self.h - self.kh + 1
    }
    pub fn ow(&self) -> usize {
        self.w - self.kw + 1
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.cin * self.h * self.w
    }
    pub fn weight_len(&self) -> usize {
        self.cout * self.cin * self.kh * self.kw
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.cout * self.oh() * self.ow()
    }
}

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
    pub relu: u32,
    pub quads: u32,
    pub _pad: u32,
}

pub struct Conv2dForward {
    kernel: Kernel,
}

impl Conv2dForward {
    pub fn new(gpu: &Gpu) -> Self {
        let kernel = Kernel::new(
            gpu,
            "conv2d_forward",
            include_str!("../../shaders/conv2d_forward.wgsl"),
            "main",
            &[Slot::Uniform, Slot::Read, Slot::Read, Slot::Read, Slot::ReadWrite],
        );
        Conv2dForward { kernel }
    }

    pub fn bind(&self, gpu: &Gpu, s: ConvShape, relu: bool, x: &View, w: &View, b: &View, y: &View) -> Dispatch {
        assert!(s.kw <= 17, "conv2d_forward supports kernel widths up to 17");
        let quads = s.ow().div_ceil(4);
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
            relu: relu as u32,
            quads: quads as u32,
            _pad: 0,
        };
        let params = gpu.uniform("conv2d_forward params", &p);
        let groups = (s.oh() * quads).div_ceil(64) as u32;
        self.kernel.bind(
            gpu,
            &[params.as_entire_binding(), x.resource(), w.resource(), b.resource(), y.resource()],
            [groups, s.cout as u32, s.batch as u32],
        )
    }
}

/// CPU reference: y = conv(x, w) + b, then ReLU when `relu`.
pub fn reference(s: ConvShape, relu: bool, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let (oh, ow) = (s.oh(), s.ow());
    let mut y = vec![0f32; s.output_len()];
    for n in 0..s.batch {
        for co in 0..s.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = b[co] as f64;
                    for ci in 0..s.cin {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let xv = x[((n * s.cin + ci) * s.h + oy + ky) * s.w + ox + kx];
                                let wv = w[((co * s.cin + ci) * s.kh + ky) * s.kw + kx];
                                acc += xv as f64 * wv as f64;
                            }
                        }
                    }
                    if relu && acc < 0.0 {
                        acc = 0.0;
                    }
                    y[((n * s.cout + co) * oh + oy) * ow + ox] = acc as f32;
                }
            }
        }
    }
    y
}
