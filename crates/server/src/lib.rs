//! The `flashback` server: configuration, HTTP API, background work and the command line.
//!
//! `main` is thin: it parses the command line and calls [`cli::run`]. Tests build the same
//! [`App`] on port 0 and talk to it over HTTP.

pub mod analytics;
pub mod api_doc;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod demo;
pub mod dependencies;
pub mod flash_sale;
pub mod health;
pub mod http;
pub mod journal;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod rebate;
pub mod serve;
pub mod state;
pub mod telemetry;
pub mod track;
pub mod trade;

pub use app::App;
pub use config::Config;
pub use state::AppState;
