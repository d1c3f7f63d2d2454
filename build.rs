// Release binaries on ELF targets keep mpw's line tables (readable
// backtraces) but compressed with zlib at link time, which std's backtrace
// reads; that halves the installed binary. On Linux with glibc 2.36 or newer
// the relative relocations are packed (DT_RELR). See docs/ARCHITECTURE.md,
// "Release binary".
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let profile = var("PROFILE");
    let os = var("CARGO_CFG_TARGET_OS");
    let elf = matches!(
        os.as_str(),
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly"
    );
    if profile == "release" && elf {
        println!("cargo:rustc-link-arg-bins=-Wl,--compress-debug-sections=zlib");
        // -O2 makes lld (and GNU ld accepts it) compress at zlib level 6, not 1.
        println!("cargo:rustc-link-arg-bins=-Wl,-O2");
    }
    // Only when built where it runs (cargo install): the glibc that loads
    // the binary must know DT_RELR, and the linker must make it.
    if profile == "release"
        && os == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && var("HOST") == var("TARGET")
        && glibc_at_least(2, 36)
        && links_with("-Wl,-z,pack-relative-relocs")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The glibc of this machine, from `getconf GNU_LIBC_VERSION` ("glibc 2.36").
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = text
        .trim()
        .trim_start_matches("glibc ")
        .split('.')
        .map(|p| p.parse::<u32>().ok());
    match (v.next().flatten(), v.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// Does the C compiler rustc links with take `flag` without a word of
/// complaint (an older GNU ld warns and ignores an unknown `-z` option)?
fn links_with(flag: &str) -> bool {
    let cc = std::env::var("RUSTC_LINKER")
        .or_else(|_| std::env::var("CC"))
        .unwrap_or_else(|_| "cc".into());
    let dir = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let src = dir.join("relr_probe.c");
    if std::fs::write(&src, "int main(void) { return 0; }\n").is_err() {
        return false;
    }
    Command::new(cc)
        .arg(&src)
        .arg("-o")
        .arg(dir.join("relr_probe"))
        .arg(flag)
        .output()
        .is_ok_and(|o| o.status.success() && o.stderr.is_empty())
}
