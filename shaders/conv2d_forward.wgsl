// conv2d_forward: y = conv(x, w) + b, optional ReLU. Stride 1, no padding (LeNet's convolutions).
// x [B, CIN, H, W], w [COUT, CIN, KH, KW], b [COUT], y [B, COUT, OH, OW].
//
// The layer's shape comes in as pipeline override constants, so every loop below has a constant
// trip count and the shader compiler unrolls it and keeps the small arrays in registers.
// One invocation computes 4 horizontally adjacent output pixels for CO_TILE output channels:
// the input row segment (4 + KW - 1 values) is loaded once per (ci, ky) and reused for
// CO_TILE * KW multiply-adds. Output channels come from the workgroup id, so every weight load
// has the same address in all lanes. Weights and bias are read through uniform bindings: on
// llvmpipe a uniform vec4 load costs about a tenth of a storage load per float (measured by
// examples/loadcost.rs); on GPUs it is the constant cache.

override CIN: u32;
override H: u32;
override W: u32;
override COUT: u32;
override KH: u32;
override KW: u32;
override CO_TILE: u32;   // output channels per invocation, at most 8
override RELU: bool;
override OH: u32 = H - KH + 1u;
override OW: u32 = W - KW + 1u;
override QUADS: u32 = (OW + 3u) / 4u;

const MAX_SEG: u32 = 16u;  // 4 outputs + kernel width up to 13 - 1
const MAX_CO: u32 = 8u;

struct Params { batch: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// Sizes of the uniform arrays, written in when the pipeline is built (see `with_const`).
const WEIGHT_VEC4S: u32 = 1u;
const BIAS_VEC4S: u32 = 1u;
@group(0) @binding(2) var<uniform> wt: array<vec4<f32>, WEIGHT_VEC4S>;
@group(0) @binding(3) var<uniform> bias: array<vec4<f32>, BIAS_VEC4S>;

fn weight(i: u32) -> f32 { return wt[i >> 2u][i & 3u]; }
fn bias_of(i: u32) -> f32 { return bias[i >> 2u][i & 3u]; }
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tile = gid.x;
    if (tile >= OH * QUADS) { return; }
    let co0 = wid.y * CO_TILE;
    let b = wid.z;
    let oy = tile / QUADS;
    let ox0 = (tile % QUADS) * 4u;

    var acc: array<vec4<f32>, MAX_CO>;
    for (var t = 0u; t < CO_TILE; t++) {
        acc[t] = vec4<f32>(bias_of(min(co0 + t, COUT - 1u)));
    }
    for (var ci = 0u; ci < CIN; ci++) {
        for (var ky = 0u; ky < KH; ky++) {
            let row = ((b * CIN + ci) * H + oy + ky) * W;
            var seg: array<f32, MAX_SEG>;
            for (var j = 0u; j < 3u + KW; j++) {
                // Past the row's end only for outputs that are masked off below.
                seg[j] = x[row + min(ox0 + j, W - 1u)];
            }
            for (var t = 0u; t < CO_TILE; t++) {
                let wrow = ((min(co0 + t, COUT - 1u) * CIN + ci) * KH + ky) * KW;
                for (var kx = 0u; kx < KW; kx++) {
                    acc[t] += weight(wrow + kx) * vec4<f32>(seg[kx], seg[kx + 1u], seg[kx + 2u], seg[kx + 3u]);
                }
            }
        }
    }
    for (var t = 0u; t < CO_TILE; t++) {
        let co = co0 + t;
        if (co >= COUT) { break; }
        var v = acc[t];
        if (RELU) { v = max(v, vec4<f32>(0.0)); }
        let out = ((b * COUT + co) * OH + oy) * OW + ox0;
        for (var j = 0u; j < 4u; j++) {
            if (ox0 + j < OW) { y[out + j] = v[j]; }
        }
    }
}
