// bias_grad: the bias gradient of a linear layer, the column sums of dy [M, N]:
// db[j] = sum over rows i of dy[i, j], summed in row order by one invocation per column
// (deterministic, no atomics). Consecutive lanes read consecutive columns.

struct Params { m: u32, n: u32, _p0: u32, _p1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    if (j >= p.n) { return; }
    var acc = 0.0;
    for (var i = 0u; i < p.m; i++) {
        acc += dy[i * p.n + j];
    }
    db[j] = acc;
}
