//! Process-wide allocator tuning.
//!
//! glibc gives every thread that allocates its own arena (up to 8 per core),
//! and memory freed in one arena is not reused by the others. mcsd's
//! allocations come from the tokio workers and the blocking pool that runs
//! store I/O, so after a few large List calls at full pool the daemon held
//! ~180 MB where ~105 MB is live. Two arenas keep it near the live size with
//! no measurable cost: the store's single writer serialises the hot path
//! anyway.

/// Arenas glibc may create; see the module docs for why.
const ARENAS: i32 = 2;

/// Caps glibc's malloc arenas. Call once, first thing in `main`, before
/// other threads exist. A no-op where the C library is not glibc.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a tuning parameter of glibc's allocator;
        // it takes plain integers, touches no Rust-managed memory, and is
        // called before any other thread is spawned.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENAS) };
        if ok != 1 {
            tracing::debug!("mallopt(M_ARENA_MAX) was refused; using the C library's default");
        }
    }
}
