//! The floor a probe loop is compared with: what one request costs when nothing else is
//! done. One thread, blocking `std::net`, a fresh connection per request, `GET` of the
//! given path, the whole answer read until the server closes, paced at a fixed rate.
//!
//! `floor ADDRESS PATH RATE SECONDS` prints `requests=N failed=F seconds=S` on stdout at
//! the end; its CPU is read by the caller (`bench/run.py`) from `/proc`, like the
//! exporter's, so both figures are counted the same way.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: floor ADDRESS PATH RATE SECONDS   (floor 127.0.0.1:8080 /erp/x 1000 60)");
        std::process::exit(2);
    }
    let address: SocketAddr = args[1].parse().expect("ADDRESS: host:port");
    let path = &args[2];
    let rate: f64 = args[3].parse().expect("RATE: requests per second");
    let seconds: f64 = args[4].parse().expect("SECONDS");
    // The same head as the exporter's probes send (Host, User-Agent, Connection, Accept),
    // built once: the floor pays for the request, not for formatting it.
    let head = format!(
        "GET {path} HTTP/1.1\r\nhost: {address}\r\nuser-agent: floor\r\nconnection: close\r\naccept: application/json, text/plain;q=0.9, */*;q=0.5\r\n\r\n"
    );
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut next = start;
    let mut answer = Vec::with_capacity(4096);
    let (mut requests, mut failed) = (0u64, 0u64);
    while next < end {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        // A fixed plan, as the exporter's: a late request does not shift the next ones.
        next += period;
        requests += 1;
        answer.clear();
        if !request(address, head.as_bytes(), &mut answer) || !answer.starts_with(b"HTTP/1.1 200") {
            failed += 1;
        }
    }
    println!(
        "requests={requests} failed={failed} seconds={:.3}",
        start.elapsed().as_secs_f64()
    );
}

/// Connect, write the head, read until the server closes (it does: `connection: close`).
fn request(address: SocketAddr, head: &[u8], answer: &mut Vec<u8>) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    // As the exporter: a small request, sent at once.
    let _ = stream.set_nodelay(true);
    stream.write_all(head).is_ok() && stream.read_to_end(answer).is_ok()
}
