//! One module per WGSL kernel. Each module owns its params struct, builds its pipeline and
//! bind-group layout once, computes its dispatch size, and carries the plain CPU reference the
//! tests compare it against (accumulating in f64).
//!
//! The pattern: `Kernel::new` compiles a pipeline once; `bind` turns buffers plus a params
//! struct into a [`Dispatch`] (bind group + workgroup count), also built once; a training step
//! only calls [`Dispatch::record`] on a compute pass.
//!
//! The machinery they share: [`Kernel`] and [`Dispatch`] (pipeline.rs), views, uniform windows
//! and the step table (view.rs), rewrites of shader sources (shader_source.rs), and the
//! per-adapter choices (adapter.rs).

pub mod batchnorm2d;
pub mod bias_grad;
pub mod conv2d_backward_input;
pub mod conv2d_backward_weight;
pub mod conv2d_forward;
pub mod conv2d_relu_maxpool_forward;
pub mod gemm;
pub mod global_avg_pool;
pub mod maxpool2d_backward;
pub mod maxpool2d_forward;
pub mod prepare_batch;
pub mod relu;
pub mod sgd_momentum;
pub mod shortcut_option_a;
pub mod softmax_cross_entropy;

mod adapter;
mod pipeline;
mod shader_source;
mod view;

pub(crate) use adapter::gcd;
pub use adapter::{
    env_knob, per_adapter, shared_uniform_windows, subgroup_sharing, uniform_inputs_pay, uniform_windows,
};
pub use pipeline::{run_all, Dispatch, Kernel, Slot};
pub use shader_source::{pooled_argmax_input, rewrite, share_across_subgroup, uniform_input, unroll, with_const};
pub use view::{image_windows, window_dispatches, StepInfo, StepTable, View, UNIFORM_SLACK_BYTES};

/// Workgroup size used by every one-dimensional kernel.
pub const WG: u32 = 64;

/// Workgroup counts for `n` independent items handled by `WG`-wide workgroups, spread over x and
/// y so that neither exceeds the 65,535 per-dimension limit. Shaders rebuild the flat index as
/// `gid.x + gid.y * num_workgroups.x * WG`.
pub fn grid_1d(n: usize) -> [u32; 3] {
    let groups = n.div_ceil(WG as usize).max(if n == 0 { 0 } else { 1 });
    if groups <= 65_535 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(65_535);
        [groups.div_ceil(y) as u32, y as u32, 1]
    }
}

/// Relative tolerance for comparing a GPU result with its f64 reference, given the length of
/// the longest sum that produced one output. f32 rounding grows like sqrt(len) for random data;
/// the bound is capped at 1e-4 relative to the tensor's largest magnitude.
pub fn tolerance(reduction_len: usize) -> f64 {
    (4.0 * f32::EPSILON as f64 * (reduction_len.max(1) as f64).sqrt()).clamp(1e-6, 1e-4)
}
