fn main() {
    println!("keyturn {}", env!("CARGO_PKG_VERSION"));
}
