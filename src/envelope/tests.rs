use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

fn ring() -> KeyRing {
    KeyRing::new("k1", [1u8; 32]).unwrap()
}

/// A message with every optional part set.
fn full() -> Message<BTreeMap<String, Vec<u32>>> {
    let parent = Message::builder("orders.placed".parse().unwrap(), ()).build();
    let mut payload = BTreeMap::new();
    payload.insert("lines".to_owned(), vec![1, 2, 3]);
    Message::builder("orders.eu.created".parse().unwrap(), payload)
        .header("tenant", "acme")
        .header("trace", "00-ab-cd-01")
        .priority(Priority::High)
        .timestamp(UNIX_EPOCH + Duration::from_nanos(1_763_900_000_123_456_789))
        .expires_at(UNIX_EPOCH + Duration::from_secs(1_863_900_000))
        .caused_by(&parent)
        .from("billing")
        .to("shipping-7")
        .reply_to("orders.replies.n1".parse().unwrap())
        .restore(
            MessageId::new(),
            UNIX_EPOCH + Duration::from_nanos(1_763_900_000_123_456_789),
            3,
        )
        .build()
}

fn same<T: PartialEq + std::fmt::Debug>(a: &Message<T>, b: &Message<T>) {
    assert_eq!(a.id(), b.id());
    assert_eq!(a.topic(), b.topic());
    assert_eq!(a.payload(), b.payload());
    assert_eq!(
        a.headers().iter().collect::<Vec<_>>(),
        b.headers().iter().collect::<Vec<_>>()
    );
    assert_eq!(a.priority(), b.priority());
    assert_eq!(a.timestamp(), b.timestamp());
    assert_eq!(a.expires_at(), b.expires_at());
    assert_eq!(a.correlation_id(), b.correlation_id());
    assert_eq!(a.causation_id(), b.causation_id());
    assert_eq!(a.from(), b.from());
    assert_eq!(a.to(), b.to());
    assert_eq!(a.reply_to(), b.reply_to());
    assert_eq!(a.attempt(), b.attempt());
}

fn codecs() -> [Codec; 4] {
    [
        Codec::signed(ring()),
        Codec::signed(ring()).encoding(Encoding::Json),
        Codec::unsigned(),
        Codec::unsigned().encoding(Encoding::Json),
    ]
}

#[test]
fn every_field_survives_every_encoding() {
    let msg = full();
    assert!(msg.correlation_id().is_some() && msg.causation_id().is_some());
    for codec in codecs() {
        let bytes = codec.encode(&msg, "node-a").unwrap();
        let got = codec.decode(&bytes).unwrap();
        same(&msg, &got.message);
        assert_eq!(got.origin, "node-a");
        // A plain message (no optional parts) too.
        let plain = Message::builder("a".parse().unwrap(), 5u8).build();
        same(
            &plain,
            &codec
                .decode(&codec.encode(&plain, "").unwrap())
                .unwrap()
                .message,
        );
    }
}

#[test]
fn the_frame_is_as_documented_and_json_bodies_are_readable() {
    let msg = full();
    let signed = Codec::signed(ring()).encoding(Encoding::Json);
    let bytes = signed.encode(&msg, "node-a").unwrap();
    assert_eq!(&bytes[..5], &[b'T', b'B', 1, b'J', 2]);
    assert_eq!(&bytes[5..7], b"k1");
    let body: serde_json::Value = serde_json::from_slice(&bytes[7 + 32..]).unwrap();
    assert_eq!(body["id"], msg.id().to_string());
    assert_eq!(body["topic"], "orders.eu.created");
    assert_eq!(body["priority"], 0);
    assert_eq!(body["published_at"], 1_763_900_000_123_456_789u64);
    assert_eq!(body["payload"]["lines"][2], 3);
    let unsigned = Codec::unsigned().encode(&msg, "n").unwrap();
    assert_eq!(&unsigned[..5], &[b'T', b'B', 1, b'P', 0]);
    // Binary is the compact one.
    let json = Codec::unsigned().encoding(Encoding::Json).encode(&msg, "n");
    assert!(unsigned.len() * 2 < json.unwrap().len());
}

#[test]
fn any_flipped_bit_of_a_signed_envelope_is_rejected() {
    for codec in &codecs()[..2] {
        let bytes = codec.encode(&full(), "node-a").unwrap();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut forged = bytes.clone();
                forged[i] ^= bit;
                let err = codec
                    .decode::<BTreeMap<String, Vec<u32>>>(&forged)
                    .expect_err("a changed byte must not pass");
                // Past the header, only the signature can catch it.
                if i >= 5 + 2 {
                    assert!(err.is_forgery(), "byte {i}: {err:?}");
                }
            }
        }
    }
}

#[test]
fn signatures_are_required_checked_and_rotated() {
    let msg = Message::builder("a.b".parse().unwrap(), 1u32).build();
    let k1 = Codec::signed(ring());
    let unsigned = Codec::unsigned();
    let err = k1.decode::<u32>(&unsigned.encode(&msg, "n").unwrap());
    assert_eq!(err.unwrap_err(), EnvelopeError::Unsigned);
    let err = unsigned.decode::<u32>(&k1.encode(&msg, "n").unwrap());
    assert_eq!(err.unwrap_err(), EnvelopeError::UnexpectedSignature);
    // Same key id, other secret: a forgery.
    let mallory = Codec::signed(KeyRing::new("k1", [9u8; 32]).unwrap());
    let err = k1.decode::<u32>(&mallory.encode(&msg, "n").unwrap());
    assert_eq!(
        err.unwrap_err(),
        EnvelopeError::BadSignature {
            key_id: "k1".into()
        }
    );

    // Rotation: k2 added everywhere, then signing, then k1 removed.
    let both = ring().with_key("k2", [2u8; 32]).unwrap();
    let old = k1.encode(&msg, "n").unwrap();
    let new = Codec::signed(both.clone().sign_with("k2").unwrap());
    let by_k2 = new.encode(&msg, "n").unwrap();
    assert_eq!(&by_k2[5..7], b"k2");
    assert!(new.decode::<u32>(&old).is_ok(), "k1 still verifies");
    assert!(Codec::signed(both.clone()).decode::<u32>(&by_k2).is_ok());
    let err = k1.decode::<u32>(&by_k2).unwrap_err();
    assert_eq!(
        err,
        EnvelopeError::UnknownKey {
            key_id: "k2".into()
        }
    );
    let retired = Codec::signed(both.sign_with("k2").unwrap().remove("k1").unwrap());
    assert_eq!(
        retired.decode::<u32>(&old).unwrap_err(),
        EnvelopeError::UnknownKey {
            key_id: "k1".into()
        }
    );
    assert!(retired.decode::<u32>(&by_k2).is_ok());
}

#[test]
fn replacing_the_signing_keys_secret_signs_with_the_new_one() {
    let msg = Message::builder("a.b".parse().unwrap(), 1u32).build();
    let new_secret = KeyRing::new("k1", [9u8; 32]).unwrap();
    let replaced = Codec::signed(ring().with_key("k1", [9u8; 32]).unwrap());
    let bytes = replaced.encode(&msg, "n").unwrap();
    assert!(Codec::signed(new_secret).decode::<u32>(&bytes).is_ok());
    assert!(matches!(
        Codec::signed(ring()).decode::<u32>(&bytes),
        Err(EnvelopeError::BadSignature { .. })
    ));
    // Switching back and forth keeps signer and key in step.
    let ring2 = ring()
        .with_key("k2", [2u8; 32])
        .unwrap()
        .sign_with("k2")
        .unwrap()
        .sign_with("k1")
        .unwrap();
    let bytes = Codec::signed(ring2).encode(&msg, "n").unwrap();
    assert!(Codec::signed(ring()).decode::<u32>(&bytes).is_ok());
}

#[test]
fn key_rings_refuse_weak_secrets_bad_ids_and_losing_the_signer() {
    assert_eq!(
        KeyRing::new("k", [0u8; 31]).unwrap_err(),
        KeyError::SecretTooShort { len: 31 }
    );
    for id in ["", "has space", "é", &"x".repeat(33)] {
        assert!(
            matches!(KeyRing::new(id, [0u8; 32]), Err(KeyError::BadKeyId { .. })),
            "{id:?}"
        );
    }
    assert!(KeyRing::new(&"x".repeat(32), [0u8; 32]).is_ok());
    assert!(matches!(ring().sign_with("k9"), Err(KeyError::Key { .. })));
    assert!(matches!(ring().remove("k1"), Err(KeyError::Key { .. })));
    assert!(matches!(ring().remove("k9"), Err(KeyError::Key { .. })));
    let debug = format!("{:?}", ring().with_key("k2", [0xAB; 32]).unwrap());
    assert!(debug.contains("k2") && !debug.contains("171") && !debug.contains("AB"));
}

#[test]
fn size_limits_hold_both_ways() {
    let msg = Message::builder("a".parse().unwrap(), vec![7u8; 1000]).build();
    let small = Codec::signed(ring()).max_size(500);
    assert!(matches!(
        small.encode(&msg, "n"),
        Err(EnvelopeError::TooLarge { limit: 500, .. })
    ));
    let bytes = Codec::signed(ring()).encode(&msg, "n").unwrap();
    assert!(bytes.len() > 1000 && bytes.len() < 1100, "{}", bytes.len());
    assert_eq!(
        small.decode::<Vec<u8>>(&bytes).unwrap_err(),
        EnvelopeError::TooLarge {
            size: bytes.len(),
            limit: 500
        }
    );
    // Exactly at the limit is fine.
    let exact = Codec::signed(ring()).max_size(bytes.len());
    assert!(exact.decode::<Vec<u8>>(&bytes).is_ok());
}

#[test]
fn encoding_into_a_buffer_appends_and_leaves_it_alone_on_error() {
    let codec = Codec::signed(ring()).max_size(500);
    let small = Message::builder("a".parse().unwrap(), vec![1u8; 10]).build();
    let big = Message::builder("a".parse().unwrap(), vec![7u8; 1000]).build();
    let mut buf = b"kept".to_vec();
    codec.encode_into(&small, "n", &mut buf).unwrap();
    // The size limit counts the envelope, not what was in the buffer.
    assert_eq!(&buf[..4], b"kept");
    let first = codec.encode(&small, "n").unwrap();
    let frame = buf[4..].to_vec();
    assert_eq!(frame.len(), first.len());
    same(&codec.decode::<Vec<u8>>(&frame).unwrap().message, &small);
    assert!(matches!(
        codec.encode_into(&big, "n", &mut buf),
        Err(EnvelopeError::TooLarge { limit: 500, .. })
    ));
    assert_eq!(
        buf.len(),
        4 + frame.len(),
        "a failed encode appends nothing"
    );
    // A frame appended after another is signed over its own bytes only.
    codec.encode_into(&small, "n", &mut buf).unwrap();
    let second = &buf[4 + frame.len()..];
    same(&codec.decode::<Vec<u8>>(second).unwrap().message, &small);
}

#[test]
fn broken_frames_get_their_own_errors() {
    let codec = Codec::unsigned();
    let good = codec
        .encode(&Message::builder("a".parse().unwrap(), 1u32).build(), "n")
        .unwrap();
    let with = |i: usize, b: u8| {
        let mut x = good.clone();
        x[i] = b;
        codec.decode::<u32>(&x).unwrap_err()
    };
    assert_eq!(with(0, b'X'), EnvelopeError::NotAnEnvelope);
    assert_eq!(with(2, 2), EnvelopeError::UnsupportedVersion { found: 2 });
    assert_eq!(with(3, b'Z'), EnvelopeError::UnknownEncoding(b'Z'));
    assert!(matches!(with(4, 200), EnvelopeError::Malformed(_)));
    assert_eq!(with(4, 3), EnvelopeError::UnexpectedSignature);
    // Every prefix fails cleanly.
    for n in 0..good.len() {
        let err = codec.decode::<u32>(&good[..n]).unwrap_err();
        if n < 5 {
            assert_eq!(err, EnvelopeError::Truncated, "prefix {n}");
        }
    }
    // Trailing bytes after a binary body.
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        codec.decode::<u32>(&long),
        Err(EnvelopeError::Malformed(_))
    ));
    // A payload of another type.
    assert!(matches!(
        codec.decode::<String>(&good),
        Err(EnvelopeError::Malformed(_))
    ));
}

#[test]
fn bodies_with_out_of_range_fields_are_rejected() {
    let codec = Codec::unsigned().encoding(Encoding::Json);
    let msg = Message::builder("a.b".parse().unwrap(), 1u32).build();
    let good = String::from_utf8(codec.encode(&msg, "n").unwrap()).unwrap();
    let edit = |from: &str, to: &str| {
        assert!(good.contains(from), "{from}");
        codec.decode::<u32>(good.replace(from, to).as_bytes())
    };
    assert!(matches!(
        edit("\"priority\":1", "\"priority\":3"),
        Err(EnvelopeError::Malformed(_))
    ));
    assert!(matches!(
        edit("\"topic\":\"a.b\"", "\"topic\":\"a..b\""),
        Err(EnvelopeError::Topic(_))
    ));
    assert!(matches!(
        edit("\"topic\":\"a.b\"", "\"topic\":\"a.*\""),
        Err(EnvelopeError::Topic(_))
    ));
    assert!(matches!(
        edit("\"reply_to\":null", "\"reply_to\":\"#\""),
        Err(EnvelopeError::Topic(_))
    ));
    let id = msg.id().to_string();
    assert!(matches!(
        edit(&id, "not-an-id"),
        Err(EnvelopeError::Malformed(_))
    ));
    assert!(edit("\"origin\":\"n\"", "\"origin\":\"m\"").is_ok());
}

#[test]
fn payloads_that_do_not_serialize_are_typed_errors() {
    // JSON maps want string keys.
    let mut m = std::collections::HashMap::new();
    m.insert(vec![1u8], 2u8);
    let msg = Message::builder("a".parse().unwrap(), m).build();
    let json = Codec::unsigned().encoding(Encoding::Json);
    assert!(matches!(
        json.encode(&msg, "n"),
        Err(EnvelopeError::Encode(_))
    ));
    assert!(Codec::unsigned().encode(&msg, "n").is_ok());
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        header in prop_oneof![Just(&b"TB\x01P\x00"[..]), Just(&b"TB\x01J\x00"[..]), Just(&b""[..])],
    ) {
        let mut input = header.to_vec();
        input.extend_from_slice(&bytes);
        for codec in codecs() {
            let _ = codec.decode::<BTreeMap<String, Vec<u32>>>(&input);
            let _ = codec.decode::<String>(&input);
        }
    }
}
