//! Fuzzes the Kafka face's request path: framing, header and body decoding at every API key
//! and version the dispatcher accepts, and the handlers behind them, over an in-memory node.
//! The first input byte picks whether the input is a frame (prefix included) or a body.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use squall_protocols::kafka::frame::{check_frame, FrameStatus, PREFIX_BYTES};
use squall_protocols::testing::MemNode;
use squall_protocols::kafka::{batch, KafkaBroker, KafkaConfig};

struct Env {
    rt: tokio::runtime::Runtime,
    broker: Arc<KafkaBroker<MemNode>>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let config = KafkaConfig {
            fetch_wait_ms_max: 0,
            ..KafkaConfig::default()
        };
        let broker = rt
            .block_on(KafkaBroker::new(Arc::new(MemNode::default()), config))
            .expect("broker");
        Env {
            rt,
            broker: Arc::new(broker),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let _ = batch::parse_batches(rest, 1 << 20);
    let body = if mode & 1 == 0 {
        match check_frame(rest, 1 << 20) {
            Ok(FrameStatus::Complete { body_len }) => &rest[PREFIX_BYTES..PREFIX_BYTES + body_len],
            _ => return,
        }
    } else {
        rest
    };
    let e = env();
    let b = e.broker.clone();
    let body = Bytes::copy_from_slice(body);
    e.rt.block_on(async move {
        let _ = tokio::time::timeout(Duration::from_millis(50), b.handle(body, "fuzz")).await;
    });
});
