//! The subgroup variant of the weight gradient's partials pass: where it is used, its workgroup
//! shape, and its source specialised to one layer (shared with the pooled variant).

use super::Conv2dBackwardWeight;
use crate::gpu::Gpu;
use crate::kernels::conv2d_forward::ConvShape;
use crate::kernels::{per_adapter, subgroup_sharing, unroll, with_const};

/// Output pixels per round of the subgroup kernel: the row in equal rounds of at most 16.
pub(super) fn run_length(ow: usize) -> usize {
    ow.div_ceil(ow.div_ceil(16)).max(1)
}

/// Pixels per round of the pooled variant: even (a round covers whole 2x2 windows), at most 16.
pub(super) fn pooled_run_length(ow: usize) -> usize {
    let run = run_length(ow);
    run + run % 2
}

/// The subgroup kernel's source with its arrays sized exactly for this shape and round length
/// and its loop over output channels unrolled.
pub(super) fn subgroup_source(s: ConvShape, run: usize) -> String {
    let src = include_str!("../../../shaders/conv2d_backward_weight_subgroup.wgsl");
    let co_tile = Conv2dBackwardWeight::co_tile(s, true);
    let sizes = [("CO_N", co_tile), ("KW_N", s.kw), ("SEG_N", (run - 1) * s.stride + s.kw)];
    let src = sizes.iter().fold(src.to_string(), |src, &(name, n)| with_const(&src, name, n));
    unroll(&unroll(&src, "t", "CO_TILE", co_tile), "r", "ROUNDS", s.ow().div_ceil(run))
}

impl Conv2dBackwardWeight {
    /// Whether `new` picks the subgroup variant: where it is usable, on a CPU adapter (measured
    /// there, see `co_tile`); on a GPU its lanes loop over whole images like the plain kernel
    /// without row blocks. `GPU_LENET_WG_SUBGROUP=1` forces it where usable (for measuring).
    pub fn subgroups_pay(gpu: &Gpu) -> bool {
        Self::subgroups_usable(gpu) && per_adapter(gpu, "GPU_LENET_WG_SUBGROUP", |n| n <= 1, 1, 0) == 1
    }

    /// The subgroup variant needs what every load-sharing kernel needs (subgroups of a multiple
    /// of 8 lanes, `GPU_LENET_NO_SUBGROUPS` unset), for its workgroups of up to 32 lanes.
    pub fn subgroups_usable(gpu: &Gpu) -> bool {
        subgroup_sharing(gpu, 32)
    }

    /// Workgroup width of the partials pass: 32 for the plain kernel; for the subgroup kernel
    /// CIN*KH lanes rounded up to a multiple of 8 (at most 32), so that few lanes idle.
    pub(super) fn lanes_per_group(s: ConvShape, subgroup: bool) -> usize {
        if subgroup {
            (s.cin * s.kh).div_ceil(8).clamp(1, 4) * 8
        } else {
            32
        }
    }

    /// Output channels per workgroup of the partials pass (the subgroup kernel shares each
    /// input load between them).
    pub(super) fn co_tile(s: ConvShape, subgroup: bool) -> usize {
        if subgroup {
            // Measured on lavapipe (PROFILE_STAGE=conv*_backward_weight, same run): conv2 (16
            // channels) 4 a workgroup 2.6 ms, 8 3.2-4.7 ms, 2 3.1-3.4 ms; conv1 (6) 6 and 1
            // 5.0-5.5 ms, 3 5.3-6.2 ms. More channels share each x load but crowd the registers.
            // With one input channel (Fashion-MNIST; 5 lanes, one workgroup wide) conv1 at 1
            // channel a workgroup 2.2-2.3 ms, 3 or 6 2.6-2.7 ms: the workgroups spread over cores.
            if s.cin * s.kh <= 8 {
                1
            } else if s.cout <= 6 {
                s.cout
            } else {
                4
            }
        } else {
            1
        }
    }
}
