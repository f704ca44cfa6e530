//! API tests: the real router on a real port, one fresh store per test.
//!
//! The `scaled_out` module runs against MariaDB and Redis when `FLASHBACK_TEST_MYSQL_URL` and
//! `FLASHBACK_TEST_REDIS_URL` are set, and says plainly that it skipped otherwise.

mod helpers;

mod affiliate;
mod analytics;
mod analytics_edges;
mod api_table;
mod auth;
mod backup;
mod backup_scaled;
mod cache;
mod catalog;
mod cli;
mod cli_setup;
mod cold_start;
mod commit_proxy;
mod contract;
mod dashboard;
mod deploy_config;
mod deploy_metrics;
mod extremes;
mod flash_idempotency;
mod flash_in_doubt;
mod flash_purchase;
mod flash_sale;
mod flash_sale_times;
mod flash_sql_doubt;
mod ha;
mod health;
mod http2_idle;
mod nginx;
mod nginx_drain;
mod nginx_retry;
mod node_lease;
mod payments;
mod protections;
mod rebate;
mod scaled_out;
mod slow_clients;
mod track;
mod track_scaled;
mod trade;
