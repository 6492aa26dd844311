//! The listeners' tests: socket options set once on the listener, the address a connection
//! came in on, and the size of the futures each accepted connection is served by.

use super::*;

/// A wildcard listener names the address a connection came in on, as TCP mode's PROXY
/// header does; a listener bound to one address names that one without asking.
#[tokio::test]
async fn a_wildcard_listener_names_the_address_a_connection_came_in_on() {
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let bound = bound_address(&listener);
    assert!(bound.ip().is_unspecified());
    let _client = TcpStream::connect(("127.0.0.1", bound.port()))
        .await
        .unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let came_in = SocketAddr::from(([127, 0, 0, 1], bound.port()));
    assert_eq!(connected_to(&stream, bound), came_in);
    let named: SocketAddr = "127.0.0.9:80".parse().unwrap();
    assert_eq!(connected_to(&stream, named), named);
}

/// TCP_NODELAY is set on the listener, once, and accepted connections inherit it.
#[tokio::test]
async fn accepted_connections_have_nodelay() {
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    assert!(stream.nodelay().unwrap());
}

/// Every open connection holds its future, so an idle connection costs at least its size:
/// a guard against one growing by accident (2.6 KB when this bound was set).
#[tokio::test]
async fn connection_future_sizes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let (stream, peer) = listener.accept().await.unwrap();
    let ctx = Arc::new(Context::new(
        Arc::new(crate::snapshot::Store::new()),
        Arc::new(crate::metrics::Metrics::new()),
        crate::proxy::Settings::for_tests(),
    ));
    let entry = http::Entry::Port(addr);
    let h1 = super::super::h1::serve(stream, (peer, addr), entry, ctx.clone());
    let h1_size = std::mem::size_of_val(&h1);
    assert!(h1_size <= 4096, "h1::serve future: {h1_size} bytes");
    drop(h1);
    let (stream, peer) = {
        let _again = TcpStream::connect(addr).await.unwrap();
        listener.accept().await.unwrap()
    };
    let admission = ctx
        .admit(&Arc::new(ListenerSlots::default()), "test")
        .unwrap();
    let port = serve(stream, peer, addr, ctx.clone(), admission);
    let port_size = std::mem::size_of_val(&port);
    eprintln!("h1::serve future: {h1_size} bytes, service-port future: {port_size} bytes");
    assert!(
        port_size <= 4096,
        "service-port connection future: {port_size} bytes"
    );
}
