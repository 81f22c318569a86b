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
    pub total: u32,
    pub _pad: [u32; 3],
}

/// The override constants that specialise a pool kernel to one plane shape.
pub(crate) fn plane_constants(s: PoolShape) -> Vec<(&'static str, f64)> {
    vec![("H", s.h as f64), ("W", s.w as f64), ("K", s.k as f64), ("STRIDE", s.stride as f64)]
}

/// A max-pool pipeline specialised to one plane shape (any number of planes).
pub struct Maxpool2dForward {
    kernel: Kernel,
    shape: PoolShape,
}

impl Maxpool2dForward {
    /// `s.planes` is ignored: the number of planes is chosen per bind.
    pub fn new(gpu: &Gpu, s: PoolShape) -> Self {
        let kernel = Kernel::with_constants(
            gpu,
            "maxpool2d_forward",
            include_str!("../../shaders/maxpool2d_forward.wgsl"),
            "main",
            &[Slot::Uniform, Slot::Read, Slot::ReadWrite, Slot::ReadWrite],
            &plane_constants(s),
        );
        Maxpool2dForward { kernel, shape: s }
    }

    pub fn bind(&self, gpu: &Gpu, planes: usize, x: &View, y: &View, idx: &View) -> Dispatch {
        let total = PoolShape { planes, ..self.shape }.output_len();
        let params = gpu.uniform("maxpool2d_forward params", &Params { total: total as u32, _pad: [0; 3] });
        self.kernel.bind(gpu, &[params.as_entire_binding(), x.resource(), y.resource(), idx.resource()], grid_1d(total))
    }
}

/// The argmax of a window that passes no grad, as the fused conv + ReLU + pool forward writes it
/// (see [`masked_argmax`]).
pub const NO_GRAD: u32 = u32::MAX;

/// CPU reference of the masked argmax: `idx`, with [`NO_GRAD`] where the window's maximum `y`
/// is not positive.
pub fn masked_argmax(y: &[f32], idx: &[u32]) -> Vec<u32> {
    y.iter().zip(idx).map(|(&v, &i)| if v > 0.0 { i } else { NO_GRAD }).collect()
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
