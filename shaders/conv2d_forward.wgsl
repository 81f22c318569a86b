// conv2d_forward: y = conv(x, w) + b, optional ReLU. Stride 1, no padding (LeNet's convolutions).
// x [B, CIN, H, W], w [COUT, CIN, KH, KW], b [COUT], y [B, COUT, OH, OW].
//
// The layer's shape comes in as pipeline override constants, so every loop below has a constant
// trip count and the shader compiler unrolls it and keeps the small arrays in registers.
// One invocation computes PXQ quads (4 * PXQ horizontally adjacent output pixels) for CO_TILE
// output channels: the input row segment (4 * PXQ + KW - 1 values) is loaded once per (ci, ky)
// and reused for CO_TILE * KW * PXQ vec4 multiply-adds, and each weight for PXQ of them.
// Output channels come from the workgroup id, so every lane needs the same weights. Weights and
// bias are read through uniform bindings: on llvmpipe a uniform vec4 load costs about a tenth of
// a storage load per float (measured by examples/loadcost.rs); on GPUs it is the constant cache.
// llvmpipe still loads a uniform address once per lane, so where subgroups allow it the Rust
// side sets SHARE = 8 (see `kernels::share_across_subgroup`): the 8 lanes of a subgroup load 8
// different weights and pass them round with subgroupShuffle, one load per 8 weights
// (conv1 forward 1.5x faster on lavapipe). With SHARE = 1 each lane loads every weight itself.

override CIN: u32;
override H: u32;
override W: u32;
override COUT: u32;
override KH: u32;
override KW: u32;
override CO_TILE: u32;   // output channels per invocation
override PXQ: u32;       // quads of 4 output pixels per invocation; CO_TILE * PXQ <= 32
override RELU: bool;
override OH: u32 = H - KH + 1u;
override OW: u32 = W - KW + 1u;
override QUADS: u32 = (OW + 3u) / 4u;
override GROUPS: u32 = (QUADS + PXQ - 1u) / PXQ;   // invocations per output row

const MAX_SEG: u32 = 44u;  // 4 * 8 outputs + kernel width up to 13 - 1
const MAX_ACC: u32 = 32u;
const MAX_WL: u32 = 13u;    // CO_TILE * KW / SHARE: 8 channels x width 13 / 8

// The dispatch covers images b0 .. b0 + images of the batch; `x` is bound from image b0 on (the
// whole batch, or a 64 KiB uniform window of it: see `x_at`).
struct Params { batch: u32, b0: u32, images: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
// The input. Where the adapter makes uniform loads cheap (llvmpipe: ~0.4 ns per float against
// ~5 ns for a storage load), the Rust side rewrites these two lines into a uniform window of
// whole images, `array<vec4<f32>, N>`, read as x[i >> 2][i & 3] (see `uniform_input`).
@group(0) @binding(1) var<storage, read> x: array<f32>;
fn x_at(i: u32) -> f32 { return x[i]; }
// Sizes of the uniform arrays, written in when the pipeline is built (see `with_const`).
const WEIGHT_VEC4S: u32 = 1u;
const BIAS_VEC4S: u32 = 1u;
@group(0) @binding(2) var<uniform> wt: array<vec4<f32>, WEIGHT_VEC4S>;
@group(0) @binding(3) var<uniform> bias: array<vec4<f32>, BIAS_VEC4S>;

fn weight(i: u32) -> f32 { return wt[i >> 2u][i & 3u]; }
fn bias_of(i: u32) -> f32 { return bias[i >> 2u][i & 3u]; }
// Lanes that share their weight loads; `share(v, l)` is lane l's `v` (rewritten together).
const SHARE: u32 = 1u;
fn share(v: f32, lane: u32) -> f32 { return v; }
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lane_id: u32,
) {
    // Invocations run over (image, output row, group of quads) of the dispatch's images, so only
    // the last workgroup has idle lanes. With SHARE > 1 those compute a clamped duplicate and
    // write nothing: a shuffle reads from lanes that must be running.
    let live = gid.x < p.images * OH * GROUPS;
    if (SHARE == 1u && !live) { return; }
    let flat = min(gid.x, p.images * OH * GROUPS - 1u);
    let lane = lane_id % SHARE;
    let co0 = wid.y * CO_TILE;
    let b = flat / (OH * GROUPS);   // image within the bound input
    let bo = p.b0 + b;              // image within the batch (the output)
    let tile = flat % (OH * GROUPS);
    let oy = tile / GROUPS;
    let ox0 = (tile % GROUPS) * PXQ * 4u;

    var acc: array<vec4<f32>, MAX_ACC>;   // [t][q]
    for (var t = 0u; t < CO_TILE; t++) {
        let bv = vec4<f32>(bias_of(min(co0 + t, COUT - 1u)));
        for (var q = 0u; q < PXQ; q++) {
            acc[t * PXQ + q] = bv;
        }
    }
    for (var ci = 0u; ci < CIN; ci++) {
        for (var ky = 0u; ky < KH; ky++) {
            let row = ((b * CIN + ci) * H + oy + ky) * W;
            var seg: array<f32, MAX_SEG>;
            for (var j = 0u; j < 4u * PXQ + KW - 1u; j++) {
                // Past the row's end only for outputs that are masked off below.
                seg[j] = x_at(row + min(ox0 + j, W - 1u));
            }
            // Shared: this (ci, ky)'s weights, element e = t * KW + kx, lane l loading e = j * 8 + l.
            var wl: array<f32, MAX_WL>;
            for (var j = 0u; j < select(0u, (CO_TILE * KW + SHARE - 1u) / SHARE, SHARE > 1u); j++) {
                let e = min(j * SHARE + lane, CO_TILE * KW - 1u);
                wl[j] = weight(((min(co0 + e / KW, COUT - 1u) * CIN + ci) * KH + ky) * KW + e % KW);
            }
            for (var t = 0u; t < CO_TILE; t++) {
                for (var kx = 0u; kx < KW; kx++) {
                    var wv: f32;
                    if (SHARE > 1u) {
                        let e = t * KW + kx;
                        wv = share(wl[e / SHARE], e % SHARE);
                    } else {
                        wv = weight(((min(co0 + t, COUT - 1u) * CIN + ci) * KH + ky) * KW + kx);
                    }
                    for (var q = 0u; q < PXQ; q++) {
                        let s0 = 4u * q + kx;
                        acc[t * PXQ + q] += wv * vec4<f32>(seg[s0], seg[s0 + 1u], seg[s0 + 2u], seg[s0 + 3u]);
                    }
                }
            }
        }
    }
    for (var t = 0u; t < CO_TILE; t++) {
        let co = co0 + t;
        if (co >= COUT || !live) { break; }
        let out = ((bo * COUT + co) * OH + oy) * OW;
        for (var q = 0u; q < PXQ; q++) {
            var v = acc[t * PXQ + q];
            if (RELU) { v = max(v, vec4<f32>(0.0)); }
            for (var j = 0u; j < 4u; j++) {
                let ox = ox0 + 4u * q + j;
                if (ox < OW) { y[out + ox] = v[j]; }
            }
        }
    }
}
