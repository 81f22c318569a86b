// conv2d_backward_input: dx = full correlation of dy with the flipped kernel.
// dy [B, COUT, OH, OW], w [COUT, CIN, KH, KW] -> dx [B, CIN, H, W].
//
// A gather, not a scatter: each invocation owns 4 horizontally adjacent input pixels of
// CI_TILE input channels and sums every (co, ky, kx) term that reaches them in a fixed order,
// so there are no atomics and the result is bit-reproducible. Per (co, ky) it loads the dy row
// segment those pixels see (4 + KW - 1 values, zero outside the output) once, and reuses it for
// CI_TILE * KW multiply-adds. Input channels come from the workgroup id, so weight loads are
// uniform, and they go through a uniform binding (about ten times cheaper per float than a
// storage load on llvmpipe; the constant cache on GPUs). Shapes are override constants: constant loops, unrolled, arrays in registers.

override CIN: u32;
override H: u32;
override W: u32;
override COUT: u32;
override KH: u32;
override KW: u32;
override CI_TILE: u32;   // input channels per invocation, at most 8
override OH: u32 = H - KH + 1u;
override OW: u32 = W - KW + 1u;
override QUADS: u32 = (W + 3u) / 4u;

const MAX_SEG: u32 = 16u;
const MAX_CI: u32 = 8u;

struct Params { batch: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
const WEIGHT_VEC4S: u32 = 1u;  // written in when the pipeline is built (see `with_const`)
@group(0) @binding(2) var<uniform> wt: array<vec4<f32>, WEIGHT_VEC4S>;

fn weight(i: u32) -> f32 { return wt[i >> 2u][i & 3u]; }
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tile = gid.x;
    if (tile >= H * QUADS) { return; }
    let ci0 = wid.y * CI_TILE;
    let b = wid.z;
    let iy = i32(tile / QUADS);
    let ix0 = i32((tile % QUADS) * 4u);

    var acc: array<vec4<f32>, MAX_CI>;
    for (var co = 0u; co < COUT; co++) {
        for (var ky = 0u; ky < KH; ky++) {
            let oy = iy - i32(ky);
            let row_ok = oy >= 0 && oy < i32(OH);
            let row = i32((b * COUT + co) * OH * OW) + select(0, oy, row_ok) * i32(OW);
            // seg[j] = dy[oy, ix0 + j - (KW - 1)], zero outside the output.
            var seg: array<f32, MAX_SEG>;
            for (var j = 0u; j < 3u + KW; j++) {
                let ox = ix0 + i32(j) - i32(KW - 1u);
                let ok = row_ok && ox >= 0 && ox < i32(OW);
                seg[j] = select(0.0, dy[row + clamp(ox, 0, i32(OW) - 1)], ok);
            }
            for (var t = 0u; t < CI_TILE; t++) {
                let wrow = ((co * CIN + min(ci0 + t, CIN - 1u)) * KH + ky) * KW;
                for (var kx = 0u; kx < KW; kx++) {
                    // Pixel ix0 + i reads dy at ox = ix0 + i - kx, which is seg[i + KW - 1 - kx].
                    let s0 = KW - 1u - kx;
                    acc[t] += weight(wrow + kx) * vec4<f32>(seg[s0], seg[s0 + 1u], seg[s0 + 2u], seg[s0 + 3u]);
                }
            }
        }
    }
    for (var t = 0u; t < CI_TILE; t++) {
        let ci = ci0 + t;
        if (ci >= CIN) { break; }
        let out = ((b * CIN + ci) * H + u32(iy)) * W + u32(ix0);
        for (var j = 0u; j < 4u; j++) {
            if (u32(ix0) + j < W) { dx[out + j] = acc[t][j]; }
        }
    }
}
