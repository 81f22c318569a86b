//! The kernel machinery: a kernel's binding slots, its pipeline (built at first use), and the
//! dispatches its binds make and a pass records.

use crate::gpu::Gpu;

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
