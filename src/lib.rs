//! gpu-lenet: LeNet-5 trained with hand-written WGSL compute kernels on wgpu.
//!
//! - [`gpu`]: adapter choice and the device.
//! - [`kernels`]: one module per WGSL kernel, each with its CPU reference.
//! - [`model`]: the parameter arena and LeNet's forward/backward schedule.
//! - [`nn`]: networks as data (layers with PyTorch's names), their `state_dict` and CPU reference.
//! - [`data`]: CIFAR-10, Fashion-MNIST, the synthetic set, download.
//! - [`checkpoint`]: safetensors with PyTorch's `state_dict` names.
//! - [`train`]: epochs, metrics, progress, evaluation.
//! - [`bench`]: `bench-kernels`, per-kernel timings checked against the references.
//! - [`predict`]: classes of pictures, prepared as torchvision prepares them.
//! - [`picture`]: `show-batch`'s grid and the training curves, as PNG.

pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod gpu;
pub mod kernels;
pub mod model;
pub mod nn;
pub mod picture;
pub mod predict;
pub mod rng;
pub mod train;
