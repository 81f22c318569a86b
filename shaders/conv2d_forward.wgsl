// conv2d_forward: y = conv(x, w) + b, optional ReLU, any stride, zero padding PAD on every side.
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
override BIAS: bool = true;   // false: no bias (the bias binding is then any uniform buffer)
override STRIDE: u32 = 1u;
override PAD: u32 = 0u;
override OH: u32 = (H + 2u * PAD - KH) / STRIDE + 1u;
override OW: u32 = (W + 2u * PAD - KW) / STRIDE + 1u;
override SEG: u32 = (4u * PXQ - 1u) * STRIDE + KW;   // input values under one row of outputs
override QUADS: u32 = (OW + 3u) / 4u;
override GROUPS: u32 = (QUADS + PXQ - 1u) / PXQ;   // invocations per output row

const MAX_SEG: u32 = 44u;  // SEG: 4 * 8 outputs + kernel width up to 13 - 1 at stride 1
const MAX_ACC: u32 = 32u;
const MAX_WL: u32 = 13u;    // CO_TILE * KW / SHARE: 8 channels x width 13 / 8

// The dispatch covers images b0 .. b0 + images of the batch; `x` is bound from image b0 on (the
// whole batch, or a 64 KiB uniform window of it: see `x_at`). It computes output channels from
// co_base on, and `wt` is bound from co_base's weights on: a layer whose weights pass a
// uniform binding's 64 KiB (64 -> 64 channels, 3x3) takes one dispatch per block of channels
// (`bias` is bound whole).
struct Params { batch: u32, b0: u32, images: u32, co_base: u32 }

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
    let co_base = p.co_base;
    let co0 = co_base + wid.y * CO_TILE;
    let b = flat / (OH * GROUPS);   // image within the bound input
    let bo = p.b0 + b;              // image within the batch (the output)
    let tile = flat % (OH * GROUPS);
    let oy = tile / GROUPS;
    let ox0 = (tile % GROUPS) * PXQ * 4u;

    var acc: array<vec4<f32>, MAX_ACC>;   // [t][q]
    for (var t = 0u; t < CO_TILE; t++) {
        let bv = vec4<f32>(select(0.0, bias_of(min(co0 + t, COUT - 1u)), BIAS));
        for (var q = 0u; q < PXQ; q++) {
            acc[t * PXQ + q] = bv;
        }
    }
    for (var ci = 0u; ci < CIN; ci++) {
        for (var ky = 0u; ky < KH; ky++) {
            var seg: array<f32, MAX_SEG>;
            if (PAD == 0u) {
                let row = ((b * CIN + ci) * H + oy * STRIDE + ky) * W;
                for (var j = 0u; j < SEG; j++) {
                    // Past the row's end only for outputs that are masked off below.
                    seg[j] = x_at(row + min(ox0 * STRIDE + j, W - 1u));
                }
            } else {
                // Zero in the padding: rows above and below, columns left and right.
                let iy = i32(oy * STRIDE + ky) - i32(PAD);
                let row_ok = iy >= 0 && iy < i32(H);
                let row = ((b * CIN + ci) * H + u32(clamp(iy, 0, i32(H) - 1))) * W;
                for (var j = 0u; j < SEG; j++) {
                    let ix = i32(ox0 * STRIDE + j) - i32(PAD);
                    let v = x_at(row + u32(clamp(ix, 0, i32(W) - 1)));
                    seg[j] = select(0.0, v, row_ok && ix >= 0 && ix < i32(W));
                }
            }
            // Shared: this (ci, ky)'s weights, element e = t * KW + kx, lane l loading e = j * 8 + l.
            var wl: array<f32, MAX_WL>;
            for (var j = 0u; j < select(0u, (CO_TILE * KW + SHARE - 1u) / SHARE, SHARE > 1u); j++) {
                let e = min(j * SHARE + lane, CO_TILE * KW - 1u);
                wl[j] = weight((((min(co0 + e / KW, COUT - 1u) - co_base) * CIN + ci) * KH + ky) * KW + e % KW);
            }
            for (var t = 0u; t < CO_TILE; t++) {
                for (var kx = 0u; kx < KW; kx++) {
                    var wv: f32;
                    if (SHARE > 1u) {
                        let e = t * KW + kx;
                        wv = share(wl[e / SHARE], e % SHARE);
                    } else {
                        wv = weight((((min(co0 + t, COUT - 1u) - co_base) * CIN + ci) * KH + ky) * KW + kx);
                    }
                    for (var q = 0u; q < PXQ; q++) {
                        // Output 4q + j of the row reads seg[(4q + j) * STRIDE + kx].
                        let s0 = 4u * q * STRIDE + kx;
                        let xs = vec4<f32>(seg[s0], seg[s0 + STRIDE], seg[s0 + 2u * STRIDE], seg[s0 + 3u * STRIDE]);
                        acc[t * PXQ + q] += wv * xs;
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
