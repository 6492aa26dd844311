//! The control plane's thread. Discovery, compile, the admin API, health checks and reloads run
//! on a runtime of their own, so that reading a 10,000-app snapshot (~100 ms) or compiling it
//! (~30 ms) never stalls the data plane, whose workers only accept and proxy. The control plane
//! reaches the data plane through the store (tables), the listeners (which spawn onto the data
//! plane's runtime) and shared atomics, never by running on its threads.

use crate::runtime_thread::RuntimeThread;

/// Starts the control plane's thread; it runs until the returned value is dropped.
pub fn start() -> std::io::Result<RuntimeThread> {
    RuntimeThread::start("control".into(), || {})
}
