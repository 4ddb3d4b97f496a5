//! kopd: a thread-per-core Kafka-protocol gateway storing data in Pulsar's layout.
//! See ARCHITECTURE.md for the map.

pub mod admin;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod group;
pub mod kafka;
pub mod log;
pub mod meta;
pub mod metrics;
pub mod net;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod zookeeper;

#[global_allocator]
static GLOBAL: runtime::alloc::KopdAllocator = runtime::alloc::KopdAllocator;
