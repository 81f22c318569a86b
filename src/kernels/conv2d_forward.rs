//! conv2d_forward: convolution (any stride, zero padding) with fused bias and optional ReLU.

use super::{
    share_across_subgroup, subgroup_sharing, uniform_input, uniform_windows, window_dispatches, with_const, Dispatch,
    Kernel, Slot, View, UNIFORM_SLACK_BYTES,
};
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
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

impl ConvShape {
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad - self.kh) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad - self.kw) / self.stride + 1
    }
    /// Stride 1 and no padding: the shapes the pooled kernels take.
    pub fn is_plain(&self) -> bool {
        self.stride == 1 && self.pad == 0
    }
    /// The input element (row, column) that output (oy, ox) sees through tap (ky, kx), None in
    /// the padding.
    pub fn input_at(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.stride + ky).checked_sub(self.pad)?;
        let ix = (ox * self.stride + kx).checked_sub(self.pad)?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
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
    /// The override constants that specialise the conv shaders to this layer (batch excluded),
    /// followed by `extra`.
    pub fn constants(&self, extra: &[(&'static str, usize)]) -> Vec<(&'static str, f64)> {
        let mut c = vec![
            ("CIN", self.cin as f64),
            ("H", self.h as f64),
            ("W", self.w as f64),
            ("COUT", self.cout as f64),
            ("KH", self.kh as f64),
            ("KW", self.kw as f64),
            ("STRIDE", self.stride as f64),
            ("PAD", self.pad as f64),
        ];
        c.extend(extra.iter().map(|&(k, v)| (k, v as f64)));
        c
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub batch: u32,
    /// First image of this dispatch (a uniform window of the input starts there).
    pub b0: u32,
    /// Images this dispatch covers.
    pub images: u32,
    /// First output channel of this dispatch (its block of weights is bound from there).
    pub co_base: u32,
}

/// Output channels one invocation computes (the shader holds at most 8).
pub fn co_tile(cout: usize) -> usize {
    if cout <= 8 {
        cout
    } else {
        cout.div_ceil(cout.div_ceil(8))
    }
}

/// Channels per invocation on this adapter: [`co_tile`] on a CPU adapter (measured on
/// lavapipe), 2 on a GPU: more, shorter invocations. On the H200 (`scripts/gpu_tune.sh`, batch
/// 64, ms conv1 forward / conv2 forward / conv2 input grad): 1 channel 0.016 / 0.016 / 0.028,
/// 2 0.013 / 0.018 / 0.035, 4 0.016 / 0.024 / 0.045, 6-8 0.019 / 0.036 / 0.044; whole step 0.364,
/// 0.355, 0.356, 0.393 ms. `GPU_LENET_CONV_CO` (1-8) overrides it, for measuring.
pub fn co_tile_for(gpu: &Gpu, channels: usize) -> usize {
    super::per_adapter(gpu, "GPU_LENET_CONV_CO", |c| (1..=8).contains(&c), co_tile(channels), 2).min(channels)
}

/// Register tiling of one invocation: output channels x quads of 4 pixels along a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    pub co: usize,
    pub quads: usize,
}

impl Tiles {
    /// Measured on lavapipe with `bench-kernels --kernel _forward` (2026-11-28, ms at batch
    /// 64, conv1 / conv2): (co 6|8, 1 quad) 8.2 / 5.6; (3, 2) 14.4 / 16.3; (2, 3) 21.4 / 13.7;
    /// (1, 4) 29.8 / 22.3; (16, 1) 55.6 / 19.8. Past about 40 unrolled multiply-adds per (ci,
    /// ky) llvmpipe stops unrolling and the accumulators leave registers, so wider pixel tiles
    /// lose there; other adapters may prefer them.
    pub fn for_shape(s: ConvShape) -> Tiles {
        Tiles { co: co_tile(s.cout), quads: 1 }
    }
}

/// How a conv kernel reads its large input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// A storage buffer: any adapter, one dispatch for the batch.
    Storage,
    /// 64 KiB uniform windows of whole images, one dispatch each (llvmpipe: ~10x cheaper per
    /// float loaded). The input buffer needs `UNIFORM_SLACK_BYTES` after its data.
    UniformWindows,
}

impl Input {
    /// The variant a kernel's `bind` uses: uniform windows where it built a windowed pipeline.
    pub fn used(windowed: bool) -> Input {
        if windowed {
            Input::UniformWindows
        } else {
            Input::Storage
        }
    }
}

/// Channels a uniform binding of `[channels, per_channel]` weights holds: all of them when they
/// fit in 64 KiB, else the largest block that fits, is a multiple of `multiple` and divides
/// `channels` (so the blocks are equal), whose size in bytes is a multiple of the uniform offset
/// alignment (so every block can be bound). ResNet-20's 64 -> 64 convolutions: 16 channels.
pub fn weight_block(gpu: &Gpu, channels: usize, per_channel: usize, multiple: usize) -> usize {
    let window = (gpu.limits.max_uniform_buffer_binding_size as usize).min(65_536);
    if channels * per_channel * 4 <= window {
        return channels;
    }
    let align = gpu.limits.min_uniform_buffer_offset_alignment as usize;
    (1..channels)
        .rev()
        .find(|&c| {
            channels.is_multiple_of(c)
                && c.is_multiple_of(multiple)
                && c * per_channel * 4 <= window
                && (c * per_channel * 4).is_multiple_of(align)
        })
        .unwrap_or_else(|| panic!("no block of {channels} channels of {per_channel} weights fits a uniform binding"))
}

/// A forward convolution pipeline specialised to one layer's shape (any batch size).
pub struct Conv2dForward {
    kernel: Kernel,
    /// The same kernel reading `x` through uniform windows, with the images per window.
    windowed: Option<(Kernel, usize)>,
    shape: ConvShape,
    tiles: Tiles,
    shared: bool,
    /// Output channels per dispatch (see [`weight_block`]).
    block: usize,
    bias: bool,
}

impl Conv2dForward {
    /// `s.batch` is ignored: the batch is chosen per [`Conv2dForward::bind`].
    pub fn new(gpu: &Gpu, s: ConvShape, relu: bool) -> Self {
        Self::with_tiles(gpu, s, relu, Tiles { co: co_tile_for(gpu, s.cout), ..Tiles::for_shape(s) })
    }

    /// Without a bias (`nn.Conv2d(..., bias=False)`): `bind`'s bias view is not read.
    pub fn without_bias(gpu: &Gpu, s: ConvShape, relu: bool) -> Self {
        let tiles = Tiles { co: co_tile_for(gpu, s.cout), ..Tiles::for_shape(s) };
        Self::build(gpu, s, relu, false, tiles, subgroup_sharing(gpu, 64))
    }

    /// With an explicit register tiling (tests and tuning).
    pub fn with_tiles(gpu: &Gpu, s: ConvShape, relu: bool, tiles: Tiles) -> Self {
        Self::with_options(gpu, s, relu, tiles, subgroup_sharing(gpu, 64))
    }

    /// With an explicit tiling and the choice whether the lanes of a subgroup share their weight
    /// loads (tests run both; sharing needs [`subgroup_sharing`]).
    pub fn with_options(gpu: &Gpu, s: ConvShape, relu: bool, tiles: Tiles, share_weights: bool) -> Self {
        Self::build(gpu, s, relu, true, tiles, share_weights)
    }

    fn build(gpu: &Gpu, s: ConvShape, relu: bool, bias: bool, tiles: Tiles, share_weights: bool) -> Self {
        assert!(!share_weights || subgroup_sharing(gpu, 64), "this adapter cannot share loads across subgroups");
        assert!(s.kw <= 13, "conv2d_forward supports kernel widths up to 13");
        assert!(
            tiles.co >= 1 && tiles.quads >= 1 && tiles.quads <= 8 && tiles.co * tiles.quads <= 32,
            "bad tiling {tiles:?}"
        );
        assert!(
            (4 * tiles.quads - 1) * s.stride + s.kw <= 44,
            "conv2d_forward: a row segment of {tiles:?} is too long"
        );
        assert!(s.pad < s.kh && s.pad < s.kw, "conv2d_forward: padding must be smaller than the kernel");
        let per_channel = s.cin * s.kh * s.kw;
        let block = weight_block(gpu, s.cout, per_channel, tiles.co);
        let src = include_str!("../../shaders/conv2d_forward.wgsl");
        let src = with_const(
            &with_const(src, "WEIGHT_VEC4S", (block * per_channel).div_ceil(4)),
            "BIAS_VEC4S",
            s.cout.div_ceil(4),
        );
        let src = if share_weights { share_across_subgroup(&src) } else { src };
        let constants = s.constants(&[
            ("CO_TILE", tiles.co),
            ("PXQ", tiles.quads),
            ("RELU", relu as usize),
            ("BIAS", bias as usize),
        ]);
        let build = |name: &'static str, src: &str, x_slot: Slot| {
            Kernel::with_constants(
                gpu,
                name,
                src,
                "main",
                &[Slot::Uniform, x_slot, Slot::Uniform, Slot::Uniform, Slot::ReadWrite],
                &constants,
            )
        };
        let kernel = build("conv2d_forward", &src, Slot::Read);
        let image_bytes = 4 * s.cin * s.h * s.w;
        let windowed = uniform_windows(gpu, image_bytes).map(|per| {
            let src = uniform_input(&src, "x", 1, UNIFORM_SLACK_BYTES);
            (build("conv2d_forward.uniform_x", &src, Slot::Uniform), per)
        });
        Conv2dForward { kernel, windowed, shape: s, tiles, shared: share_weights, block, bias }
    }

    /// Whether the lanes of a subgroup share their weight loads (see [`subgroup_sharing`]).
    pub fn shares_weights(&self) -> bool {
        self.shared
    }

    /// The input variant `bind` uses on this adapter.
    pub fn input(&self) -> Input {
        Input::used(self.windowed.is_some())
    }

    /// `w` and `b` are bound as uniform arrays of vec4: their buffers need room up to the next
    /// multiple of 4 words (the arena's alignment gives it).
    /// With uniform windows that is one dispatch per window of images (when `x`'s buffer has
    /// the slack; otherwise the storage kernel, one dispatch).
    /// Without a bias (see [`Conv2dForward::without_bias`]) `b` may be any view.
    pub fn bind(&self, gpu: &Gpu, batch: usize, x: &View, w: &View, b: &View, y: &View) -> Vec<Dispatch> {
        let s = self.shape;
        let per_image = s.oh() * s.ow().div_ceil(4).div_ceil(self.tiles.quads);
        let per_channel = s.cin * s.kh * s.kw;
        let bv = if self.bias { b.clone() } else { w.slice(0, s.cout.min(w.len)) }.uniform_vec4s();
        let image_bytes = (4 * s.cin * s.h * s.w) as u64;
        (0..s.cout)
            .step_by(self.block)
            .flat_map(|co_base| {
                let wv = w.slice(co_base * per_channel, self.block * per_channel).uniform_vec4s();
                let bv = bv.clone();
                let dispatch = move |kernel: &Kernel, b0: usize, n: usize, xr: wgpu::BindingResource| {
                    let p = Params { batch: batch as u32, b0: b0 as u32, images: n as u32, co_base: co_base as u32 };
                    let params = gpu.uniform("conv2d_forward params", &p);
                    kernel.bind(
                        gpu,
                        &[params.as_entire_binding(), xr, wv.resource(), bv.resource(), y.resource()],
                        [(n * per_image).div_ceil(64) as u32, self.block.div_ceil(self.tiles.co) as u32, 1],
                    )
                };
                window_dispatches(self.windowed.as_ref(), &self.kernel, x, batch, image_bytes, dispatch)
            })
            .collect()
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
                                let Some((iy, ix)) = s.input_at(oy, ox, ky, kx) else { continue };
                                let xv = x[((n * s.cin + ci) * s.h + iy) * s.w + ix];
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
