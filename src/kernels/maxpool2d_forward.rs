//! maxpool2d_forward: max-pool values plus PyTorch-style argmax indices.

use super::{grid_1d, Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

/// A max-pool over `planes` = batch * channels planes of h x w.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolShape {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
}

impl PoolShape {
    pub fn oh(&self) -> usize {
        (self.h - self.k) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w - self.k) / self.stride + 1
    }
    pub fn input_len(&self) -> usize {
        self.planes * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.planes * self.oh() * self.ow()
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub planes: u32,
    pub h: u32,
    pub w: u32,
    pub oh: u32,
    pub ow: u32,
    pub k: u32,
    pub stride: u32,
    pub total: u32,
}

pub struct Maxpool2dForward {
    kernel: Kernel,
}

impl Maxpool2dForward {
    pub fn new(gpu: &Gpu) -> Self {
        let kernel = Kernel::new(
            gpu,
            "maxpool2d_forward",
            include_str!("../../shaders/maxpool2d_forward.wgsl"),
            "main",
            &[Slot::Uniform, Slot::Read, Slot::ReadWrite, Slot::ReadWrite],
        );
        Maxpool2dForward { kernel }
    }

    pub fn bind(&self, gpu: &Gpu, s: PoolShape, x: &View, y: &View, idx: &View) -> Dispatch {
        let total = s.output_len();
        let p = Params {
            planes: s.planes as u32,
            h: s.h as u32,
            w: s.w as u32,
            oh: s.oh() as u32,
            ow: s.ow() as u32,
            k: s.k as u32,
            stride: s.stride as u32,
            total: total as u32,
        };
        let params = gpu.uniform("maxpool2d_forward params", &p);
        self.kernel.bind(
            gpu,
            &[params.as_entire_binding(), x.resource(), y.resource(), idx.resource()],
            grid_1d(total),
        )
    }
}

/// CPU reference: (values, argmax as iy*W+ix within the plane; first maximum wins, NaN wins).
pub fn reference(s: PoolShape, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let (oh, ow) = (s.oh(), s.ow());
    let mut y = vec![0f32; s.output_len()];
    let mut idx = vec![0u32; s.output_len()];
    for pl in 0..s.planes {
        let base = pl * s.h * s.w;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = f32::NEG_INFINITY;
                let mut best_i = usize::MAX;
                for ky in 0..s.k {
                    for kx in 0..s.k {
                        let i = (oy * s.stride + ky) * s.w + ox * s.stride + kx;
                        let v = x[base + i];
                        let take = best_i == usize::MAX || (!best.is_nan() && (v > best || v.is_nan()));
                        if take {
                            best = v;
                            best_i = i;
                        }
                    }
                }
                let o = (pl * oh + oy) * ow + ox;
                y[o] = best;
                idx[o] = best_i as u32;
            }
        }
    }
    (y, idx)
}
