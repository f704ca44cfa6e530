//! Throwaway local services for tests and the drill: each runs from Debian's package as a child
//! process on a free loopback port in a temporary directory, and is killed (with its files
//! removed) on drop, or by a watchdog if the process that started it dies without unwinding.
//! The machine's own services are never touched.

pub mod mariadb;
pub mod nginx;
pub mod ports;
pub mod process;
pub mod rabbitmq;
pub mod redis;
pub mod watchdog;
