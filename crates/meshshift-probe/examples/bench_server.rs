//! A minimal fast HTTP/1.1 server on 127.0.0.1 for load-generator comparisons
//! (`benches/prober_vs_wrk_oha.sh`): every request gets `200 ok` (2-byte body, keep-alive).
//!
//!     cargo run --release -p meshshift-probe --example bench_server -- [PORT] [THREADS]
//!
//! PORT 0 (the default) picks a free port; the first line on stdout is `listening on 127.0.0.1:PORT`.
//! THREADS (default 1) is the Tokio worker count: 1 runs a current-thread runtime.

use std::convert::Infallible;
use std::io::Write;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

async fn serve(port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().map(|a| a.parse().expect("PORT: a number")).unwrap_or(0);
    let threads: usize = args.next().map(|a| a.parse().expect("THREADS: a number")).unwrap_or(1);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
    .expect("runtime");
    if let Err(e) = runtime.block_on(serve(port)) {
        eprintln!("bench_server: {e}");
        std::process::exit(1);
    }
}
