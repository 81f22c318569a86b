//! The buffers LeNet lives in: its parameters, gradients and momentum (one arena each), and the
//! activations and their grads for one batch size.

use crate::gpu::Gpu;
use crate::kernels::View;
use crate::model::{param_specs, Arena, CLASSES, IMAGE};

/// The network's resident state: weights, gradients and momentum, one arena each.
pub struct Lenet {
    pub in_channels: usize,
    pub arena: Arena,
    pub weights: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub velocity: wgpu::Buffer,
}

impl Lenet {
    pub fn new(gpu: &Gpu, in_channels: usize) -> Lenet {
        let arena = Arena::new(&param_specs(in_channels), gpu.storage_alignment());
        Lenet {
            in_channels,
            // Room after the arena so small weight tensors (fc2, fc3) can be bound as a full
            // 64 KiB uniform window (the GEMM's uniform B operand).
            weights: gpu.storage("weights", arena.words + (crate::kernels::UNIFORM_SLACK_BYTES / 4) as usize),
            grads: gpu.storage("grads", arena.words),
            velocity: gpu.storage("momentum", arena.words),
            arena,
        }
    }

    pub fn w(&self, name: &str) -> View {
        self.arena.view(&self.weights, name)
    }
    pub fn g(&self, name: &str) -> View {
        self.arena.view(&self.grads, name)
    }

    /// Uploads a host copy of the arena (layout `self.arena`).
    pub fn upload(&self, gpu: &Gpu, weights: &[f32], velocity: Option<&[f32]>) {
        assert_eq!(weights.len(), self.arena.words);
        gpu.queue.write_buffer(&self.weights, 0, bytemuck::cast_slice(weights));
        let zeros;
        let v = match velocity {
            Some(v) => v,
            None => {
                zeros = vec![0f32; self.arena.words];
                &zeros
            }
        };
        gpu.queue.write_buffer(&self.velocity, 0, bytemuck::cast_slice(v));
    }

    pub fn download_weights(&self, gpu: &Gpu) -> Result<Vec<f32>, String> {
        gpu.read_words(&self.weights, 0, self.arena.words)
    }
    pub fn download_velocity(&self, gpu: &Gpu) -> Result<Vec<f32>, String> {
        gpu.read_words(&self.velocity, 0, self.arena.words)
    }
    pub fn download_grads(&self, gpu: &Gpu) -> Result<Vec<f32>, String> {
        gpu.read_words(&self.grads, 0, self.arena.words)
    }
}

/// Activations and their grads for one batch size. `x` and `labels` are the step's input.
pub struct Activations {
    pub x: wgpu::Buffer,
    pub labels: wgpu::Buffer,
    pub a1: wgpu::Buffer,
    pub p1: wgpu::Buffer,
    pub i1: wgpu::Buffer,
    pub a2: wgpu::Buffer,
    pub p2: wgpu::Buffer,
    pub i2: wgpu::Buffer,
    pub a3: wgpu::Buffer,
    pub a4: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    pub d_logits: wgpu::Buffer,
    pub d_a4: wgpu::Buffer,
    pub d_a3: wgpu::Buffer,
    pub d_p2: wgpu::Buffer,
    pub d_a2: wgpu::Buffer,
    pub d_p1: wgpu::Buffer,
    pub d_a1: wgpu::Buffer,
}

impl Activations {
    pub(super) fn new(gpu: &Gpu, batch: usize, cin: usize) -> Self {
        let b = batch;
        let s = |label: &str, n: usize| gpu.storage(label, n);
        // Buffers read through uniform windows (the GEMM's operands, the conv inputs, the conv
        // output grads) get room for a full last window.
        let slack = (crate::kernels::UNIFORM_SLACK_BYTES / 4) as usize;
        let a = |label: &str, n: usize| gpu.storage(label, n + slack);
        Activations {
            x: a("x", b * cin * IMAGE * IMAGE),
            labels: s("labels", b),
            a1: s("a1", b * 6 * 28 * 28),
            p1: a("p1", b * 6 * 14 * 14),
            i1: a("i1", b * 6 * 14 * 14),
            a2: s("a2", b * 16 * 10 * 10),
            p2: a("p2", b * 400),
            i2: a("i2", b * 400),
            a3: a("a3", b * 120),
            a4: a("a4", b * 84),
            logits: s("logits", b * CLASSES),
            d_logits: a("d_logits", b * CLASSES),
            d_a4: a("d_a4", b * 84),
            d_a3: a("d_a3", b * 120),
            d_p2: a("d_p2", b * 400),
            d_a2: a("d_a2", b * 16 * 10 * 10),
            d_p1: a("d_p1", b * 6 * 14 * 14),
            d_a1: a("d_a1", b * 6 * 28 * 28),
        }
    }
}
