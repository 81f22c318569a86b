//! conv2d_backward_input: the gradient of a convolution with respect to its input.

use super::conv2d_forward::{co_tile_for, weight_block, ConvShape, Input, Tiles};
use super::{
    image_windows, pooled_argmax_input, share_across_subgroup, subgroup_sharing, uniform_input, uniform_windows,
    window_dispatches, with_const, Dispatch, Kernel, Slot, View, UNIFORM_SLACK_BYTES,
};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub batch: u32,
    /// First image of this dispatch.
    pub b0: u32,
    /// Images this dispatch covers.
    pub images: u32,
    /// First output channel this dispatch sums over (its block of weights is bound from there).
    pub co_base: u32,
}

/// An input-gradient pipeline specialised to one layer's shape (any batch size).
pub struct Conv2dBackwardInput {
    kernel: Kernel,
    /// The same kernel reading `dy` through uniform windows, with the images per window.
    windowed: Option<(Kernel, usize)>,
    shape: ConvShape,
    tiles: Tiles,
    shared: bool,
    /// Output channels per dispatch (see [`weight_block`]).
    block: usize,
}

impl Conv2dBackwardInput {
    /// `s.batch` is ignored: the batch is chosen per bind.
    pub fn new(gpu: &Gpu, s: ConvShape) -> Self {
        Self::with_tiles(gpu, s, Self::default_tiles(gpu, s))
    }

    /// Adding the gradient to what dx holds (a tensor read by two layers: the second grad to
    /// arrive adds itself to the first).
    pub fn accumulating(gpu: &Gpu, s: ConvShape) -> Self {
        Self::build(gpu, s, Self::default_tiles(gpu, s), subgroup_sharing(gpu, 64), true)
    }

    /// One quad per invocation, as for the forward (see `Tiles::for_shape`).
    fn default_tiles(gpu: &Gpu, s: ConvShape) -> Tiles {
        Tiles { co: co_tile_for(gpu, s.cin), quads: 1 }
    }

    /// With an explicit register tiling (`tiles.co` counts input channels here).
    pub fn with_tiles(gpu: &Gpu, s: ConvShape, tiles: Tiles) -> Self {
        Self::with_options(gpu, s, tiles, subgroup_sharing(gpu, 64))
    }

    /// With an explicit tiling and the choice whether the lanes of a subgroup share their weight
    /// loads (tests run both; sharing needs [`subgroup_sharing`]).
    pub fn with_options(gpu: &Gpu, s: ConvShape, tiles: Tiles, share_weights: bool) -> Self {
        Self::build(gpu, s, tiles, share_weights, false)
    }

    /// With every choice explicit, `accumulate` included (tests).
    pub fn build(gpu: &Gpu, s: ConvShape, tiles: Tiles, share_weights: bool, accumulate: bool) -> Self {
        assert!(!share_weights || subgroup_sharing(gpu, 64), "this adapter cannot share loads across subgroups");
        assert!(s.kw <= 13, "conv2d_backward_input supports kernel widths up to 13");
        assert!(
            tiles.co >= 1 && tiles.quads >= 1 && tiles.quads <= 8 && tiles.co * tiles.quads <= 32,
            "bad tiling {tiles:?}"
        );
        assert!(matches!(s.stride, 1 | 2 | 4), "conv2d_backward_input takes strides 1, 2 and 4");
        assert!(s.pad < s.kw && s.pad < s.kh, "conv2d_backward_input: padding must be smaller than the kernel");
        let seg0 = (s.kw - 1 - s.pad).div_ceil(s.stride);
        assert!(
            (4 * tiles.quads - 1 + s.pad + s.stride * seg0) / s.stride < 44,
            "a row segment of {tiles:?} is too long"
        );
        let per_channel = s.cin * s.kh * s.kw;
        let block = weight_block(gpu, s.cout, per_channel, 1);
        let src = with_const(
            include_str!("../../shaders/conv2d_backward_input.wgsl"),
            "WEIGHT_VEC4S",
            (block * per_channel).div_ceil(4),
        );
        let src = if share_weights { skip_together(&share_across_subgroup(&src)) } else { src };
        // Lanes sharing weight loads (8 with sharing; a lane alone without) lie on rows of one
        // parity when a row's invocations come in whole groups of them.
        let groups = s.w.div_ceil(4).div_ceil(tiles.quads);
        let row_parity = s.stride > 1 && (!share_weights || groups.is_multiple_of(8));
        let constants = s.constants(&[
            ("CI_TILE", tiles.co),
            ("PXQ", tiles.quads),
            ("ACCUMULATE", accumulate as usize),
            ("CO_BLOCK", block),
            ("ROW_PARITY", row_parity as usize),
        ]);
        let build = |name: &'static str, src: &str, dy_slot: Slot| {
            Kernel::with_constants(
                gpu,
                name,
                src,
                "main",
                &[Slot::Uniform, dy_slot, Slot::Uniform, Slot::ReadWrite],
                &constants,
            )
        };
        let kernel = build("conv2d_backward_input", &src, Slot::Read);
        let windowed = uniform_windows(gpu, 4 * s.cout * s.oh() * s.ow()).map(|per| {
            let src = uniform_input(&src, "dy", 1, UNIFORM_SLACK_BYTES);
            (build("conv2d_backward_input.uniform_dy", &src, Slot::Uniform), per)
        });
        Conv2dBackwardInput { kernel, windowed, shape: s, tiles, shared: share_weights, block }
    }

    /// Whether the lanes of a subgroup share their weight loads.
    pub fn shares_weights(&self) -> bool {
        self.shared
    }

    /// The input variant `bind` uses on this adapter.
    pub fn input(&self) -> Input {
        Input::used(self.windowed.is_some())
    }

    /// One dispatch per uniform window of dy's images (when dy's buffer has the slack),
    /// else one storage dispatch.
    /// Where the weights pass a uniform binding, one pass per block of output channels, each
    /// adding to the last.
    pub fn bind(&self, gpu: &Gpu, batch: usize, dy: &View, w: &View, dx: &View) -> Vec<Dispatch> {
        let s = self.shape;
        let per_channel = s.cin * s.kh * s.kw;
        let image_bytes = (4 * s.cout * s.oh() * s.ow()) as u64;
        (0..s.cout)
            .step_by(self.block)
            .flat_map(|co_base| {
                let wv = w.slice(co_base * per_channel, self.block * per_channel).uniform_vec4s();
                let dispatch = move |kernel: &Kernel, b0: usize, n: usize, dyr: wgpu::BindingResource| {
                    let at = (batch, b0, n, co_base);
                    dispatch(gpu, kernel, s, self.tiles, at, [dyr, wv.resource(), dx.resource()], None)
                };
                window_dispatches(self.windowed.as_ref(), &self.kernel, dy, batch, image_bytes, dispatch)
            })
            .collect()
    }
}

/// The input grad of a convolution whose output goes through ReLU and a 2x2/2 max-pool, taken
/// from the pool's output grad and masked argmax: the pool's backward fused in (POOLED in
/// conv2d_backward_input.wgsl; see [`super::conv2d_backward_weight::Conv2dBackwardWeightPooled`],
/// which reads the same two tensors). Only through uniform windows with subgroup weight sharing
/// (llvmpipe); elsewhere the pool's backward runs as its own kernel.
pub struct Conv2dBackwardInputPooled {
    kernel: Kernel,
    per: usize,
    shape: ConvShape,
    tiles: Tiles,
}

impl Conv2dBackwardInputPooled {
    /// None where this adapter does not run the fused kernel.
    pub fn new(gpu: &Gpu, s: ConvShape) -> Option<Self> {
        assert!(s.kw <= 13, "conv2d_backward_input supports kernel widths up to 13");
        assert!(s.is_plain(), "the pooled kernels take stride 1 and no padding");
        if !subgroup_sharing(gpu, 64) || !subgroup_sharing(gpu, 8) {
            return None;
        }
        let per = uniform_windows(gpu, 4 * s.cout * (s.oh() / 2) * (s.ow() / 2))?;
        let tiles = Tiles { co: co_tile_for(gpu, s.cin), quads: 1 };
        let src = with_const(
            include_str!("../../shaders/conv2d_backward_input.wgsl"),
            "WEIGHT_VEC4S",
            s.weight_len().div_ceil(4),
        );
        let src = uniform_input(
            &pooled_argmax_input(&skip_together(&share_across_subgroup(&src))),
            "dy",
            1,
            UNIFORM_SLACK_BYTES,
        );
        let constants = s.constants(&[("CI_TILE", tiles.co), ("PXQ", tiles.quads), ("POOLED", 1)]);
        let slots = [Slot::Uniform, Slot::Uniform, Slot::Uniform, Slot::ReadWrite, Slot::Uniform];
        let kernel =
            Kernel::with_constants(gpu, "conv2d_backward_input.uniform_dy.pooled", &src, "main", &slots, &constants);
        Some(Conv2dBackwardInputPooled { kernel, per, shape: s, tiles })
    }

    /// One dispatch per uniform window of the pooled grad's (and argmax's) images. None when a
    /// buffer lacks the slack after its data that a full last window needs.
    pub fn bind(
        &self,
        gpu: &Gpu,
        batch: usize,
        d_pooled: &View,
        argmax: &View,
        w: &View,
        dx: &View,
    ) -> Option<Vec<Dispatch>> {
        let s = self.shape;
        let wv = w.uniform_vec4s();
        let image_bytes = (4 * s.cout * (s.oh() / 2) * (s.ow() / 2)) as u64;
        let ds = image_windows(d_pooled, batch, image_bytes, self.per)?;
        let is = image_windows(argmax, batch, image_bytes, self.per)?;
        let dispatches = ds
            .into_iter()
            .zip(is)
            .map(|((b0, n, dpw), (_, _, iw))| {
                dispatch(
                    gpu,
                    &self.kernel,
                    s,
                    self.tiles,
                    (batch, b0, n, 0),
                    [dpw, wv.resource(), dx.resource()],
                    Some(iw),
                )
            })
            .collect();
        Some(dispatches)
    }
}

/// Lanes that share weight loads loop over the union of their kernel rows (a shuffle must not
/// read a lane that has left the loop).
fn skip_together(src: &str) -> String {
    let swaps = [
        ("fn lanes_min(v: u32) -> u32 { return v; }", "fn lanes_min(v: u32) -> u32 { return subgroupMin(v); }"),
        ("fn lanes_max(v: u32) -> u32 { return v; }", "fn lanes_max(v: u32) -> u32 { return subgroupMax(v); }"),
    ];
    super::rewrite(src, "conv2d_backward_input.wgsl", &swaps)
}

/// One dispatch over images b0 .. b0 + n of the batch: bindings params, dy (or the pooled grad),
/// the weights, dx and, for the pooled kernel, the argmax.
fn dispatch(
    gpu: &Gpu,
    kernel: &Kernel,
    s: ConvShape,
    tiles: Tiles,
    (batch, b0, n, co_base): (usize, usize, usize, usize),
    [dy, w, dx]: [wgpu::BindingResource; 3],
    argmax: Option<wgpu::BindingResource>,
) -> Dispatch {
    let params = gpu.uniform(
        "conv2d_backward_input params",
        &Params { batch: batch as u32, b0: b0 as u32, images: n as u32, co_base: co_base as u32 },
    );
    let per_image = s.h * s.w.div_ceil(4).div_ceil(tiles.quads);
    let mut entries = vec![params.as_entire_binding(), dy, w, dx];
    entries.extend(argmax);
    kernel.bind(gpu, &entries, [(n * per_image).div_ceil(64) as u32, s.cin.div_ceil(tiles.co) as u32, 1])
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
                                let Some((iy, ix)) = s.input_at(oy, ox, ky, kx) else { continue };
                                let wv = w[((co * s.cin + ci) * s.kh + ky) * s.kw + kx] as f64;
                                dx[((n * s.cin + ci) * s.h + iy) * s.w + ix] += g * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    dx.into_iter().map(|v| v as f32).collect()
}
