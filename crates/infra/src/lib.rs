//! Flashback's infrastructure behind names that say what it does: the multi-level
//! read-through cache and the Redis connection it (and later features) use.

pub mod bus;
pub mod cache;
pub mod redis_conn;
pub mod testing;

pub use bus::{BusSettings, RabbitBus};
pub use cache::{CacheMetrics, CacheSettings, Cached, ReadThroughCache, Source};
pub use redis_conn::{RedisConn, RedisHandle};
