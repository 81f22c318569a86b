//! The weight gradient with the 2x2 max-pool's backward pass fused in: the subgroup kernel
//! reading the pool's output grad and masked argmax through uniform windows.

use super::partials::{bind_partials, gradient_range, reduce_kernel, Partial};
use super::subgroup::{pooled_run_length, subgroup_source};
use super::{BackwardWeightDispatch, Conv2dBackwardWeight};
use crate::gpu::Gpu;
use crate::kernels::conv2d_forward::ConvShape;
use crate::kernels::{
    image_windows, pooled_argmax_input, shared_uniform_windows, subgroup_sharing, uniform_input, Kernel, Slot, View,
    UNIFORM_SLACK_BYTES,
};

/// The weight gradient of a convolution whose output goes through ReLU and a 2x2/2 max-pool,
/// computed from the pool's output grad and its masked argmax (written by
/// [`crate::kernels::conv2d_relu_maxpool_forward::Conv2dReluMaxpoolForward`]): the pool's backward
/// pass fused in (POOLED in conv2d_backward_weight_subgroup.wgsl), so the layer's output grad,
/// the largest grad of the network, is never written, and the uniform windows over the pooled
/// tensors hold more images (conv1: 5 a dispatch instead of 3). Only where the subgroup kernel
/// runs over uniform windows in 8-lane workgroups (llvmpipe); elsewhere the pool's backward runs
/// as its own kernel.
pub struct Conv2dBackwardWeightPooled {
    partials: Kernel,
    /// The same summing into the gradient in place, window after window (IN_PLACE).
    in_place: Kernel,
    per: usize,
    reduce: Kernel,
    shape: ConvShape,
}

impl Conv2dBackwardWeightPooled {
    /// None where this adapter does not run the fused kernel.
    pub fn new(gpu: &Gpu, s: ConvShape) -> Option<Self> {
        assert!(s.kw <= 16, "conv2d_backward_weight supports kernel widths up to 16");
        assert!(s.is_plain(), "the pooled kernels take stride 1 and no padding");
        if !(Conv2dBackwardWeight::subgroups_usable(gpu) && subgroup_sharing(gpu, 8)) {
            return None;
        }
        let pooled_bytes = 4 * s.cout * (s.oh() / 2) * (s.ow() / 2);
        let per = shared_uniform_windows(gpu, &[4 * s.cin * s.h * s.w, pooled_bytes])?;
        let run = pooled_run_length(s.ow());
        let src = pooled_argmax_input(&subgroup_source(s, run));
        let src = uniform_input(&uniform_input(&src, "x", 2, UNIFORM_SLACK_BYTES), "dy", 1, UNIFORM_SLACK_BYTES);
        let constants =
            s.constants(&[("WG", 8), ("CO_TILE", Conv2dBackwardWeight::co_tile(s, true)), ("RUN", run), ("POOLED", 1)]);
        let slots = [Slot::Uniform, Slot::Uniform, Slot::Uniform, Slot::ReadWrite, Slot::Uniform];
        let partials = Kernel::with_constants(
            gpu,
            "conv2d_backward_weight.partials_subgroup.uniform_x_dy.per_window.pooled",
            &src,
            "partials",
            &slots,
            &constants,
        );
        let in_place_constants: Vec<_> = constants.iter().copied().chain([("IN_PLACE", 1.0)]).collect();
        let in_place = Kernel::with_constants(
            gpu,
            "conv2d_backward_weight.partials_subgroup.uniform_x_dy.per_window.pooled.in_place",
            &src,
            "partials",
            &slots,
            &in_place_constants,
        );
        Some(Conv2dBackwardWeightPooled { partials, in_place, per, reduce: reduce_kernel(gpu, s), shape: s })
    }

    /// `d_pooled` and `argmax` are the pool's output grad and masked argmax ([B, COUT, OH/2,
    /// OW/2]), `x` the conv's input; `dw` and `db` are overwritten: summed into in place, one
    /// window after another, where db follows dw in the same buffer (the parameter arena), else
    /// through a scratch buffer and a reduction pass. None when a buffer lacks the slack after its
    /// data that a full last uniform window needs.
    #[allow(clippy::too_many_arguments)]
    pub fn bind(
        &self,
        gpu: &Gpu,
        batch: usize,
        d_pooled: &View,
        argmax: &View,
        x: &View,
        dw: &View,
        db: &View,
    ) -> Option<BackwardWeightDispatch> {
        let s = self.shape;
        let (x_bytes, p_bytes) = ((4 * s.cin * s.h * s.w) as u64, (4 * s.cout * (s.oh() / 2) * (s.ow() / 2)) as u64);
        let xs = image_windows(x, batch, x_bytes, self.per)?;
        let ds = image_windows(d_pooled, batch, p_bytes, self.per)?;
        let is = image_windows(argmax, batch, p_bytes, self.per)?;
        let chunks = xs.len();
        let grid =
            [(s.cin * s.kh).div_ceil(8) as u32, s.cout.div_ceil(Conv2dBackwardWeight::co_tile(s, true)) as u32, 1];
        // One chunk per window: chunk k is window k's images, k * per onwards.
        let in_place = gradient_range(dw, db).is_some();
        let kernel = if in_place { &self.in_place } else { &self.partials };
        let grids: Vec<Partial> = xs
            .into_iter()
            .zip(ds)
            .zip(is)
            .enumerate()
            .map(|(k, (((b0, _, xw), (_, _, dpw)), (_, _, iw)))| (kernel, grid, k, b0, [dpw, xw], Some(iw)))
            .collect();
        Some(bind_partials(gpu, &self.reduce, s, batch, (self.per, chunks, 1), grids, dw, db, in_place))
    }
}
