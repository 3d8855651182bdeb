//! The `pincer:plugin@0.1.0` imports, answered by the 0.2.0 factors: each
//! call converts its arguments, calls the 0.2.0 implementation and converts
//! the result back (see [`crate::plugins::compat`]).

use crate::plugins::bindings::v01::channel::pincer::plugin as p1;
use crate::plugins::bindings::v02::channel::pincer::plugin as p2;
use crate::plugins::compat;

use super::HostState;

impl p1::types::Host for HostState {}

impl p1::log::Host for HostState {
    async fn write(
        &mut self,
        level: p1::log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        p2::log::Host::write(self, compat::level(level), message, fields).await
    }
}

impl p1::kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, p1::types::Error> {
        p2::kv::Host::get(self, key).await.map_err(Into::into)
    }
    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), p1::types::Error> {
        p2::kv::Host::set(self, key, value)
            .await
            .map_err(Into::into)
    }
    async fn delete(&mut self, key: String) -> Result<(), p1::types::Error> {
        p2::kv::Host::delete(self, key).await.map_err(Into::into)
    }
    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, p1::types::Error> {
        p2::kv::Host::list_keys(self, prefix)
            .await
            .map_err(Into::into)
    }
}

impl p1::clock::Host for HostState {
    async fn now_ms(&mut self) -> u64 {
        p2::clock::Host::now_ms(self).await
    }
}

impl p1::secrets::Host for HostState {
    async fn exists(&mut self, name: String) -> bool {
        p2::secrets::Host::exists(self, name).await
    }
    async fn placeholder(&mut self, name: String) -> String {
        p2::secrets::Host::placeholder(self, name).await
    }
}
