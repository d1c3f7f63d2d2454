fn main() {
    std::process::exit(mpw::cli::main());
}
