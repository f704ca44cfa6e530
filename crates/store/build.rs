//! Rebuilds the store when a migration is added or changed: `sqlx::migrate!` embeds the
//! migration directories at compile time, and cargo alone does not notice a new file there.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
