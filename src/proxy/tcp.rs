//! TCP mode: pick a backend (falling through on connect failure) and move bytes both ways,
//! unchanged, counting them. Half-closes are passed on; a drained backend's connection is cut.

use std::io;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Context, connect};
use crate::metrics::ServiceLabels;
use crate::routing::balance::Flow;
use crate::snapshot::Snapshot;

const BUFFER: usize = 32 * 1024;

pub async fn serve(
    mut client: TcpStream,
    flow: Flow,
    snapshot: Arc<Snapshot>,
    service: usize,
    ctx: &Context,
) {
    let _ = client.set_nodelay(true);
    let picked = {
        let svc = &snapshot.table.services[service];
        let states = &snapshot.states[service];
        let mut picked = None;
        let candidates = svc.balancer.candidates(flow, |i| states[i].load());
        for b in crate::backends::outlier::ordered(states, candidates) {
            let started = std::time::Instant::now();
            match connect(states[b].addr, ctx.settings.load().connect_timeout).await {
                Ok(stream) => {
                    states[b].observe_connect(started.elapsed());
                    states[b].outlier.success();
                    picked = Some((stream, states[b].clone()));
                    break;
                }
                Err(e) => {
                    states[b].metrics.connect_failures.inc();
                    crate::backends::outlier::failure(states, b);
                    tracing::debug!(service = %svc.key, backend = %states[b].addr, "connect failed: {e}");
                }
            }
        }
        if picked.is_none() {
            let labels = ServiceLabels {
                service: svc.key.to_string(),
            };
            ctx.metrics.no_backend.get_or_create(&labels).inc();
        }
        picked
    };
    // The table may be swapped many times during a long connection; do not pin this one.
    drop(snapshot);
    let Some((mut upstream, state)) = picked else {
        return;
    };
    let _active = state.open();
    tokio::select! {
        result = pump(&mut client, &mut upstream, &state.metrics.bytes_in, &state.metrics.bytes_out) => {
            if let Err(e) = result {
                tracing::trace!(backend = %state.addr, "tcp connection ended: {e}");
            }
        }
        _ = state.drained() => {
            tracing::debug!(backend = %state.addr, "drain timeout: closing connection");
        }
    }
}

async fn pump(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    bytes_in: &Counter,
    bytes_out: &Counter,
) -> io::Result<()> {
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    tokio::try_join!(
        copy(&mut cr, &mut uw, bytes_in),
        copy(&mut ur, &mut cw, bytes_out)
    )?;
    Ok(())
}

async fn copy<R, W>(r: &mut R, w: &mut W, counter: &Counter) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return w.shutdown().await;
        }
        w.write_all(&buf[..n]).await?;
        counter.inc_by(n as u64);
    }
}
