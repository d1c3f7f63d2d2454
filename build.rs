// Release binaries on ELF targets keep mpw's line tables (readable
// backtraces) but compressed with zlib at link time, which std's backtrace
// reads; that halves the installed binary. See docs/ARCHITECTURE.md,
// "Release binary".
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let elf = matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly"
    );
    if profile == "release" && elf {
        println!("cargo:rustc-link-arg-bins=-Wl,--compress-debug-sections=zlib");
    }
}
