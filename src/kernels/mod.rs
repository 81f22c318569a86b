//! One module per WGSL kernel. Each module owns its params struct, builds its pipeline and
//! bind-group layout once, computes its dispatch size, and carries the plain CPU reference the
//! tests compare it against (accumulating in f64).
//!
//! The pattern: `Kernel::new` compiles a pipeline once; `bind` turns buffers plus a params
//! struct into a [`Dispatch`] (bind group + workgroup count), also built once; a training step
//! only calls [`Dispatch::record`] on a compute pass.

pub mod bias_grad;
pub mod conv2d_backward_input;
pub mod conv2d_backward_weight;
pub mod conv2d_forward;
pub mod conv2d_relu_maxpool_forward;
pub mod gemm;
pub mod maxpool2d_backward;
pub mod maxpool2d_forward;
pub mod prepare_batch;
pub mod relu;
pub mod sgd_momentum;
pub mod softmax_cross_entropy;

use crate::gpu::Gpu;

/// Workgroup size used by every one-dimensional kernel.
pub const WG: u32 = 64;

/// What one binding slot of a kernel holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The kernel's params struct.
    Uniform,
    /// A uniform bound with a dynamic offset (the per-step table).
    UniformDynamic,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
}

/// A range of a buffer, in 32-bit words, as a kernel sees one tensor.
#[derive(Clone, Debug)]
pub struct View {
    pub buffer: wgpu::Buffer,
    /// Byte offset; must be a multiple of the device's storage offset alignment.
    pub offset: u64,
    /// Length in 32-bit words.
    pub len: usize,
}

impl View {
    pub fn whole(buffer: &wgpu::Buffer) -> View {
        View { buffer: buffer.clone(), offset: 0, len: (buffer.size() / 4) as usize }
    }
    pub fn resource(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: self.offset,
            size: wgpu::BufferSize::new((self.len.max(1) * 4) as u64),
        })
    }

    /// The same tensor bound as a uniform `array<vec4<f32>, N>`: the range rounds up to whole
    /// vec4s (the arena's alignment padding, or [`Gpu::storage_from`]'s, provides the room).
    pub fn uniform_vec4s(&self) -> View {
        let len = self.len.div_ceil(4) * 4;
        assert!(
            self.offset + (len * 4) as u64 <= self.buffer.size(),
            "a {}-word tensor bound as uniform vec4s needs its buffer padded to {} words",
            self.len,
            len
        );
        View { buffer: self.buffer.clone(), offset: self.offset, len }
    }
}

/// Bytes of slack a buffer needs after its data to be read through uniform windows (the last
/// window is bound at full size).
pub const UNIFORM_SLACK_BYTES: u64 = 65_536;

/// Rewrites a kernel's storage input `name` (declared at binding `binding` as
/// `var<storage, read> NAME: array<f32>;` with the accessor `fn NAME_at(i: u32) -> f32`) into a
/// uniform window of `bytes` bytes.
pub fn uniform_input(source: &str, name: &str, binding: u32, bytes: u64) -> String {
    let decl = format!("@group(0) @binding({binding}) var<storage, read> {name}: array<f32>;");
    let access = format!("fn {name}_at(i: u32) -> f32 {{ return {name}[i]; }}");
    assert!(source.contains(&decl) && source.contains(&access), "shader lacks the storage input {name}");
    source
        .replace(
            &decl,
            &format!("@group(0) @binding({binding}) var<uniform> {name}: array<vec4<f32>, {}u>;", bytes / 16),
        )
        .replace(&access, &format!("fn {name}_at(i: u32) -> f32 {{ return {name}[i >> 2u][i & 3u]; }}"))
}

/// Uniform windows over `batch` images of `image_bytes` each, `per` images a window, starting
/// at `view`: (first image, images in the window, the binding). None when the buffer lacks the
/// room a full-size last window needs (then the caller uses its storage kernel).
pub fn image_windows(
    view: &View,
    batch: usize,
    image_bytes: u64,
    per: usize,
) -> Option<Vec<(usize, usize, wgpu::BindingResource<'_>)>> {
    if view.offset + batch as u64 * image_bytes + UNIFORM_SLACK_BYTES > view.buffer.size() {
        return None;
    }
    let windows = (0..batch)
        .step_by(per)
        .map(|b0| {
            let binding = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &view.buffer,
                offset: view.offset + b0 as u64 * image_bytes,
                size: wgpu::BufferSize::new(UNIFORM_SLACK_BYTES),
            });
            (b0, per.min(batch - b0), binding)
        })
        .collect();
    Some(windows)
}

/// The dispatches of a kernel over a batch whose per-image input `input` (`image_bytes` an image)
/// is read through uniform windows where the kernel has a windowed pipeline (`windowed`: it and
/// its images per window) and the buffer has the slack: one dispatch per window; otherwise one
/// dispatch of the storage pipeline `storage` over the whole batch. `dispatch(kernel, first
/// image, images, input binding)` makes one.
pub fn window_dispatches<'a>(
    windowed: Option<&(Kernel, usize)>,
    storage: &Kernel,
    input: &'a View,
    batch: usize,
    image_bytes: u64,
    dispatch: impl Fn(&Kernel, usize, usize, wgpu::BindingResource<'a>) -> Dispatch,
) -> Vec<Dispatch> {
    match windowed.and_then(|(k, per)| Some((k, image_windows(input, batch, image_bytes, *per)?))) {
        Some((kernel, ws)) => ws.into_iter().map(|(b0, n, window)| dispatch(kernel, b0, n, window)).collect(),
        None => vec![dispatch(storage, 0, batch, input.resource())],
    }
}

/// How to cut a run of equal items (images of a batch) into uniform windows: items per window,
/// or None when one item is too big or no window start can be aligned.
pub fn uniform_windows(gpu: &Gpu, item_bytes: usize) -> Option<usize> {
    shared_uniform_windows(gpu, &[item_bytes])
}

/// Like [`uniform_windows`] for a kernel that reads several per-image tensors through windows
/// over the same images: the images per window that fit every one of them, at offsets every
/// one of them can be bound at.
pub fn shared_uniform_windows(gpu: &Gpu, item_bytes: &[usize]) -> Option<usize> {
    let window = (gpu.limits.max_uniform_buffer_binding_size as usize).min(UNIFORM_SLACK_BYTES as usize);
    let align = gpu.limits.min_uniform_buffer_offset_alignment as usize;
    let step = item_bytes.iter().fold(1, |acc, &b| {
        let s = align / gcd(b, align);
        acc / gcd(acc, s) * s
    });
    let largest = item_bytes.iter().copied().max()?;
    let per = (window / largest) / step * step;
    (per > 0 && uniform_inputs_pay(gpu)).then_some(per)
}

/// Whether per-image inputs (and GEMM operands) are read through uniform windows on this
/// adapter. On llvmpipe a uniform load costs a tenth of a storage load (examples/loadcost.rs);
/// on a GPU a uniform buffer is the constant cache, which serves one address per cycle, so lanes
/// reading different addresses wait in turn: on the H200, with windows everywhere, conv1's
/// weight grad took 15.8 ms and fc1's forward 4.5 ms a step (`bench-kernels`, README). So on by
/// default only on a CPU adapter; `GPU_LENET_UNIFORM_INPUTS=1` / `=0` (or the older
/// `GPU_LENET_NO_UNIFORM_INPUTS`) force it, for measuring both on one adapter.
pub fn uniform_inputs_pay(gpu: &Gpu) -> bool {
    env_knob("GPU_LENET_NO_UNIFORM_INPUTS", |n| n <= 1) != Some(1)
        && per_adapter(gpu, "GPU_LENET_UNIFORM_INPUTS", |n| n <= 1, 1, 0) == 1
}

/// A tuning choice made per kind of adapter: `cpu` on a CPU adapter (lavapipe, where the
/// kernels were first tuned), `other` on a GPU (measured on the H200 with `scripts/gpu_tune.sh`),
/// unless the knob `name` sets it ([`env_knob`]).
pub fn per_adapter(gpu: &Gpu, name: &str, valid: impl Fn(usize) -> bool, cpu: usize, other: usize) -> usize {
    env_knob(name, valid).unwrap_or(if gpu.info.device_type == wgpu::DeviceType::Cpu { cpu } else { other })
}

/// A numeric tuning knob from the environment (`GPU_LENET_GEMM_ROWS` and the like): None when
/// unset; a value that does not parse or that `valid` refuses is reported on stderr and ignored,
/// so that a typo does not silently measure the default.
pub fn env_knob(name: &str, valid: impl Fn(usize) -> bool) -> Option<usize> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse::<usize>() {
        Ok(n) if valid(n) => Some(n),
        _ => {
            eprintln!("warning: {name}={v:?} ignored: not a valid value");
            None
        }
    }
}

pub(crate) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Binds, in a kernel written with the stub `fn pidx_at(i: u32) -> f32 { return 0.0; }` (the
/// POOLED variants of the conv gradients), the pool's masked argmax as a uniform window at
/// binding 4, read as `bitcast<u32>(pidx_at(i))`.
pub fn pooled_argmax_input(source: &str) -> String {
    let stub = "fn pidx_at(i: u32) -> f32 { return 0.0; }";
    assert!(source.contains(stub), "shader lacks the argmax stub");
    let src = source.replace(
        stub,
        "@group(0) @binding(4) var<storage, read> pidx: array<f32>;\nfn pidx_at(i: u32) -> f32 { return pidx[i]; }",
    );
    uniform_input(&src, "pidx", 4, UNIFORM_SLACK_BYTES)
}

/// Unrolls, in a WGSL source, every loop written `for (var V = 0u; V < BOUND; V++) { // unroll`
/// into `count` copies of its body, each in its own block after `let V = Ku;` (so the body must
/// not `break` or `continue` that loop). Mesa's NIR unrolls a loop only while its body is small;
/// llvmpipe then keeps an array indexed by a counter that was not unrolled in a stack array
/// read and written lane by lane (the conv kernels' accumulators: most of their time).
/// Unrolled here, every index is a constant and the arrays live in registers.
pub fn unroll(source: &str, var: &str, bound: &str, count: usize) -> String {
    let head = format!("for (var {var} = 0u; {var} < {bound}; {var}++) {{ // unroll");
    assert!(source.contains(&head), "shader lacks `{head}`");
    let mut out = source.to_string();
    while let Some(start) = out.find(&head) {
        let body_start = start + head.len();
        let mut depth = 1;
        let mut end = None;
        for (i, c) in out[body_start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = Some(body_start + i);
                break;
            }
        }
        let end = end.unwrap_or_else(|| panic!("unbalanced braces after `{head}`"));
        let body = &out[body_start..end];
        let copies = (0..count).map(|k| format!("{{ let {var} = {k}u;{body}}}")).collect::<Vec<_>>().join(" ");
        out = format!("{}{}{}", &out[..start], copies, &out[end + 1..]);
    }
    out
}

/// Replaces `const NAME: u32 = 1u;` in a WGSL source with the given value: the size of a
/// uniform array must be a constant, and override constants cannot size one.
pub fn with_const(source: &str, name: &str, value: usize) -> String {
    let from = format!("const {name}: u32 = 1u;");
    assert!(source.contains(&from), "shader lacks `{from}`");
    source.replace(&from, &format!("const {name}: u32 = {value}u;"))
}

/// Whether kernels may share loads across the lanes of a subgroup in `wg`-wide workgroups:
/// the adapter has subgroup operations in compute shaders, every subgroup has a multiple of 8
/// lanes and whole subgroups fill the workgroup. `GPU_LENET_NO_SUBGROUPS` turns it off (tests of
/// the plain kernels, adapters where it measures slower).
pub fn subgroup_sharing(gpu: &Gpu, wg: usize) -> bool {
    let (lo, hi) = (gpu.info.subgroup_min_size as usize, gpu.info.subgroup_max_size as usize);
    gpu.features.contains(wgpu::Features::SUBGROUP)
        && lo >= 8
        && lo % 8 == 0
        && hi <= wg
        && wg.is_multiple_of(hi)
        && std::env::var_os("GPU_LENET_NO_SUBGROUPS").is_none()
}

/// Rewrites a kernel written with `const SHARE: u32 = 1u;`, `fn share(v: f32, lane: u32) -> f32
/// { return v; }` and a `@builtin(local_invocation_index) lane_id: u32` parameter into the
/// version whose 8 lanes share loads: SHARE = 8, `share` a subgroupShuffle and `lane_id` the
/// subgroup lane. Only where [`subgroup_sharing`] holds.
pub fn share_across_subgroup(source: &str) -> String {
    let swaps = [
        ("const SHARE: u32 = 1u;", "const SHARE: u32 = 8u;"),
        (
            "fn share(v: f32, lane: u32) -> f32 { return v; }",
            "fn share(v: f32, lane: u32) -> f32 { return subgroupShuffle(v, lane); }",
        ),
        ("@builtin(local_invocation_index) lane_id: u32", "@builtin(subgroup_invocation_id) lane_id: u32"),
    ];
    rewrite(source, "shader", &swaps)
}

/// `source` with every `(from, to)` of `swaps` replaced, in order; each `from` must be in it
/// (`what` names the shader when one is missing): the per-variant rewrites of a kernel's source.
pub fn rewrite(source: &str, what: &str, swaps: &[(&str, &str)]) -> String {
    swaps.iter().fold(source.to_string(), |out, (from, to)| {
        assert!(out.contains(from), "{what} lacks `{from}`");
        out.replace(from, to)
    })
}

/// A compute pipeline and its bind-group layout, built when the kernel is first bound: the model
/// holds every per-adapter variant of every kernel, and creating a pipeline runs the driver's
/// shader passes even for a variant that never runs (on lavapipe 10-200 ms for the kernels with
/// loops written out: the unused variants cost ~0.9 s of every start, warm shader cache or not).
pub struct Kernel {
    pub name: &'static str,
    source: String,
    entry: String,
    constants: Vec<(String, f64)>,
    slots: Vec<Slot>,
    built: std::sync::OnceLock<(wgpu::ComputePipeline, wgpu::BindGroupLayout)>,
}

impl Kernel {
    pub fn new(gpu: &Gpu, name: &'static str, source: &str, entry: &str, slots: &[Slot]) -> Kernel {
        Kernel::with_constants(gpu, name, source, entry, slots, &[])
    }

    /// Like [`Kernel::new`], with values for the shader's `override` constants: a kernel
    /// specialised to one layer's shape gets constant loop bounds the compiler can unroll.
    pub fn with_constants(
        _gpu: &Gpu,
        name: &'static str,
        source: &str,
        entry: &str,
        slots: &[Slot],
        constants: &[(&str, f64)],
    ) -> Kernel {
        Kernel {
            name,
            source: source.to_string(),
            entry: entry.to_string(),
            constants: constants.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
            slots: slots.to_vec(),
            built: std::sync::OnceLock::new(),
        }
    }

    /// The pipeline and layout, created at the first call.
    fn built(&self, gpu: &Gpu) -> &(wgpu::ComputePipeline, wgpu::BindGroupLayout) {
        self.built.get_or_init(|| self.build(gpu))
    }

    fn build(&self, gpu: &Gpu) -> (wgpu::ComputePipeline, wgpu::BindGroupLayout) {
        let (name, slots, entry) = (self.name, &self.slots, self.entry.as_str());
        let constants: Vec<(&str, f64)> = self.constants.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let constants = &constants[..];
        let device = &gpu.device;
        let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match s {
                    Slot::Uniform | Slot::UniformDynamic => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: *s == Slot::UniformDynamic,
                        min_binding_size: None,
                    },
                    Slot::Read | Slot::ReadWrite => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: *s == Slot::Read },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        let layout =
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(name), entries: &entries });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let mut checks = wgpu::ShaderRuntimeChecks::checked();
        if std::env::var_os("GPU_LENET_CHECKED_SHADERS").is_none() {
            // Naga wraps every loop in an extra iteration counter ("loop bounding") and every
            // integer division in a zero guard. Both stop the driver's compiler from unrolling our
            // constant-bound loops (measured 2-10x slower on lavapipe). Buffer bounds checks stay on.
            checks.force_loop_bounding = false;
            checks.int_div_checks = false;
        }
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(self.source.as_str().into()),
        };
        // SAFETY: every loop in shaders/ has a finite trip count (bounded by a params field or an
        // override constant), and every integer division or modulo is by a shape or a constant
        // that the Rust side guarantees non-zero (shapes with a zero dimension are rejected).
        let module = unsafe { device.create_shader_module_trusted(desc, checks) };
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                // No kernel relies on zeroed workgroup memory; skip the extra initialisation.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        (pipeline, layout)
    }

    /// Builds the bind group for one use of this kernel. `resources` follow the slot order.
    pub fn bind(&self, gpu: &Gpu, resources: &[wgpu::BindingResource<'_>], workgroups: [u32; 3]) -> Dispatch {
        assert_eq!(resources.len(), self.slots.len(), "{}: wrong number of bindings", self.name);
        let (pipeline, layout) = self.built(gpu);
        let entries: Vec<wgpu::BindGroupEntry> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| wgpu::BindGroupEntry { binding: i as u32, resource: r.clone() })
            .collect();
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(self.name),
            layout,
            entries: &entries,
        });
        Dispatch {
            name: self.name,
            pipeline: pipeline.clone(),
            bind_group,
            workgroups,
            dynamic: self.slots.contains(&Slot::UniformDynamic),
        }
    }
}

/// One recorded-ready kernel invocation: pipeline, bind group and workgroup count.
#[derive(Clone)]
pub struct Dispatch {
    pub name: &'static str,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
    dynamic: bool,
}

impl Dispatch {
    /// Records the dispatch into a pass. `dynamic_offset` selects the row of the step table for
    /// kernels that read it (ignored by the others).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, dynamic_offset: u32) {
        if self.workgroups.contains(&0) {
            return;
        }
        pass.set_pipeline(&self.pipeline);
        if self.dynamic {
            pass.set_bind_group(0, &self.bind_group, &[dynamic_offset]);
        } else {
            pass.set_bind_group(0, &self.bind_group, &[]);
        }
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// Runs this dispatch alone in its own submit (tests and benchmarks).
    pub fn run(&self, gpu: &Gpu) {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            self.record(&mut pass, 0);
        }
        gpu.queue.submit([enc.finish()]);
    }
}

/// Runs several dispatches in order in one pass and one submit (tests and benchmarks).
pub fn run_all(gpu: &Gpu, dispatches: &[&Dispatch]) {
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for d in dispatches {
            d.record(&mut pass, 0);
        }
    }
    gpu.queue.submit([enc.finish()]);
}

/// Workgroup counts for `n` independent items handled by `WG`-wide workgroups, spread over x and
/// y so that neither exceeds the 65,535 per-dimension limit. Shaders rebuild the flat index as
/// `gid.x + gid.y * num_workgroups.x * WG`.
pub fn grid_1d(n: usize) -> [u32; 3] {
    let groups = n.div_ceil(WG as usize).max(if n == 0 { 0 } else { 1 });
    if groups <= 65_535 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(65_535);
        [groups.div_ceil(y) as u32, y as u32, 1]
    }
}

/// Relative tolerance for comparing a GPU result with its f64 reference, given the length of
/// the longest sum that produced one output. f32 rounding grows like sqrt(len) for random data;
/// the bound is capped at 1e-4 relative to the tensor's largest magnitude.
pub fn tolerance(reduction_len: usize) -> f64 {
    (4.0 * f32::EPSILON as f64 * (reduction_len.max(1) as f64).sqrt()).clamp(1e-6, 1e-4)
}

/// One row of the step table: which step this is (its metrics row) and where its batch starts
/// in the epoch's permutation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct StepInfo {
    pub step: u32,
    pub start: u32,
    pub _pad: [u32; 2],
}

/// The per-step values kernels read, one row per step at the device's uniform offset alignment.
/// Built once per run; a recorded step selects its row with a dynamic offset, so many steps fit
/// in one command buffer without any buffer writes between them.
pub struct StepTable {
    pub buffer: wgpu::Buffer,
    pub stride: u32,
    pub rows: usize,
}

impl StepTable {
    pub fn new(gpu: &Gpu, rows: &[StepInfo]) -> StepTable {
        let stride = gpu.limits.min_uniform_buffer_offset_alignment.max(16);
        let mut bytes = vec![0u8; rows.len().max(1) * stride as usize];
        for (i, r) in rows.iter().enumerate() {
            let at = i * stride as usize;
            bytes[at..at + 16].copy_from_slice(bytemuck::bytes_of(r));
        }
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step table"),
            size: bytes.len() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        gpu.queue.write_buffer(&buffer, 0, &bytes);
        StepTable { buffer, stride, rows: rows.len() }
    }

    /// A table for `steps` consecutive steps of `batch` samples each.
    pub fn sequential(gpu: &Gpu, steps: usize, batch: usize) -> StepTable {
        let rows: Vec<StepInfo> =
            (0..steps).map(|s| StepInfo { step: s as u32, start: (s * batch) as u32, _pad: [0; 2] }).collect();
        StepTable::new(gpu, &rows)
    }

    pub fn resource(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: &self.buffer,
            offset: 0,
            size: wgpu::BufferSize::new(16),
        })
    }

    /// The dynamic offset that selects row `step`.
    pub fn offset(&self, step: usize) -> u32 {
        step as u32 * self.stride
    }
}

#[cfg(test)]
mod tests {
    use super::unroll;

    #[test]
    fn unroll_copies_the_body_with_the_counter_bound() {
        let src = "a(); for (var t = 0u; t < N; t++) { // unroll\n if (t > 0u) { b(t); }\n} c();";
        let out = unroll(src, "t", "N", 3);
        assert_eq!(
            out,
            "a(); { let t = 0u;\n if (t > 0u) { b(t); }\n} { let t = 1u;\n if (t > 0u) { b(t); }\n} \
                { let t = 2u;\n if (t > 0u) { b(t); }\n} c();"
        );
        assert_eq!(unroll(src, "t", "N", 0), "a();  c();");
        let twice = format!("{src} {src}");
        assert_eq!(unroll(&twice, "t", "N", 3), format!("{out} {out}"));
    }

    #[test]
    #[should_panic(expected = "shader lacks")]
    fn unroll_insists_on_the_marked_loop() {
        unroll("for (var t = 0u; t < N; t++) { }", "t", "N", 2);
    }
}
