#[global_allocator]
static A: strata::Strata = strata::Strata;

fn main() {
    rust_peers::main()
}
