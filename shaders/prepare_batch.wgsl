// prepare_batch: gathers one batch from the data set held on the GPU as raw bytes, converts
// and normalises it: x = (u8 / 255 - 0.5) / 0.5, as the PyTorch CIFAR-10 tutorial does.
// Images smaller than the network's 32x32 (Fashion-MNIST's 28x28) are padded with raw value 0
// before normalisation. The batch's samples are perm[start .. start + batch], `start` coming
// from the step table, so consecutive steps need no writes from the CPU.
// With CROP or FLIP (training only) each sample is augmented as torchvision's RandomCrop(32,
// padding=CROP) then RandomHorizontalFlip: the 32x32 image (after PAD) padded with raw 0 and a
// window at (dy, dx) in 0..=2*CROP taken, then mirrored, the choices drawn from a hash of
// (seed, epoch, sample) (src/data/augment.rs holds the same generator).
// The data set may span up to four buffers (the binding-size limit is 128 MiB on some
// adapters, CIFAR-10's training set is 146.5 MiB); each holds `per_chunk` whole images.

// The data set's layout is given as override constants, so the index arithmetic divides by
// constants (cheap) rather than by runtime values (scalarised on llvmpipe).
override CHANNELS: u32;
override SRC_H: u32;
override SRC_W: u32;
override PAD: u32;
override DST: u32;
override PER_CHUNK: u32;     // whole images per buffer
override CHUNKS: u32;        // buffers in use (1 to 4)
override RECORD_WORDS: u32 = CHANNELS * SRC_H * SRC_W / 4u;
override CROP: u32 = 0u;
override FLIP: bool = false;

struct Params { total: u32, seed_lo: u32, seed_hi: u32, _p0: u32 }
struct Step { step: u32, start: u32, lr: f32, momentum: f32, epoch: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<uniform> st: Step;
@group(0) @binding(2) var<storage, read> perm: array<u32>;
@group(0) @binding(3) var<storage, read> labels_all: array<u32>;
@group(0) @binding(4) var<storage, read> chunk0: array<u32>;
@group(0) @binding(5) var<storage, read> chunk1: array<u32>;
@group(0) @binding(6) var<storage, read> chunk2: array<u32>;
@group(0) @binding(7) var<storage, read> chunk3: array<u32>;
@group(0) @binding(8) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> labels: array<u32>;

// The word at `i` of buffer `chunk`. Every lane reads each buffer that exists (CHUNKS is a
// constant, so the reads of absent ones fold away) and keeps its own buffer's word: llvmpipe
// runs every arm of a switch for all lanes anyway, and a storage read behind a switch arm is a
// loop over the lanes each. (A switch over four buffers: 0.71-1.15 ms for a CIFAR-10 batch; this 0.63.)
fn load_word(chunk: u32, i: u32) -> u32 {
    var w = chunk0[min(i, arrayLength(&chunk0) - 1u)];
    if (CHUNKS > 1u) { w = select(w, chunk1[min(i, arrayLength(&chunk1) - 1u)], chunk == 1u); }
    if (CHUNKS > 2u) { w = select(w, chunk2[min(i, arrayLength(&chunk2) - 1u)], chunk == 2u); }
    if (CHUNKS > 3u) { w = select(w, chunk3[min(i, arrayLength(&chunk3) - 1u)], chunk == 3u); }
    return w;
}

fn mix32(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    return x ^ (x >> 16u);
}

fn draw(sample: u32, k: u32) -> u32 {
    let key = mix32(p.seed_lo ^ mix32(p.seed_hi));
    return mix32(mix32(mix32(key ^ st.epoch) ^ sample) ^ k);
}

// The augmented path: each output's byte found on its own (crop offsets and flips leave no
// alignment to exploit), loaded at a clamped address and kept or replaced by padding.
fn augmented(i0: u32, c: u32, y: u32, x0: u32, sample: u32, chunk: u32, image: u32) {
    let span = 2u * CROP + 1u;
    var dy = 0u;
    var dx = 0u;
    if (CROP > 0u) {
        dy = draw(sample, 0u) % span;
        dx = draw(sample, 1u) % span;
    }
    let flip = FLIP && (draw(sample, 2u) & 1u) == 1u;
    let sy = i32(y) + i32(dy) - i32(CROP) - i32(PAD);
    for (var qi = 0u; qi < QUADS; qi++) {
        var out: vec4<f32>;
        for (var j = 0u; j < 4u; j++) {
            var fx = i32(x0 + 4u * qi + j);
            if (flip) { fx = i32(DST) - 1 - fx; }
            let sx = fx + i32(dx) - i32(CROP) - i32(PAD);
            let inside = sy >= 0 && sy < i32(SRC_H) && sx >= 0 && sx < i32(SRC_W);
            let byte = (c * SRC_H + u32(clamp(sy, 0, i32(SRC_H) - 1))) * SRC_W + u32(clamp(sx, 0, i32(SRC_W) - 1));
            let raw = select(0u, (load_word(chunk, image + byte / 4u) >> ((byte % 4u) * 8u)) & 0xffu, inside);
            out[j] = (f32(raw) / 255.0 - 0.5) / 0.5;
        }
        x[i0 / 4u + qi] = out;
    }
}

// One invocation writes QUADS runs of 4 horizontally adjacent outputs (DST is a multiple of
// 4 * QUADS), each as one vec4 from the one or two 32-bit words of the image that hold its
// bytes, loaded unconditionally at clamped addresses: on llvmpipe every storage access is a loop
// over the lanes, whatever its width, and a load inside a divergent branch is such a loop at
// each place it is written. Runs of 16 outputs also load the sample's index once for four vec4s.
const QUADS: u32 = 4u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let lane = gid.x + gid.y * nwg.x * 64u;   // which run of 4 * QUADS outputs
    let i0 = lane * 4u * QUADS;
    if (i0 >= p.total) { return; }
    let plane = DST * DST;
    let per_image = CHANNELS * plane;
    let b = i0 / per_image;
    let r = i0 % per_image;
    let c = r / plane;
    let y = (r % plane) / DST;
    let sample = perm[st.start + b];
    let chunk = sample / PER_CHUNK;
    let image = (sample % PER_CHUNK) * RECORD_WORDS;
    if (CROP > 0u || FLIP) {
        augmented(i0, c, y, (r % plane) % DST, sample, chunk, image);
        if (r == 0u) { labels[b] = labels_all[sample]; }
        return;
    }
    let row_ok = y >= PAD && y < PAD + SRC_H;
    let row_byte = (c * SRC_H + select(0u, y - PAD, row_ok)) * SRC_W;
    for (var qi = 0u; qi < QUADS; qi++) {
        let x0 = (r % plane) % DST + 4u * qi;
        // The first source column the 4 outputs read (clamped into the row), and its word.
        let lo = u32(clamp(i32(x0) - i32(PAD), 0, i32(SRC_W) - 1));
        let w0 = (row_byte + lo) / 4u;
        let word0 = load_word(chunk, image + w0);
        var word1 = word0;
        if (SRC_W % 4u != 0u || PAD % 4u != 0u) {
            // Rows not word-aligned (Fashion-MNIST: 28 wide, padded by 2): 4 bytes can span two words.
            word1 = load_word(chunk, image + min(w0 + 1u, RECORD_WORDS - 1u));
        }
        var out: vec4<f32>;
        for (var j = 0u; j < 4u; j++) {
            let xx = i32(x0 + j) - i32(PAD);
            var raw = 0u;
            if (row_ok && xx >= 0 && xx < i32(SRC_W)) {
                let byte = row_byte + u32(xx);
                let word = select(word1, word0, byte / 4u == w0);
                raw = (word >> ((byte % 4u) * 8u)) & 0xffu;
            }
            out[j] = (f32(raw) / 255.0 - 0.5) / 0.5;
        }
        x[i0 / 4u + qi] = out;
    }
    if (r == 0u) { labels[b] = labels_all[sample]; }
}
