// The web UI's release build is embedded; vite replaces hashed files on every build, so the
// folder itself is watched (cargo scans a watched folder for changed files).
//
// A watched path that does not exist makes cargo rerun this script, and so rebuild the server
// and everything above it, on every call. Before the first web build (a fresh clone running
// `cargo test`) the folder is therefore created empty: vite fills it later, which cargo sees.
fn main() {
    let dist = std::path::Path::new("../../web/dist");
    if !dist.exists() {
        let _ = std::fs::create_dir_all(dist);
    }
    println!("cargo:rerun-if-changed=../../web/dist");
}
