//! The `causeway` binary; everything lives in the library so tests can reach it.

/// The decoder's safety against absurd array counts depends on this allocator (see
/// `causeway_protocol::alloc_guard`); it also keeps freed pages for reuse, which fetch relies on.
#[global_allocator]
static ALLOCATOR: causeway_protocol::alloc_guard::GuardedAllocator =
    causeway_protocol::alloc_guard::GuardedAllocator;

fn main() -> std::process::ExitCode {
    causeway_broker::main()
}
