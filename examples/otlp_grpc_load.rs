//! Offers one prepared OTLP `ExportLogsServiceRequest` (from examples/protocol_bodies.rs) to
//! LogsService/Export at a fixed rate, open loop: a call starts at each tick whether or not the
//! earlier ones have been answered, as vegeta does for the HTTP paths. telemetrygen cannot stand in
//! for this: it builds every record through the Go SDK and tops out below the server's ceiling on a
//! shared two-core machine.
//!
//! Prints `OK TOTAL P50_MS P99_MS` (calls answered OK, calls made, latency percentiles).
//!
//! `cargo run --example otlp_grpc_load -- ADDR BODY_FILE CALLS_PER_SECOND SECONDS`

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use prost::Message;
use tonic::codec::ProstCodec;
use tonic::codegen::http::uri::PathAndQuery;

const EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: otlp_grpc_load ADDR BODY_FILE CALLS_PER_SECOND SECONDS";
    let addr = args.next().expect(usage);
    let body = std::fs::read(args.next().expect(usage)).expect("the body file can be read");
    let rate: f64 = args.next().expect(usage).parse().expect("CALLS_PER_SECOND is a number");
    let seconds: f64 = args.next().expect(usage).parse().expect("SECONDS is a number");
    let request = ExportLogsServiceRequest::decode(&body[..]).expect("the body is an ExportLogsServiceRequest");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("ADDR is host:port")
        .connect()
        .await
        .expect("the gRPC listener accepts a connection");

    let calls = (rate * seconds).round().max(1.0) as u64;
    let every = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut running = Vec::with_capacity(calls as usize);
    for i in 0..calls {
        tokio::time::sleep_until(start + every.mul_f64(i as f64)).await;
        let mut client = tonic::client::Grpc::new(channel.clone());
        let request = tonic::Request::new(request.clone());
        running.push(tokio::spawn(async move {
            let sent = Instant::now();
            client.ready().await.map_err(|e| e.to_string())?;
            let codec = ProstCodec::<ExportLogsServiceRequest, ExportLogsServiceResponse>::default();
            let answer = client.unary(request, PathAndQuery::from_static(EXPORT), codec).await;
            let elapsed = sent.elapsed();
            match answer {
                Ok(reply) if reply.get_ref().partial_success.as_ref().is_none_or(|p| p.rejected_log_records == 0) => {
                    Ok(elapsed)
                }
                Ok(reply) => Err(format!("partial success: {:?}", reply.get_ref().partial_success)),
                Err(status) => Err(status.to_string()),
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut first_error = None;
    for call in running {
        match call.await.expect("a call does not panic") {
            Ok(elapsed) => latencies.push(elapsed),
            Err(e) => _ = first_error.get_or_insert(e),
        }
    }
    if let Some(e) = first_error {
        eprintln!("otlp_grpc_load: {} of {calls} calls failed; the first: {e}", calls - latencies.len() as u64);
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies.get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)).map_or(0, |d| d.as_millis())
    };
    println!("{} {calls} {} {}", latencies.len(), pct(0.5), pct(0.99));
}
