//! The real control-API client (`HttpControl`) against a hostile job: a job runs the user's
//! image, so its answers are input. An answer larger than `MAX_ANSWER_BYTES` is refused
//! instead of being read into the memory of the one operator every namespace depends on.

use cairn_contract::control::JobStatus;
use cairn_operator::control::{ControlApi, ControlError, Endpoint, HttpControl, MAX_ANSWER_BYTES};
use std::io::{Read, Write};
use std::net::TcpListener;

/// Serves one HTTP answer whose body is `body` (on a plain thread), then closes.
async fn serve_once(body: Vec<u8>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut request = vec![0u8; 4096];
        let _ = socket.read(&mut request);
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        // The client may hang up early (that is the point of the bound): ignore write errors.
        let _ = socket.write_all(head.as_bytes());
        let _ = socket.write_all(&body);
    });
    addr
}

/// A status as the worker serializes it (the contract's type), after `padding` spaces.
fn report(padding: usize) -> Vec<u8> {
    // JSON allows any amount of whitespace: before the bound, this parsed as a valid answer.
    let mut body = vec![b' '; padding];
    let status = JobStatus {
        job: "count".into(),
        spec_hash: "h".into(),
        partitions: 2,
        parallelism: 1,
        observed_partitions: Some(3),
        ..Default::default()
    };
    body.extend_from_slice(&serde_json::to_vec(&status).unwrap());
    body
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let addr = serve_once(report(4 * MAX_ANSWER_BYTES)).await;
    let at = Endpoint {
        addr,
        token: "t".into(),
    };
    let err = HttpControl::default().status(&at).await.unwrap_err();
    assert_eq!(
        err,
        ControlError::Malformed {
            addr,
            reason: format!("answer longer than {MAX_ANSWER_BYTES} bytes"),
        }
    );
}

#[tokio::test]
async fn an_answer_within_the_bound_is_read() {
    let addr = serve_once(report(1000)).await;
    let at = Endpoint {
        addr,
        token: "t".into(),
    };
    let report = HttpControl::default().status(&at).await.unwrap();
    assert_eq!((report.spec_hash.as_str(), report.partitions), ("h", 2));
    // Every field the worker sends arrives (the operator once read `observedInputPartitions`
    // where the worker wrote `observedPartitions`, and the field stayed empty).
    assert_eq!(report.observed_partitions, Some(3));
}
