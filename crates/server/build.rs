// The web UI's release build is embedded; vite replaces hashed files on every build, so the
// folder itself is watched (its mtime changes when files come and go).
fn main() {
    println!("cargo:rerun-if-changed=../../web/dist");
    println!("cargo:rerun-if-changed=../../web/dist/index.html");
}
