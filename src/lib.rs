//! gpu-lenet: LeNet-5 trained with hand-written WGSL compute kernels on wgpu.
//!
//! - [`gpu`]: adapter choice and the device.
//! - [`kernels`]: one module per WGSL kernel, each with its CPU reference.
//! - [`model`]: the parameter arena and LeNet's forward/backward schedule.

pub mod gpu;
pub mod kernels;
pub mod model;
