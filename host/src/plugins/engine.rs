//! The wasmtime `Engine` shared by every plugin, its epoch ticker, and the
//! `Linker` with every host capability.

use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::host::{self, HostState};

/// How often the epoch advances; CPU budgets are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Build the engine: epoch interruption for CPU limits, no component-model
/// async (4-5x cheaper calls), and the pooling allocator when the machine
/// can reserve its address space (falls back to on-demand otherwise).
pub fn build_engine() -> anyhow::Result<Engine> {
    let engine = match Engine::new(&config(true)) {
        Ok(engine) => engine,
        Err(e) => {
            tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
            Engine::new(&config(false)).map_err(|e| anyhow::anyhow!("creating engine: {e}"))?
        }
    };
    spawn_epoch_ticker(&engine);
    Ok(engine)
}

fn config(pooling: bool) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true)
        .concurrency_support(false)
        .max_wasm_stack(1 << 20)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    if pooling {
        let n = super::gate::ENGINE_INSTANCES as u32;
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
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(64 << 10);
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
