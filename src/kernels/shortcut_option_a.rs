//! shortcut_option_a: the parameter-free shortcut of He et al.'s CIFAR ResNets between stages of
//! different widths, `F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, pad, pad))`, forward and backward.

use super::{grid_1d, Dispatch, Kernel, Slot, View};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub total: u32,
    pub _pad: [u32; 3],
}

/// One image's shape through the shortcut: `cin` x `h` x `w` in, every `stride`-th row and
/// column out, with `pad` zero channels on each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShortcutShape {
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub stride: usize,
    pub pad: usize,
}

impl ShortcutShape {
    pub fn cout(&self) -> usize {
        self.cin + 2 * self.pad
    }
    pub fn oh(&self) -> usize {
        self.h.div_ceil(self.stride)
    }
    pub fn ow(&self) -> usize {
        self.w.div_ceil(self.stride)
    }
    pub fn input_len(&self) -> usize {
        self.cin * self.h * self.w
    }
    pub fn output_len(&self) -> usize {
        self.cout() * self.oh() * self.ow()
    }
}

/// Both directions for one shape, any batch.
pub struct ShortcutOptionA {
    forward: Kernel,
    backward: Kernel,
    shape: ShortcutShape,
}

impl ShortcutOptionA {
    pub fn new(gpu: &Gpu, s: ShortcutShape) -> Self {
        Self::build(gpu, s, false)
    }

    /// With a backward that adds its grad to what dx holds.
    pub fn accumulating(gpu: &Gpu, s: ShortcutShape) -> Self {
        Self::build(gpu, s, true)
    }

    fn build(gpu: &Gpu, s: ShortcutShape, accumulate: bool) -> Self {
        let source = include_str!("../../shaders/shortcut_option_a.wgsl");
        let slots = [Slot::Uniform, Slot::Read, Slot::ReadWrite];
        let constants = [
            ("CIN", s.cin as f64),
            ("H", s.h as f64),
            ("W", s.w as f64),
            ("STRIDE", s.stride as f64),
            ("PAD", s.pad as f64),
            ("ACCUMULATE", accumulate as u8 as f64),
        ];
        let make = |name, entry| Kernel::with_constants(gpu, name, source, entry, &slots, &constants);
        ShortcutOptionA {
            forward: make("shortcut_option_a_forward", "forward"),
            backward: make("shortcut_option_a_backward", "backward"),
            shape: s,
        }
    }

    fn bind(&self, gpu: &Gpu, kernel: &Kernel, total: usize, src: &View, dst: &View) -> Dispatch {
        let params = gpu.uniform("shortcut_option_a params", &Params { total: total as u32, _pad: [0; 3] });
        kernel.bind(gpu, &[params.as_entire_binding(), src.resource(), dst.resource()], grid_1d(total))
    }

    /// x [batch, cin, h, w] -> y [batch, cout, oh, ow].
    pub fn bind_forward(&self, gpu: &Gpu, batch: usize, x: &View, y: &View) -> Dispatch {
        self.bind(gpu, &self.forward, batch * self.shape.output_len(), x, y)
    }

    /// dy [batch, cout, oh, ow] -> dx [batch, cin, h, w].
    pub fn bind_backward(&self, gpu: &Gpu, batch: usize, dy: &View, dx: &View) -> Dispatch {
        self.bind(gpu, &self.backward, batch * self.shape.input_len(), dy, dx)
    }
}

/// CPU reference of the forward, written as PyTorch's slicing then padding.
pub fn reference_forward(s: ShortcutShape, batch: usize, x: &[f32]) -> Vec<f32> {
    let (oh, ow) = (s.oh(), s.ow());
    let mut y = vec![0f32; batch * s.output_len()];
    for n in 0..batch {
        for c in 0..s.cin {
            for oy in 0..oh {
                for ox in 0..ow {
                    let from = ((n * s.cin + c) * s.h + oy * s.stride) * s.w + ox * s.stride;
                    y[((n * s.cout() + c + s.pad) * oh + oy) * ow + ox] = x[from];
                }
            }
        }
    }
    y
}

/// CPU reference of the backward: each output grad back to the input it copied.
pub fn reference_backward(s: ShortcutShape, batch: usize, dy: &[f32]) -> Vec<f32> {
    let (oh, ow) = (s.oh(), s.ow());
    let mut dx = vec![0f32; batch * s.input_len()];
    for n in 0..batch {
        for c in 0..s.cin {
            for oy in 0..oh {
                for ox in 0..ow {
                    let to = ((n * s.cin + c) * s.h + oy * s.stride) * s.w + ox * s.stride;
                    dx[to] += dy[((n * s.cout() + c + s.pad) * oh + oy) * ow + ox];
                }
            }
        }
    }
    dx
}
