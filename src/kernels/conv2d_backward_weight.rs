//! conv2d_backward_weight: weight and bias gradients of a convolution, as partial sums over
//! chunks of the batch followed by a fixed-order reduction (no float atomics).

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
    pub chunk: u32,
    pub chunks: u32,
    pub nout: u32,
}

/// How the batch is split into chunks: enough invocations to fill the device, few enough
/// partials to keep the second pass short. Depends only on the shape.
pub fn chunking(s: ConvShape) -> (usize, usize) {
    let nout = s.weight_len() + s.cout;
    let want = 16_384usize.div_ceil(nout).clamp(1, s.batch.max(1));
    let chunk = s.batch.div_ceil(want).max(1);
    let chunks = s.batch.div_ceil(chunk).max(1);
    (chunk, chunks)
}

pub struct Conv2dBackwardWeight {
    partials: Kernel,
    reduce: Kernel,
}

/// The two dispatches of one weight-gradient computation, plus the scratch they share.
pub struct BackwardWeightDispatch {
    pub partials: Dispatch,
    pub reduce: Dispatch,
    pub scratch: wgpu::Buffer,
}

impl Conv2dBackwardWeight {
    pub fn new(gpu: &Gpu) -> Self {
        let src = include_str!("../../shaders/conv2d_backward_weight.wgsl");
        let partials = Kernel::new(
            gpu,
            "conv2d_backward_weight.partials",
            src,
            "partials",
            &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite],
        );
        let reduce = Kernel::new(
            gpu,
            "conv2d_backward_weight.reduce",
            src,
            "reduce",
            &[Slot::Uniform, Slot::Read, Slot::ReadWrite, Slot::ReadWrite],
        );
        Conv2dBackwardWeight { partials, reduce }
    }

    /// `dw` and `db` are overwritten (not accumulated into).
    pub fn bind(&self, gpu: &Gpu, s: ConvShape, dy: &View, x: &View, dw: &View, db: &View) -> BackwardWeightDispatch {
        let nout = s.weight_len() + s.cout;
        let (chunk, chunks) = chunking(s);
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
            chunk: chunk as u32,
            chunks: chunks as u32,
            nout: nout as u32,
        };
        let params = gpu.uniform("conv2d_backward_weight params", &p);
        let scratch = gpu.storage("conv2d_backward_weight partials", chunks * nout);
        let sv = View::whole(&scratch);
        let groups = nout.div_ceil(64) as u32;
        let partials = self.partials.bind(
            gpu,
            &[params.as_entire_binding(), dy.resource(), x.resource(), sv.resource()],
            [groups, chunks as u32, 1],
        );
        let reduce = self.reduce.bind(
            gpu,
            &[params.as_entire_binding(), sv.resource(), dw.resource(), db.resource()],
            [groups, 1, 1],
        );
        BackwardWeightDispatch { partials, reduce, scratch }
    }
}

/// CPU reference: (dw, db).
pub fn reference(s: ConvShape, dy: &[f32], x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (oh, ow) = (s.oh(), s.ow());
    let mut dw = vec![0f64; s.weight_len()];
    let mut db = vec![0f64; s.cout];
    for n in 0..s.batch {
        for co in 0..s.cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let g = dy[((n * s.cout + co) * oh + oy) * ow + ox] as f64;
                    db[co] += g;
                    for ci in 0..s.cin {
                        for ky in 0..s.kh {
                            for kx in 0..s.kw {
                                let xv = x[((n * s.cin + ci) * s.h + oy + ky) * s.w + ox + kx] as f64;
                                dw[((co * s.cin + ci) * s.kh + ky) * s.kw + kx] += g * xv;
                            }
                        }
                    }
                }
            }
        }
    }
    (dw.into_iter().map(|v| v as f32).collect(), db.into_iter().map(|v| v as f32).collect())
}
