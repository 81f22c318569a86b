// conv2d_backward_weight, subgroup variant of the `partials` pass (the `reduce` pass is the
// one in conv2d_backward_weight.wgsl). Same lanes as the plain kernel (one per (ci, ky), owning
// the KW taps of CO_TILE output channels); the difference is how dy is read and summed. Every
// lane needs the same dy value at each output pixel, so the lanes of a subgroup load up to 16
// consecutive pixels' dy at once (lane s loads pixels ox0 + s and ox0 + 8 + s) and take them
// from each other with subgroupShuffle: two loads per 16 pixels instead of one per pixel.
// Valid for any subgroup size that is a multiple of 8 (8 on llvmpipe, 32 on NVIDIA, 32/64 on
// AMD), which the Rust side checks before choosing this variant. Every lane stays active
// through the loops (lanes past the last (ci, ky) compute a clamped duplicate and do not
// write), since a shuffle reads from lanes that must be running.
//
// A row is covered in ROUNDS rounds of RUN pixels (at most 16, all loop bounds constants; the
// loop over rounds is written out when the pipeline is built, so the accumulators are carried
// round the row loop only: conv1's weight grad on CIFAR-10 shapes 4.16 -> 3.20 ms, PROFILE_STAGE
// medians of 8 alternating). Each round sums its RUN products per tap in a local before adding it to the
// tap's accumulator: on llvmpipe a variable carried around a loop is written under the loop's
// lane mask (a blend) and, with CO_TILE * KW accumulators, spilled to the stack, so updating it
// once per round instead of once per pixel cut the multiply-add from five instructions to two.

override CIN: u32;
override H: u32;
override W: u32;
override COUT: u32;
override KH: u32;
override KW: u32;
override STRIDE: u32 = 1u;
override PAD: u32 = 0u;
override OH: u32 = (H + 2u * PAD - KH) / STRIDE + 1u;
override OW: u32 = (W + 2u * PAD - KW) / STRIDE + 1u;
override NW: u32 = COUT * CIN * KH * KW;
override NOUT: u32 = NW + COUT;
// Lanes per workgroup: CIN * KH rounded up to whole subgroups of 8, at most 32, or one subgroup
// of 8 where a workgroup sums a whole uniform window (set by the Rust side), so few lanes idle.
override WG: u32 = 32u;
override CO_TILE: u32 = 1u;   // output channels per workgroup
override RUN: u32 = 8u;       // output pixels per round, at most 16 (even when POOLED)
override ROUNDS: u32 = (OW + RUN - 1u) / RUN;   // rounds per row (written out: `kernels::unroll`)
// POOLED: dy comes as the grad of the 2x2/2 max-pool after this layer's ReLU, `dy` holding the
// pooled grads [B, COUT, OH/2, OW/2] and `pidx` their argmax (iy * OW + ix in the conv output
// plane, as conv2d_relu_maxpool_forward writes it, 0xffffffff where the pooled ReLU output is not
// positive: no grad). A pixel's dy is its window's grad if it is the window's argmax, else 0:
// the pool's backward pass fused here, so its output (this layer's dy, the largest grad of the
// network) is never written and the windows over the smaller pooled tensors hold more images.
override POOLED: bool = false;
override PH: u32 = OH / 2u;
override PW: u32 = OW / 2u;

// The arrays' exact sizes (CO_TILE, KW, RUN + KW - 1), written in when the pipeline is
// built (`with_const`), and the loop over output channels marked `// unroll` is unrolled there
// too (`kernels::unroll`): every array index is then a constant and the arrays stay in
// registers. (Left to Mesa, that loop's body was too big to unroll and llvmpipe kept the
// accumulators in a stack array read and written lane by lane.)
const CO_N: u32 = 1u;
const KW_N: u32 = 1u;
const SEG_N: u32 = 1u;

// Workgroup z is chunk c0 + z; `x` and `dy` are bound from image x_b0 on (the whole batch, or
// 64 KiB uniform windows of them where uniform loads are cheap: see `x_at`, `dy_at` and
// conv2d_forward.wgsl; on llvmpipe a storage load in this loop cost half the kernel's time).
struct Params { batch: u32, chunk: u32, chunks: u32, c0: u32, x_b0: u32, row_blocks: u32, db_off: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
fn dy_at(i: u32) -> f32 { return dy[i]; }
@group(0) @binding(2) var<storage, read> x: array<f32>;
fn x_at(i: u32) -> f32 { return x[i]; }
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;
// IN_PLACE (one chunk a dispatch, the dispatches in chunk order): `partial` is the gradient
// itself, dw from 0 and db from p.db_off, and chunk c > 0 adds its sums to what chunks 0 .. c-1
// left there: the same sums in the same order as the `reduce` pass, without its dispatch or the
// scratch round trip (a lone small dispatch costs ~0.1 ms on llvmpipe).
override IN_PLACE: bool = false;
fn put(i: u32, v: f32, c: u32) {
    if (IN_PLACE && c > 0u) {
        partial[i] = partial[i] + v;
    } else {
        partial[i] = v;
    }
}
// Only the POOLED variant binds the argmax (the Rust side swaps this line for the binding).
fn pidx_at(i: u32) -> f32 { return 0.0; }

@compute @workgroup_size(WG, 1, 1)
fn partials(
    @builtin(global_invocation_id) gid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) sg_lane: u32,
) {
    let lane = gid.x;
    let co0 = wid.y * CO_TILE;
    let c = p.c0 + wid.z;
    let owns_taps = lane < CIN * KH;
    let l = min(lane, CIN * KH - 1u);
    let ci = l / KH;
    let ky = l % KH;
    let s8 = sg_lane % 8u;
    let b0 = c * p.chunk;
    let b1 = min(p.batch, b0 + p.chunk);
    let x_b0 = p.x_b0;   // read once: llvmpipe does not hoist uniform loads out of loops
    var acc: array<array<f32, KW_N>, CO_N>;
    var bias: array<f32, CO_N>;
    for (var b = b0; b < b1; b++) {
        for (var oy = 0u; oy < OH; oy++) {
            let iy = i32(oy * STRIDE + ky) - i32(PAD);
            let row_ok = iy >= 0 && iy < i32(H);
            let xrow = (((b - x_b0) * CIN + ci) * H + u32(clamp(iy, 0, i32(H) - 1))) * W;
            for (var r = 0u; r < ROUNDS; r++) { // unroll
                let ox0 = r * RUN;
                // The inputs under RUN outputs: x[iy, ox0 * STRIDE - PAD + j].
                var xs: array<f32, SEG_N>;
                for (var j = 0u; j < (RUN - 1u) * STRIDE + KW; j++) {
                    if (PAD == 0u) {
                        // Past the row's end only where dy is 0 (and those products add nothing).
                        xs[j] = x_at(xrow + min(ox0 * STRIDE + j, W - 1u));
                    } else {
                        let ix = i32(ox0 * STRIDE + j) - i32(PAD);
                        let v = x_at(xrow + u32(clamp(ix, 0, i32(W) - 1)));
                        xs[j] = select(0.0, v, row_ok && ix >= 0 && ix < i32(W));
                    }
                }
                for (var t = 0u; t < CO_TILE; t++) { // unroll
                    let co = min(co0 + t, COUT - 1u);
                    var da = 0.0;
                    var dbv = 0.0;
                    var ia = 0u;
                    if (POOLED) {
                        // Lane s holds pooled column ox0 / 2 + s of pooled row oy / 2.
                        let pc = ox0 / 2u + s8;
                        let ok = pc < PW && oy / 2u < PH && s8 < RUN / 2u;
                        let at = (((b - x_b0) * COUT + co) * PH + min(oy / 2u, PH - 1u)) * PW + min(pc, PW - 1u);
                        da = select(0.0, dy_at(at), ok);
                        ia = select(0xffffffffu, bitcast<u32>(pidx_at(at)), ok);
                    } else {
                        // Lane s holds pixel ox0 + s (and ox0 + 8 + s).
                        let drow = (((b - x_b0) * COUT + co) * OH + oy) * OW;
                        let pa = ox0 + s8;
                        da = select(0.0, dy_at(drow + min(pa, OW - 1u)), pa < OW && s8 < RUN);
                        if (RUN > 8u) {
                            let pb = pa + 8u;
                            dbv = select(0.0, dy_at(drow + min(pb, OW - 1u)), pb < OW && s8 + 8u < RUN);
                        }
                    }
                    // This round's sums, local to it: added to the carried accumulators once.
                    var sums: array<f32, KW_N>;
                    var gsum = 0.0;
                    if (POOLED) {
                        // Pixels ox0 + 2h and ox0 + 2h + 1 share a pool window, so at most one of
                        // them has a grad: one multiply-add per tap and pair, with the x of the
                        // pixel that is the argmax (a blend), instead of one per pixel.
                        for (var h = 0u; h < RUN / 2u; h++) {
                            let arg = subgroupShuffle(ia, h);
                            let left = oy * OW + ox0 + 2u * h;
                            let right = arg == left + 1u;
                            let g = select(0.0, subgroupShuffle(da, h), arg == left || right);
                            gsum += g;
                            for (var kx = 0u; kx < KW; kx++) {
                                sums[kx] += g * select(xs[2u * h + kx], xs[2u * h + 1u + kx], right);
                            }
                        }
                    }
                    for (var u = 0u; u < select(RUN, 0u, POOLED); u++) {
                        var g: f32;
                        if (u < 8u) {
                            g = subgroupShuffle(da, u);
                        } else {
                            g = subgroupShuffle(dbv, u - 8u);
                        }
                        gsum += g;
                        for (var kx = 0u; kx < KW; kx++) {
                            sums[kx] += g * xs[u * STRIDE + kx];
                        }
                    }
                    for (var kx = 0u; kx < KW; kx++) {
                        acc[t][kx] += sums[kx];
                    }
                    bias[t] += gsum;
                }
            }
        }
    }
    for (var t = 0u; t < CO_TILE; t++) {
        let co = co0 + t;
        if (co >= COUT) { break; }
        if (owns_taps) {
            let out = select(c * NOUT, 0u, IN_PLACE) + ((co * CIN + ci) * KH + ky) * KW;
            for (var kx = 0u; kx < KW; kx++) {
                put(out + kx, acc[t][kx], c);
            }
        }
        if (lane == 0u) {
            put(select(c * NOUT + NW, p.db_off, IN_PLACE) + co, bias[t], c);
        }
    }
}
