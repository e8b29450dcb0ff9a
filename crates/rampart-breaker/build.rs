//! Declares the `rampart_loom` cfg (loom model checks of the circuit's
//! atomics: `RUSTFLAGS="--cfg rampart_loom" cargo test -p rampart-breaker --lib loom`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(rampart_loom)");
}
