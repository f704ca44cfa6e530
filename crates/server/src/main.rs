//! The `flashback` binary.

use clap::Parser;

// mimalloc instead of glibc's malloc: under the purchase storm glibc's allocator took ~9 % of
// the server's CPU (arena locks, consolidation); mimalloc's thread-local free lists avoid most of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = flashback_server::cli::Cli::parse();
    match flashback_server::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
