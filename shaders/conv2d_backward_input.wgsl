// conv2d_backward_input: dx = full correlation of dy with the flipped kernel.
// dy [B, COUT, OH, OW], w [COUT, CIN, KH, KW] -> dx [B, CIN, H, W].
//
// A gather, not a scatter: each invocation owns PXQ quads (4 * PXQ horizontally adjacent
// input pixels) of CI_TILE input channels and sums every (co, ky, kx) term that reaches them in
// a fixed order, so there are no atomics and the result is bit-reproducible. Per (co, ky) it
// loads the dy row segment those pixels see (4 * PXQ + KW - 1 values, zero outside the output)
// once, and reuses it for CI_TILE * KW * PXQ vec4 multiply-adds. Input channels come from the workgroup id, so weight loads are
// uniform, and they go through a uniform binding (about ten times cheaper per float than a
// storage load on llvmpipe; the constant cache on GPUs). Shapes are override constants: constant loops, unrolled, arrays in registers.

override CIN: u32;
override H: u32;
override W: u32;
override COUT: u32;
override KH: u32;
override KW: u32;
override CI_TILE: u32;   // input channels per invocation
override PXQ: u32;       // quads of 4 input pixels per invocation; CI_TILE * PXQ <= 32
override OH: u32 = H - KH + 1u;
override OW: u32 = W - KW + 1u;
override QUADS: u32 = (W + 3u) / 4u;
override GROUPS: u32 = (QUADS + PXQ - 1u) / PXQ;   // invocations per input row

const MAX_SEG: u32 = 44u;
const MAX_ACC: u32 = 32u;

// The dispatch covers images b0 .. b0 + num_workgroups.z; `dy` is bound from image b0 on (the
// whole batch, or a 64 KiB uniform window of it: see `dy_at`).
struct Params { batch: u32, b0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
// Rewritten into a uniform window where uniform loads are cheap (see conv2d_forward.wgsl).
@group(0) @binding(1) var<storage, read> dy: array<f32>;
fn dy_at(i: u32) -> f32 { return dy[i]; }
const WEIGHT_VEC4S: u32 = 1u;  // written in when the pipeline is built (see `with_const`)
@group(0) @binding(2) var<uniform> wt: array<vec4<f32>, WEIGHT_VEC4S>;

fn weight(i: u32) -> f32 { return wt[i >> 2u][i & 3u]; }
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tile = gid.x;
    if (tile >= H * GROUPS) { return; }
    let ci0 = wid.y * CI_TILE;
    let b = wid.z;           // image within the bound dy
    let bo = p.b0 + wid.z;   // image within the batch (the output)
    let iy = i32(tile / GROUPS);
    let ix0 = i32((tile % GROUPS) * PXQ * 4u);

    var acc: array<vec4<f32>, MAX_ACC>;   // [t][q]
    for (var co = 0u; co < COUT; co++) {
        for (var ky = 0u; ky < KH; ky++) {
            let oy = iy - i32(ky);
            let row_ok = oy >= 0 && oy < i32(OH);
            let row = i32((b * COUT + co) * OH * OW) + select(0, oy, row_ok) * i32(OW);
            // seg[j] = dy[oy, ix0 + j - (KW - 1)], zero outside the output.
            var seg: array<f32, MAX_SEG>;
            for (var j = 0u; j < 4u * PXQ + KW - 1u; j++) {
                let ox = ix0 + i32(j) - i32(KW - 1u);
                let ok = row_ok && ox >= 0 && ox < i32(OW);
                seg[j] = select(0.0, dy_at(u32(row + clamp(ox, 0, i32(OW) - 1))), ok);
            }
            for (var t = 0u; t < CI_TILE; t++) {
                let wrow = ((co * CIN + min(ci0 + t, CIN - 1u)) * KH + ky) * KW;
                for (var kx = 0u; kx < KW; kx++) {
                    let wv = weight(wrow + kx);
                    for (var q = 0u; q < PXQ; q++) {
                        // Pixel ix0 + 4q + i reads dy at ox = ix0 + 4q + i - kx: seg[4q + i + KW - 1 - kx].
                        let s0 = 4u * q + KW - 1u - kx;
                        acc[t * PXQ + q] += wv * vec4<f32>(seg[s0], seg[s0 + 1u], seg[s0 + 2u], seg[s0 + 3u]);
                    }
                }
            }
        }
    }
    for (var t = 0u; t < CI_TILE; t++) {
        let ci = ci0 + t;
        if (ci >= CIN) { break; }
        let out = ((bo * CIN + ci) * H + u32(iy)) * W;
        for (var q = 0u; q < PXQ; q++) {
            for (var j = 0u; j < 4u; j++) {
                let ix = u32(ix0) + 4u * q + j;
                if (ix < W) { dx[out + ix] = acc[t * PXQ + q][j]; }
            }
        }
    }
}
