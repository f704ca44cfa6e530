//! API tests: the real router on a real port, one fresh store per test.
//!
//! The `scaled_out` module runs against MariaDB and Redis when `FLASHBACK_TEST_MYSQL_URL` and
//! `FLASHBACK_TEST_REDIS_URL` are set, and says plainly that it skipped otherwise.

mod helpers;

mod affiliate;
mod analytics;
mod auth;
mod cache;
mod catalog;
mod cli;
mod dashboard;
mod deploy_config;
mod deploy_metrics;
mod flash_purchase;
mod flash_sale;
mod ha;
mod health;
mod nginx;
mod nginx_retry;
mod protections;
mod rebate;
mod scaled_out;
mod track;
mod track_scaled;
mod trade;
