//! The wasmtime `Engine` shared by every plugin, its epoch ticker, and the
//! `Linker` with every host capability.

use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::host::{self, HostState};
use super::limits::SandboxConfig;

/// How often the epoch advances; CPU budgets are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Build the engine: epoch interruption for CPU limits, no component-model
/// async (4-5x cheaper calls), and (unless `sandbox.pooling` is off) the
/// pooling allocator sized for `sandbox.engine_instances` instances when
/// the machine can reserve its address space (falls back to on-demand
/// otherwise).
pub fn build_engine(sandbox: &SandboxConfig) -> anyhow::Result<Engine> {
    let instances = sandbox.engine_instances.max(1);
    let pooled = if sandbox.pooling {
        Engine::new(&config(Some((instances, sandbox.keep_resident_kb)))).map_err(|e| {
            tracing::warn!(error = %e, instances, "pooling allocator unavailable; using on-demand allocation");
        })
    } else {
        Err(())
    };
    let engine = match pooled {
        Ok(engine) => engine,
        Err(()) => {
            Engine::new(&config(None)).map_err(|e| anyhow::anyhow!("creating engine: {e}"))?
        }
    };
    spawn_epoch_ticker(&engine);
    Ok(engine)
}

/// The engine configuration; `pool`: the pooling allocator's instance
/// count and the KiB kept resident per freed slot, `None` for on-demand
/// allocation.
fn config(pool: Option<(u32, u64)>) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true)
        .concurrency_support(false)
        .max_wasm_stack(1 << 20)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    if let Some((n, keep_kb)) = pool {
        let keep = usize::try_from(keep_kb.saturating_mul(1024)).unwrap_or(usize::MAX);
        let mut p = PoolingAllocationConfig::default();
        p.total_component_instances(n)
            .total_core_instances(4 * n)
            .total_memories(n)
            .total_tables(2 * n)
            .total_stacks(n)
            .max_memory_size(1 << 30)
            .max_component_instance_size(10 << 20)
            .max_core_instance_size(10 << 20)
            .max_core_instances_per_component(200)
            .max_tables_per_component(64)
            .max_memories_per_component(32)
            .max_tables_per_module(4)
            .max_memories_per_module(2)
            .linear_memory_keep_resident(keep)
            .table_keep_resident(keep)
            // A freed slot's async stack is returned to the kernel: left
            // alone, every slot ever used keeps the stack pages its calls
            // touched (tens of KiB each; a thousand socket accounts
            // instantiating at start dirty a thousand slots).
            .async_stack_keep_resident(0);
        c.async_stack_zeroing(true);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

/// Advance the epoch every [`EPOCH_TICK`] on a thread that ends with the engine.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("pincer-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => break,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the epoch thread; CPU limits will not fire");
    }
}

/// The one linker: WASI p2, `wasi:http` and Pincer's host interfaces.
pub fn build_linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    host::add_to_linker(&mut linker)?;
    Ok(linker)
}
