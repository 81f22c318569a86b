//! maxpool2d_backward: routes grads through the argmax, optionally fusing the ReLU mask of the
//! layer below the pool.

use super::maxpool2d_forward::PoolShape;
use super::{grid_1d, Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

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
    pub relu_mask: u32,
    pub _pad: [u32; 3],
}

pub struct Maxpool2dBackward {
    kernel: Kernel,
}

impl Maxpool2dBackward {
    pub fn new(gpu: &Gpu) -> Self {
        let kernel = Kernel::new(
            gpu,
            "maxpool2d_backward",
            include_str!("../../shaders/maxpool2d_backward.wgsl"),
            "main",
            &[Slot::Uniform, Slot::Read, Slot::Read, Slot::Read, Slot::ReadWrite],
        );
        Maxpool2dBackward { kernel }
    }

    /// `act` is the pool's input (a ReLU output); it is read only when `relu_mask` is set.
    pub fn bind(
        &self,
        gpu: &Gpu,
        s: PoolShape,
        relu_mask: bool,
        dy: &View,
        idx: &View,
        act: &View,
        dx: &View,
    ) -> Dispatch {
        let total = s.input_len();
        let p = Params {
            planes: s.planes as u32,
            h: s.h as u32,
            w: s.w as u32,
            oh: s.oh() as u32,
            ow: s.ow() as u32,
            k: s.k as u32,
            stride: s.stride as u32,
            total: total as u32,
            relu_mask: relu_mask as u32,
            _pad: [0; 3],
        };
        let params = gpu.uniform("maxpool2d_backward params", &p);
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
        .map(|(i, &g)| if relu_mask && !(act[i] > 0.0) { 0.0 } else { g as f32 })
        .collect()
}
