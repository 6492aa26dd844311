//! The control plane's thread. Discovery, compile, the admin API, health checks and reloads run
//! on a runtime of their own, so that reading a 10,000-app snapshot (~100 ms) or compiling it
//! (~30 ms) never stalls the data plane, whose workers only accept and proxy. The control plane
//! reaches the data plane through the store (tables), the listeners (which spawn onto the data
//! plane's runtime) and shared atomics, never by running on its threads.

use std::future::Future;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct ControlPlane {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlPlane {
    /// Starts the thread and its (current-thread) runtime; it runs until this is dropped.
    pub fn start() -> std::io::Result<ControlPlane> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Tasks still parked (a source's stream, the admin accept loop) are dropped.
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(ControlPlane {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
