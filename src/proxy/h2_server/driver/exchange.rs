//! One stream's exchange on the codec's path: the handler's answer raced against the
//! client's reset, then the head and the body written as the stream's window and the
//! connection's output bound allow; a panic, a stalled client or a broken body resets this
//! stream alone.

use super::*;

/// One stream: the handler's answer (dropped when the client resets the stream first), then
/// the answer written; a panic resets this stream alone. Whatever way it ends, the stream is
/// closed in the codec (reset if still open) and its IO forgotten.
pub(super) async fn exchange<H, F, B>(
    (handle, req): (&H, Request<H2Body>),
    shared: &SharedRef,
    id: u32,
    stall: Duration,
    report: &(dyn Fn(Incident) + Sync),
) where
    H: Fn(Request<H2Body>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + StreamBody,
    B::Error: Into<BodyError>,
{
    let reason = answer((handle, req), shared, id, stall, report).await;
    let mut s = lock(shared);
    s.streams.remove(&id);
    if s.conn.is_open(id) {
        s.conn.reset(id, reason);
        s.output_added();
    }
}

/// The stream's answer: how to reset the stream if it is still open after it (NO_ERROR after
/// a whole answer: the client may stop sending its body, RFC 9113 §8.1).
async fn answer<H, F, B>(
    (handle, req): (&H, Request<H2Body>),
    shared: &SharedRef,
    id: u32,
    stall: Duration,
    report: &(dyn Fn(Incident) + Sync),
) -> Reason
where
    H: Fn(Request<H2Body>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + StreamBody,
    B::Error: Into<BodyError>,
{
    let mut answer = std::pin::pin!(handle(req));
    let response = tokio::select! {
        biased;
        response = poll_fn(|cx| unwound(|| answer.as_mut().poll(cx))) => response,
        _ = poll_fn(|cx| reset(shared, id, cx)) => return Reason::CANCEL,
    };
    let Ok(response) = response else {
        report(Incident::StreamPanic);
        return Reason::INTERNAL_ERROR;
    };
    let (mut parts, mut body) = response.into_parts();
    let answered_here = parts.extensions.get::<AnsweredHere>().is_some();
    if parts.extensions.get::<RefuseStream>().is_some() {
        report(Incident::UploadRefused);
        if answered_here {
            lock(shared).conn.answered_here(id);
        }
        return Reason::REFUSED_STREAM;
    }
    crate::proxy::headers::strip_hop_by_hop(&mut parts.headers);
    // The backend's fields held as bytes (already without hop-by-hop fields, their framing
    // as checked: the Content-Length is among them, or in the map, whenever it is known).
    let raw = body.take_raw_head();
    let end = body.is_end_stream();
    if raw.is_none()
        && !end
        && let Some(n) = body.size_hint().exact()
        && !parts.headers.contains_key(header::CONTENT_LENGTH)
    {
        parts.headers.insert(header::CONTENT_LENGTH, n.into());
    }
    {
        let mut s = lock(shared);
        if answered_here {
            s.conn.answered_here(id);
        }
        let fields = raw.iter().flat_map(|head| head.fields()).chain(
            parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
        );
        if !s.conn.send_head(id, parts.status.as_u16(), fields, end) {
            return Reason::CANCEL;
        }
        s.output_added();
    }
    // The head is sent: its fields (slices of the backend's read buffer) go now, not after
    // the body, so the buffer is free for the worker's next response.
    drop((raw, parts));
    if end {
        return Reason::NO_ERROR;
    }
    pipe(body, shared, id, stall, report).await
}

/// Whether the stream was reset (registering the waiter when not).
fn reset(shared: &SharedRef, id: u32, cx: &mut TaskContext<'_>) -> Poll<()> {
    let mut s = lock(shared);
    if s.gone || s.streams.get(&id).is_none_or(|io| io.reset.is_some()) || !s.conn.is_open(id) {
        return Poll::Ready(());
    }
    s.wait(id, cx);
    Poll::Pending
}

/// What a stream waiting to send finds.
enum Room {
    Ready,
    Gone,
}

/// Room to send on the stream: window, and output below its bound; or the stream is gone.
fn room(shared: &SharedRef, id: u32, cx: &mut TaskContext<'_>) -> Poll<Room> {
    let mut s = lock(shared);
    if s.gone || s.streams.get(&id).is_none_or(|io| io.reset.is_some()) || !s.conn.is_open(id) {
        return Poll::Ready(Room::Gone);
    }
    if s.conn.send_capacity(id) > 0 && s.conn.output().len() < MAX_OUTPUT {
        return Poll::Ready(Room::Ready);
    }
    s.wait(id, cx);
    Poll::Pending
}

/// Waits for room, bounded by the stall timeout; false when the stream is gone or stalled
/// (then reset by the caller's end).
async fn wait_room<B: StreamBody>(
    shared: &SharedRef,
    id: u32,
    stall: Duration,
    body: Pin<&mut B>,
) -> bool {
    match tokio::time::timeout(stall, poll_fn(|cx| room(shared, id, cx))).await {
        Ok(Room::Ready) => true,
        Ok(Room::Gone) => false,
        Err(_) => {
            tracing::debug!("h2 response stalled for {stall:?} without window: reset");
            body.cut_off(CutOff::Stalled);
            false
        }
    }
}

/// Writes a response body to its stream as the client's flow control allows; the reason to
/// reset the stream with if it is still open after.
async fn pipe<B>(
    body: B,
    shared: &SharedRef,
    id: u32,
    stall: Duration,
    report: &(dyn Fn(Incident) + Sync),
) -> Reason
where
    B: Body<Data = Bytes> + StreamBody,
    B::Error: Into<BodyError>,
{
    let mut body = std::pin::pin!(body);
    loop {
        if !wait_room(shared, id, stall, body.as_mut()).await {
            return Reason::CANCEL;
        }
        let frame = tokio::select! {
            biased;
            frame = poll_fn(|cx| unwound(|| body.as_mut().poll_frame(cx))) => frame,
            _ = poll_fn(|cx| reset(shared, id, cx)) => return Reason::CANCEL,
        };
        let Ok(frame) = frame else {
            body.as_mut().cut_off(CutOff::Panicked);
            report(Incident::StreamPanic);
            return Reason::INTERNAL_ERROR;
        };
        let frame = match frame {
            None => {
                let mut s = lock(shared);
                s.conn.send_data(id, &[], true);
                s.output_added();
                return Reason::NO_ERROR;
            }
            Some(Err(e)) => {
                tracing::debug!("response body broken: {}", e.into());
                return Reason::INTERNAL_ERROR;
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(mut data) => {
                let end = body.is_end_stream();
                if data.is_empty() && end {
                    let mut s = lock(shared);
                    s.conn.send_data(id, &[], true);
                    s.output_added();
                }
                while !data.is_empty() {
                    let sent = {
                        let mut s = lock(shared);
                        let n = s.conn.send_data(id, &data, end);
                        s.output_added();
                        n
                    };
                    let _ = data.split_to(sent);
                    if !data.is_empty() && !wait_room(shared, id, stall, body.as_mut()).await {
                        return Reason::CANCEL;
                    }
                }
                if end {
                    return Reason::NO_ERROR;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let mut s = lock(shared);
                    let fields = trailers
                        .iter()
                        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
                    s.conn.send_trailers(id, fields);
                    s.output_added();
                    return Reason::NO_ERROR;
                }
            }
        }
    }
}
