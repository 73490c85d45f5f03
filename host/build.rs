//! Builds the planner component (`guest/component/`, wrapping `guest/`) for `wasm32-wasip2` so that a plain
//! `cargo build` of the host embeds it, with no manual wasm step.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ has a parent").to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    // A target directory of its own: the outer cargo holds the lock on ours.
    let target_dir = out_dir.join("guest-target");

    // Relative to host/: a target directory shared by two checkouts must
    // still watch the files of the one being built.
    for path in ["../guest/src", "../guest/Cargo.toml", "../guest/component/src", "../guest/component/Cargo.toml", "../wit", "../Cargo.toml", "../Cargo.lock"] {
        println!("cargo:rerun-if-changed={path}");
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--package", "wal-archiver-component", "--target", "wasm32-wasip2", "--profile", "guest"])
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings are for the host, not for the component.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE")
            || key == "RUSTFLAGS"
            || key == "RUSTC_WORKSPACE_WRAPPER"
            || key == "RUSTC_WRAPPER"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let status = cmd.status().expect("cannot run cargo to build the planner component");
    if !status.success() {
        panic!(
            "cannot build the planner component: cargo exited with {status}. \
             Is the target installed? Run `rustup target add wasm32-wasip2`."
        );
    }
    let wasm = target_dir.join("wasm32-wasip2/guest/wal_archiver_component.wasm");
    let dest = out_dir.join("wal_archiver_planner.wasm");
    std::fs::copy(&wasm, &dest)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", wasm.display(), dest.display()));
}
