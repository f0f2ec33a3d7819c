//! Unit tests of the Kafka face through its real dispatcher ([`KafkaBroker::handle`]) over an
//! in-memory node: requests are encoded with the `kafka-protocol` client encoders at the version
//! under test and the response bytes are decoded at that version, so every served version's
//! encoding is exercised. Golden bytes pin the answers old clients depend on (ApiVersions
//! without tagged fields, the v0 fallback, Produce v0–v2 UNSUPPORTED_VERSION).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::broker::code;
use super::groups::{Coordinator, GroupState, JoinRequest, Pending};
use super::versions::SERVED;
use super::{KafkaBroker, KafkaConfig};
use crate::testing::MemNode;

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A classic-protocol JoinGroup of `member` (empty: a new member) to `group`: consumer
/// protocol "range", 10 s session and rebalance timeouts.
fn join_request(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(sb(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(sb(member))
        .with_protocol_type(sb("consumer"))
        .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
        )
        .with_name(sb("range"))
        .with_metadata(Bytes::from_static(b"m"))])
}

async fn broker() -> Arc<KafkaBroker<MemNode>> {
    Arc::new(
        KafkaBroker::new(Arc::new(MemNode::default()), KafkaConfig::default())
            .await
            .expect("broker"),
    )
}

fn frame<R: Encodable + HeaderVersion>(key: ApiKey, version: i16, req: &R) -> Bytes {
    let mut b = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(sb("test")));
    header
        .encode(&mut b, R::header_version(version))
        .expect("header");
    req.encode(&mut b, version)
        .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"));
    b.freeze()
}

async fn call<R: Request>(b: &KafkaBroker<MemNode>, version: i16, req: R) -> R::Response {
    let key = ApiKey::try_from(R::KEY).expect("key");
    let out = b
        .handle(frame(key, version, &req), "/127.0.0.1")
        .await
        .unwrap_or_else(|e| panic!("{key:?} v{version}: {e}"))
        .expect("a response");
    let mut bytes = out.freeze();
    let len = bytes.get_i32() as usize;
    assert_eq!(len, bytes.len(), "length prefix");
    let _h = ResponseHeader::decode(&mut bytes, key.response_header_version(version))
        .expect("resp header");
    assert_eq!(_h.correlation_id, 7);
    let r = R::Response::decode(&mut bytes, version).expect("response decodes");
    assert_eq!(bytes.remaining(), 0, "{key:?} v{version}: trailing bytes");
    r
}

fn records(
    values: &[(&str, &str)],
    ts0: i64,
    pid: i64,
    epoch: i16,
    seq: i32,
    c: Compression,
) -> Bytes {
    let recs: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // offset − sequence must be constant or the reference encoder splits the batch.
            sequence: if seq < 0 {
                i as i32 - 1
            } else {
                seq + i as i32
            },
            timestamp: ts0 + i as i64,
            key: (!k.is_empty()).then(|| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: c,
        },
    )
    .expect("encode");
    buf.freeze()
}

fn produce_req(topic: &str, partition: i32, recs: Bytes, acks: i16) -> ProduceRequest {
    use produce_request::{PartitionProduceData, TopicProduceData};
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(sb(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(recs))])])
}

async fn produce(b: &KafkaBroker<MemNode>, topic: &str, p: i32, recs: Bytes) -> (i16, i64) {
    let r = call(b, 9, produce_req(topic, p, recs, -1)).await;
    let pr = &r.responses[0].partition_responses[0];
    (pr.error_code, pr.base_offset)
}

fn fetch_req(topic: &str, p: i32, offset: i64, wait_ms: i32, part_max: i32) -> FetchRequest {
    use fetch_request::{FetchPartition, FetchTopic};
    FetchRequest::default()
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(sb(topic)))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(part_max)])])
}

/// (error, high watermark, decoded (offset, value) pairs) of a single-partition fetch.
async fn fetch(
    b: &KafkaBroker<MemNode>,
    topic: &str,
    p: i32,
    offset: i64,
) -> (i16, i64, Vec<(i64, String)>) {
    let r = call(b, 12, fetch_req(topic, p, offset, 0, 1 << 20)).await;
    let pd = &r.responses[0].partitions[0];
    let mut out = Vec::new();
    if let Some(mut recs) = pd.records.clone() {
        while recs.has_remaining() {
            let set = RecordBatchDecoder::decode(&mut recs).expect("stored batch decodes");
            for r in set.records {
                out.push((
                    r.offset,
                    String::from_utf8_lossy(&r.value.unwrap_or_default()).to_string(),
                ));
            }
        }
    }
    (pd.error_code, pd.high_watermark, out)
}

async fn create(
    b: &KafkaBroker<MemNode>,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> i16 {
    use create_topics_request::{CreatableTopic, CreatableTopicConfig};
    let t = CreatableTopic::default()
        .with_name(TopicName(sb(name)))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(sb(k))
                        .with_value(Some(sb(v)))
                })
                .collect(),
        );
    let r = call(
        b,
        5,
        CreateTopicsRequest::default()
            .with_topics(vec![t])
            .with_timeout_ms(1000),
    )
    .await;
    r.topics[0].error_code
}

#[tokio::test]
async fn api_versions_v3_golden_bytes_have_no_tagged_fields() {
    let b = broker().await;
    let out = b
        .handle(
            frame(
                ApiKey::ApiVersions,
                3,
                &ApiVersionsRequest::default()
                    .with_client_software_name(sb("t"))
                    .with_client_software_version(sb("1")),
            ),
            "h",
        )
        .await
        .expect("ok")
        .expect("resp");
    let mut expected = BytesMut::new();
    expected.put_i32(7); // correlation id (response header v0 for ApiVersions)
    expected.put_i16(0); // error
    expected.put_u8(SERVED.len() as u8 + 1); // compact array length
    for s in SERVED {
        expected.put_i16(s.key as i16);
        expected.put_i16(s.min);
        expected.put_i16(s.max);
        expected.put_u8(0); // no tagged fields in the entry
    }
    expected.put_i32(0); // throttle
    expected.put_u8(0); // no tagged fields at all (old librdkafka needs this)
    assert_eq!(&out[4..], &expected[..]);
    assert_eq!(
        i32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize,
        expected.len()
    );
    // Produce is advertised from v0 (old librdkafka's compression check).
    assert_eq!((SERVED[0].key, SERVED[0].min), (ApiKey::Produce, 0));
}

#[tokio::test]
async fn api_versions_unknown_version_gets_the_v0_format_with_unsupported_version() {
    let b = broker().await;
    let mut req = BytesMut::new();
    req.put_i16(18);
    req.put_i16(99);
    req.put_i32(42);
    req.put_i16(-1);
    req.put_slice(&[0, 0, 0]); // garbage the broker must not need to parse
    let out = b
        .handle(req.freeze(), "h")
        .await
        .expect("ok")
        .expect("resp");
    let mut body = out.freeze();
    body.advance(4);
    assert_eq!(body.get_i32(), 42);
    assert_eq!(body.get_i16(), code::UNSUPPORTED_VERSION);
    assert_eq!(body.get_i32(), SERVED.len() as i32);
    assert_eq!(body.remaining(), SERVED.len() * 6);
}

#[tokio::test]
async fn produce_v0_to_v2_get_unsupported_version_in_their_own_format() {
    let b = broker().await;
    for v in 0..=2i16 {
        let mut req = BytesMut::new();
        req.put_i16(0);
        req.put_i16(v);
        req.put_i32(5);
        req.put_i16(1);
        req.put_u8(b'c');
        req.put_i16(1); // acks
        req.put_i32(1000);
        req.put_i32(1); // one topic
        req.put_i16(1);
        req.put_u8(b't');
        req.put_i32(1); // one partition
        req.put_i32(3);
        req.put_i32(4);
        req.put_slice(&[1, 2, 3, 4]); // an (unparsed) message set
        let out = b
            .handle(req.freeze(), "h")
            .await
            .expect("ok")
            .expect("resp");
        let mut golden = BytesMut::new();
        golden.put_i32(5);
        golden.put_i32(1);
        golden.put_i16(1);
        golden.put_u8(b't');
        golden.put_i32(1);
        golden.put_i32(3);
        golden.put_i16(code::UNSUPPORTED_VERSION);
        golden.put_i64(-1);
        if v >= 2 {
            golden.put_i64(-1);
        }
        if v >= 1 {
            golden.put_i32(0);
        }
        assert_eq!(&out[4..], &golden[..], "v{v}");
    }
}

#[tokio::test]
async fn unknown_api_keys_versions_and_garbage_close_the_connection() {
    let b = broker().await;
    let mut unknown = BytesMut::new();
    unknown.put_i16(9999);
    unknown.put_i16(0);
    unknown.put_i32(1);
    assert!(b.handle(unknown.freeze(), "h").await.is_err());
    let mut bad_version = BytesMut::new();
    bad_version.put_i16(1);
    bad_version.put_i16(99);
    bad_version.put_i32(1);
    bad_version.put_i16(-1);
    assert!(b.handle(bad_version.freeze(), "h").await.is_err());
    // A Metadata v12 header followed by a truncated body.
    let mut trunc = frame(ApiKey::Metadata, 12, &MetadataRequest::default()).to_vec();
    trunc.truncate(trunc.len() - 1);
    trunc.push(0xff);
    trunc.push(0xff);
    assert!(b.handle(Bytes::from(trunc), "h").await.is_err());
    assert!(b.handle(Bytes::from_static(&[0, 3]), "h").await.is_err());
    // Transactions are not advertised: their keys close the connection too.
    let mut txn = BytesMut::new();
    txn.put_i16(ApiKey::EndTxn as i16);
    txn.put_i16(0);
    txn.put_i32(1);
    assert!(b.handle(txn.freeze(), "h").await.is_err());
}

#[tokio::test]
async fn every_served_version_answers_a_default_request_with_a_decodable_response() {
    let b = broker().await;
    assert_eq!(create(&b, "rt", 1, &[]).await, 0);
    macro_rules! each {
        ($key:expr, $req:expr) => {{
            let s = super::versions::served($key).expect("served");
            let min = if $key == ApiKey::Produce {
                super::versions::PRODUCE_DECODED_MIN
            } else {
                s.min
            };
            for v in min..=s.max {
                let f = $req;
                let _ = call(&b, v, f(v)).await;
            }
        }};
    }
    each!(ApiKey::ApiVersions, |_v: i16| ApiVersionsRequest::default());
    each!(ApiKey::Metadata, |v: i16| MetadataRequest::default()
        .with_topics(if v == 0 { Some(vec![]) } else { None })
        .with_allow_auto_topic_creation(v < 4));
    each!(ApiKey::Produce, |_v: i16| produce_req(
        "rt",
        0,
        records(&[("k", "v")], 1, -1, -1, -1, Compression::None),
        1
    ));
    each!(ApiKey::Fetch, |_v: i16| fetch_req("rt", 0, 0, 0, 1 << 20));
    each!(ApiKey::ListOffsets, |_v: i16| {
        use list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
        ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(sb("rt")))
            .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])])
    });
    each!(ApiKey::FindCoordinator, |v: i16| if v >= 4 {
        FindCoordinatorRequest::default().with_coordinator_keys(vec![sb("g")])
    } else {
        FindCoordinatorRequest::default().with_key(sb("g"))
    });
    each!(ApiKey::JoinGroup, |_v: i16| JoinGroupRequest::default()
        .with_group_id(GroupId(sb(""))));
    each!(ApiKey::SyncGroup, |_v: i16| SyncGroupRequest::default()
        .with_group_id(GroupId(sb("nog"))));
    each!(ApiKey::Heartbeat, |_v: i16| HeartbeatRequest::default()
        .with_group_id(GroupId(sb("nog"))));
    each!(ApiKey::LeaveGroup, |_v: i16| LeaveGroupRequest::default()
        .with_group_id(GroupId(sb("nog"))));
    each!(ApiKey::OffsetCommit, |_v: i16| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(sb("g")))
            .with_generation_id_or_member_epoch(-1)
    });
    each!(ApiKey::OffsetFetch, |v: i16| if v >= 8 {
        OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(sb("g")))
                .with_topics(None),
        ])
    } else if v >= 2 {
        OffsetFetchRequest::default()
            .with_group_id(GroupId(sb("g")))
            .with_topics(None)
    } else {
        OffsetFetchRequest::default().with_group_id(GroupId(sb("g")))
    });
    each!(ApiKey::ListGroups, |_v: i16| ListGroupsRequest::default());
    each!(ApiKey::DescribeGroups, |_v: i16| {
        DescribeGroupsRequest::default().with_groups(vec![GroupId(sb("g"))])
    });
    each!(ApiKey::DeleteGroups, |_v: i16| {
        DeleteGroupsRequest::default().with_groups_names(vec![GroupId(sb("nog"))])
    });
    each!(
        ApiKey::CreateTopics,
        |_v: i16| CreateTopicsRequest::default()
    );
    each!(
        ApiKey::DeleteTopics,
        |_v: i16| DeleteTopicsRequest::default()
    );
    each!(ApiKey::CreatePartitions, |_v: i16| {
        CreatePartitionsRequest::default()
    });
    each!(ApiKey::DeleteRecords, |_v: i16| {
        DeleteRecordsRequest::default()
    });
    each!(ApiKey::InitProducerId, |_v: i16| {
        InitProducerIdRequest::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    });
    each!(ApiKey::DescribeConfigs, |_v: i16| {
        use describe_configs_request::DescribeConfigsResource;
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(sb("rt"))
            .with_configuration_keys(None)])
    });
    each!(ApiKey::IncrementalAlterConfigs, |_v: i16| {
        IncrementalAlterConfigsRequest::default()
    });
    each!(
        ApiKey::AlterConfigs,
        |_v: i16| AlterConfigsRequest::default()
    );
    each!(ApiKey::DescribeCluster, |_v: i16| {
        DescribeClusterRequest::default()
    });
}

#[tokio::test]
async fn produce_fetch_roundtrip_keeps_batches_whole_and_assigns_dense_offsets() {
    let b = broker().await;
    // Metadata auto-creates the topic.
    let md = call(
        &b,
        12,
        MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(sb("t1")))),
        ])),
    )
    .await;
    assert_eq!(md.topics[0].error_code, 0);
    assert_eq!(md.topics[0].partitions.len(), 1);
    let b1 = records(
        &[("a", "0"), ("b", "1"), ("c", "2")],
        1000,
        -1,
        -1,
        -1,
        Compression::Gzip,
    );
    let b2 = records(
        &[("d", "3"), ("e", "4")],
        2000,
        -1,
        -1,
        -1,
        Compression::Zstd,
    );
    assert_eq!(produce(&b, "t1", 0, b1.clone()).await, (0, 0));
    assert_eq!(produce(&b, "t1", 0, b2).await, (0, 3));
    let (e, hw, recs) = fetch(&b, "t1", 0, 0).await;
    assert_eq!((e, hw), (0, 5));
    assert_eq!(
        recs,
        vec![
            (0, "0".into()),
            (1, "1".into()),
            (2, "2".into()),
            (3, "3".into()),
            (4, "4".into())
        ]
    );
    // A fetch inside the first batch returns that whole batch (the client skips offsets < 1).
    let (_, _, recs) = fetch(&b, "t1", 0, 1).await;
    assert_eq!(recs.first().map(|r| r.0), Some(0));
    // Stored bytes are the producer's bytes, apart from the base offset.
    let r = call(&b, 12, fetch_req("t1", 0, 0, 0, 1)).await;
    let got = r.responses[0].partitions[0]
        .records
        .clone()
        .expect("records");
    assert_eq!(
        &got[8..],
        &b1[8..],
        "first batch returned byte for byte (KIP-74: at least one batch)"
    );
    assert_eq!(
        got.len(),
        b1.len(),
        "partition_max_bytes=1 still returns exactly one batch"
    );
    // At the end: empty; past the end: OFFSET_OUT_OF_RANGE.
    assert_eq!(fetch(&b, "t1", 0, 5).await.2.len(), 0);
    assert_eq!(fetch(&b, "t1", 0, 6).await.0, code::OFFSET_OUT_OF_RANGE);
    assert_eq!(
        fetch(&b, "t1", 1, 0).await.0,
        code::UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        fetch(&b, "nope", 0, 0).await.0,
        code::UNKNOWN_TOPIC_OR_PARTITION
    );
}

#[tokio::test]
async fn bad_batches_get_the_right_error_codes_and_store_nothing() {
    let b = broker().await;
    assert_eq!(create(&b, "t", 2, &[("max.message.bytes", "200")]).await, 0);
    let good = records(&[("k", "v")], 1, -1, -1, -1, Compression::None);
    let mut crc = good.to_vec();
    let n = crc.len();
    crc[n - 1] ^= 1;
    assert_eq!(
        produce(&b, "t", 0, Bytes::from(crc)).await.0,
        code::CORRUPT_MESSAGE
    );
    let mut codec = good.to_vec();
    codec[22] |= 7;
    let c = crc32c::crc32c(&codec[21..]);
    codec[17..21].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        produce(&b, "t", 0, Bytes::from(codec)).await.0,
        code::CORRUPT_MESSAGE
    );
    assert_eq!(
        produce(&b, "t", 0, good.slice(..good.len() - 3)).await.0,
        code::CORRUPT_MESSAGE
    );
    let big = records(&[("k", &"x".repeat(500))], 1, -1, -1, -1, Compression::None);
    assert_eq!(produce(&b, "t", 0, big).await.0, code::MESSAGE_TOO_LARGE);
    assert_eq!(
        produce(&b, "t", 7, good.clone()).await.0,
        code::UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        produce(&b, "missing", 0, good.clone()).await.0,
        code::UNKNOWN_TOPIC_OR_PARTITION
    );
    let mut magic1 = good.to_vec();
    magic1[16] = 1;
    assert_eq!(
        produce(&b, "t", 0, Bytes::from(magic1)).await.0,
        code::UNSUPPORTED_FOR_MESSAGE_FORMAT
    );
    let r = call(&b, 9, produce_req("t", 0, good.clone(), 5)).await;
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        code::INVALID_REQUIRED_ACKS
    );
    assert_eq!(fetch(&b, "t", 0, 0).await.1, 0, "nothing stored");
    assert_eq!(produce(&b, "t", 0, good).await, (0, 0));
}

#[tokio::test]
async fn acks_zero_gets_no_response_but_is_stored() {
    let b = broker().await;
    assert_eq!(create(&b, "a0", 1, &[]).await, 0);
    let req = produce_req(
        "a0",
        0,
        records(&[("k", "v")], 1, -1, -1, -1, Compression::None),
        0,
    );
    let out = b
        .handle(frame(ApiKey::Produce, 9, &req), "h")
        .await
        .expect("ok");
    assert!(out.is_none());
    assert_eq!(fetch(&b, "a0", 0, 0).await.1, 1);
}

#[tokio::test]
async fn idempotent_producer_duplicates_gaps_and_fencing() {
    let b = broker().await;
    assert_eq!(create(&b, "idem", 1, &[]).await, 0);
    let init = call(
        &b,
        4,
        InitProducerIdRequest::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
            .with_transaction_timeout_ms(-1),
    )
    .await;
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    let init2 = call(
        &b,
        4,
        InitProducerIdRequest::default()
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )
    .await;
    assert_ne!(init2.producer_id.0, pid, "ids are unique");
    let first = records(&[("k", "0"), ("k", "1")], 1, pid, 0, 0, Compression::None);
    assert_eq!(produce(&b, "idem", 0, first.clone()).await, (0, 0));
    // A retry of the same batch is recognised: same offset, nothing written.
    assert_eq!(produce(&b, "idem", 0, first).await, (0, 0));
    assert_eq!(fetch(&b, "idem", 0, 0).await.1, 2);
    // A gap is out of order; an older sequence outside the cache is a duplicate.
    let gap = records(&[("k", "x")], 1, pid, 0, 5, Compression::None);
    assert_eq!(
        produce(&b, "idem", 0, gap).await.0,
        code::OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    let next = records(&[("k", "2")], 1, pid, 0, 2, Compression::None);
    assert_eq!(produce(&b, "idem", 0, next).await, (0, 2));
    let old = records(&[("k", "1")], 1, pid, 0, 1, Compression::None);
    assert_eq!(
        produce(&b, "idem", 0, old).await.0,
        code::DUPLICATE_SEQUENCE_NUMBER
    );
    // A new epoch starts at 0; the old epoch is fenced.
    let e1 = records(&[("k", "3")], 1, pid, 1, 0, Compression::None);
    assert_eq!(produce(&b, "idem", 0, e1).await, (0, 3));
    let stale = records(&[("k", "4")], 1, pid, 0, 3, Compression::None);
    assert_eq!(
        produce(&b, "idem", 0, stale).await.0,
        code::INVALID_PRODUCER_EPOCH
    );
    // Transactions are refused with a clear error.
    let txn = call(
        &b,
        4,
        InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(sb("tx"))))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1),
    )
    .await;
    assert_eq!(txn.error_code, code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
}

#[tokio::test]
async fn list_offsets_earliest_latest_max_and_by_time() {
    use list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let b = broker().await;
    assert_eq!(create(&b, "lo", 1, &[]).await, 0);
    produce(
        &b,
        "lo",
        0,
        records(
            &[("a", "0"), ("a", "1"), ("a", "2")],
            1000,
            -1,
            -1,
            -1,
            Compression::Lz4,
        ),
    )
    .await;
    produce(
        &b,
        "lo",
        0,
        records(
            &[("a", "3"), ("a", "4")],
            2000,
            -1,
            -1,
            -1,
            Compression::None,
        ),
    )
    .await;
    let ask = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(sb("lo")))
                .with_partitions(vec![
                    ListOffsetsPartition::default().with_timestamp(ts)
                ])])
    };
    let get = |r: ListOffsetsResponse| {
        (
            r.topics[0].partitions[0].error_code,
            r.topics[0].partitions[0].offset,
            r.topics[0].partitions[0].timestamp,
        )
    };
    assert_eq!(get(call(&b, 7, ask(-2)).await), (0, 0, -1));
    assert_eq!(get(call(&b, 7, ask(-1)).await), (0, 5, -1));
    assert_eq!(get(call(&b, 7, ask(-3)).await), (0, 4, 2001));
    assert_eq!(
        get(call(&b, 7, ask(1001)).await),
        (0, 1, 1001),
        "inside the first batch"
    );
    assert_eq!(get(call(&b, 7, ask(1500)).await), (0, 3, 2000));
    assert_eq!(get(call(&b, 7, ask(9999)).await), (0, -1, -1));
    // DeleteRecords moves the log start.
    use delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
    let dr = call(
        &b,
        2,
        DeleteRecordsRequest::default().with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(sb("lo")))
            .with_partitions(vec![DeleteRecordsPartition::default().with_offset(3)])]),
    )
    .await;
    assert_eq!(dr.topics[0].partitions[0].error_code, 0);
    assert_eq!(dr.topics[0].partitions[0].low_watermark, 3);
    assert_eq!(get(call(&b, 7, ask(-2)).await), (0, 3, -1));
    assert_eq!(fetch(&b, "lo", 0, 0).await.0, code::OFFSET_OUT_OF_RANGE);
    assert_eq!(fetch(&b, "lo", 0, 3).await.2.len(), 2);
}

#[tokio::test]
async fn long_poll_returns_when_data_arrives() {
    let b = broker().await;
    assert_eq!(create(&b, "lp", 1, &[]).await, 0);
    let b2 = b.clone();
    let t0 = Instant::now();
    let waiter =
        tokio::spawn(async move { call(&b2, 12, fetch_req("lp", 0, 0, 5000, 1 << 20)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    produce(
        &b,
        "lp",
        0,
        records(&[("k", "v")], 1, -1, -1, -1, Compression::None),
    )
    .await;
    let r = waiter.await.expect("join");
    assert!(r.responses[0].partitions[0]
        .records
        .as_ref()
        .is_some_and(|r| !r.is_empty()));
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "woken by the write, not the timeout"
    );
    // With nothing arriving, it waits max_wait_ms and answers empty.
    let t1 = Instant::now();
    let r = call(&b, 12, fetch_req("lp", 0, 1, 300, 1 << 20)).await;
    assert!(t1.elapsed() >= Duration::from_millis(290));
    assert!(r.responses[0].partitions[0]
        .records
        .as_ref()
        .is_none_or(|r| r.is_empty()));
}

#[tokio::test]
async fn stateless_topics_deliver_live_batches_to_waiting_fetches() {
    let b = broker().await;
    assert_eq!(
        create(&b, "sl", 1, &[("squall.mode", "stateless")]).await,
        0
    );
    produce(
        &b,
        "sl",
        0,
        records(&[("k", "old")], 1, -1, -1, -1, Compression::None),
    )
    .await;
    let b2 = b.clone();
    let waiter =
        tokio::spawn(async move { call(&b2, 12, fetch_req("sl", 0, 1, 3000, 1 << 20)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        produce(
            &b,
            "sl",
            0,
            records(&[("k", "live")], 1, -1, -1, -1, Compression::None)
        )
        .await,
        (0, 1)
    );
    let r = waiter.await.expect("join");
    let mut recs = r.responses[0].partitions[0]
        .records
        .clone()
        .expect("records");
    let set = RecordBatchDecoder::decode(&mut recs).expect("decodes");
    assert_eq!(set.records[0].offset, 1);
    assert_eq!(set.records[0].value.as_deref(), Some(&b"live"[..]));
}

#[tokio::test]
async fn compacted_topics_require_keys_and_keep_the_newest_per_key() {
    let b = broker().await;
    assert_eq!(
        create(&b, "cmp", 1, &[("cleanup.policy", "compact")]).await,
        0
    );
    assert_eq!(
        produce(
            &b,
            "cmp",
            0,
            records(&[("", "nokey")], 1, -1, -1, -1, Compression::None)
        )
        .await
        .0,
        code::INVALID_RECORD
    );
    produce(
        &b,
        "cmp",
        0,
        records(&[("a", "a1")], 1, -1, -1, -1, Compression::None),
    )
    .await;
    produce(
        &b,
        "cmp",
        0,
        records(&[("b", "b1")], 2, -1, -1, -1, Compression::None),
    )
    .await;
    produce(
        &b,
        "cmp",
        0,
        records(&[("a", "a2")], 3, -1, -1, -1, Compression::Snappy),
    )
    .await;
    let (_, hw, recs) = fetch(&b, "cmp", 0, 0).await;
    assert_eq!(hw, 3);
    assert_eq!(
        recs,
        vec![(1, "b1".into()), (2, "a2".into())],
        "offsets keep their gaps"
    );
}

#[tokio::test]
async fn admin_create_describe_alter_partitions_delete() {
    use describe_configs_request::DescribeConfigsResource;
    use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
    let b = broker().await;
    assert_eq!(
        create(
            &b,
            "adm",
            2,
            &[("retention.ms", "1000"), ("cleanup.policy", "compact")]
        )
        .await,
        0
    );
    assert_eq!(create(&b, "adm", 2, &[]).await, code::TOPIC_ALREADY_EXISTS);
    assert_eq!(
        create(&b, "bad/name", 1, &[]).await,
        code::INVALID_TOPIC_EXCEPTION
    );
    assert_eq!(
        create(&b, "badcfg", 1, &[("no.such", "1")]).await,
        code::INVALID_CONFIG
    );
    assert_eq!(create(&b, "zero", 0, &[]).await, code::INVALID_PARTITIONS);
    let describe = || {
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(sb("adm"))
            .with_configuration_keys(None)])
    };
    let d = call(&b, 4, describe()).await;
    let cfg = |d: &DescribeConfigsResponse, n: &str| {
        d.results[0]
            .configs
            .iter()
            .find(|c| c.name.as_str() == n)
            .map(|c| (c.value.clone().map(|v| v.to_string()), c.config_source))
    };
    assert_eq!(cfg(&d, "retention.ms"), Some((Some("1000".into()), 1)));
    assert_eq!(
        cfg(&d, "max.message.bytes"),
        Some((Some("1048588".into()), 5))
    );
    assert_eq!(cfg(&d, "cleanup.policy"), Some((Some("compact".into()), 1)));
    let alter = |name: &str, op: i8, value: Option<&str>| {
        IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(sb("adm"))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(sb(name))
                    .with_config_operation(op)
                    .with_value(value.map(sb))]),
        ])
    };
    assert_eq!(
        call(&b, 1, alter("max.message.bytes", 0, Some("5000")))
            .await
            .responses[0]
            .error_code,
        0
    );
    assert_eq!(
        call(&b, 1, alter("retention.ms", 1, None)).await.responses[0].error_code,
        0
    );
    assert_eq!(
        call(&b, 1, alter("retention.ms", 0, Some("x")))
            .await
            .responses[0]
            .error_code,
        code::INVALID_CONFIG
    );
    let d = call(&b, 4, describe()).await;
    assert_eq!(cfg(&d, "max.message.bytes"), Some((Some("5000".into()), 1)));
    assert_eq!(cfg(&d, "retention.ms"), Some((Some("604800000".into()), 5)));
    // Altered configs reach the pool, not just DescribeConfigs (task: retention, message
    // size and cleanup.policy take effect after creation).
    let pool = || crate::node::Node::pool(b.node.as_ref(), "adm").expect("pool");
    assert_eq!(pool().value_bytes_max, 5000);
    assert_eq!(pool().retention_ms, Some(604_800_000));
    assert!(pool().compact);
    assert_eq!(
        call(&b, 1, alter("retention.bytes", 0, Some("4096")))
            .await
            .responses[0]
            .error_code,
        0
    );
    assert_eq!(pool().retention_bytes, Some(4096));
    assert_eq!(
        call(&b, 1, alter("cleanup.policy", 0, Some("delete")))
            .await
            .responses[0]
            .error_code,
        0
    );
    assert!(!pool().compact);
    let d = call(&b, 4, describe()).await;
    assert_eq!(cfg(&d, "cleanup.policy"), Some((Some("delete".into()), 1)));
    // The mode stays fixed: refused, and nothing changes.
    assert_eq!(
        call(&b, 1, alter("squall.mode", 0, Some("stateless")))
            .await
            .responses[0]
            .error_code,
        code::INVALID_CONFIG
    );
    assert_eq!(pool().mode, squall_storage::Mode::Versioned);
    // CreatePartitions grows, never shrinks.
    use create_partitions_request::CreatePartitionsTopic;
    let cp = |n: i32| {
        CreatePartitionsRequest::default().with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(sb("adm")))
            .with_count(n)])
    };
    assert_eq!(call(&b, 3, cp(4)).await.results[0].error_code, 0);
    assert_eq!(
        call(&b, 3, cp(3)).await.results[0].error_code,
        code::INVALID_PARTITIONS
    );
    let md = call(&b, 12, MetadataRequest::default().with_topics(None)).await;
    assert_eq!(
        md.topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some("adm"))
            .map(|t| t.partitions.len()),
        Some(4)
    );
    // DeleteTopics.
    let del = call(
        &b,
        4,
        DeleteTopicsRequest::default().with_topic_names(vec![TopicName(sb("adm"))]),
    )
    .await;
    assert_eq!(del.responses[0].error_code, 0);
    let del = call(
        &b,
        4,
        DeleteTopicsRequest::default().with_topic_names(vec![TopicName(sb("adm"))]),
    )
    .await;
    assert_eq!(
        del.responses[0].error_code,
        code::UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        produce(
            &b,
            "adm",
            0,
            records(&[("k", "v")], 1, -1, -1, -1, Compression::None)
        )
        .await
        .0,
        code::UNKNOWN_TOPIC_OR_PARTITION
    );
}

fn jr(group: &str, member: &str, instance: Option<&str>) -> JoinRequest {
    JoinRequest {
        group: group.into(),
        member_id: member.into(),
        instance_id: instance.map(str::to_string),
        client_id: "c".into(),
        client_host: "h".into(),
        session_timeout_ms: 1000,
        rebalance_timeout_ms: 2000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"md"))],
        require_known_member_id: false,
    }
}

fn now_join(p: Pending<super::groups::JoinResult>) -> super::groups::JoinResult {
    match p {
        Pending::Now(r) => r,
        Pending::Wait(mut rx) => rx.try_recv().expect("answered"),
    }
}

#[test]
fn group_of_three_rebalances_through_join_sync_leave_and_session_timeout() {
    let c = Coordinator::new(10, 10, 100, 60_000);
    let t0 = Instant::now();
    let check = |c: &Coordinator| c.check_invariants().expect("invariants");
    // First member joins alone: generation 1, it leads.
    let a = now_join(c.join(jr("g", "", None), t0));
    assert_eq!(
        (
            a.error,
            a.generation,
            a.leader == a.member_id,
            a.members.len()
        ),
        (0, 1, true, 1)
    );
    check(&c);
    let s = match c.sync(
        "g",
        1,
        &a.member_id,
        None,
        vec![(a.member_id.clone(), Bytes::from_static(b"A"))],
        t0,
    ) {
        Pending::Now(s) => s,
        Pending::Wait(mut rx) => rx
            .try_recv()
            .expect("the leader's sync completes the barrier"),
    };
    assert_eq!(s.assignment, Bytes::from_static(b"A"));
    assert_eq!(c.state("g").map(|s| s.0), Some(GroupState::Stable));
    // Two more join: the barrier waits for the first to rejoin.
    let Pending::Wait(mut rb) = c.join(jr("g", "", None), t0) else {
        panic!("waits")
    };
    let Pending::Wait(mut rc) = c.join(jr("g", "", None), t0) else {
        panic!("waits")
    };
    assert!(rb.try_recv().is_err());
    assert_eq!(
        c.heartbeat("g", 1, &a.member_id, None, t0),
        code::REBALANCE_IN_PROGRESS
    );
    let ra = now_join(c.join(jr("g", &a.member_id, None), t0));
    let rb = rb.try_recv().expect("b answered");
    let rc = rc.try_recv().expect("c answered");
    assert_eq!((ra.generation, rb.generation, rc.generation), (2, 2, 2));
    let leader = [&ra, &rb, &rc]
        .into_iter()
        .find(|r| r.leader == r.member_id)
        .expect("a leader");
    assert_eq!(leader.members.len(), 3);
    check(&c);
    // Followers wait for the leader's assignment.
    let followers: Vec<_> = [&ra, &rb, &rc]
        .into_iter()
        .filter(|r| r.leader != r.member_id)
        .collect();
    let mut waits = Vec::new();
    for f in &followers {
        let Pending::Wait(rx) = c.sync("g", 2, &f.member_id, None, vec![], t0) else {
            panic!("follower waits")
        };
        waits.push(rx);
    }
    let assignments = [&ra, &rb, &rc]
        .iter()
        .map(|r| (r.member_id.clone(), Bytes::from(r.member_id.clone())))
        .collect();
    let _ = c.sync("g", 2, &leader.member_id, None, assignments, t0);
    for (f, mut rx) in followers.iter().zip(waits) {
        assert_eq!(
            rx.try_recv().expect("assigned").assignment,
            Bytes::from(f.member_id.clone())
        );
    }
    check(&c);
    assert_eq!(
        c.heartbeat("g", 1, &ra.member_id, None, t0),
        code::ILLEGAL_GENERATION
    );
    assert_eq!(
        c.heartbeat("g", 2, "nobody", None, t0),
        code::UNKNOWN_MEMBER_ID
    );
    // One leaves: the others must rejoin into generation 3.
    assert_eq!(
        c.leave("g", &[(followers[0].member_id.clone(), None)], t0),
        vec![0]
    );
    assert_eq!(
        c.state("g").map(|s| (s.0, s.2)),
        Some((GroupState::PreparingRebalance, 2))
    );
    let rest: Vec<_> = [&ra, &rb, &rc]
        .into_iter()
        .filter(|r| r.member_id != followers[0].member_id)
        .collect();
    let Pending::Wait(mut w) = c.join(jr("g", &rest[0].member_id, None), t0) else {
        panic!()
    };
    // The other never rejoins: at the rebalance deadline it is dropped.
    c.tick(t0 + Duration::from_millis(2500));
    let r = w.try_recv().expect("completed by the deadline");
    assert_eq!((r.generation, r.leader == r.member_id), (3, true));
    assert_eq!(c.state("g").map(|s| s.2), Some(1));
    check(&c);
    let _ = c.sync(
        "g",
        3,
        &r.member_id,
        None,
        vec![],
        t0 + Duration::from_millis(2500),
    );
    // No heartbeat for longer than the session timeout: removed, the group becomes Empty.
    c.tick(t0 + Duration::from_millis(4000));
    assert_eq!(
        c.state("g").map(|s| (s.0, s.2)),
        Some((GroupState::Empty, 0))
    );
    check(&c);
    assert_eq!(c.delete("g"), 0);
}

#[test]
fn static_member_rejoin_keeps_its_assignment_without_a_rebalance() {
    let c = Coordinator::new(10, 10, 100, 60_000);
    let t0 = Instant::now();
    let a = now_join(c.join(jr("s", "", Some("i-a")), t0));
    let Pending::Wait(mut b) = c.join(jr("s", "", Some("i-b")), t0) else {
        panic!()
    };
    let a = now_join(c.join(jr("s", &a.member_id, Some("i-a")), t0));
    let b = b.try_recv().expect("b");
    let (leader, follower) = if a.leader == a.member_id {
        (a, b)
    } else {
        (b, a)
    };
    let Pending::Wait(_fw) = c.sync("s", 2, &follower.member_id, None, vec![], t0) else {
        panic!()
    };
    let _ = c.sync(
        "s",
        2,
        &leader.member_id,
        None,
        vec![(follower.member_id.clone(), Bytes::from_static(b"F"))],
        t0,
    );
    let gen = c.state("s").map(|s| s.1);
    // The follower restarts (no LeaveGroup) and rejoins with its instance id and no member id.
    let iid = if follower.member_id.is_empty() {
        ""
    } else if c
        .describe("s")
        .expect("g")
        .members
        .iter()
        .any(|m| m.member_id == follower.member_id && m.instance_id.as_deref() == Some("i-a"))
    {
        "i-a"
    } else {
        "i-b"
    };
    let re = now_join(c.join(jr("s", "", Some(iid)), t0));
    assert_eq!(re.error, 0);
    assert_ne!(re.member_id, follower.member_id);
    assert_eq!(
        c.state("s").map(|s| (s.0, s.1)),
        Some((GroupState::Stable, gen.unwrap_or(-1))),
        "no rebalance"
    );
    let Pending::Now(s) = c.sync("s", re.generation, &re.member_id, Some(iid), vec![], t0) else {
        panic!()
    };
    assert_eq!(s.assignment, Bytes::from_static(b"F"));
    // The old member id is fenced.
    assert_eq!(
        c.heartbeat("s", re.generation, &follower.member_id, Some(iid), t0),
        code::FENCED_INSTANCE_ID
    );
    c.check_invariants().expect("invariants");
}

#[test]
fn the_invariant_checker_catches_a_planted_bad_static_mapping() {
    let c = Coordinator::new(10, 10, 100, 60_000);
    let _ = now_join(c.join(jr("p", "", Some("i")), Instant::now()));
    c.check_invariants().expect("fine before the plant");
    c.plant_bad_static("p", "i");
    assert!(c.check_invariants().is_err());
}

#[tokio::test]
async fn join_v4_requires_a_member_id_and_commits_roundtrip_metadata() {
    use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use offset_fetch_request::OffsetFetchRequestTopic;
    let b = broker().await;
    assert_eq!(create(&b, "ct", 2, &[]).await, 0);
    let join = |member: &str| join_request("grp", member);
    let r = call(&b, 5, join("")).await;
    assert_eq!(r.error_code, code::MEMBER_ID_REQUIRED);
    let mid = r.member_id.to_string();
    let r = call(&b, 5, join(&mid)).await;
    assert_eq!(
        (r.error_code, r.generation_id, r.leader.as_str() == mid),
        (0, 1, true)
    );
    let s = call(
        &b,
        3,
        SyncGroupRequest::default()
            .with_group_id(GroupId(sb("grp")))
            .with_generation_id(1)
            .with_member_id(sb(&mid))
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(sb(&mid))
                    .with_assignment(Bytes::from_static(b"asg")),
            ]),
    )
    .await;
    assert_eq!((s.error_code, s.assignment.as_ref()), (0, &b"asg"[..]));
    let commit = |gen: i32| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(sb("grp")))
            .with_generation_id_or_member_epoch(gen)
            .with_member_id(sb(&mid))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(sb("ct")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(1)
                    .with_committed_offset(42)
                    .with_committed_metadata(Some(sb("meta-1")))])])
    };
    assert_eq!(
        call(&b, 8, commit(7)).await.topics[0].partitions[0].error_code,
        code::ILLEGAL_GENERATION
    );
    assert_eq!(
        call(&b, 8, commit(1)).await.topics[0].partitions[0].error_code,
        0
    );
    let f = call(
        &b,
        7,
        OffsetFetchRequest::default()
            .with_group_id(GroupId(sb("grp")))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(sb("ct")))
                .with_partition_indexes(vec![0, 1])])),
    )
    .await;
    let p = &f.topics[0].partitions;
    assert_eq!((p[0].committed_offset, p[1].committed_offset), (-1, 42));
    assert_eq!(p[1].metadata.as_ref().map(|m| m.as_str()), Some("meta-1"));
    let all = call(
        &b,
        8,
        OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(sb("grp")))
                .with_topics(None),
        ]),
    )
    .await;
    assert_eq!(all.groups[0].topics[0].partitions[0].committed_offset, 42);
    let lg = call(&b, 4, ListGroupsRequest::default()).await;
    assert_eq!(
        lg.groups
            .iter()
            .map(|g| (g.group_id.0.to_string(), g.group_state.to_string()))
            .collect::<Vec<_>>(),
        vec![("grp".to_string(), "Stable".to_string())]
    );
    let dg = call(
        &b,
        5,
        DescribeGroupsRequest::default().with_groups(vec![GroupId(sb("grp"))]),
    )
    .await;
    assert_eq!(dg.groups[0].members.len(), 1);
    assert_eq!(dg.groups[0].members[0].member_assignment.as_ref(), b"asg");
    assert_eq!(
        call(
            &b,
            2,
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(sb("grp"))])
        )
        .await
        .results[0]
            .error_code,
        code::NON_EMPTY_GROUP
    );
    let lv = call(
        &b,
        5,
        LeaveGroupRequest::default()
            .with_group_id(GroupId(sb("grp")))
            .with_members(vec![
                leave_group_request::MemberIdentity::default().with_member_id(sb(&mid))
            ]),
    )
    .await;
    assert_eq!(lv.members[0].error_code, 0);
    assert_eq!(
        call(
            &b,
            2,
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(sb("grp"))])
        )
        .await
        .results[0]
            .error_code,
        0
    );
    let f = call(
        &b,
        7,
        OffsetFetchRequest::default()
            .with_group_id(GroupId(sb("grp")))
            .with_topics(None),
    )
    .await;
    assert!(f.topics.is_empty(), "offsets deleted with the group");
}

#[tokio::test]
async fn storage_failures_become_retriable_errors_not_panics() {
    let node = Arc::new(MemNode::default());
    let b = KafkaBroker::new(node.clone(), KafkaConfig::default())
        .await
        .expect("broker");
    assert_eq!(create(&b, "f", 1, &[]).await, 0);
    node.disk_full
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        produce(
            &b,
            "f",
            0,
            records(&[("k", "v")], 1, -1, -1, -1, Compression::None)
        )
        .await
        .0,
        code::KAFKA_STORAGE_ERROR
    );
}

/// Kafka's rule for an idempotent producer whose batch could not be made durable: the
/// producer gets the retriable KAFKA_STORAGE_ERROR and retries with the same sequence; that
/// retry must be stored exactly once. Neither success for data that was lost (the broker must
/// not remember the lost batch as written and answer the retry as a duplicate), nor
/// DUPLICATE_SEQUENCE_NUMBER / OUT_OF_ORDER_SEQUENCE_NUMBER (the producer would give up), nor a
/// second copy. Both failure kinds: a write refused before it is applied (full disk) and a
/// write applied whose fsync failed and whose data did not survive.
#[tokio::test]
async fn idempotent_retry_after_a_failed_durable_write_is_stored_exactly_once() {
    use std::sync::atomic::Ordering::SeqCst;
    let node = Arc::new(MemNode::default());
    let b = KafkaBroker::new(node.clone(), KafkaConfig::default())
        .await
        .expect("broker");
    assert_eq!(create(&b, "dur", 1, &[]).await, 0);
    let pid = 4242;
    let batch = |seq: i32, vals: &[(&str, &str)]| records(vals, 1, pid, 0, seq, Compression::None);
    assert_eq!(
        produce(&b, "dur", 0, batch(0, &[("k", "a0"), ("k", "a1")])).await,
        (0, 0)
    );

    // 1. The fsync fails and the data is lost.
    node.fsync_fails.store(true, SeqCst);
    let b2 = batch(2, &[("k", "b2"), ("k", "b3")]);
    assert_eq!(
        produce(&b, "dur", 0, b2.clone()).await.0,
        code::KAFKA_STORAGE_ERROR
    );
    // A retry while the disk still fails is refused the same way.
    assert_eq!(
        produce(&b, "dur", 0, b2.clone()).await.0,
        code::KAFKA_STORAGE_ERROR
    );
    node.fsync_fails.store(false, SeqCst);
    // The retry once the disk works: stored now, at the next offset.
    assert_eq!(produce(&b, "dur", 0, b2.clone()).await, (0, 2));
    // A further retry of it is a recognised duplicate, not a second copy.
    assert_eq!(produce(&b, "dur", 0, b2).await, (0, 2));

    // 1b. The same with nobody left to forget the lost batch (acks=0 waits for nothing): the
    // retry must still find that the batch is not stored, and write it.
    node.fsync_fails.store(true, SeqCst);
    let b3 = batch(4, &[("k", "c4")]);
    let r = b
        .handle(
            frame(ApiKey::Produce, 9, &produce_req("dur", 0, b3.clone(), 0)),
            "/127.0.0.1",
        )
        .await
        .expect("acks=0 produce");
    assert!(r.is_none(), "acks=0 gets no response");
    node.fsync_fails.store(false, SeqCst);
    assert_eq!(produce(&b, "dur", 0, b3).await, (0, 4));

    // 2. The disk is full: the write is refused before it is applied.
    node.disk_full.store(true, SeqCst);
    let b4 = batch(5, &[("k", "d5")]);
    assert_eq!(
        produce(&b, "dur", 0, b4.clone()).await.0,
        code::KAFKA_STORAGE_ERROR
    );
    node.disk_full.store(false, SeqCst);
    assert_eq!(produce(&b, "dur", 0, b4).await, (0, 5));
    assert_eq!(
        produce(&b, "dur", 0, batch(6, &[("k", "e6")])).await,
        (0, 6)
    );

    // Every record exactly once, in order, at dense offsets.
    let (err, hwm, got) = fetch(&b, "dur", 0, 0).await;
    assert_eq!((err, hwm), (0, 7));
    let want: Vec<(i64, String)> = ["a0", "a1", "b2", "b3", "c4", "d5", "e6"]
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.to_string()))
        .collect();
    assert_eq!(got, want);
}

/// A consumer group's own writes (committed offsets, group metadata in `__kafka_groups`) that
/// fail must not be reported as done, and the coordinator's memory must not run ahead of what
/// is stored: OffsetCommit answers NOT_COORDINATOR per partition (Kafka's code for a failed
/// coordinator log; the client finds the coordinator again and retries) and OffsetFetch still
/// shows the old offset; a JoinGroup whose new generation cannot be stored is an error and the
/// group rebalances (as Kafka's coordinator does) instead of staying Stable on a generation a
/// restart would not know. Once the disk works, the group and its commits converge and the
/// stored group record equals the coordinator's state.
#[tokio::test]
async fn failed_group_state_writes_are_errors_and_memory_follows_the_store() {
    use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use offset_fetch_request::OffsetFetchRequestTopic;
    use std::sync::atomic::Ordering::SeqCst;
    let node = Arc::new(MemNode::default());
    let b = KafkaBroker::new(node.clone(), KafkaConfig::default())
        .await
        .expect("broker");
    assert_eq!(create(&b, "gt", 2, &[]).await, 0);
    let mid = call(&b, 5, join_request("g", ""))
        .await
        .member_id
        .to_string();
    let join = |b: Arc<KafkaBroker<MemNode>>, mid: String| async move {
        let r = call(&b, 5, join_request("g", &mid)).await;
        (r.error_code, r.generation_id)
    };
    let sync = |b: Arc<KafkaBroker<MemNode>>, mid: String, gen: i32| async move {
        call(
            &b,
            3,
            SyncGroupRequest::default()
                .with_group_id(GroupId(sb("g")))
                .with_generation_id(gen)
                .with_member_id(sb(&mid))
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(sb(&mid))
                        .with_assignment(Bytes::from_static(b"asg")),
                ]),
        )
        .await
        .error_code
    };
    let commit = |b: Arc<KafkaBroker<MemNode>>, mid: String, gen: i32, offset: i64| async move {
        let r = call(
            &b,
            8,
            OffsetCommitRequest::default()
                .with_group_id(GroupId(sb("g")))
                .with_generation_id_or_member_epoch(gen)
                .with_member_id(sb(&mid))
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(sb("gt")))
                    .with_partitions(
                        (0..2)
                            .map(|p| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                            })
                            .collect(),
                    )]),
        )
        .await;
        r.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect::<Vec<_>>()
    };
    let fetched = |b: Arc<KafkaBroker<MemNode>>| async move {
        let f = call(
            &b,
            7,
            OffsetFetchRequest::default()
                .with_group_id(GroupId(sb("g")))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(sb("gt")))
                    .with_partition_indexes(vec![0, 1])])),
        )
        .await;
        f.topics[0]
            .partitions
            .iter()
            .map(|p| p.committed_offset)
            .collect::<Vec<_>>()
    };
    let b = Arc::new(b);
    assert_eq!(join(b.clone(), mid.clone()).await, (0, 1));
    assert_eq!(sync(b.clone(), mid.clone(), 1).await, 0);
    assert_eq!(commit(b.clone(), mid.clone(), 1, 42).await, vec![0, 0]);

    node.fsync_fails.store(true, SeqCst);
    // Commits that cannot be stored: an error per partition, the old offsets stay.
    assert_eq!(
        commit(b.clone(), mid.clone(), 1, 50).await,
        vec![code::NOT_COORDINATOR; 2]
    );
    assert_eq!(fetched(b.clone()).await, vec![42, 42]);
    // A rejoin completes a new generation that cannot be stored: an error, and the group is
    // rebalancing, not Stable on generation 2.
    let (e, _) = join(b.clone(), mid.clone()).await;
    assert_eq!(e, code::NOT_COORDINATOR);
    let (state, _, _) = b.groups.state("g").expect("group");
    assert_eq!(state, GroupState::PreparingRebalance);
    b.groups.check_invariants().expect("invariants");
    let hb = call(
        &b,
        3,
        HeartbeatRequest::default()
            .with_group_id(GroupId(sb("g")))
            .with_generation_id(2)
            .with_member_id(sb(&mid)),
    )
    .await;
    assert_eq!(hb.error_code, code::REBALANCE_IN_PROGRESS);

    node.fsync_fails.store(false, SeqCst);
    let (e, gen) = join(b.clone(), mid.clone()).await;
    assert_eq!(e, 0);
    assert!(gen > 2, "a new generation after the failed one: {gen}");
    assert_eq!(sync(b.clone(), mid.clone(), gen).await, 0);
    assert_eq!(commit(b.clone(), mid.clone(), gen, 50).await, vec![0, 0]);
    assert_eq!(fetched(b.clone()).await, vec![50, 50]);
    // What is stored is what the coordinator holds.
    let stored = crate::node::Node::get(&*node, super::GROUPS_POOL, "g").expect("stored group");
    let r: super::groups::GroupRecord = serde_json::from_slice(&stored.value).expect("record");
    assert_eq!((r.generation, r.state.as_str()), (gen, "Stable"));
}

/// DeleteGroups must not answer NONE for a deletion that was not stored (the group and its
/// committed offsets would come back after a restart): with the disk failing it answers
/// NOT_COORDINATOR and the offsets are still there; once the disk works, the retry deletes
/// them and answers NONE.
#[tokio::test]
async fn delete_groups_reports_an_unstored_deletion_as_an_error() {
    use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use offset_fetch_request::OffsetFetchRequestTopic;
    use std::sync::atomic::Ordering::SeqCst;
    let node = Arc::new(MemNode::default());
    let b = KafkaBroker::new(node.clone(), KafkaConfig::default())
        .await
        .expect("broker");
    assert_eq!(create(&b, "dg", 1, &[]).await, 0);
    // Offsets committed by a group that has no members (a simple consumer, generation -1).
    let c = call(
        &b,
        8,
        OffsetCommitRequest::default()
            .with_group_id(GroupId(sb("dgg")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(sb("dg")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(9)])]),
    )
    .await;
    assert_eq!(c.topics[0].partitions[0].error_code, 0);
    async fn committed(b: &KafkaBroker<MemNode>) -> i64 {
        let f = call(
            b,
            7,
            OffsetFetchRequest::default()
                .with_group_id(GroupId(sb("dgg")))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(sb("dg")))
                    .with_partition_indexes(vec![0])])),
        )
        .await;
        f.topics[0].partitions[0].committed_offset
    }
    let delete = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(sb("dgg"))]);
    node.fsync_fails.store(true, SeqCst);
    let r = call(&b, 2, delete.clone()).await;
    assert_eq!(r.results[0].error_code, code::NOT_COORDINATOR);
    node.fsync_fails.store(false, SeqCst);
    assert_eq!(committed(&b).await, 9, "the offsets were not deleted");
    let r = call(&b, 2, delete).await;
    assert_eq!(r.results[0].error_code, code::NONE);
    assert_eq!(committed(&b).await, -1, "deleted now");
}

mod fuzz_lite {
    //! Random corruption of valid request frames (a proptest stand-in for `cargo fuzz`, run in
    //! CI): the dispatcher must answer or refuse, never panic, and the broker must still serve
    //! a clean request afterwards.
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Bytes> {
        let recs = records(
            &[("k", "v"), ("k2", "v2")],
            5,
            -1,
            -1,
            -1,
            Compression::Gzip,
        );
        vec![
            frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default()),
            frame(
                ApiKey::Metadata,
                12,
                &MetadataRequest::default().with_topics(None),
            ),
            frame(ApiKey::Produce, 9, &produce_req("fz", 0, recs.clone(), -1)),
            frame(ApiKey::Produce, 3, &produce_req("fz", 0, recs, 1)),
            frame(ApiKey::Fetch, 12, &fetch_req("fz", 0, 0, 0, 1 << 20)),
            frame(
                ApiKey::JoinGroup,
                5,
                &JoinGroupRequest::default()
                    .with_group_id(GroupId(sb("g")))
                    .with_session_timeout_ms(5000)
                    .with_protocol_type(sb("consumer")),
            ),
            frame(
                ApiKey::OffsetCommit,
                8,
                &OffsetCommitRequest::default()
                    .with_group_id(GroupId(sb("g")))
                    .with_generation_id_or_member_epoch(-1),
            ),
            frame(ApiKey::CreateTopics, 5, &CreateTopicsRequest::default()),
            frame(
                ApiKey::DescribeConfigs,
                4,
                &DescribeConfigsRequest::default(),
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn corrupted_frames_never_panic(which in 0usize..9, edits in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..8), cut in any::<u16>()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            rt.block_on(async {
                let b = broker().await;
                assert_eq!(create(&b, "fz", 1, &[]).await, 0);
                let mut f = samples()[which].to_vec();
                for (at, byte) in &edits {
                    let n = f.len();
                    f[*at as usize % n] = *byte;
                }
                let keep = (cut as usize % (f.len() + 1)).max(super::super::frame::REQUEST_BYTES_MIN.min(f.len()));
                f.truncate(keep);
                // Bound the work a corrupted length can ask for (long-poll waits, huge counts).
                let _ = tokio::time::timeout(Duration::from_secs(5), b.handle(Bytes::from(f), "h")).await;
                let ok = call(&b, 3, ApiVersionsRequest::default()).await;
                assert_eq!(ok.error_code, 0);
            });
        }

        #[test]
        fn random_record_sets_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = super::super::batch::parse_batches(&bytes, 1 << 20);
            let _ = super::super::frame::check_frame(&bytes, 1 << 20);
        }
    }
}

/// Produce writes a request's partitions concurrently (so they share a group commit): the
/// responses still come back in request order, one per partition, and a request that names the
/// same partition twice is written in request order (offsets follow the entries).
#[tokio::test]
async fn multi_partition_produce_answers_in_request_order() {
    use produce_request::{PartitionProduceData, TopicProduceData};
    let b = broker().await;
    assert_eq!(create(&b, "mp", 3, &[]).await, 0);
    let batch = |n: usize| {
        let vals: Vec<(&str, &str)> = (0..n).map(|_| ("k", "v")).collect();
        records(&vals, 1000, -1, -1, -1, Compression::None)
    };
    let part = |i: i32, n: usize| {
        PartitionProduceData::default()
            .with_index(i)
            .with_records(Some(batch(n)))
    };
    let req = |parts: Vec<PartitionProduceData>| {
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(sb("mp")))
                .with_partition_data(parts)])
    };
    let r = call(
        &b,
        9,
        req(vec![part(2, 1), part(0, 2), part(1, 3), part(7, 1)]),
    )
    .await;
    let got: Vec<(i32, i16, i64)> = r.responses[0]
        .partition_responses
        .iter()
        .map(|p| (p.index, p.error_code, p.base_offset))
        .collect();
    assert_eq!(got, vec![(2, 0, 0), (0, 0, 0), (1, 0, 0), (7, 3, -1)]);
    // Partition 0 twice: 2 records then 4, written in that order after the 2 already there.
    let r = call(&b, 9, req(vec![part(0, 2), part(1, 1), part(0, 4)])).await;
    let got: Vec<(i32, i16, i64)> = r.responses[0]
        .partition_responses
        .iter()
        .map(|p| (p.index, p.error_code, p.base_offset))
        .collect();
    assert_eq!(got, vec![(0, 0, 2), (1, 0, 3), (0, 0, 4)]);
}

/// Request pipelining over a real socket: several requests written before any response is
/// read. Responses must come back strictly in request order with their own correlation ids
/// (Kafka's rule), produce requests keep their order (offsets 0 then 1), a fetch after them on
/// the same connection sees both, and read-only requests run concurrently: three long-poll
/// fetches of 1 s each, pipelined, take well under the 3 s they would take one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_answer_in_order_and_reads_run_concurrently() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = broker().await;
    assert_eq!(create(&b, "pipe", 1, &[]).await, 0);
    assert_eq!(create(&b, "idle", 3, &[]).await, 0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = super::server::serve(b.clone(), listener).expect("serve");
    let mut s = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let framed = |key: ApiKey, version: i16, corr: i32, body: &dyn Fn(&mut BytesMut)| {
        let mut b = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(Some(sb("pipe")))
            .encode(&mut b, key.request_header_version(version))
            .expect("header");
        body(&mut b);
        let mut out = BytesMut::new();
        out.put_i32(b.len() as i32);
        out.extend_from_slice(&b);
        out
    };
    let fetch_frame = |corr: i32, topic: &str, p: i32, wait_ms: i32| {
        framed(ApiKey::Fetch, 12, corr, &|b: &mut BytesMut| {
            fetch_req(topic, p, 0, wait_ms, 1 << 20)
                .encode(b, 12)
                .expect("fetch");
        })
    };
    let produce_frame = |corr: i32, v: &str| {
        let recs = records(&[("k", v)], 1, -1, -1, -1, Compression::None);
        framed(ApiKey::Produce, 9, corr, &|b: &mut BytesMut| {
            produce_req("pipe", 0, recs.clone(), -1)
                .encode(b, 9)
                .expect("produce");
        })
    };
    // Three idle long polls (1 s each) and a metadata request, written at once.
    let mut out = BytesMut::new();
    for (i, p) in (0..3).enumerate() {
        out.extend_from_slice(&fetch_frame(10 + i as i32, "idle", p, 1000));
    }
    out.extend_from_slice(&framed(ApiKey::Metadata, 12, 13, &|b: &mut BytesMut| {
        MetadataRequest::default()
            .with_topics(None)
            .encode(b, 12)
            .expect("metadata");
    }));
    // Then two produces and a fetch of what they wrote: barriers, in order.
    out.extend_from_slice(&produce_frame(14, "a"));
    out.extend_from_slice(&produce_frame(15, "b"));
    out.extend_from_slice(&fetch_frame(16, "pipe", 0, 0));
    let started = Instant::now();
    s.write_all(&out).await.expect("write");
    let mut bodies = Vec::new();
    for _ in 10..=16 {
        let one = async {
            let len = s.read_i32().await.expect("length") as usize;
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await.expect("body");
            Bytes::from(body)
        };
        let body = tokio::time::timeout(Duration::from_secs(20), one)
            .await
            .expect("response in time");
        bodies.push(body);
    }
    let elapsed = started.elapsed();
    let corrs: Vec<i32> = bodies
        .iter()
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(
        corrs,
        (10..=16).collect::<Vec<_>>(),
        "responses in request order"
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "three 1 s long polls were served one at a time: {elapsed:?}"
    );
    assert!(elapsed >= Duration::from_millis(900), "long polls did wait");
    let produce_offset = |b: &Bytes| {
        let mut b = b.clone();
        ResponseHeader::decode(&mut b, ApiKey::Produce.response_header_version(9)).expect("hdr");
        let r = ProduceResponse::decode(&mut b, 9).expect("produce response");
        let p = &r.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    };
    assert_eq!(produce_offset(&bodies[4]), (0, 0));
    assert_eq!(produce_offset(&bodies[5]), (0, 1));
    let mut f = bodies[6].clone();
    ResponseHeader::decode(&mut f, ApiKey::Fetch.response_header_version(12)).expect("hdr");
    let r = FetchResponse::decode(&mut f, 12).expect("fetch response");
    let pd = &r.responses[0].partitions[0];
    assert_eq!((pd.error_code, pd.high_watermark), (0, 2));
    let mut recs = pd.records.clone().expect("records");
    let mut values = Vec::new();
    while recs.has_remaining() {
        for r in RecordBatchDecoder::decode(&mut recs)
            .expect("batch")
            .records
        {
            values.push(String::from_utf8_lossy(&r.value.unwrap_or_default()).to_string());
        }
    }
    assert_eq!(values, vec!["a".to_string(), "b".to_string()]);
    server.shutdown().await;
}

/// Idempotent-producer state survives a broker restart (a new broker over the same node): it is
/// rebuilt from the stored batches' headers, so a retry of the last batch sent before the
/// restart is answered with its original offset and not written again, the producer continues
/// at its next sequence, and a gap or an older epoch is still refused.
#[tokio::test]
async fn producer_sequences_survive_a_broker_restart() {
    let node = Arc::new(MemNode::default());
    let b = Arc::new(
        KafkaBroker::new(node.clone(), KafkaConfig::default())
            .await
            .expect("broker"),
    );
    assert_eq!(create(&b, "idem", 1, &[]).await, 0);
    let batch = |vals: &[(&str, &str)], epoch: i16, seq: i32| {
        records(vals, 1, 4242, epoch, seq, Compression::None)
    };
    assert_eq!(
        produce(&b, "idem", 0, batch(&[("k", "a"), ("k", "b")], 3, 0)).await,
        (0, 0)
    );
    assert_eq!(
        produce(&b, "idem", 0, batch(&[("k", "c")], 3, 2)).await,
        (0, 2)
    );
    drop(b);
    let b = Arc::new(
        KafkaBroker::new(node.clone(), KafkaConfig::default())
            .await
            .expect("restarted broker"),
    );
    // The retry of the last batch: its original offset, nothing written.
    assert_eq!(
        produce(&b, "idem", 0, batch(&[("k", "c")], 3, 2)).await,
        (0, 2)
    );
    // An older sequence, a gap, an older epoch: refused as before the restart.
    assert_eq!(
        produce(&b, "idem", 0, batch(&[("k", "x")], 3, 1)).await.0,
        code::DUPLICATE_SEQUENCE_NUMBER
    );
    assert_eq!(
        produce(&b, "idem", 0, batch(&[("k", "x")], 3, 9)).await.0,
        code::OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    assert_eq!(
        produce(&b, "idem", 0, batch(&[("k", "x")], 2, 3)).await.0,
        code::INVALID_PRODUCER_EPOCH
    );
    // The sequence continues.
    assert_eq!(
        produce(&b, "idem", 0, batch(&[("k", "d")], 3, 3)).await,
        (0, 3)
    );
    let (_, hw, recs) = fetch(&b, "idem", 0, 0).await;
    assert_eq!(hw, 4);
    let values: Vec<&str> = recs.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values, vec!["a", "b", "c", "d"], "nothing written twice");
}

/// A stable-Rust randomized decoding harness (libFuzzer needs nightly and cargo-fuzz; this runs
/// anywhere): valid request frames of many APIs and versions are mutated (bit flips, interesting
/// values, truncation, insertion, range duplication, big lengths) by a seeded generator and fed
/// to the real dispatcher (`KafkaBroker::handle` over `MemNode`), plus the frame check and the
/// record-batch parser. A panic fails the test and prints the seed, the iteration and the input.
/// Ignored by default; run with
/// `FUZZ_SECS=300 FUZZ_SEED=1 cargo test -p squall-protocols --release -- --ignored fuzz_requests`.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[ignore]
async fn fuzz_requests_randomized() {
    let secs: u64 = std::env::var("FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let config = KafkaConfig {
        fetch_wait_ms_max: 0,
        ..KafkaConfig::default()
    };
    let b = Arc::new(
        KafkaBroker::new(Arc::new(MemNode::default()), config)
            .await
            .expect("broker"),
    );
    assert_eq!(create(&b, "fz", 2, &[]).await, 0);
    assert_eq!(
        create(&b, "fzc", 1, &[("cleanup.policy", "compact")]).await,
        0
    );
    // Seeds: valid frames (bodies without the length prefix).
    let mut seeds: Vec<Bytes> = Vec::new();
    for v in 3..=11 {
        for (pid, seq) in [(-1, -1), (7, 0)] {
            for c in [Compression::None, Compression::Gzip, Compression::Snappy] {
                let recs = records(&[("k", "v"), ("k2", "v2")], 1, pid, 0, seq, c);
                seeds.push(frame(ApiKey::Produce, v, &produce_req("fz", 0, recs, -1)));
            }
        }
    }
    for v in 4..=12 {
        seeds.push(frame(ApiKey::Fetch, v, &fetch_req("fz", 0, 0, 0, 1 << 20)));
    }
    for v in 0..=12 {
        seeds.push(frame(
            ApiKey::Metadata,
            v,
            &MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                )
                .with_name(Some(TopicName(sb("fz"))))])),
        ));
    }
    for v in 0..=4 {
        seeds.push(frame(
            ApiKey::ApiVersions,
            v,
            &ApiVersionsRequest::default()
                .with_client_software_name(sb("f"))
                .with_client_software_version(sb("1")),
        ));
    }
    for v in 1..=8 {
        use list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
        seeds.push(frame(
            ApiKey::ListOffsets,
            v,
            &ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(sb("fz")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-2)])]),
        ));
    }
    for v in 2..=7 {
        use create_topics_request::{CreatableTopic, CreatableTopicConfig};
        seeds.push(frame(
            ApiKey::CreateTopics,
            v,
            &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(sb("fz2")))
                .with_num_partitions(1)
                .with_replication_factor(1)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(sb("retention.ms"))
                    .with_value(Some(sb("1000")))])]),
        ));
    }
    for v in 0..=9 {
        use join_group_request::JoinGroupRequestProtocol;
        seeds.push(frame(
            ApiKey::JoinGroup,
            v,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(sb("g")))
                .with_session_timeout_ms(1000)
                .with_rebalance_timeout_ms(1000)
                .with_protocol_type(sb("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(sb("range"))
                    .with_metadata(Bytes::from_static(b"md"))]),
        ));
    }
    for v in 2..=9 {
        use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
        seeds.push(frame(
            ApiKey::OffsetCommit,
            v,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(sb("g")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(sb("fz")))
                    .with_partitions(vec![OffsetCommitRequestPartition::default()
                        .with_partition_index(0)
                        .with_committed_offset(1)])]),
        ));
    }
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut iterations = 0u64;
    let mut errors = 0u64;
    while Instant::now() < deadline {
        let base = &seeds[(rnd() % seeds.len() as u64) as usize];
        let mut input = base.to_vec();
        for _ in 0..1 + rnd() % 4 {
            let len = input.len().max(1);
            let at = (rnd() % len as u64) as usize;
            match rnd() % 7 {
                0 => {
                    if let Some(x) = input.get_mut(at) {
                        *x ^= 1 << (rnd() % 8);
                    }
                }
                1 => {
                    let v = [0u8, 0xff, 0x7f, 0x80, 1][(rnd() % 5) as usize];
                    if let Some(x) = input.get_mut(at) {
                        *x = v;
                    }
                }
                2 => input.truncate(at),
                3 => {
                    let n = (rnd() % 16) as usize;
                    for _ in 0..n {
                        input.insert(at.min(input.len()), rnd() as u8);
                    }
                }
                4 => {
                    let end = (at + (rnd() % 32) as usize).min(input.len());
                    let chunk = input[at.min(end)..end].to_vec();
                    let pos = (rnd() % (input.len() as u64 + 1)) as usize;
                    input.splice(pos..pos, chunk);
                }
                5 => {
                    // A big length or count (i32 BE) somewhere.
                    let v = [i32::MAX, -1, 0x7fff, 1 << 24][(rnd() % 4) as usize].to_be_bytes();
                    for (i, x) in v.iter().enumerate() {
                        if let Some(y) = input.get_mut(at + i) {
                            *y = *x;
                        }
                    }
                }
                _ => {
                    // Another API key / version in the header.
                    if input.len() >= 4 {
                        let k = (rnd() % 70) as i16;
                        let v = (rnd() % 16) as i16;
                        input[0..2].copy_from_slice(&k.to_be_bytes());
                        input[2..4].copy_from_slice(&v.to_be_bytes());
                    }
                }
            }
        }
        let _ = super::batch::parse_batches(&input, 1 << 20);
        let mut framed = (input.len() as i32).to_be_bytes().to_vec();
        framed.extend_from_slice(&input);
        let _ = super::frame::check_frame(&framed, 1 << 20);
        let body = Bytes::from(input.clone());
        let bb = b.clone();
        let task = tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(200), bb.handle(body, "/fuzz")).await
        });
        match task.await {
            Ok(Ok(Err(_))) => errors += 1,
            Ok(_) => {}
            Err(e) => panic!(
                "panic at seed {seed} iteration {iterations}: {e}; input {:02x?}",
                input
            ),
        }
        iterations += 1;
    }
    println!(
        "fuzz_requests_randomized: seed {seed}, {secs} s, {iterations} inputs, {errors} refused \
         (connection-closing errors), 0 panics, {} seeds",
        seeds.len()
    );
    assert!(iterations > 0);
}

/// Group membership and generation are stored in the groups pool and restored by a new broker
/// on the same node (a restart): the member's generation still holds, a commit at an older
/// generation gets ILLEGAL_GENERATION, DescribeGroups shows the stored member and assignment,
/// and a new member gets a member id never handed out before and the next generation.
#[tokio::test]
async fn group_generation_members_and_assignment_survive_a_broker_restart() {
    use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    let node = Arc::new(MemNode::default());
    let b = Arc::new(
        KafkaBroker::new(node.clone(), KafkaConfig::default())
            .await
            .expect("broker"),
    );
    assert_eq!(create(&b, "gt", 1, &[]).await, 0);
    let join = |member: &str| join_request("pg", member);
    let sync = |gen: i32, mid: &str| {
        SyncGroupRequest::default()
            .with_group_id(GroupId(sb("pg")))
            .with_generation_id(gen)
            .with_member_id(sb(mid))
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(sb(mid))
                    .with_assignment(Bytes::from_static(b"asg")),
            ])
    };
    let commit = |gen: i32, mid: &str| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(sb("pg")))
            .with_generation_id_or_member_epoch(gen)
            .with_member_id(sb(mid))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(sb("gt")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(3)])])
    };
    let r = call(&b, 3, join("")).await;
    let mid = r.member_id.to_string();
    assert_eq!((r.error_code, r.generation_id), (0, 1));
    assert_eq!(call(&b, 3, sync(1, &mid)).await.error_code, 0);
    let r = call(&b, 3, join(&mid)).await;
    assert_eq!(
        (r.error_code, r.generation_id),
        (0, 2),
        "rejoin: generation 2"
    );
    assert_eq!(call(&b, 3, sync(2, &mid)).await.error_code, 0);
    drop(b);

    let b = Arc::new(
        KafkaBroker::new(node.clone(), KafkaConfig::default())
            .await
            .expect("restarted broker"),
    );
    assert_eq!(
        call(&b, 8, commit(1, &mid)).await.topics[0].partitions[0].error_code,
        code::ILLEGAL_GENERATION,
        "a zombie at generation 1 is fenced after the restart"
    );
    assert_eq!(
        call(&b, 8, commit(2, &mid)).await.topics[0].partitions[0].error_code,
        0,
        "the member at the current generation commits"
    );
    let hb = call(
        &b,
        3,
        HeartbeatRequest::default()
            .with_group_id(GroupId(sb("pg")))
            .with_generation_id(2)
            .with_member_id(sb(&mid)),
    )
    .await;
    assert_eq!(hb.error_code, 0);
    let d = call(
        &b,
        5,
        DescribeGroupsRequest::default().with_groups(vec![GroupId(sb("pg"))]),
    )
    .await;
    let g = &d.groups[0];
    assert_eq!(g.group_state.as_str(), "Stable");
    assert_eq!(g.members.len(), 1);
    assert_eq!(g.members[0].member_id.as_str(), mid);
    assert_eq!(g.members[0].member_assignment.as_ref(), b"asg");
    // A new member: the barrier waits for the old member, which rejoins.
    let b2 = b.clone();
    let newcomer = tokio::spawn(async move { call(&b2, 3, join("")).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let old = call(&b, 3, join(&mid)).await;
    let new = newcomer.await.expect("newcomer");
    assert_eq!((old.error_code, new.error_code), (0, 0));
    assert_eq!((old.generation_id, new.generation_id), (3, 3));
    assert_ne!(new.member_id.as_str(), mid, "member ids are not reused");
}

/// A group stored mid-rebalance comes back waiting for its members to rejoin; the stored
/// generation is the floor for the next one.
#[test]
fn a_group_restored_mid_rebalance_waits_for_its_members_and_moves_the_generation_on() {
    let c = Coordinator::new(10, 10, 100, 60_000);
    let t0 = Instant::now();
    let a = now_join(c.join(jr("g", "", None), t0));
    assert_eq!(a.generation, 1);
    // CompletingRebalance (no SyncGroup yet) is stored as "Rebalancing".
    let stored = c.take_changed();
    assert_eq!(stored.len(), 1);
    let (name, Some(record)) = stored[0].clone() else {
        panic!("a record")
    };
    assert_eq!(record.state, "Rebalancing");
    assert!(c.take_changed().is_empty(), "nothing changed since");
    let r = Coordinator::new(10, 10, 100, 60_000);
    r.restore(vec![(name, record)], t0);
    assert_eq!(r.state("g"), Some((GroupState::PreparingRebalance, 1, 1)));
    r.check_invariants().expect("invariants");
    let again = now_join(r.join(jr("g", &a.member_id, None), t0));
    assert_eq!((again.error, again.generation), (0, 2));
    r.check_invariants().expect("invariants");
}

/// Produce requests pipelined on one connection overlap their fsyncs: with durability held
/// (MemNode's gate), two produce requests to the same partition are both applied, in order,
/// while neither is answered; once durability is released both answers arrive, in request
/// order, with offsets 0 and 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_produces_are_applied_before_the_previous_fsync_and_answered_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = Arc::new(MemNode::default());
    let b = Arc::new(
        KafkaBroker::new(node.clone(), KafkaConfig::default())
            .await
            .expect("broker"),
    );
    assert_eq!(create(&b, "ov", 1, &[]).await, 0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = super::server::serve(b.clone(), listener).expect("serve");
    let mut s = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let produce_frame = |corr: i32, v: &str| {
        let recs = records(&[("k", v)], 1, -1, -1, -1, Compression::None);
        let mut body = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(9)
            .with_correlation_id(corr)
            .with_client_id(Some(sb("ov")))
            .encode(&mut body, ApiKey::Produce.request_header_version(9))
            .expect("header");
        produce_req("ov", 0, recs, -1)
            .encode(&mut body, 9)
            .expect("produce");
        let mut out = BytesMut::new();
        out.put_i32(body.len() as i32);
        out.extend_from_slice(&body);
        out
    };
    node.hold_durable(true);
    let mut out = produce_frame(21, "first");
    out.extend_from_slice(&produce_frame(22, "second"));
    s.write_all(&out).await.expect("write");
    // Both are applied although the first one's "fsync" has not finished.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let next = crate::node::Node::bounds(&*node, "ov", &super::topics::partition_key("ov", 0))
            .map(|b| b.next)
            .unwrap_or(0);
        if next == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second produce was not applied while the first waited for durability (next = {next})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut probe = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), s.peek(&mut probe))
            .await
            .is_err(),
        "no answer before the writes are durable"
    );
    node.hold_durable(false);
    let mut answers = Vec::new();
    for _ in 0..2 {
        let one = async {
            let len = s.read_i32().await.expect("length") as usize;
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await.expect("body");
            Bytes::from(body)
        };
        let mut body = tokio::time::timeout(Duration::from_secs(10), one)
            .await
            .expect("answer once durable");
        let h = ResponseHeader::decode(&mut body, ApiKey::Produce.response_header_version(9))
            .expect("hdr");
        let r = ProduceResponse::decode(&mut body, 9).expect("produce response");
        let p = &r.responses[0].partition_responses[0];
        answers.push((h.correlation_id, p.error_code, p.base_offset));
    }
    assert_eq!(answers, vec![(21, 0, 0), (22, 0, 1)]);
    server.shutdown().await;
}
