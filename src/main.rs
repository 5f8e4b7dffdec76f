fn main() {
    std::process::exit(riptide::cli::main());
}
