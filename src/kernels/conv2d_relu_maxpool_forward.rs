//! conv2d_relu_maxpool_forward: convolution + bias + ReLU + 2x2/2 max-pool with the masked argmax,
//! fused (LeNet's conv1 and pool1 where the pool's backward is fused into conv1's weight grad,
//! see [`super::conv2d_backward_weight::Conv2dBackwardWeightPooled`]), so the convolution's
//! output never goes to memory.

use super::conv2d_forward::{ConvShape, Input, Params};
use super::maxpool2d_forward::{self, PoolShape};
use super::{
    share_across_subgroup, subgroup_sharing, uniform_input, uniform_windows, unroll, window_dispatches, with_const,
    Dispatch, Kernel, Slot, View, UNIFORM_SLACK_BYTES,
};
use crate::gpu::Gpu;

/// The most output channels per invocation `new` chooses (and the widest tile whose row loop is
/// written out).
const MAX_DEFAULT_CO_TILE: usize = 4;

/// A fused conv + ReLU + max-pool pipeline specialised to one layer's shape (any batch size).
pub struct Conv2dReluMaxpoolForward {
    kernel: Kernel,
    /// The same kernel reading `x` through uniform windows, with the images per window.
    windowed: Option<(Kernel, usize)>,
    shape: ConvShape,
    co_tile: usize,
    shared: bool,
}

impl Conv2dReluMaxpoolForward {
    /// `s.batch` is ignored: the batch is chosen per bind. Output channels per invocation: 3 for
    /// conv1's 6 (two conv rows of 3 channels keep 6 vec4 accumulators, what llvmpipe keeps in
    /// registers; see `conv2d_forward::Tiles`).
    pub fn new(gpu: &Gpu, s: ConvShape) -> Self {
        Self::with_options(gpu, s, s.cout.div_ceil(s.cout.div_ceil(MAX_DEFAULT_CO_TILE)), subgroup_sharing(gpu, 64))
    }

    /// With an explicit number of output channels per invocation (at most 8) and the choice of
    /// sharing weight loads across a subgroup (tests run both).
    pub fn with_options(gpu: &Gpu, s: ConvShape, co_tile: usize, share_weights: bool) -> Self {
        assert!(s.is_plain(), "conv2d_relu_maxpool_forward takes stride 1 and no padding");
        assert!(s.kw <= 16, "conv2d_relu_maxpool_forward supports kernel widths up to 16");
        assert!(s.oh() >= 2 && s.ow() >= 2, "the 2x2 pool needs a conv output of at least 2x2");
        assert!((1..=8).contains(&co_tile), "1 to 8 output channels per invocation");
        assert!(!share_weights || subgroup_sharing(gpu, 64), "this adapter cannot share loads across subgroups");
        let src = include_str!("../../shaders/conv2d_relu_maxpool_forward.wgsl");
        let src =
            with_const(&with_const(src, "WEIGHT_VEC4S", s.weight_len().div_ceil(4)), "BIAS_VEC4S", s.cout.div_ceil(4));
        let src = if share_weights { share_across_subgroup(&src) } else { src };
        // The row loop written out where llvmpipe's tiling runs (shared weight loads, the default
        // tiles): 10% faster for conv2 there; wider tiles compile minutes long unrolled.
        let src =
            if share_weights && co_tile <= MAX_DEFAULT_CO_TILE { unroll(&src, "k", "KH - 1u", s.kh - 1) } else { src };
        let src = if (s.ow() / 2).is_multiple_of(2) { paired_stores(&src) } else { src };
        let constants = s.constants(&[("CO_TILE", co_tile)]);
        let build = |name: &'static str, src: &str, x_slot: Slot| {
            Kernel::with_constants(
                gpu,
                name,
                src,
                "main",
                &[Slot::Uniform, x_slot, Slot::Uniform, Slot::Uniform, Slot::ReadWrite, Slot::ReadWrite],
                &constants,
            )
        };
        let kernel = build("conv2d_relu_maxpool_forward", &src, Slot::Read);
        let windowed = uniform_windows(gpu, 4 * s.cin * s.h * s.w).map(|per| {
            (
                build(
                    "conv2d_relu_maxpool_forward.uniform_x",
                    &uniform_input(&src, "x", 1, UNIFORM_SLACK_BYTES),
                    Slot::Uniform,
                ),
                per,
            )
        });
        Conv2dReluMaxpoolForward { kernel, windowed, shape: s, co_tile, shared: share_weights }
    }

    /// The pooled output's shape (planes = batch * channels).
    pub fn pooled(&self, batch: usize) -> PoolShape {
        PoolShape { planes: batch * self.shape.cout, h: self.shape.oh(), w: self.shape.ow(), k: 2, stride: 2 }
    }

    /// Whether the lanes of a subgroup share their weight loads.
    pub fn shares_weights(&self) -> bool {
        self.shared
    }

    /// The input variant `bind` uses on this adapter.
    pub fn input(&self) -> Input {
        Input::used(self.windowed.is_some())
    }

    /// One dispatch per uniform window of x's images (when x's buffer has the slack), else one
    /// storage dispatch. `w` and `b` are bound as uniform vec4 arrays (see `Conv2dForward::bind`).
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        gpu: &Gpu,
        batch: usize,
        x: &View,
        w: &View,
        b: &View,
        pooled: &View,
        argmax: &View,
    ) -> Vec<Dispatch> {
        let s = self.shape;
        if (s.ow() / 2).is_multiple_of(2) {
            // Bound as vec2 arrays (`paired_stores`): every binding offset is a multiple of the
            // adapter's storage alignment (at least 32 bytes), hence of 8.
            assert!(
                pooled.offset.is_multiple_of(8) && argmax.offset.is_multiple_of(8),
                "pooled outputs bound as vec2s must start at a multiple of 8 bytes"
            );
        }
        let per_image = (s.oh() / 2) * (s.ow() / 2).div_ceil(2);
        let (wv, bv) = (w.uniform_vec4s(), b.uniform_vec4s());
        let image_bytes = (4 * s.cin * s.h * s.w) as u64;
        let dispatch = |kernel: &Kernel, b0: usize, n: usize, xr: wgpu::BindingResource| {
            let params = gpu.uniform(
                "conv2d_relu_maxpool_forward params",
                &Params { batch: batch as u32, b0: b0 as u32, images: n as u32, co_base: 0 },
            );
            kernel.bind(
                gpu,
                &[params.as_entire_binding(), xr, wv.resource(), bv.resource(), pooled.resource(), argmax.resource()],
                [(n * per_image).div_ceil(64) as u32, s.cout.div_ceil(self.co_tile) as u32, 1],
            )
        };
        window_dispatches(self.windowed.as_ref(), &self.kernel, x, batch, image_bytes, dispatch)
    }
}

/// The kernel for an even pooled width: every invocation's two pooled columns lie in the row, so
/// the outputs are bound as vec2 arrays and each pair is stored at once (see `store_pair`).
fn paired_stores(source: &str) -> String {
    let swaps = [
        ("var<storage, read_write> pooled: array<f32>;", "var<storage, read_write> pooled: array<vec2<f32>>;"),
        ("var<storage, read_write> argmax: array<u32>;", "var<storage, read_write> argmax: array<vec2<u32>>;"),
        (
            "    pooled[o] = v.x;\n    argmax[o] = arg.x;\n    if (both) \
                {\n        pooled[o + 1u] = v.y;\n        argmax[o + 1u] = arg.y;\n    }\n",
            "    pooled[o / 2u] = v;\n    argmax[o / 2u] = arg;\n",
        ),
    ];
    super::rewrite(source, "conv2d_relu_maxpool_forward.wgsl", &swaps)
}

/// CPU reference: the composition of the conv (with ReLU) and max-pool references, and the
/// argmax masked ([`maxpool2d_forward::masked_argmax`]).
pub fn reference(s: ConvShape, x: &[f32], w: &[f32], b: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let y = super::conv2d_forward::reference(s, true, x, w, b);
    let (p, idx) =
        maxpool2d_forward::reference(PoolShape { planes: s.batch * s.cout, h: s.oh(), w: s.ow(), k: 2, stride: 2 }, &y);
    let masked = maxpool2d_forward::masked_argmax(&p, &idx);
    (p, masked)
}
