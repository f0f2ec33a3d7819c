//! Bad input over the socket against the real `squall serve`: truncated frames, lengths past
//! `socket.request.max.bytes`, unknown API keys and versions, a corrupt CRC, an unknown
//! compression codec, and produce to a missing partition. Each gets the right Kafka error code or
//! a closed connection, the broker never dies, and a librdkafka producer running at the same time
//! is not disturbed (every record it sent is acknowledged and read back).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use squall_integration_tests::Squall;

fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

/// Reads one response frame, or `None` if the broker closed the connection.
fn read_frame(s: &mut TcpStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
    s.read_exact(&mut body).ok()?;
    Some(Bytes::from(body))
}

fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

fn request<R: Encodable>(key: ApiKey, version: i16, req: &R) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i32(0);
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("bad")))
        .encode(&mut b, key.request_header_version(version))
        .expect("header");
    req.encode(&mut b, version).expect("body");
    let n = (b.len() - 4) as i32;
    b[..4].copy_from_slice(&n.to_be_bytes());
    b.to_vec()
}

fn batch(value: &str) -> Bytes {
    let r = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1,
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: Default::default(),
    };
    let mut b = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut b,
        [&r],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    b.freeze()
}

/// Produces `records` to `topic`/`partition` over a raw socket; the partition's error code.
fn raw_produce(
    addr: SocketAddr,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> anyhow::Result<i16> {
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])]);
    let mut s = connect(addr)?;
    s.write_all(&request(ApiKey::Produce, 9, &req))?;
    let mut f = read_frame(&mut s).context("no produce response")?;
    let _ = ResponseHeader::decode(&mut f, ApiKey::Produce.response_header_version(9))?;
    let r = ProduceResponse::decode(&mut f, 9)?;
    Ok(r.responses[0].partition_responses[0].error_code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_or_closed_connections_and_never_hurts_other_clients(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Squall::start(dir.path(), &[])?;
    let addr = *s.addrs.get("kafka").context("no kafka address")?;
    let bootstrap = addr.to_string();

    // A well-behaved client keeps producing the whole time.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let good = tokio::spawn(async move {
        let mut acked = 0;
        for i in 0..200 {
            let v = format!("good{i}");
            if producer
                .send(
                    FutureRecord::to("good").key("k").payload(&v),
                    Duration::from_secs(20),
                )
                .await
                .is_ok()
            {
                acked += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        acked
    });

    let bad = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for _round in 0..5 {
            // Length far past socket.request.max.bytes: closed without reading a body.
            let mut c = connect(addr)?;
            c.write_all(&0x7fff_fff0i32.to_be_bytes())?;
            assert!(closed(&mut c), "oversize frame closes the connection");
            // Negative length.
            let mut c = connect(addr)?;
            c.write_all(&(-5i32).to_be_bytes())?;
            assert!(closed(&mut c));
            // Truncated frame, then the client goes away: nothing to answer, nothing breaks.
            let mut c = connect(addr)?;
            c.write_all(&[0, 0, 0, 50, 0, 18, 0, 3])?;
            drop(c);
            // Unknown API key: closed.
            let mut c = connect(addr)?;
            c.write_all(&[0, 0, 0, 10, 0x27, 0x0f, 0, 0, 0, 0, 0, 1, 0xff, 0xff])?;
            assert!(closed(&mut c), "unknown api key closes the connection");
            // Unknown Fetch version: closed; unknown ApiVersions version: v0 answer with 35.
            let mut c = connect(addr)?;
            c.write_all(&[0, 0, 0, 10, 0, 1, 0, 99, 0, 0, 0, 1, 0xff, 0xff])?;
            assert!(closed(&mut c));
            let mut c = connect(addr)?;
            c.write_all(&[0, 0, 0, 10, 0, 18, 0, 99, 0, 0, 0, 9, 0xff, 0xff])?;
            let mut f = read_frame(&mut c).context("ApiVersions v99 answered")?;
            assert_eq!(f.get_i32(), 9);
            assert_eq!(f.get_i16(), 35, "UNSUPPORTED_VERSION");
            // A header that claims more bytes than the frame holds: closed.
            let mut c = connect(addr)?;
            c.write_all(&[0, 0, 0, 12, 0, 3, 0, 12, 0, 0, 0, 1, 0, 50, b'x', 0])?;
            assert!(closed(&mut c));
        }
        // Data-path errors come back as Kafka error codes.
        let ok = batch("fine");
        assert_eq!(raw_produce(addr, "good", 0, ok.clone())?, 0);
        let mut crc = ok.to_vec();
        let n = crc.len();
        crc[n - 1] ^= 0x55;
        assert_eq!(
            raw_produce(addr, "good", 0, Bytes::from(crc))?,
            2,
            "CORRUPT_MESSAGE for a bad CRC"
        );
        let mut codec = ok.to_vec();
        codec[22] |= 6;
        let c = crc32c::crc32c(&codec[21..]);
        codec[17..21].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            raw_produce(addr, "good", 0, Bytes::from(codec))?,
            2,
            "CORRUPT_MESSAGE for codec 6"
        );
        assert_eq!(
            raw_produce(addr, "good", 9, ok.clone())?,
            3,
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(raw_produce(addr, "no-such-topic", 0, ok)?, 3);
        Ok(())
    });
    bad.await??;
    let acked = good.await?;
    assert_eq!(acked, 200, "the well-behaved producer was never disturbed");

    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "chk")
        .create()?;
    let (lo, hi) = c.fetch_watermarks("good", 0, Duration::from_secs(20))?;
    assert_eq!(
        (lo, hi),
        (0, 201),
        "200 good records plus the one raw valid batch, nothing from the bad ones"
    );
    assert!(s.addrs.contains_key("kafka"));
    Ok(())
}
