//! conv2d_backward_input: the gradient of a convolution with respect to its input.

use super::conv2d_forward::{co_tile, ConvShape, Tiles};
use super::{with_const, Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub batch: u32,
    pub _pad: [u32; 3],
}

/// An input-gradient pipeline specialised to one layer's shape (any batch size).
pub struct Conv2dBackwardInput {
    kernel: Kernel,
    shape: ConvShape,
    tiles: Tiles,
}

impl Conv2dBackwardInput {
    /// `s.batch` is ignored: the batch is chosen per bind.
    pub fn new(gpu: &Gpu, s: ConvShape) -> Self {
        // One quad per invocation, as for the forward (see `Tiles::for_shape`).
        let tiles = Tiles { co: co_tile(s.cin), quads: 1 };
        Self::with_tiles(gpu, s, tiles)
    }

    /// With an explicit register tiling (`tiles.co` counts input channels here).
    pub fn with_tiles(gpu: &Gpu, s: ConvShape, tiles: Tiles) -> Self {
        assert!(s.kw <= 13, "conv2d_backward_input supports kernel widths up to 13");
        assert!(tiles.co >= 1 && tiles.quads >= 1 && tiles.quads <= 8 && tiles.co * tiles.quads <= 32, "bad tiling {tiles:?}");
        let src = with_const(include_str!("../../shaders/conv2d_backward_input.wgsl"), "WEIGHT_VEC4S", s.weight_len().div_ceil(4));
        let kernel = Kernel::with_constants(
            gpu,
            "conv2d_backward_input",
            &src,
            "main",
            &[Slot::Uniform, Slot::Read, Slot::Uniform, Slot::ReadWrite],
            &s.constants(&[("CI_TILE", tiles.co), ("PXQ", tiles.quads)]),
        );
        Conv2dBackwardInput { kernel, shape: s, tiles }
    }

    pub fn bind(&self, gpu: &Gpu, batch: usize, dy: &View, w: &View, dx: &View) -> Dispatch {
        let s = self.shape;
        let params = gpu.uniform("conv2d_backward_input params", &Params { batch: batch as u32, _pad: [0; 3] });
        self.kernel.bind(
            gpu,
            &[params.as_entire_binding(), dy.resource(), w.uniform_vec4s().resource(), dx.resource()],
            [(s.h * s.w.div_ceil(4).div_ceil(self.tiles.quads)).div_ceil(64) as u32, s.cin.div_ceil(self.tiles.co) as u32, batch as u32],
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
