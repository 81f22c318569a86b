// prepare_batch: gathers one batch from the data set held on the GPU as raw bytes, converts
// and normalises it: x = (u8 / 255 - 0.5) / 0.5, as the PyTorch CIFAR-10 tutorial does.
// Images smaller than the network's 32x32 (Fashion-MNIST's 28x28) are padded with raw value 0
// before normalisation. The batch's samples are perm[start .. start + batch], `start` coming
// from the step table, so consecutive steps need no writes from the CPU.
// The data set may span up to four buffers (the binding-size limit is 128 MiB on some
// adapters, CIFAR-10's training set is 146.5 MiB); each holds `per_chunk` whole images.

struct Params {
    batch: u32, channels: u32, src_h: u32, src_w: u32,
    pad: u32, dst: u32, per_chunk: u32, record_words: u32,
    total: u32, _p0: u32, _p1: u32, _p2: u32,
}
struct Step { step: u32, start: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> perm: array<u32>;
@group(0) @binding(3) var<storage, read> labels_all: array<u32>;
@group(0) @binding(4) var<storage, read> chunk0: array<u32>;
@group(0) @binding(5) var<storage, read> chunk1: array<u32>;
@group(0) @binding(6) var<storage, read> chunk2: array<u32>;
@group(0) @binding(7) var<storage, read> chunk3: array<u32>;
@group(0) @binding(8) var<storage, read_write> x: array<f32>;
@group(0) @binding(9) var<storage, read_write> labels: array<u32>;

fn load_word(chunk: u32, i: u32) -> u32 {
    switch chunk {
        case 0u: { return chunk0[i]; }
        case 1u: { return chunk1[i]; }
        case 2u: { return chunk2[i]; }
        default: { return chunk3[i]; }
    }
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 64u;
    if (i >= p.total) { return; }
    let plane = p.dst * p.dst;
    let per_image = p.channels * plane;
    let b = i / per_image;
    let r = i % per_image;
    let c = r / plane;
    let yx = r % plane;
    let y = yx / p.dst;
    let xx = yx % p.dst;
    let sample = perm[st.start + b];
    var raw = 0u;
    if (y >= p.pad && xx >= p.pad && y < p.pad + p.src_h && xx < p.pad + p.src_w) {
        let byte = (c * p.src_h + (y - p.pad)) * p.src_w + (xx - p.pad);
        let word = load_word(sample / p.per_chunk, (sample % p.per_chunk) * p.record_words + byte / 4u);
        raw = (word >> ((byte % 4u) * 8u)) & 0xffu;
    }
    x[i] = (f32(raw) / 255.0 - 0.5) / 0.5;
    if (r == 0u) { labels[b] = labels_all[sample]; }
}
