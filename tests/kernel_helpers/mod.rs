//! Helpers the kernel test files (kernels_conv.rs, kernels_gemm.rs, kernels_misc.rs) share,
//! beside common/mod.rs: the seeds, whole-buffer views, uploads with uniform-window slack.
#![allow(dead_code)]

use crate::common::upload;
use gpu_lenet::kernels::{View, UNIFORM_SLACK_BYTES};

pub const SEEDS: [u64; 3] = [1, 2, 3];

pub fn v(b: &wgpu::Buffer) -> View {
    View::whole(b)
}

/// A buffer holding `data` and the slack a full last uniform window needs after it.
pub fn upload_with_slack<T: bytemuck::Pod + Default>(data: &[T]) -> wgpu::Buffer {
    let mut padded = data.to_vec();
    padded.resize(data.len() + UNIFORM_SLACK_BYTES as usize / 4, T::default());
    upload(&padded)
}
