//! Micro-benchmark of load kinds on the current adapter (design notes for kernel tuning).
use gpu_lenet::gpu::{AdapterChoice, Gpu};
use gpu_lenet::kernels::{Kernel, Slot, View};
use std::time::Instant;

const SRC: &str = r#"
@group(0) @binding(0) var<uniform> p: vec4<u32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(64)
fn scalar(@builtin(global_invocation_id) g: vec3<u32>) {
  var s = 0.0;
  let base = g.x * 64u;
  for (var i = 0u; i < 64u; i++) { s += a[base + i]; }
  o[g.x] = s;
}
@compute @workgroup_size(64)
fn vec4load(@builtin(global_invocation_id) g: vec3<u32>) {
  var s = vec4<f32>(0.0);
  let base = g.x * 16u;
  for (var i = 0u; i < 16u; i++) { s += a4[base + i]; }
  o[g.x] = s.x + s.y + s.z + s.w;
}
@compute @workgroup_size(64)
fn uniformload(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
  var s = 0.0;
  let base = w.x * 64u;
  for (var i = 0u; i < 64u; i++) { s += a[base + i]; }
  o[g.x] = s;
}
@group(0) @binding(4) var<uniform> u: array<vec4<f32>, 1024>;
@compute @workgroup_size(64)
fn ubo_uniform(@builtin(global_invocation_id) g: vec3<u32>, @builtin(workgroup_id) w: vec3<u32>) {
  var s = vec4<f32>(0.0);
  let base = (w.x * 16u) % 1000u;
  for (var i = 0u; i < 16u; i++) { s += u[base + i]; }
  o[g.x] = s.x + s.y + s.z + s.w;
}
@compute @workgroup_size(64)
fn ubo_divergent(@builtin(global_invocation_id) g: vec3<u32>) {
  var s = vec4<f32>(0.0);
  let base = (g.x * 16u) % 1000u;
  for (var i = 0u; i < 16u; i++) { s += u[base + i]; }
  o[g.x] = s.x + s.y + s.z + s.w;
}
// The same gathers with f16 pairs packed in the words (what f16 activations in uniform windows
// would read): 8 values a vec4 load instead of 4.
@compute @workgroup_size(64)
fn ubo_f16_divergent(@builtin(global_invocation_id) g: vec3<u32>) {
  var s = vec2<f32>(0.0);
  let base = (g.x * 16u) % 1000u;
  for (var i = 0u; i < 16u; i++) {
    let w = bitcast<vec4<u32>>(u[base + i]);
    s += unpack2x16float(w.x) + unpack2x16float(w.y) + unpack2x16float(w.z) + unpack2x16float(w.w);
  }
  o[g.x] = s.x + s.y;
}
var<workgroup> sh: array<f32, 4096>;
@compute @workgroup_size(64)
fn shared_load(@builtin(global_invocation_id) g: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  var s = 0.0;
  for (var i = 0u; i < 64u; i++) { s += sh[l * 64u + i]; }
  o[g.x] = s;
}
@compute @workgroup_size(64)
fn subgroup_bcast(@builtin(global_invocation_id) g: vec3<u32>) {
  var s = 0.0;
  let v = a[g.x];
  s += subgroupBroadcast(v, 0u) * 1.0;
  s += subgroupBroadcast(v, 1u) * 1.0;
  s += subgroupBroadcast(v, 2u) * 1.0;
  s += subgroupBroadcast(v, 3u) * 1.0;
  s += subgroupBroadcast(v, 4u) * 1.0;
  s += subgroupBroadcast(v, 5u) * 1.0;
  s += subgroupBroadcast(v, 6u) * 1.0;
  s += subgroupBroadcast(v, 7u) * 1.0;
  s += subgroupBroadcast(v, 0u) * 2.0;
  s += subgroupBroadcast(v, 1u) * 2.0;
  s += subgroupBroadcast(v, 2u) * 2.0;
  s += subgroupBroadcast(v, 3u) * 2.0;
  s += subgroupBroadcast(v, 4u) * 2.0;
  s += subgroupBroadcast(v, 5u) * 2.0;
  s += subgroupBroadcast(v, 6u) * 2.0;
  s += subgroupBroadcast(v, 7u) * 2.0;
  s += subgroupBroadcast(v, 0u) * 3.0;
  s += subgroupBroadcast(v, 1u) * 3.0;
  s += subgroupBroadcast(v, 2u) * 3.0;
  s += subgroupBroadcast(v, 3u) * 3.0;
  s += subgroupBroadcast(v, 4u) * 3.0;
  s += subgroupBroadcast(v, 5u) * 3.0;
  s += subgroupBroadcast(v, 6u) * 3.0;
  s += subgroupBroadcast(v, 7u) * 3.0;
  s += subgroupBroadcast(v, 0u) * 4.0;
  s += subgroupBroadcast(v, 1u) * 4.0;
  s += subgroupBroadcast(v, 2u) * 4.0;
  s += subgroupBroadcast(v, 3u) * 4.0;
  s += subgroupBroadcast(v, 4u) * 4.0;
  s += subgroupBroadcast(v, 5u) * 4.0;
  s += subgroupBroadcast(v, 6u) * 4.0;
  s += subgroupBroadcast(v, 7u) * 4.0;
  s += subgroupBroadcast(v, 0u) * 5.0;
  s += subgroupBroadcast(v, 1u) * 5.0;
  s += subgroupBroadcast(v, 2u) * 5.0;
  s += subgroupBroadcast(v, 3u) * 5.0;
  s += subgroupBroadcast(v, 4u) * 5.0;
  s += subgroupBroadcast(v, 5u) * 5.0;
  s += subgroupBroadcast(v, 6u) * 5.0;
  s += subgroupBroadcast(v, 7u) * 5.0;
  s += subgroupBroadcast(v, 0u) * 6.0;
  s += subgroupBroadcast(v, 1u) * 6.0;
  s += subgroupBroadcast(v, 2u) * 6.0;
  s += subgroupBroadcast(v, 3u) * 6.0;
  s += subgroupBroadcast(v, 4u) * 6.0;
  s += subgroupBroadcast(v, 5u) * 6.0;
  s += subgroupBroadcast(v, 6u) * 6.0;
  s += subgroupBroadcast(v, 7u) * 6.0;
  s += subgroupBroadcast(v, 0u) * 7.0;
  s += subgroupBroadcast(v, 1u) * 7.0;
  s += subgroupBroadcast(v, 2u) * 7.0;
  s += subgroupBroadcast(v, 3u) * 7.0;
  s += subgroupBroadcast(v, 4u) * 7.0;
  s += subgroupBroadcast(v, 5u) * 7.0;
  s += subgroupBroadcast(v, 6u) * 7.0;
  s += subgroupBroadcast(v, 7u) * 7.0;
  s += subgroupBroadcast(v, 0u) * 8.0;
  s += subgroupBroadcast(v, 1u) * 8.0;
  s += subgroupBroadcast(v, 2u) * 8.0;
  s += subgroupBroadcast(v, 3u) * 8.0;
  s += subgroupBroadcast(v, 4u) * 8.0;
  s += subgroupBroadcast(v, 5u) * 8.0;
  s += subgroupBroadcast(v, 6u) * 8.0;
  s += subgroupBroadcast(v, 7u) * 8.0;
  o[g.x] = s;
}
@compute @workgroup_size(64)
fn fma_only(@builtin(global_invocation_id) g: vec3<u32>) {
  var s = f32(g.x);
  var t = 1.0001;
  for (var i = 0u; i < 64u; i++) { s = s * t + 0.5; }
  o[g.x] = s;
}
"#;

fn main() {
    let gpu = Gpu::new(AdapterChoice::from_env().unwrap()).unwrap();
    println!(
        "max uniform binding {} bytes, max storage binding {} bytes, uniform buffers per stage {}",
        gpu.limits.max_uniform_buffer_binding_size,
        gpu.limits.max_storage_buffer_binding_size,
        gpu.limits.max_uniform_buffers_per_shader_stage
    );
    let n = 1 << 16; // invocations
    let a = gpu.storage("a", n * 64);
    let o = gpu.storage("o", n);
    let params = gpu.uniform("p", &[0u32; 4]);
    let ubo = gpu.uniform("u", &[0f32; 4096]);
    for entry in [
        "scalar",
        "vec4load",
        "uniformload",
        "ubo_uniform",
        "ubo_divergent",
        "ubo_f16_divergent",
        "shared_load",
        "subgroup_bcast",
        "fma_only",
    ] {
        let k = Kernel::new(
            &gpu,
            "probe",
            SRC,
            entry,
            &[Slot::Uniform, Slot::Read, Slot::Read, Slot::ReadWrite, Slot::Uniform],
        );
        let d = k.bind(
            &gpu,
            &[
                params.as_entire_binding(),
                View::whole(&a).resource(),
                View::whole(&a).resource(),
                View::whole(&o).resource(),
                ubo.as_entire_binding(),
            ],
            [(n / 64) as u32, 1, 1],
        );
        d.run(&gpu);
        gpu.wait_idle().unwrap();
        let t = Instant::now();
        for _ in 0..5 {
            d.run(&gpu);
        }
        gpu.wait_idle().unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3 / 5.0;
        let loads = if entry.starts_with("vec4") || entry.starts_with("ubo") { 16.0 } else { 64.0 };
        let values = if entry.contains("f16") {
            8.0
        } else if entry.starts_with("vec4") || entry.starts_with("ubo") {
            4.0
        } else {
            1.0
        };
        println!(
            "{entry:17} {ms:8.3} ms  = {:.2} ns per invocation-load, {:.3} ns per value ({} invocations x 64 \
                (scalar) or 16 (vec4) loads)",
            ms * 1e6 / (n as f64 * loads),
            ms * 1e6 / (n as f64 * loads * values),
            n
        );
    }
}
