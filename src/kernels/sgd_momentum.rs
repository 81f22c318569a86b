//! sgd_momentum: one dispatch updates every parameter of the arena, at the lr and momentum of
//! the step's row of the step table, with the run's weight decay and Nesterov.

use super::{grid_1d, with_const, Dispatch, Kernel, Slot, StepTable, View};
use crate::gpu::Gpu;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub n: u32,
    pub _pad: [u32; 3],
}

/// What `torch.optim.SGD` is given besides lr and momentum (which a schedule may change per step).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SgdOptions {
    pub weight_decay: f32,
    pub nesterov: bool,
}

pub struct SgdMomentum {
    /// Four parameters an invocation (vec4), for arenas whose length is a multiple of 4.
    vec4: Kernel,
    /// One an invocation, for any length.
    scalar: Kernel,
}

impl SgdMomentum {
    pub fn new(gpu: &Gpu, opts: SgdOptions) -> Self {
        let src = with_const(include_str!("../../shaders/sgd_momentum.wgsl"), "PER", PER);
        let slots = [Slot::Uniform, Slot::UniformDynamic, Slot::Read, Slot::ReadWrite, Slot::ReadWrite];
        assert!(src.contains("alias elem = vec4<f32>;"), "sgd_momentum.wgsl lacks its elem alias");
        let scalar_src = src.replace("alias elem = vec4<f32>;", "alias elem = f32;");
        let constants = [("WEIGHT_DECAY", opts.weight_decay as f64), ("NESTEROV", opts.nesterov as u8 as f64)];
        SgdMomentum {
            vec4: Kernel::with_constants(gpu, "sgd_momentum", &src, "main", &slots, &constants),
            scalar: Kernel::with_constants(gpu, "sgd_momentum.scalar", &scalar_src, "main", &slots, &constants),
        }
    }

    /// Updates `weight` and `velocity` from `grad` at the lr and momentum of the step table row
    /// the recorded step selects.
    pub fn bind(&self, gpu: &Gpu, steps: &StepTable, grad: &View, weight: &View, velocity: &View) -> Dispatch {
        let n = weight.len;
        let (kernel, per) = if n.is_multiple_of(4) { (&self.vec4, 4) } else { (&self.scalar, 1) };
        let elems = n / per;
        let params = gpu.uniform("sgd_momentum params", &Params { n: elems as u32, _pad: [0; 3] });
        kernel.bind(
            gpu,
            &[params.as_entire_binding(), steps.resource(), grad.resource(), weight.resource(), velocity.resource()],
            grid_1d(elems.div_ceil(PER)),
        )
    }
}

/// Elems (vec4s or scalars) per invocation, PER in the shader: 4 read the params once for 4
/// (0.91 -> 0.86 ms a step on lavapipe; 16 measured no better).
const PER: usize = 4;

/// CPU reference, in place, in f32 as PyTorch computes it: g += wd*w; v = momentum*v + g;
/// w -= lr*v, or with Nesterov w -= lr*(g + momentum*v).
pub fn reference(lr: f32, momentum: f32, opts: SgdOptions, grad: &[f32], weight: &mut [f32], velocity: &mut [f32]) {
    for i in 0..weight.len() {
        let g = if opts.weight_decay != 0.0 { grad[i] + opts.weight_decay * weight[i] } else { grad[i] };
        let v = momentum * velocity[i] + g;
        velocity[i] = v;
        let d = if opts.nesterov { g + momentum * v } else { v };
        weight[i] -= lr * d;
    }
}
