//! The HTTP/2 server on loopback: a panicking stream reset alone, reused stream boxes, upload caps.

use super::streams::SPARE_STREAMS;
use super::*;
use std::sync::atomic::AtomicUsize;

/// A test answer's body: a whole one, or one whose first poll panics.
struct TestBody(Option<Bytes>, bool);

impl Body for TestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.1 {
            panic!("a body that panics (test)");
        }
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none() && !self.1
    }
}

impl StreamBody for TestBody {
    fn cut_off(self: Pin<&mut Self>, _: CutOff) {}

    fn take_raw_head(&mut self) -> Option<crate::proxy::upstream_h1::RawHead> {
        None
    }
}

/// A panic in one stream's handler, or in its body, resets that stream with INTERNAL_ERROR
/// and is reported; the connection's other streams are answered.
async fn a_panicking_stream_is_reset_alone_on(codec: bool) {
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let panics = AtomicUsize::new(0);
    let report = |incident| {
        assert_eq!(incident, Incident::StreamPanic);
        panics.fetch_add(1, Ordering::Relaxed);
    };
    let config = Config {
        max_header_list_size: 16 * 1024,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(5),
        codec,
    };
    let handle = |req: Request<H2Body>| {
        let path = req.uri().path().to_string();
        async move {
            if path == "/panic" {
                panic!("a handler that panics (test)");
            }
            let panicking_body = path == "/panic-body";
            Response::new(TestBody(Some(Bytes::from_static(b"ok")), panicking_body))
        }
    };
    let server = serve(server_io, &config, std::future::pending(), handle, &report);
    let client = async {
        let (mut sender, conn) = h2::client::handshake(client_io).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut answers = Vec::new();
        for path in ["/panic", "/ok", "/panic-body", "/ok"] {
            let req = Request::get(format!("http://test{path}")).body(()).unwrap();
            let (response, _) = sender.send_request(req, true).unwrap();
            answers.push(async move {
                let mut body = response.await?.into_body();
                let mut got = Vec::new();
                while let Some(data) = body.data().await {
                    got.extend_from_slice(&data?);
                }
                Ok::<_, h2::Error>(got)
            });
        }
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await.map_err(|e| e.reason()));
        }
        outcomes
    };
    let outcomes = tokio::select! {
        _ = server => panic!("the connection ended"),
        outcomes = tokio::time::timeout(Duration::from_secs(10), client) => outcomes.unwrap(),
    };
    let internal = Err(Some(h2::Reason::INTERNAL_ERROR));
    assert_eq!(outcomes[0], internal);
    assert_eq!(outcomes[1], Ok(b"ok".to_vec()));
    assert_eq!(outcomes[2], internal);
    assert_eq!(outcomes[3], Ok(b"ok".to_vec()));
    assert_eq!(panics.load(Ordering::Relaxed), 2);
}

/// Finished streams' boxes are reused for the next ones: waves of more concurrent streams
/// than `SPARE_STREAMS`, each answered with its own path after the others had time to
/// start, every answer its own stream's (none from a box's earlier occupant).
async fn streams_in_reused_boxes_each_get_their_own_answer_on(codec: bool) {
    let (server_io, client_io) = tokio::io::duplex(1024 * 1024);
    let incidents = AtomicUsize::new(0);
    let report = |_| {
        incidents.fetch_add(1, Ordering::Relaxed);
    };
    let config = Config {
        max_header_list_size: 16 * 1024,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(5),
        codec,
    };
    let handle = |req: Request<H2Body>| {
        let path = req.uri().path().to_string();
        async move {
            // Finish out of order, so boxes free up while others are still held.
            let n: u64 = path[1..].parse().unwrap_or(0);
            for _ in 0..n % 7 {
                tokio::task::yield_now().await;
            }
            Response::new(TestBody(Some(Bytes::from(path)), false))
        }
    };
    let server = serve(server_io, &config, std::future::pending(), handle, &report);
    let client = async {
        let (mut sender, conn) = h2::client::handshake(client_io).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        for wave in 0..3 {
            let mut answers = Vec::new();
            for i in 0..2 * SPARE_STREAMS + 3 {
                let path = format!("/{}", wave * 100 + i);
                let req = Request::get(format!("http://test{path}")).body(()).unwrap();
                let (response, _) = sender.send_request(req, true).unwrap();
                answers.push((path, response));
            }
            for (path, response) in answers {
                let mut body = response.await.unwrap().into_body();
                let mut got = Vec::new();
                while let Some(data) = body.data().await {
                    got.extend_from_slice(&data.unwrap());
                }
                assert_eq!(got, path.as_bytes());
            }
        }
    };
    tokio::select! {
        _ = server => panic!("the connection ended"),
        done = tokio::time::timeout(Duration::from_secs(10), client) => done.unwrap(),
    };
    assert_eq!(incidents.load(Ordering::Relaxed), 0);
}

/// A stream whose client still owes its body takes one of the connection's
/// `MAX_UNFINISHED_UPLOADS` places, and one past them is refused (REFUSED_STREAM) when its
/// answer says so; a body already received whole needs no place; a place comes back when
/// its body ends.
async fn unfinished_uploads_are_capped_and_whole_bodies_need_no_place_on(codec: bool) {
    use http_body_util::BodyExt;
    let (server_io, client_io) = tokio::io::duplex(1024 * 1024);
    let refused = AtomicUsize::new(0);
    let report = |incident| {
        assert_eq!(incident, Incident::UploadRefused);
        refused.fetch_add(1, Ordering::Relaxed);
    };
    let config = Config {
        max_header_list_size: 16 * 1024,
        handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(5),
        codec,
    };
    let handle = |mut req: Request<H2Body>| async move {
        if let Err(refusal) = req.body_mut().claim_upload().await {
            let mut response = Response::new(TestBody(None, false));
            response.extensions_mut().insert(refusal);
            return response;
        }
        let mut body = req.into_body();
        while let Some(Ok(_)) = body.frame().await {}
        Response::new(TestBody(Some(Bytes::from_static(b"ok")), false))
    };
    let server = serve(server_io, &config, std::future::pending(), handle, &report);
    let client = async {
        let (mut sender, conn) = h2::client::handshake(client_io).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let post = || Request::post("http://test/").body(()).unwrap();
        let outcome = |response: h2::client::ResponseFuture| async move {
            response
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.reason())
        };
        // Whole bodies, all sent at once: none waits for its client, none is refused.
        let mut whole = Vec::new();
        for _ in 0..2 * MAX_UNFINISHED_UPLOADS {
            let (response, mut body) = sender.send_request(post(), false).unwrap();
            body.send_data(Bytes::from_static(b"x"), true).unwrap();
            whole.push(response);
        }
        for response in whole {
            assert_eq!(outcome(response).await, Ok(200));
        }
        // Bodies that do not come: the places fill, the rest are refused.
        let mut bodies = Vec::new();
        let mut answers = Vec::new();
        for _ in 0..MAX_UNFINISHED_UPLOADS + 4 {
            let (response, body) = sender.send_request(post(), false).unwrap();
            bodies.push(body);
            answers.push(tokio::spawn(outcome(response)));
        }
        let held: Vec<_> = answers.into_iter().zip(bodies).collect();
        // The refusals come without the held bodies ending.
        let mut refusals = 0;
        while refusals < 4 {
            refusals = 0;
            for (answer, _) in &held {
                refusals += usize::from(answer.is_finished());
            }
            tokio::task::yield_now().await;
        }
        let mut ended = Vec::new();
        for (answer, mut body) in held {
            if answer.is_finished() {
                assert_eq!(answer.await.unwrap(), Err(Some(h2::Reason::REFUSED_STREAM)));
            } else {
                body.send_data(Bytes::from_static(b"x"), true).unwrap();
                ended.push(answer);
            }
        }
        assert_eq!(ended.len(), MAX_UNFINISHED_UPLOADS);
        for answer in ended {
            assert_eq!(answer.await.unwrap(), Ok(200));
        }
        // Their places came back.
        let (response, mut body) = sender.send_request(post(), false).unwrap();
        let response = tokio::spawn(outcome(response));
        tokio::task::yield_now().await;
        body.send_data(Bytes::from_static(b"x"), true).unwrap();
        assert_eq!(response.await.unwrap(), Ok(200));
    };
    tokio::select! {
        _ = server => panic!("the connection ended"),
        done = tokio::time::timeout(Duration::from_secs(10), client) => done.unwrap(),
    };
    assert_eq!(refused.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn a_panicking_stream_is_reset_alone() {
    a_panicking_stream_is_reset_alone_on(false).await
}

/// The same on our own codec.
#[tokio::test]
async fn a_panicking_stream_is_reset_alone_on_the_codec() {
    a_panicking_stream_is_reset_alone_on(true).await
}

#[tokio::test]
async fn streams_in_reused_boxes_each_get_their_own_answer() {
    streams_in_reused_boxes_each_get_their_own_answer_on(false).await
}

/// The same on our own codec.
#[tokio::test]
async fn streams_in_reused_boxes_each_get_their_own_answer_on_the_codec() {
    streams_in_reused_boxes_each_get_their_own_answer_on(true).await
}

#[tokio::test]
async fn unfinished_uploads_are_capped_and_whole_bodies_need_no_place() {
    unfinished_uploads_are_capped_and_whole_bodies_need_no_place_on(false).await
}

/// The same on our own codec.
#[tokio::test]
async fn unfinished_uploads_are_capped_and_whole_bodies_need_no_place_on_the_codec() {
    unfinished_uploads_are_capped_and_whole_bodies_need_no_place_on(true).await
}
